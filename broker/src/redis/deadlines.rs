//! Every operation the engine accepted completes within the command timeout of its submit,
//! whatever the phase, gate, batch or WAIT it waits in.
//!
//! An operation is dated at `submit` (`Queued::deadline` = submit + command timeout). Held
//! operations (setup in progress), gate-waiting ones and reads parked behind a subscription
//! are failed by their own deadline where they wait. Once sent, the client's own timeout runs
//! from the *send*, which may be late: an operation let through its gate (or released by the
//! setup, or by a subscription) just before its deadline would get a whole new timeout. So the
//! engine keeps its own index: every command carrying operations is filed under the earliest
//! deadline of its operations ([`RedisEngine::track`]), and at each tick the ones past it are
//! completed `Unavailable` as if timed out ([`RedisEngine::expire_sent`]); the late reply, if
//! any, finds nothing and is dropped. A replica append answered by Redis but still waiting for
//! its WAIT stays filed under its batch's tag, so it too is failed by then.
//!
//! The index is a min-heap with lazy deletion: commands answered in time are not looked for;
//! their entries are dropped when they come up, or all at once when dead entries outnumber
//! the live ones (amortised: no allocation per command).

use std::cmp::Reverse;
use std::time::Instant;

use hermod_core::redis::CommandError;

use super::gate::Class;
use super::{RedisEngine, Sent};
use crate::engine::EngineError;

/// Dead entries tolerated in the index beyond twice the live commands.
const SLACK: usize = 1024;

impl Sent {
    /// The earliest deadline of the operations the command carries.
    fn deadline(&self) -> Option<Instant> {
        match self {
            Sent::Op { q } => Some(q.deadline),
            Sent::Appends { appends, .. } => appends.iter().map(|q| q.deadline).min(),
            _ => None,
        }
    }
}

impl RedisEngine {
    /// Records a command sent under `tag`, filed under its operations' deadline.
    pub(super) fn track(&mut self, tag: u64, sent: Sent) {
        if let Some(at) = sent.deadline() {
            let live = self.sent.len() + self.parked.len();
            if self.deadlines.len() > 2 * live + SLACK {
                let (sent, parked) = (&self.sent, &self.parked);
                self.deadlines
                    .retain(|Reverse((_, t))| sent.contains_key(t) || parked.contains_key(t));
            }
            self.deadlines.push(Reverse((at, tag)));
        }
        self.sent.insert(tag, sent);
    }

    /// Completes `Unavailable` every operation whose command (or WAIT) is still unanswered at
    /// its deadline.
    pub(super) fn expire_sent(&mut self, now: Instant) {
        while let Some(&Reverse((at, tag))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self.sent.contains_key(&tag) {
                tracing::debug!(tag, "redis command past its operations' deadline");
                self.on_reply(tag, Err(CommandError::Timeout), now);
            }
            for (token, channel, _) in self.parked.remove(&tag).unwrap_or_default() {
                let err =
                    EngineError::Unavailable("write not confirmed by a replica in time".into());
                self.finish_gated(token, &channel, Class::Write, Err(err));
            }
        }
        self.dispatch(now);
    }
}
