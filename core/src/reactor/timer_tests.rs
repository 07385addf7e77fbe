//! Tests of the timer wheel: unit cases plus a property test against a naive `BTreeMap` model.

#![allow(clippy::disallowed_methods)] // tests take a real `Instant` as their origin

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const TICK: Duration = Duration::from_millis(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn expired<K>(wheel: &mut TimerWheel<K>, now: Instant) -> Vec<K> {
    let mut out = Vec::new();
    wheel.poll_expired(now, &mut out);
    out
}

#[test]
fn fires_at_deadline_not_before() {
    let t0 = Instant::now();
    let mut wheel = TimerWheel::new(t0, TICK, 16);
    wheel.insert(t0 + ms(25), "a");
    assert_eq!(wheel.len(), 1);
    assert!(expired(&mut wheel, t0 + ms(24)).is_empty());
    assert_eq!(expired(&mut wheel, t0 + ms(25)), vec!["a"]);
    assert!(wheel.is_empty());
    assert_eq!(wheel.next_deadline(), None);
}

#[test]
fn cancel_and_stale_ids() {
    let t0 = Instant::now();
    let mut wheel = TimerWheel::new(t0, TICK, 4);
    let a = wheel.insert(t0 + ms(5), 1);
    let b = wheel.insert(t0 + ms(5), 2);
    let c = wheel.insert(t0 + ms(5), 3);
    assert_eq!(wheel.cancel(a), Some(1));
    assert_eq!(wheel.cancel(a), None);
    assert_eq!(wheel.deadline(c), Some(t0 + ms(5)));
    let mut fired = expired(&mut wheel, t0 + ms(5));
    fired.sort_unstable();
    assert_eq!(fired, vec![2, 3]);
    assert_eq!(wheel.cancel(b), None);
    // A new timer reusing the slot must not be cancelled by the old id.
    let d = wheel.insert(t0 + ms(50), 4);
    assert_eq!(wheel.cancel(c), None);
    assert_eq!(wheel.len(), 1);
    assert_eq!(wheel.cancel(d), Some(4));
}

#[test]
fn deadlines_beyond_one_revolution() {
    let t0 = Instant::now();
    // One revolution is 40 ms.
    let mut wheel = TimerWheel::new(t0, TICK, 4);
    wheel.insert(t0 + ms(135), "far");
    wheel.insert(t0 + ms(15), "near");
    assert_eq!(wheel.next_deadline(), Some(t0 + ms(15)));
    assert_eq!(expired(&mut wheel, t0 + ms(20)), vec!["near"]);
    assert_eq!(wheel.next_deadline(), Some(t0 + ms(135)));
    for step in 3..13 {
        assert!(expired(&mut wheel, t0 + ms(step * 10)).is_empty());
    }
    assert_eq!(expired(&mut wheel, t0 + ms(135)), vec!["far"]);
}

#[test]
fn past_deadline_fires_on_next_poll() {
    let t0 = Instant::now();
    let mut wheel = TimerWheel::new(t0, TICK, 8);
    assert!(expired(&mut wheel, t0 + ms(500)).is_empty());
    wheel.insert(t0 + ms(3), "late");
    assert_eq!(wheel.next_deadline(), Some(t0 + ms(3)));
    assert_eq!(expired(&mut wheel, t0 + ms(500)), vec!["late"]);
}

#[test]
fn big_jump_scans_every_bucket_once() {
    let t0 = Instant::now();
    let mut wheel = TimerWheel::new(t0, TICK, 4);
    for i in 0..20u64 {
        wheel.insert(t0 + ms(i * 7), i);
    }
    let mut fired = expired(&mut wheel, t0 + ms(70));
    fired.sort_unstable();
    assert_eq!(fired, (0..=10).collect::<Vec<_>>());
    assert_eq!(wheel.len(), 9);
}

#[test]
fn reschedule_moves_the_deadline() {
    let t0 = Instant::now();
    let mut wheel = TimerWheel::new(t0, TICK, 8);
    let id = wheel.insert(t0 + ms(10), "idle");
    let moved = wheel.reschedule(id, t0 + ms(100));
    assert!(moved.is_some());
    assert_eq!(wheel.reschedule(id, t0 + ms(5)), None);
    assert!(expired(&mut wheel, t0 + ms(50)).is_empty());
    assert_eq!(expired(&mut wheel, t0 + ms(100)), vec!["idle"]);
}

#[test]
fn degenerate_parameters_still_work() {
    let t0 = Instant::now();
    let mut wheel = TimerWheel::new(t0, Duration::ZERO, 0);
    wheel.insert(t0 + Duration::from_nanos(5), 'x');
    assert!(expired(&mut wheel, t0 + Duration::from_nanos(4)).is_empty());
    assert_eq!(expired(&mut wheel, t0 + Duration::from_nanos(5)), vec!['x']);
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    /// Arm a timer `offset_ms - 100` after the current time (may be in the past).
    Insert(u64),
    /// Cancel the n-th id issued so far (modulo the count; may be stale).
    Cancel(usize),
    /// Advance the clock by this many microseconds and poll.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..2_000).prop_map(Op::Insert),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => (0u64..60_000).prop_map(Op::Advance),
        1 => (0u64..1_500_000).prop_map(Op::Advance),
    ]
}

/// Runs `ops` against the wheel and a `BTreeMap` model; the wheel must fire exactly the timers
/// whose deadline is <= now (none early, none late) and report the exact earliest deadline.
fn check_against_model(slots: usize, tick_us: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let mut now = t0 + Duration::from_secs(1);
    let mut wheel = TimerWheel::new(t0, Duration::from_micros(tick_us), slots);
    let mut model: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut ids: Vec<(TimerId, u64)> = Vec::new();
    let mut next_seq = 0u64;
    for op in ops {
        match op {
            Op::Insert(offset) => {
                let deadline = (now + ms(*offset)) - ms(100);
                ids.push((wheel.insert(deadline, next_seq), next_seq));
                model.insert(next_seq, deadline);
                next_seq += 1;
            }
            Op::Cancel(n) if !ids.is_empty() => {
                let (id, seq) = ids[n % ids.len()];
                prop_assert_eq!(wheel.cancel(id), model.remove(&seq).map(|_| seq));
            }
            Op::Cancel(_) => {}
            Op::Advance(us) => {
                now += Duration::from_micros(*us);
                let mut fired = expired(&mut wheel, now);
                fired.sort_unstable();
                let due: Vec<u64> = model
                    .iter()
                    .filter(|(_, deadline)| **deadline <= now)
                    .map(|(seq, _)| *seq)
                    .collect();
                for seq in &due {
                    model.remove(seq);
                }
                prop_assert_eq!(fired, due);
            }
        }
        prop_assert_eq!(wheel.len(), model.len());
        prop_assert_eq!(wheel.next_deadline(), model.values().min().copied());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn matches_naive_model(
        slots in 1usize..40,
        tick_us in 500u64..30_000,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        check_against_model(slots, tick_us, &ops)?;
    }
}
