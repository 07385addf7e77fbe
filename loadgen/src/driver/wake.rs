//! How the loop waits for its next pass (the module docs' wake-ups): block in the poll, the
//! timer armed for the next send tick, or with `--read-at-ticks` sleep until that tick and then
//! take whatever readiness there is.

use std::io;
use std::time::Duration;

use crate::schedule::Nanos;

use super::{Driver, Pacing, Script};

/// Longest sleep of the loop: the progress counters are published at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(200);
/// Open loop with `--read-at-ticks`: the longest the loop sleeps without reading replies (they keep
/// their kernel receive time; this bounds how long they wait in socket buffers when no send is
/// due, and how late a reconnect's handshake is noticed).
const READ_EVERY: Nanos = 1_000_000;

/// How the loop waits for its next pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Block in the poll for at most this long (replies and the timer wake it).
    Poll(Duration),
    /// Sleep until this time, then take whatever readiness there is without blocking.
    Until(Nanos),
}

impl<S: Script> Driver<'_, S> {
    /// How to wait for the next pass: until the next due tick, a reconnect, the end of the
    /// window or the drain, and at most [`MAX_SLEEP`]. Blocking in the poll arms the timer.
    pub(super) fn wakeup(&mut self) -> io::Result<Wait> {
        if !self.ready.is_empty() {
            return Ok(Wait::Poll(Duration::ZERO));
        }
        let now = self.now();
        let until = if now < self.timing.end {
            self.timing.end
        } else {
            self.timing.drain_until
        };
        let until = self.sessions.next_due().map_or(until, |d| d.min(until));
        let until = until.min(now + MAX_SLEEP.as_nanos() as Nanos);
        let (Pacing::Open(s), true) = (&self.pacing, now < self.timing.end) else {
            return Ok(Wait::Poll(Duration::from_nanos(until.saturating_sub(now))));
        };
        let tick = s.next_due().map(|due| match self.timing.tick {
            0 => due,
            tick => due.div_ceil(tick) * tick,
        });
        if tick.is_some_and(|wake| wake <= now) {
            return Ok(Wait::Poll(Duration::ZERO));
        }
        if self.timing.read_at_ticks {
            let at = tick.map_or(until, |wake| wake.min(until));
            return Ok(Wait::Until(at.min(now + READ_EVERY)));
        }
        if let Some(wake) = tick.filter(|&wake| self.armed != Some(wake)) {
            self.timer.arm(Duration::from_nanos(wake - now))?;
            self.armed = Some(wake);
        }
        Ok(Wait::Poll(Duration::from_nanos(until.saturating_sub(now))))
    }
}
