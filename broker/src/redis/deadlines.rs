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
//! completed `Unavailable` ([`RedisEngine::expire_sent`]). Their gate slots stay taken until
//! the command is answered, times out in the client or its connection is lost, so a read and
//! a write of one channel are never at Redis together; the operations waiting behind them fail
//! by their own deadline in the gate. A replica append answered by Redis but still waiting for
//! its WAIT stays filed under its batch's tag, so it too is failed by then (its slot is freed
//! by the WAIT's answer). An operation released past its deadline is not sent at all
//! (`RedisEngine::start`). Completions made at the turn's flush make
//! `next_deadline` answer "now", so they are routed at once, not a sweep later.
//!
//! The index is a min-heap with lazy deletion: commands answered in time are not looked for;
//! their entries are dropped when they come up, or all at once when dead entries outnumber
//! the live ones (amortised: no allocation per command).

use std::cmp::Reverse;
use std::time::Instant;

use super::gate::{Class, Queued};
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
    /// its deadline. Their gate slots stay taken until the command is answered (or times out,
    /// or its connection is lost): a read and a write of one channel are never at Redis together.
    pub(super) fn expire_sent(&mut self, now: Instant) {
        while let Some(&Reverse((at, tag))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let slots = match self.sent.remove(&tag) {
                Some(Sent::Op { q }) => {
                    self.expire_op(&q);
                    vec![(q.channel(), q.class())]
                }
                Some(Sent::Appends { appends, .. }) => appends
                    .iter()
                    .map(|q| {
                        self.expire_op(q);
                        (q.channel(), Class::Write)
                    })
                    .collect(),
                Some(other) => {
                    self.sent.insert(tag, other);
                    Vec::new()
                }
                None => Vec::new(),
            };
            if !slots.is_empty() {
                tracing::debug!(tag, "redis command past its operations' deadline");
                self.sent.insert(tag, Sent::Expired(slots));
            }
            if let Some(parked) = self.parked.remove(&tag) {
                let mut slots = Vec::with_capacity(parked.len());
                for (token, channel, _) in parked {
                    let err = "write not confirmed by a replica in time";
                    self.finish(token, Err(EngineError::Unavailable(err.into())));
                    slots.push(channel);
                }
                self.expired_parked.insert(tag, slots);
            }
        }
    }

    fn expire_op(&mut self, q: &Queued) {
        let err = EngineError::Unavailable("redis did not answer in time".into());
        self.finish(q.token, Err(err));
    }
}
