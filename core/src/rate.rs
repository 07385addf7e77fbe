//! Per-session rate limits: one token bucket on messages and one on bytes, over everything a
//! gateway's `/ws` client sends (every op, acks, joins and leaves included; pings and pongs too), and the
//! rule that closes a session that keeps hammering past them.
//!
//! Sans-io: plain arithmetic on the session's own struct with a `now` passed in. Each bucket is
//! a GCRA (the "virtual scheduling" form of a token bucket): it keeps the theoretical arrival
//! time `tat` of the next unit; a message costing `cost` passes when `max(tat, now) + cost` stays
//! within `tolerance` (the burst expressed as time) of `now`. A few integer operations per
//! message: no allocation, no lock, no syscall.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Refusals within [`STRIKE_WINDOW`] after which a session is closed 1008 `rate limit
/// exceeded`. A client that overshoots a little (say 10% over the sustained rate) gets
/// `rate_limited` answers and stays connected; one that keeps sending at full speed past the
/// refusals is closed within milliseconds.
pub const STRIKE_LIMIT: u32 = 1000;
/// The window in which [`STRIKE_LIMIT`] refusals close a session.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);
/// The byte bucket holds this much of `bytes_per_sec` (and at least one largest message).
pub const BYTE_BURST_TIME: Duration = Duration::from_secs(2);

/// The limits every `/ws` session gets (settings `--session-rate`, `--session-burst`,
/// `--session-byte-rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Sustained messages per second; 0 turns both buckets off.
    pub messages_per_sec: u32,
    /// Messages a session may send at once above the sustained rate.
    pub burst: u32,
    /// Sustained bytes per second (message payloads); 0 turns the byte bucket off.
    pub bytes_per_sec: u64,
}

impl RateConfig {
    /// The defaults: far above any interactive client, and above every benchmark of
    /// docs/benchmarks.md: the busiest `/ws` one (benches/compare.sh's Hermod `/ws` path at
    /// 50,000 msg/s over 100 connections) sends 500 messages and 500 acks per second per
    /// session, benches/broker-tier.sh's last step 400 + 400. Two seconds of burst.
    pub const DEFAULT: RateConfig = RateConfig {
        messages_per_sec: 2000,
        burst: 4000,
        bytes_per_sec: 8 << 20,
    };
}

/// Which bucket refused a message (the metrics' `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Messages,
    Bytes,
}

impl Over {
    pub const ALL: [Over; 2] = [Over::Messages, Over::Bytes];

    pub fn as_str(self) -> &'static str {
        match self {
            Over::Messages => "messages",
            Over::Bytes => "bytes",
        }
    }
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Over a limit: refuse it (`rate_limited`), nothing else.
    Refuse(Over),
    /// Over a limit once too often within the window: close the session 1008.
    Close(Over),
}

/// A session's two buckets and its refusal count: 48 bytes, since every session has one. Times
/// are nanoseconds since `origin` (a session would have to live 584 years to overflow them).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// When the session opened; every other time is relative to it.
    origin: Instant,
    /// Theoretical arrival time of the next message (GCRA): at or before `now` means the
    /// message bucket is full.
    msgs_tat: u64,
    /// The same for bytes.
    bytes_tat: u64,
    /// When the current strike window ends.
    window_end: u64,
    /// Refusals in the current window.
    strikes: u32,
}

impl RateLimiter {
    /// Full buckets at `now`.
    pub fn new(now: Instant) -> Self {
        RateLimiter {
            origin: now,
            msgs_tat: 0,
            bytes_tat: 0,
            window_end: 0,
            strikes: 0,
        }
    }

    /// Charges one message of `len` bytes received at `now` under `config`; `max_message` is
    /// the largest message a client may send (the byte bucket always holds at least one).
    pub fn check(
        &mut self,
        config: &RateConfig,
        max_message: usize,
        now: Instant,
        len: usize,
    ) -> Verdict {
        if config.messages_per_sec == 0 {
            return Verdict::Pass;
        }
        let t = nanos(now.saturating_duration_since(self.origin));
        let interval = 1_000_000_000 / u64::from(config.messages_per_sec);
        let tolerance = interval.saturating_mul(u64::from(config.burst.max(1)));
        let next_msg = self.msgs_tat.max(t).saturating_add(interval);
        if next_msg > t.saturating_add(tolerance) {
            return self.strike(t, Over::Messages);
        }
        if config.bytes_per_sec > 0 {
            let rate = config.bytes_per_sec;
            let tolerance = nanos(BYTE_BURST_TIME).max(byte_cost(max_message, rate));
            let next = self.bytes_tat.max(t).saturating_add(byte_cost(len, rate));
            if next > t.saturating_add(tolerance) {
                return self.strike(t, Over::Bytes);
            }
            self.bytes_tat = next;
        }
        self.msgs_tat = next_msg;
        Verdict::Pass
    }

