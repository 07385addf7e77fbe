//! Per-session rate limits: one token bucket on messages and one on bytes, over everything a
//! gateway's `/ws` client sends (every op, acks, joins and leaves included; pings and pongs too), and the
//! rule that closes a session that keeps hammering past them.
//!
//! Sans-io: plain arithmetic on the session's own struct with a `now` passed in. Each bucket is
//! a GCRA (the "virtual scheduling" form of a token bucket): it keeps the theoretical arrival
//! time `tat` of the next unit; a message costing `cost` passes when `max(tat, now) + cost` stays
//! within `tolerance` (the burst expressed as time) of `now`. One comparison and one addition per
//! bucket per message: no allocation, no lock, no syscall.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

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
    /// The defaults: far above any honest client and every benchmark of docs/benchmarks.md (the
    /// busiest `/ws` one sends 200 messages and 200 acks per second per session).
    pub const DEFAULT: RateConfig = RateConfig {
        messages_per_sec: 500,
        burst: 1000,
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

/// One GCRA bucket.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// Theoretical arrival time of the next unit: `now` or earlier means the bucket is full.
    tat: Instant,
    /// The burst as time: how far ahead of `now` `tat` may run.
    tolerance: Duration,
}

impl Gcra {
    /// Whether `cost` fits; when it does it is taken.
    fn fits(&self, now: Instant, cost: Duration) -> Option<Instant> {
        let next = self.tat.max(now) + cost;
        (next <= now + self.tolerance).then_some(next)
    }
}

/// A session's two buckets and its refusal count.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// `None`: limits off.
    messages: Option<(Gcra, Duration)>,
    /// `None`: byte limit off. The cost of a byte in nanoseconds is `1e9 / bytes_per_sec`,
    /// computed per message as `len * 1e9 / bytes_per_sec` (one division).
    bytes: Option<(Gcra, u64)>,
    /// Refusals in the current window.
    strikes: u32,
    /// When the current strike window ends.
    window_end: Instant,
}

impl RateLimiter {
    /// Full buckets at `now`. `max_message` is the largest message a client may send: the byte
    /// bucket always holds at least one.
    pub fn new(config: RateConfig, max_message: usize, now: Instant) -> Self {
        let messages = (config.messages_per_sec > 0).then(|| {
            let interval = Duration::from_secs(1) / config.messages_per_sec;
            let tolerance = interval * config.burst.max(1);
            (
                Gcra {
                    tat: now,
                    tolerance,
                },
                interval,
            )
        });
        let bytes = (config.messages_per_sec > 0 && config.bytes_per_sec > 0).then(|| {
            let rate = config.bytes_per_sec;
            let largest = byte_cost(max_message, rate);
            let tolerance = BYTE_BURST_TIME.max(largest);
            (
                Gcra {
                    tat: now,
                    tolerance,
                },
                rate,
            )
        });
        RateLimiter {
            messages,
            bytes,
            strikes: 0,
            window_end: now,
        }
    }

    /// Charges one message of `len` bytes received at `now`.
    pub fn check(&mut self, now: Instant, len: usize) -> Verdict {
        let Some((msgs, interval)) = &mut self.messages else {
            return Verdict::Pass;
        };
        let Some(next_msg) = msgs.fits(now, *interval) else {
            return self.strike(now, Over::Messages);
        };
        if let Some((bytes, rate)) = &mut self.bytes {
            match bytes.fits(now, byte_cost(len, *rate)) {
                Some(next) => bytes.tat = next,
                None => return self.strike(now, Over::Bytes),
            }
        }
        msgs.tat = next_msg;
        Verdict::Pass
    }

    fn strike(&mut self, now: Instant, over: Over) -> Verdict {
        if now >= self.window_end {
            self.window_end = now + STRIKE_WINDOW;
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

/// The time `len` bytes take at `rate` bytes per second.
fn byte_cost(len: usize, rate: u64) -> Duration {
    let nanos = (len as u128 * 1_000_000_000) / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin
mod tests {
    use super::*;

    const CFG: RateConfig = RateConfig {
        messages_per_sec: 100,
        burst: 10,
        bytes_per_sec: 1000,
    };

    #[test]
    fn the_burst_passes_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(CFG, 100, t0);
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
        let mut l = RateLimiter::new(CFG, 100, t0);
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
        let mut l = RateLimiter::new(CFG, 64 * 1024, t0);
        assert_eq!(l.check(t0, 64 * 1024), Verdict::Pass);
    }

    #[test]
    fn persistent_abuse_closes_and_occasional_overshoot_does_not() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(CFG, 100, t0);
        let verdicts: Vec<Verdict> = (0..10 + STRIKE_LIMIT).map(|_| l.check(t0, 1)).collect();
        assert_eq!(verdicts.last(), Some(&Verdict::Close(Over::Messages)));
        assert!(verdicts[..verdicts.len() - 1]
            .iter()
            .all(|v| *v != Verdict::Close(Over::Messages)));
        // 10% over the sustained rate for a minute: refusals, never a close.
        let mut l = RateLimiter::new(CFG, 100, t0);
        let mut t = t0;
        for _ in 0..6600 {
            t += Duration::from_micros(9090);
            assert_ne!(l.check(t, 1), Verdict::Close(Over::Messages));
        }
    }

    #[test]
    fn zero_turns_limits_off() {
        let t0 = Instant::now();
        let off = RateConfig {
            messages_per_sec: 0,
            ..CFG
        };
        let mut l = RateLimiter::new(off, 100, t0);
        assert!((0..100_000).all(|_| l.check(t0, 1 << 20) == Verdict::Pass));
    }

    #[test]
    fn the_defaults_leave_the_benchmarks_alone() {
        // 200 sends + 200 acks per second for a minute, as benches/single-node.sh's /ws runs.
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateConfig::DEFAULT, 64 * 1024, t0);
        let mut t = t0;
        for _ in 0..24_000 {
            t += Duration::from_micros(2500);
            assert_eq!(l.check(t, 200), Verdict::Pass);
        }
    }
}
