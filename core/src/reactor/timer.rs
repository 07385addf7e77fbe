//! A hashed timer wheel, sans-io: time comes in as an [`Instant`] argument, never from a clock.
//!
//! Time is cut into ticks of `tick` length starting at `start`; tick `t` hashes to bucket
//! `t % slots`. A timer lives in the bucket of its deadline's tick and remembers that tick and its
//! exact deadline, so deadlines many revolutions away simply wait in their bucket (they are
//! re-checked, and kept, each time the wheel passes over them). Insert and cancel are O(1): the
//! entries sit in a [`Slots`] slab and each bucket is a `Vec` of keys with swap-remove, every entry
//! knowing its position in its bucket.
//!
//! Expiry is exact: [`TimerWheel::poll_expired`] hands out precisely the timers whose deadline is
//! `<= now`, never one early, and [`TimerWheel::next_deadline`] is the exact earliest deadline, so
//! a reactor that sleeps until it and then polls loses nothing to tick rounding. Pick
//! `tick * slots` above the usual timeout (idle, ping) so that most timers land within one
//! revolution: polling then touches only the buckets it passes over. The earliest deadline is
//! remembered: inserts keep it exact, and only cancelling or firing the earliest timer makes the
//! next [`TimerWheel::next_deadline`] look for it again (a reactor asks on every loop turn, and
//! a search may pass over thousands of empty buckets when every timer is seconds away).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::slots::{Key, Slots};

/// Names one armed timer; goes stale (cancel returns `None`) once it fired or was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(Key);

/// One armed timer.
#[derive(Debug)]
struct Entry<K> {
    /// What the owner gets back when the timer fires (typically a connection key + a kind).
    key: K,
    /// The exact deadline; expiry compares against it, so ticks never make a timer early.
    deadline: Instant,
    /// The absolute tick whose bucket holds the entry: its deadline's tick, or the wheel's current
    /// tick if the deadline was already past at insert. Tells this revolution from later ones.
    tick: u64,
    /// Index in the bucket's `Vec`, for O(1) swap-remove on cancel.
    pos: usize,
}

/// A hashed timer wheel holding keys of type `K`.
#[derive(Debug)]
pub struct TimerWheel<K> {
    /// Instant of tick 0.
    start: Instant,
    /// Tick length in nanoseconds (at least 1).
    tick_nanos: u128,
    /// `buckets[t % slots]` holds the keys of entries whose tick is `t` (any revolution).
    buckets: Vec<Vec<Key>>,
    /// The armed timers.
    entries: Slots<Entry<K>>,
    /// The tick of the latest `poll_expired`: every armed entry has `tick >= current`.
    current: u64,
    /// The earliest armed deadline, when known (`None` inside: nothing armed); `None` when it
    /// must be searched for again. Set by `next_deadline`, kept exact by `insert`, forgotten
    /// when the earliest timer is cancelled or timers fire.
    earliest: Cell<Option<Option<Instant>>>,
}

impl<K> TimerWheel<K> {
    /// A wheel whose tick 0 starts at `start`, with `slots` buckets of `tick` each. A zero `tick`
    /// is taken as one nanosecond and zero `slots` as one.
    pub fn new(start: Instant, tick: Duration, slots: usize) -> Self {
        let slots = slots.max(1);
        TimerWheel {
            start,
            tick_nanos: tick.as_nanos().max(1),
            buckets: (0..slots).map(|_| Vec::new()).collect(),
            entries: Slots::with_capacity(0),
            current: 0,
            earliest: Cell::new(Some(None)),
        }
    }

    /// Arms a timer that fires at the first [`TimerWheel::poll_expired`] with `now >= deadline`.
    /// A deadline already past fires at the next poll.
    pub fn insert(&mut self, deadline: Instant, key: K) -> TimerId {
        let tick = self.tick_of(deadline).max(self.current);
        let bucket = self.bucket_of(tick);
        let pos = self.buckets[bucket].len();
        let id = self.entries.insert(Entry {
            key,
            deadline,
            tick,
            pos,
        });
        self.buckets[bucket].push(id);
        if let Some(known) = self.earliest.get() {
            self.earliest.set(Some(min_instant(known, deadline)));
        }
        TimerId(id)
    }