    /// Whether the limiter still holds anything against its session at `now`: a bucket not
    /// yet full again, or refusals in a window not yet over. A fresh limiter would forget it.
    pub fn in_debt(&self, now: Instant) -> bool {
        let t = nanos(now.saturating_duration_since(self.origin));
        self.msgs_tat > t || self.bytes_tat > t || (self.strikes > 0 && self.window_end > t)
    }

    fn strike(&mut self, t: u64, over: Over) -> Verdict {
        if t >= self.window_end {
            self.window_end = t.saturating_add(nanos(STRIKE_WINDOW));
            self.strikes = 0;
        }
        self.strikes += 1;
        if self.strikes >= STRIKE_LIMIT {
            Verdict::Close(over)
        } else {
            Verdict::Refuse(over)
        }
    }
}

/// Limiters of sessions that ended in debt, by user, so that reconnecting does not refill the
/// buckets: a session flooding past its limits and closed would otherwise get a fresh burst on
/// every reconnect. A gateway worker keeps one; a new session of the same user on that worker
/// takes the limiter over. Bounded: at [`Carryover::CAP`] entries those no longer in debt are
/// dropped, and if all still are, the new one is not kept.
#[derive(Debug)]
pub struct Carryover<K> {
    map: HashMap<K, RateLimiter>,
}

