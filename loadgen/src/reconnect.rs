//! Sessions the server ends mid-run (`direct`, `room`): count every close by its code and, unless
//! `--no-reconnect`, dial the same user again (same URL, so the same user, device and token) after
//! a backoff. Hermod keeps a user's direct messages in its inbox and replays them on reconnect, so
//! without this every message stored while a receiver was away would be counted as lost.
//!
//! ```text
//! open --close frame / drop--> waiting --backoff due--> dialing --101--> open
//!                                 ^                        |
//!                                 `---- failed / timeout --'
//! ```
//!
//! The backoff is sans-io ([`Backoff`]); [`Sessions`] drives [`Conn`] attempts on the worker's
//! poll, under the connection's own token.

use std::collections::BTreeMap;

use mio::{Registry, Token};

use crate::conn::{Conn, Step, Ws};
use crate::fleet::ConnectPlan;
use crate::schedule::Nanos;

/// First delay before a reconnect.
pub const FIRST_DELAY: Nanos = 100_000_000;
/// Longest delay between reconnect attempts.
pub const MAX_DELAY: Nanos = 2_000_000_000;
/// A session that stayed open this long earns a fresh (short) backoff when it ends.
pub const STABLE: Nanos = 2_000_000_000;
/// The key of `closed_by_code` for connections that broke without a close frame.
pub const NO_CLOSE_FRAME: &str = "none";

/// Reconnect delays of one connection: `FIRST_DELAY`, doubling up to `MAX_DELAY`; reset once a
/// session has stayed open for `STABLE` (a server that closes every new session at once is not
/// hammered every 100 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay the next attempt waits.
    delay: Nanos,
    /// When the next attempt is due, while one is scheduled.
    due: Option<Nanos>,
    /// When the current session opened, while one is open.
    opened: Option<Nanos>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: FIRST_DELAY,
            due: None,
            opened: Some(0),
        }
    }
}

impl Backoff {
    /// The session ended or an attempt failed at `now`: schedules the next attempt; returns
    /// when it is due.
    pub fn schedule(&mut self, now: Nanos) -> Nanos {
        if let Some(opened) = self.opened.take() {
            if now.saturating_sub(opened) >= STABLE {
                self.delay = FIRST_DELAY;
            }
        }
        let due = now.saturating_add(self.delay);
        self.delay = self.delay.saturating_mul(2).min(MAX_DELAY);
        self.due = Some(due);
        due
    }

    /// When the next attempt is due, if one is scheduled.
    pub fn due(&self) -> Option<Nanos> {
        self.due
    }

    /// True (once) when the scheduled attempt is due at `now`.
    pub fn take_due(&mut self, now: Nanos) -> bool {
        match self.due {
            Some(due) if due <= now => {
                self.due = None;
                true
            }
            _ => false,
        }
    }

    /// A new session opened at `now`.
    pub fn on_opened(&mut self, now: Nanos) {
        self.opened = Some(now);
    }
}

/// One connection's reconnect state.
struct Slot {
    /// Global connection index: the user and its URL.
    index: u32,
    /// The delays.
    backoff: Backoff,
    /// The attempt in progress and when it started.
    dialing: Option<(Conn, Nanos)>,
    /// The code of the close frame received on the current session, if any.
    close_code: Option<u16>,
}

/// Close counts and, when enabled, the reconnects of one worker's connections (local index
/// `k` = mio token `k`).
pub struct Sessions {
    /// How to dial again; `None` with `--no-reconnect`.
    plan: Option<ConnectPlan>,
    /// Per local connection.
    slots: Vec<Slot>,
    /// Sessions reopened.
    pub reconnects: u64,
    /// Sessions ended, by close code (`"none"`: broke without a close frame).
    pub closed_by_code: BTreeMap<String, u64>,
    /// Reconnect attempts that failed or timed out.
    pub failed_attempts: u64,
}

impl Sessions {
    /// Sessions of the connections with global indexes `indexes`; reconnects with `plan`.
    pub fn new(indexes: &[u32], plan: Option<ConnectPlan>) -> Sessions {
        let slots = indexes
            .iter()
            .map(|&index| Slot {
                index,
                backoff: Backoff::default(),
                dialing: None,
                close_code: None,
            })
            .collect();
        Sessions {
            plan,
            slots,
            reconnects: 0,
            closed_by_code: BTreeMap::new(),
            failed_attempts: 0,
        }
    }

    /// A close frame (with `code`, if it had one) arrived on connection `k`.
    pub fn on_close_frame(&mut self, k: usize, code: Option<u16>) {
        if let Some(s) = self.slots.get_mut(k) {
            s.close_code = Some(code.unwrap_or(1005));
        }
    }