    /// Disarms a timer and returns its key; `None` if it already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<K> {
        let entry = self.entries.remove(id.0)?;
        let bucket = self.bucket_of(entry.tick);
        self.unlink(bucket, entry.pos);
        if self.earliest.get() == Some(Some(entry.deadline)) {
            self.earliest.set(None);
        }
        Some(entry.key)
    }

    /// Moves a timer to a new deadline (cancel + insert); `None` if it already fired or was
    /// cancelled. The old id goes stale.
    pub fn reschedule(&mut self, id: TimerId, deadline: Instant) -> Option<TimerId> {
        let key = self.cancel(id)?;
        Some(self.insert(deadline, key))
    }

    /// The deadline of an armed timer.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.entries.get(id.0).map(|entry| entry.deadline)
    }

    /// The earliest armed deadline (exact; possibly already past), or `None` when nothing is
    /// armed. A reactor sleeps until then: `deadline.saturating_duration_since(now)`.
    ///
    /// Cost: none while the earliest timer is known (see the module doc); otherwise the buckets
    /// from the current tick up to the first one holding a timer due this revolution, and the
    /// entries in them; a full pass over the wheel if every timer is more than one revolution
    /// away.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(known) = self.earliest.get() {
            return known;
        }
        let earliest = self.search_earliest();
        self.earliest.set(Some(earliest));
        earliest
    }

    /// The earliest armed deadline, found by walking the wheel.
    fn search_earliest(&self) -> Option<Instant> {
        if self.entries.is_empty() {
            return None;
        }
        let mut earliest: Option<Instant> = None;
        for tick in self.current..self.current + self.buckets.len() as u64 {
            let mut due_this_tick: Option<Instant> = None;
            for key in &self.buckets[self.bucket_of(tick)] {
                let Some(entry) = self.entries.get(*key) else {
                    continue;
                };
                earliest = min_instant(earliest, entry.deadline);
                if entry.tick <= tick {
                    due_this_tick = min_instant(due_this_tick, entry.deadline);
                }
            }
            // Entries due in this tick precede everything in later buckets and later revolutions.
            if due_this_tick.is_some() {
                return due_this_tick;
            }
        }
        earliest
    }

    /// Pushes onto `out` the key of every timer whose deadline is `<= now`, disarming them.
    /// `now` should not go backwards; if it does, only timers already due at `now` fire.
    pub fn poll_expired(&mut self, now: Instant, out: &mut Vec<K>) {
        let fired_before = out.len();
        let target = self.tick_of(now).max(self.current);
        let slots = self.buckets.len() as u64;
        if target - self.current >= slots {
            for bucket in 0..self.buckets.len() {
                self.expire_bucket(bucket, now, out);
            }
        } else {
            for tick in self.current..=target {
                self.expire_bucket(self.bucket_of(tick), now, out);
            }
        }
        self.current = target;
        if out.len() > fired_before {
            self.earliest.set(None);
        }
    }

    /// How many timers are armed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Fires every entry of one bucket whose deadline is `<= now`; keeps the rest.
    fn expire_bucket(&mut self, bucket: usize, now: Instant, out: &mut Vec<K>) {
        let mut pos = 0;
        while pos < self.buckets[bucket].len() {
            let id = self.buckets[bucket][pos];
            let due = self
                .entries
                .get(id)
                .is_none_or(|entry| entry.deadline <= now);
            if !due {
                pos += 1;
                continue;
            }
            self.unlink(bucket, pos);
            if let Some(entry) = self.entries.remove(id) {
                out.push(entry.key);
            }
        }
    }

    /// Removes position `pos` from a bucket, fixing the position of the entry swapped into it.
    fn unlink(&mut self, bucket: usize, pos: usize) {
        let keys = &mut self.buckets[bucket];
        if pos >= keys.len() {
            return;
        }
        keys.swap_remove(pos);
        if let Some(moved) = keys.get(pos).copied() {
            if let Some(entry) = self.entries.get_mut(moved) {
                entry.pos = pos;
            }
        }
    }

    /// The tick an instant falls in (instants before `start` are tick 0).
    fn tick_of(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.start).as_nanos();
        u64::try_from(nanos / self.tick_nanos).unwrap_or(u64::MAX)
    }

    /// The bucket that holds tick `tick`.
    fn bucket_of(&self, tick: u64) -> usize {
        // The remainder is below `buckets.len()`, a usize.
        (tick % self.buckets.len() as u64) as usize
    }
}

/// The earlier of an optional instant and an instant.
fn min_instant(current: Option<Instant>, candidate: Instant) -> Option<Instant> {
    Some(current.map_or(candidate, |c| c.min(candidate)))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take a real `Instant` as their origin
mod tests {
    // Tests of the timer wheel: unit cases plus a property test against a naive `BTreeMap` model.

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
}
