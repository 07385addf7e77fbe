//! When each message is due and which connection sends it (sans-io: time is passed in).
//!
//! Open loop (the default, as wrk2): message `i` of a run is due at `t0 + i / rate`, whatever the
//! replies, and goes to connection `i % connections`. Latency is measured from that due time, so a
//! stalled server shows up as latency instead of silently lowering the offered load (coordinated
//! omission). Closed loop: each connection keeps a fixed window of messages in flight and sends a new
//! one per reply; latency is measured from the actual send time.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::ops::Range;

/// Nanoseconds since the run's t0 (the moment every connection is open and sending starts).
pub type Nanos = u64;

/// Nanoseconds per second, as `f64` for rate arithmetic.
const NANOS_PER_SEC: f64 = 1e9;

/// The open-loop schedule of one worker: a fixed rate spread round-robin over its connections.
#[derive(Debug, Clone)]
pub struct OpenLoop {
    /// Messages per second over all connections of this schedule; fixes every due time.
    rate: f64,
    /// Connections the schedule spreads over, round-robin, so each sees `rate / connections`.
    connections: u64,
    /// Messages in the whole run: every index due before the end of the measured window.
    total: u64,
    /// First index due at or after the end of the warmup; earlier ones are not recorded.
    first_measured: u64,
    /// Indexes already handed out by `poll_due`; the next one released is this one.
    released: u64,
}

impl OpenLoop {
    /// A schedule of `rate` messages per second over `connections` (both must be positive), with
    /// the measured window `[warmup, end)`.
    pub fn new(rate: f64, connections: usize, warmup: Nanos, end: Nanos) -> Self {
        let mut schedule = OpenLoop {
            rate: rate.max(f64::MIN_POSITIVE),
            connections: connections.max(1) as u64,
            total: 0,
            first_measured: 0,
            released: 0,
        };
        schedule.total = schedule.count_due_before(end);
        schedule.first_measured = schedule.count_due_before(warmup);
        schedule
    }

    /// The due time of message `index`.
    pub fn due(&self, index: u64) -> Nanos {
        (index as f64 * NANOS_PER_SEC / self.rate) as Nanos
    }

    /// How many messages are due strictly before `t`, consistent with `due` despite rounding.
    fn count_due_before(&self, t: Nanos) -> u64 {
        if t == 0 {
            return 0;
        }
        let mut n = ((t as f64) * self.rate / NANOS_PER_SEC).ceil() as u64;
        while self.due(n) < t {
            n += 1;
        }
        while n > 0 && self.due(n - 1) >= t {
            n -= 1;
        }
        n
    }

    /// Releases every message due at or before `now` and not released yet; the caller sends them.
    pub fn poll_due(&mut self, now: Nanos) -> Range<u64> {
        let due = self.count_due_before(now.saturating_add(1)).min(self.total);
        let start = self.released;
        self.released = self.released.max(due);
        start..self.released
    }

    /// When the next message falls due, or `None` once the whole run has been released.
    pub fn next_due(&self) -> Option<Nanos> {
        (self.released < self.total).then(|| self.due(self.released))
    }

    /// The connection (0-based, of this schedule) that sends message `index`.
    pub fn conn_of(&self, index: u64) -> usize {
        (index % self.connections) as usize
    }

    /// The index of the `seq`-th message (0-based) sent on connection `conn`.
    pub fn index_of(&self, conn: usize, seq: u64) -> u64 {
        seq * self.connections + conn as u64
    }

    /// Whether message `index` is due inside the measured window (not during warmup).
    pub fn is_measured(&self, index: u64) -> bool {
        index >= self.first_measured
    }

    /// Messages in the whole run, warmup included.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Messages in the measured window: the target count the achieved rate is judged against.
    pub fn measured_total(&self) -> u64 {
        self.total - self.first_measured
    }
}

/// The closed-loop schedule: a fixed window of messages in flight per connection.
#[derive(Debug, Clone)]
pub struct ClosedLoop {
    /// Messages each connection keeps in flight (the in-flight depth the report prints).
    in_flight: u32,
    /// Sends at or after this time are measured; earlier ones are warmup.
    warmup: Nanos,
    /// No new message is sent at or after this time; the run then drains.
    end: Nanos,
}

