//! The reactor's timer wheel: every session arms an idle timer and pushes it back on traffic, so
//! insert, cancel and reschedule run per message; expiry runs per loop tick.

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hermod_core::reactor::timer::{TimerId, TimerWheel};

/// Timers armed in the background, as on a busy worker.
const ARMED: u64 = 10_000;
/// The gateway's kind of wheel: 10 ms ticks, 4096 slots (about 41 s per revolution).
const TICK: Duration = Duration::from_millis(10);
const SLOTS: usize = 4096;

/// A wheel with `ARMED` timers spread over the next 30 s; returns it and their ids.
fn busy_wheel(start: Instant) -> (TimerWheel<u64>, Vec<TimerId>) {
    let mut wheel = TimerWheel::new(start, TICK, SLOTS);
    let ids = (0..ARMED)
        .map(|k| wheel.insert(start + Duration::from_millis(k * 3 % 30_000), k))
        .collect();
    (wheel, ids)
}

fn insert_cancel(c: &mut Criterion) {
    let start = Instant::now();
    let (mut wheel, _ids) = busy_wheel(start);
    let mut group = c.benchmark_group("timer");
    let mut k = 0u64;
    group.bench_function("insert_cancel", |b| {
        b.iter(|| {
            k += 1;
            let id = wheel.insert(start + Duration::from_millis(k % 60_000), k);
            wheel.cancel(black_box(id))
        })
    });
    let (mut wheel, mut ids) = busy_wheel(start);
    let mut i = 0usize;
    group.bench_function("reschedule", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            let deadline = start + Duration::from_millis((i as u64 * 7) % 60_000);
            if let Some(id) = wheel.reschedule(ids[i], deadline) {
                ids[i] = id;
            }
        })
    });
    group.finish();
}

fn expire(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer");
    // One loop tick that fires 100 timers out of ARMED.
    group.throughput(Throughput::Elements(100));
    group.bench_function("poll_expired_100_of_10k", |b| {
        b.iter_batched(
            || {
                let start = Instant::now();
                let mut wheel = TimerWheel::new(start, TICK, SLOTS);
                for k in 0..ARMED {
                    // 100 timers due in the first tick, the rest later.
                    let at = if k < 100 { k } else { 1_000 + k * 3 % 30_000 };
                    wheel.insert(start + Duration::from_millis(at), k);
                }
                (wheel, start, Vec::with_capacity(128))
            },
            |(mut wheel, start, mut out)| {
                wheel.poll_expired(start + Duration::from_millis(100), &mut out);
                (wheel, out)
            },
            BatchSize::LargeInput,
        )
    });
    let start = Instant::now();
    let (wheel, _ids) = busy_wheel(start);
    group.throughput(Throughput::Elements(1));
    group.bench_function("next_deadline_10k", |b| {
        b.iter(|| black_box(&wheel).next_deadline())
    });
    group.finish();
}

criterion_group!(benches, insert_cancel, expire);
criterion_main!(benches);