impl<K: Hash + Eq> Default for Carryover<K> {
    fn default() -> Self {
        Carryover {
            map: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Carryover<K> {
    /// Most limiters kept (about 80 bytes each with the key).
    pub const CAP: usize = 4096;

    /// A session of `key` ended at `now` with `limiter`: kept if it is in debt.
    pub fn put(&mut self, key: K, limiter: RateLimiter, now: Instant) {
        if !limiter.in_debt(now) {
            return;
        }
        if self.map.len() >= Self::CAP {
            self.map.retain(|_, l| l.in_debt(now));
            if self.map.len() >= Self::CAP {
                return;
            }
        }
        self.map.insert(key, limiter);
    }

    /// The limiter a new session of `key` opening at `now` inherits, if any.
    pub fn take(&mut self, key: &K, now: Instant) -> Option<RateLimiter> {
        self.map.remove(key).filter(|l| l.in_debt(now))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The nanoseconds `len` bytes take at `rate` bytes per second.
fn byte_cost(len: usize, rate: u64) -> u64 {
    let nanos = (len as u128 * 1_000_000_000) / u128::from(rate.max(1));
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin
mod tests {
    use super::*;

    /// A limiter with its config, as a session holds them.
    struct Limited(RateLimiter, RateConfig, usize);

    impl Limited {
        fn new(config: RateConfig, max: usize, now: Instant) -> Self {
            Limited(RateLimiter::new(now), config, max)
        }

        fn check(&mut self, now: Instant, len: usize) -> Verdict {
            self.0.check(&self.1, self.2, now, len)
        }
    }

    #[test]
    fn a_limiter_is_small() {
        assert!(std::mem::size_of::<RateLimiter>() <= 48);
    }

    const CFG: RateConfig = RateConfig {
        messages_per_sec: 100,
        burst: 10,
        bytes_per_sec: 1000,
    };

    #[test]
    fn the_burst_passes_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut l = Limited::new(CFG, 100, t0);
        for _ in 0..10 {
            assert_eq!(l.check(t0, 1), Verdict::Pass);
        }
        assert_eq!(l.check(t0, 1), Verdict::Refuse(Over::Messages));
        // 10 ms buys one message at 100/s.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(l.check(t1, 1), Verdict::Pass);
        assert_eq!(l.check(t1, 1), Verdict::Refuse(Over::Messages));
        // Idle long enough refills the whole burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        let passed = (0..100).filter(|_| l.check(t2, 1) == Verdict::Pass).count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn bytes_have_their_own_bucket() {
        let t0 = Instant::now();
        let mut l = Limited::new(CFG, 100, t0);
        // Two seconds of 1000 B/s: 2000 bytes at once.
        for _ in 0..4 {
            assert_eq!(l.check(t0, 500), Verdict::Pass);
        }
        assert_eq!(l.check(t0, 500), Verdict::Refuse(Over::Bytes));
        // A refused message costs nothing: a small one still fits the message bucket later.
        assert_eq!(l.check(t0 + Duration::from_millis(500), 500), Verdict::Pass);
    }

    #[test]
    fn a_largest_message_always_fits_a_full_byte_bucket() {
        let t0 = Instant::now();
        let mut l = Limited::new(CFG, 64 * 1024, t0);
        assert_eq!(l.check(t0, 64 * 1024), Verdict::Pass);
    }

    #[test]
    fn persistent_abuse_closes_and_occasional_overshoot_does_not() {
        let t0 = Instant::now();
        let mut l = Limited::new(CFG, 100, t0);
        let verdicts: Vec<Verdict> = (0..10 + STRIKE_LIMIT).map(|_| l.check(t0, 1)).collect();
        assert_eq!(verdicts.last(), Some(&Verdict::Close(Over::Messages)));
        assert!(verdicts[..verdicts.len() - 1]
            .iter()
            .all(|v| *v != Verdict::Close(Over::Messages)));
        // 10% over the sustained rate for a minute: refusals, never a close.
        let mut l = Limited::new(CFG, 100, t0);
        let mut t = t0;
        for _ in 0..6600 {
            t += Duration::from_micros(9090);
            assert_ne!(l.check(t, 1), Verdict::Close(Over::Messages));
        }
    }

    #[test]
    fn a_reconnecting_flooder_keeps_its_debt() {
        let t0 = Instant::now();
        let mut carry = Carryover::default();
        let mut l = Limited::new(CFG, 100, t0);
        let closed = (0..10 + STRIKE_LIMIT).map(|_| l.check(t0, 1)).last();
        assert_eq!(closed, Some(Verdict::Close(Over::Messages)));
        carry.put("mallory", l.0, t0);
        // A quiet session leaves nothing behind.
        let quiet = RateLimiter::new(t0);
        carry.put("alice", quiet, t0 + Duration::from_secs(1));
        assert_eq!(carry.len(), 1);
        // Reconnected at once: no fresh burst, and the refusals go on counting.
        let mut l = Limited(carry.take(&"mallory", t0).expect("in debt"), CFG, 100);
        assert_eq!(l.check(t0, 1), Verdict::Close(Over::Messages));
        // Once the window and the buckets are over, nothing is carried.
        carry.put("mallory", l.0, t0);
        assert!(carry.take(&"mallory", t0 + STRIKE_WINDOW).is_none());
        assert!(carry.is_empty());
    }

    #[test]
    fn carryover_is_bounded() {
        let t0 = Instant::now();
        let mut carry = Carryover::default();
        for i in 0..Carryover::<usize>::CAP + 10 {
            let mut l = Limited::new(CFG, 100, t0);
            l.check(t0, 1);
            carry.put(i, l.0, t0);
        }
        assert_eq!(carry.len(), Carryover::<usize>::CAP);
        // Later, the old ones are no longer in debt and make room.
        let later = t0 + Duration::from_secs(1);
        let mut l = Limited::new(CFG, 100, later);
        l.check(later, 1);
        carry.put(usize::MAX, l.0, later);
        assert_eq!(carry.len(), 1);
    }

    #[test]
    fn zero_turns_limits_off() {
        let t0 = Instant::now();
        let off = RateConfig {
            messages_per_sec: 0,
            ..CFG
        };
        let mut l = Limited::new(off, 100, t0);
        assert!((0..100_000).all(|_| l.check(t0, 1 << 20) == Verdict::Pass));
    }

    #[test]
    fn the_defaults_leave_the_benchmarks_alone() {
        // 500 sends + 500 acks per second for a minute (compare.sh's /ws path at 50,000 msg/s
        // over 100 connections), after a backlog of 3,000 acked at once.
        let t0 = Instant::now();
        let mut l = Limited::new(RateConfig::DEFAULT, 64 * 1024, t0);
        for _ in 0..3000 {
            assert_eq!(l.check(t0, 40), Verdict::Pass);
        }
        let mut t = t0;
        for _ in 0..60_000 {
            t += Duration::from_millis(1);
            assert_eq!(l.check(t, 200), Verdict::Pass);
        }
    }
}