impl ClosedLoop {
    /// A closed loop keeping `in_flight` (at least 1) messages per connection, measured in
    /// `[warmup, end)`.
    pub fn new(in_flight: u32, warmup: Nanos, end: Nanos) -> Self {
        ClosedLoop {
            in_flight: in_flight.max(1),
            warmup,
            end,
        }
    }

    /// Messages each connection sends at t0 to fill its window.
    pub fn initial_window(&self) -> u32 {
        self.in_flight
    }

    /// Messages to send in answer to one reply received at `now`: one while the run lasts.
    pub fn refill(&self, now: Nanos) -> u32 {
        u32::from(now < self.end)
    }

    /// Whether a message sent at `sent_at` is measured.
    pub fn is_measured(&self, sent_at: Nanos) -> bool {
        sent_at >= self.warmup && sent_at < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn due_times_follow_the_rate() {
        let s = OpenLoop::new(1000.0, 4, 0, SEC);
        assert_eq!(s.due(0), 0);
        assert_eq!(s.due(1), 1_000_000);
        assert_eq!(s.due(1000), SEC);
        assert_eq!(s.total(), 1000);
        assert_eq!(s.measured_total(), 1000);
    }

    #[test]
    fn poll_releases_each_index_once_and_in_order() {
        let mut s = OpenLoop::new(1000.0, 3, 0, SEC);
        assert_eq!(s.poll_due(0), 0..1);
        assert_eq!(s.poll_due(0), 1..1);
        assert_eq!(s.poll_due(2_500_000), 1..3);
        assert_eq!(s.next_due(), Some(3_000_000));
        assert_eq!(s.poll_due(10 * SEC), 3..1000);
        assert_eq!(s.next_due(), None);
        assert_eq!(s.poll_due(20 * SEC), 1000..1000);
    }

    #[test]
    fn a_late_poll_releases_the_whole_backlog() {
        let mut s = OpenLoop::new(10_000.0, 10, 0, SEC);
        let r = s.poll_due(SEC / 2);
        assert_eq!(r, 0..5001);
    }

    #[test]
    fn round_robin_over_connections() {
        let s = OpenLoop::new(100.0, 3, 0, SEC);
        let conns: Vec<usize> = (0..7).map(|i| s.conn_of(i)).collect();
        assert_eq!(conns, [0, 1, 2, 0, 1, 2, 0]);
        for i in 0..30 {
            let c = s.conn_of(i);
            assert_eq!(s.index_of(c, i / 3), i);
        }
    }

    #[test]
    fn warmup_messages_are_not_measured() {
        let s = OpenLoop::new(100.0, 2, SEC, 3 * SEC);
        assert_eq!(s.total(), 300);
        assert_eq!(s.measured_total(), 200);
        assert!(!s.is_measured(99));
        assert!(s.is_measured(100));
        assert!(s.due(100) >= SEC);
        assert!(s.due(99) < SEC);
    }

    #[test]
    fn fractional_rates_are_consistent() {
        let mut s = OpenLoop::new(3.0, 1, 0, 2 * SEC);
        assert_eq!(s.total(), 6);
        let mut seen = 0;
        for t in (0..3 * SEC).step_by(1_000_000) {
            for i in s.poll_due(t) {
                assert!(s.due(i) <= t);
                assert_eq!(i, seen);
                seen += 1;
            }
        }
        assert_eq!(seen, 6);
    }

    #[test]
    fn closed_loop_refills_until_the_end() {
        let c = ClosedLoop::new(8, SEC, 2 * SEC);
        assert_eq!(c.initial_window(), 8);
        assert_eq!(c.refill(SEC), 1);
        assert_eq!(c.refill(2 * SEC), 0);
        assert!(!c.is_measured(SEC - 1));
        assert!(c.is_measured(SEC));
        assert!(!c.is_measured(2 * SEC));
    }
}
