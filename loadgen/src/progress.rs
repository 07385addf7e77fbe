//! Live counters the workers publish and the main thread prints once a second. Each worker writes
//! only its own slot (relaxed stores, no contention); the printer sums the slots.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One worker's published counters.
#[derive(Debug, Default)]
pub struct ThreadProgress {
    /// Connections opened so far.
    connected: AtomicU64,
    /// Connection attempts failed so far.
    failures: AtomicU64,
    /// Messages sent (warmup included).
    sent: AtomicU64,
    /// Distinct messages received (warmup included).
    received: AtomicU64,
    /// Errors so far.
    errors: AtomicU64,
    /// The worker's latency p99 so far, in microseconds.
    p99_us: AtomicU64,
}

impl ThreadProgress {
    /// Publishes connect-phase counts.
    pub fn set_connects(&self, connected: u64, failures: u64) {
        self.connected.store(connected, Relaxed);
        self.failures.store(failures, Relaxed);
    }

    /// Publishes message counts.
    pub fn set_counts(&self, sent: u64, received: u64, errors: u64) {
        self.sent.store(sent, Relaxed);
        self.received.store(received, Relaxed);
        self.errors.store(errors, Relaxed);
    }

    /// Publishes the latency p99 so far.
    pub fn set_p99(&self, p99_us: u64) {
        self.p99_us.store(p99_us, Relaxed);
    }
}

/// A snapshot summed over every worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Connections opened.
    pub connected: u64,
    /// Failed connection attempts.
    pub failures: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Errors.
    pub errors: u64,
    /// Highest per-worker p99 (a bound on the overall p99, cheap to get).
    pub p99_us: u64,
}

/// Every worker's slot.
#[derive(Debug)]
pub struct Progress {
    /// Slot `k` belongs to worker `k`.
    threads: Vec<ThreadProgress>,
}

impl Progress {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Progress {
            threads: (0..workers).map(|_| ThreadProgress::default()).collect(),
        }
    }

    /// Worker `k`'s slot (`None` past the last worker).
    pub fn slot(&self, k: usize) -> Option<&ThreadProgress> {
        self.threads.get(k)
    }

    /// The sums now.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for t in &self.threads {
            s.connected += t.connected.load(Relaxed);
            s.failures += t.failures.load(Relaxed);
            s.sent += t.sent.load(Relaxed);
            s.received += t.received.load(Relaxed);
            s.errors += t.errors.load(Relaxed);
            s.p99_us = s.p99_us.max(t.p99_us.load(Relaxed));
        }
        s
    }
}

/// The progress line for `now` given the snapshot a second earlier.
pub fn line(elapsed_s: f64, now: &Snapshot, before: &Snapshot, interval_s: f64) -> String {
    let rate = (now.sent - before.sent.min(now.sent)) as f64 / interval_s.max(1e-9);
    format!(
        "[{elapsed_s:6.1}s] conns {} (failed {}) sent {} received {} rate {rate:.0}/s p99 {} us errors {}",
        now.connected, now.failures, now.sent, now.received, now.p99_us, now.errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_slots_and_takes_the_worst_p99() {
        let p = Progress::new(2);
        p.slot(0).unwrap().set_counts(10, 9, 1);
        p.slot(1).unwrap().set_counts(5, 5, 0);
        p.slot(0).unwrap().set_p99(100);
        p.slot(1).unwrap().set_p99(300);
        p.slot(1).unwrap().set_connects(3, 1);
        let s = p.snapshot();
        assert_eq!((s.sent, s.received, s.errors, s.p99_us), (15, 14, 1, 300));
        assert_eq!((s.connected, s.failures), (3, 1));
        assert!(p.slot(2).is_none());
        let l = line(2.0, &s, &Snapshot::default(), 1.0);
        assert!(l.contains("rate 15/s"), "{l}");
    }
}