    /// Connection `k`'s session ended at `now`: counts it and schedules a reconnect.
    pub fn on_ended(&mut self, k: usize, now: Nanos) {
        let Some(s) = self.slots.get_mut(k) else {
            return;
        };
        let key = s
            .close_code
            .take()
            .map_or_else(|| NO_CLOSE_FRAME.to_string(), |c| c.to_string());
        *self.closed_by_code.entry(key).or_insert(0) += 1;
        if self.plan.is_some() {
            s.backoff.schedule(now);
        }
    }

    /// True while connection `k` is being dialed again: its events belong to the attempt.
    pub fn is_dialing(&self, k: usize) -> bool {
        self.slots.get(k).is_some_and(|s| s.dialing.is_some())
    }

    /// Starts the attempts due at `now` and fails those older than the connect timeout.
    pub fn dial_due(&mut self, now: Nanos, registry: &Registry) {
        let Some(plan) = &self.plan else {
            return;
        };
        let timeout = plan.timeout.as_nanos() as Nanos;
        for (k, s) in self.slots.iter_mut().enumerate() {
            if let Some((_, started)) = &s.dialing {
                if now.saturating_sub(*started) >= timeout {
                    s.dialing = None;
                    self.failed_attempts += 1;
                    s.backoff.schedule(now);
                }
                continue;
            }
            if !s.backoff.take_due(now) {
                continue;
            }
            let (url, addr, source) = plan.endpoint(s.index);
            match Conn::start(
                s.index,
                (addr, source),
                url,
                plan.config,
                registry,
                Token(k),
            ) {
                Ok(c) => s.dialing = Some((c, now)),
                Err(_) => {
                    self.failed_attempts += 1;
                    s.backoff.schedule(now);
                }
            }
        }
    }

    /// A readiness event for connection `k` while dialing: the new WebSocket once it opened.
    pub fn on_dial_event(&mut self, k: usize, now: Nanos) -> Option<Ws> {
        let s = self.slots.get_mut(k)?;
        let (conn, _) = s.dialing.as_mut()?;
        conn.on_event();
        match conn.advance() {
            Step::Pending => None,
            Step::Opened => {
                let ws = conn.take_ws();
                s.dialing = None;
                if ws.is_some() {
                    self.reconnects += 1;
                    s.backoff.on_opened(now);
                    s.close_code = None;
                } else {
                    self.failed_attempts += 1;
                    s.backoff.schedule(now);
                }
                ws
            }
            Step::Failed(_) => {
                s.dialing = None;
                self.failed_attempts += 1;
                s.backoff.schedule(now);
                None
            }
        }
    }

    /// True when no connection waits for a reconnect (always, without reconnects): the drain
    /// may not end while a user is away, its inbox is replayed only when it is back.
    pub fn settled(&self) -> bool {
        self.plan.is_none()
            || self
                .slots
                .iter()
                .all(|s| s.dialing.is_none() && s.backoff.due().is_none())
    }

    /// The earliest time something is due: a scheduled attempt, or the timeout of one running.
    pub fn next_due(&self) -> Option<Nanos> {
        let timeout = self.plan.as_ref()?.timeout.as_nanos() as Nanos;
        self.slots
            .iter()
            .filter_map(|s| match &s.dialing {
                Some((_, started)) => Some(started.saturating_add(timeout)),
                None => s.backoff.due(),
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut b = Backoff::default();
        // Opened at 0 and ended at once: no reset, first delay.
        assert_eq!(b.schedule(10 * MS), 110 * MS);
        assert!(!b.take_due(109 * MS));
        assert!(b.take_due(110 * MS));
        assert!(!b.take_due(110 * MS), "due only once");
        let mut now = 110 * MS;
        let mut delays = Vec::new();
        for _ in 0..6 {
            let due = b.schedule(now);
            delays.push((due - now) / MS);
            now = due;
        }
        assert_eq!(delays, [200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn a_stable_session_resets_the_backoff_a_short_one_does_not() {
        let mut b = Backoff::default();
        let mut now = 0;
        for _ in 0..4 {
            now = b.schedule(now);
        }
        // Reopened, closed again 1 s later: still backing off.
        b.on_opened(now);
        let due = b.schedule(now + 1_000 * MS);
        assert_eq!(due - (now + 1_000 * MS), 1_600 * MS);
        // Reopened and stable for 2 s: back to 100 ms.
        b.on_opened(due);
        let end = due + STABLE;
        assert_eq!(b.schedule(end), end + 100 * MS);
        assert_eq!(b.due(), Some(end + 100 * MS));
    }

    #[test]
    fn closes_are_counted_by_code() {
        let mut s = Sessions::new(&[7, 8], None);
        s.on_close_frame(0, Some(1008));
        s.on_ended(0, 0);
        s.on_ended(1, 0);
        s.on_close_frame(1, None);
        s.on_ended(1, 0);
        let got: Vec<_> = s
            .closed_by_code
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(got, [("1005", 1), ("1008", 1), ("none", 1)]);
        // Without a plan nothing is ever due.
        assert_eq!(s.next_due(), None);
        assert!(!s.is_dialing(0));
        assert!(s.settled());
    }
}
