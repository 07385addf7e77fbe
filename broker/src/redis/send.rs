//! The way out: operations let through their gate become commands on a lane. Reads and acks
//! are one FCALL each, sent at once; appends join the turn's batch (`batch.rs`); with replica
//! durability the turn's appends are followed by one WAIT. An operation released past its
//! deadline is failed instead of sent, and a read of a watched channel waits for its
//! subscription (`live.rs`).

use std::time::Instant;

use hermod_core::ids::MsgId;

use super::gate::Queued;
use super::ids::{ClientId, StreamId};
use super::{millis, ops, RedisEngine, Sent, READ_LANE};
use crate::engine::{Done, EngineError, Op, Page};
use crate::history::MAX_CURSORS_PER_INBOX;

impl RedisEngine {
    /// Sends the operations in `self.work` (already counted in flight by their gates), in order;
    /// iterative, as a refused send releases further ones.
    pub(super) fn dispatch(&mut self, now: Instant) {
        while !self.work.is_empty() {
            for q in std::mem::take(&mut self.work) {
                self.start(q, now);
            }
        }
    }

    /// Admits a new operation through its channel's gate and sends it if it may go.
    pub(super) fn admit(&mut self, q: Queued, now: Instant) {
        if let Some(q) = self.gates.admit(q) {
            self.start(q, now);
            self.dispatch(now);
        }
    }

    /// Sends an admitted operation (or completes it without Redis when nothing is to be read).
    fn start(&mut self, q: Queued, now: Instant) {
        if q.deadline <= now {
            // Released (by its gate, the setup, a subscription) too late to be sent.
            let err = EngineError::Unavailable("redis did not answer in time".into());
            return self.finish_gated(q.token, &q.channel(), q.class(), Err(err));
        }
        let Some(q) = self.park_read(q, now) else {
            return; // sent once its channel's subscription is in place (`live.rs`)
        };
        let (channel, class) = (q.channel(), q.class());
        if let Op::ReadRoom { since: None, .. } = q.op {
            let done = Done::Room {
                recovered: true,
                messages: Vec::new(),
                more: false,
            };
            return self.finish_gated(q.token, &channel, class, Ok(done));
        }
        let Some(lane) = self.build(&q) else {
            return self.queue_append(q, now);
        };
        let token = q.token;
        if self.send(lane, Sent::Op { q }, now) {
            return;
        }
        let err = EngineError::Unavailable("redis not connected".into());
        self.finish_gated(token, &channel, class, Err(err));
    }

    /// Builds the FCALL of a read or an ack into `self.args` and returns its lane; `None` for
    /// an append, which goes out in the turn's batch (`batch.rs`).
    fn build(&mut self, q: &Queued) -> Option<usize> {
        let limits = &self.config.limits;
        let a = &mut self.args;
        let lane = match &q.op {
            Op::Append { .. } => return None,
            Op::ReadInbox {
                user,
                device,
                after,
                page,
            } => {
                ops::fcall(a, "hermod_read_inbox", &q.channel(), 1);
                ops::cursors_key(a, user).arg(device.as_str());
                read_args(
                    a,
                    after.as_ref(),
                    "",
                    *page,
                    ops::max_len(limits, &q.channel()),
                );
                READ_LANE
            }
            Op::Ack { user, device, id } => {
                // Parsed before admission: an unparsable id never gets here.
                let id = ClientId::parse(id).unwrap_or(ClientId {
                    epoch: 0,
                    stream: StreamId::default(),
                });
                ops::fcall(a, "hermod_ack", &q.channel(), 1);
                ops::cursors_key(a, user).arg(device.as_str());
                a.fmt(format_args!("{}", id.epoch))
                    .fmt(format_args!("{}", id.stream));
                a.fmt(format_args!("{}", millis(limits.inbox_max_age).max(1)))
                    .fmt(format_args!("{MAX_CURSORS_PER_INBOX}"));
                self.write_lane
            }
            Op::ReadRoom { since, page, .. } => {
                ops::fcall(a, "hermod_read_room", &q.channel(), 0);
                read_args(
                    a,
                    since.as_ref(),
                    "0-0",
                    *page,
                    ops::max_len(limits, &q.channel()),
                );
                READ_LANE
            }
        };
        Some(lane)
    }

    /// Sends the turn's WAIT for the replica appends sent in it.
    pub(super) fn send_wait(&mut self, now: Instant) {
        if self.unwaited.is_empty() {
            return;
        }
        let members = std::mem::take(&mut self.unwaited);
        let timeout = millis(self.config.wait_timeout).max(1);
        self.args
            .clear()
            .arg("WAIT")
            .arg("1")
            .fmt(format_args!("{timeout}"));
        let live: Vec<u64> = members
            .into_iter()
            .filter(|t| self.sent.contains_key(t))
            .collect();
        if !self.send(self.write_lane, Sent::Wait(live.clone()), now) {
            // Without a WAIT they cannot be confirmed: their replies complete them Unavailable.
            return;
        }
        let wait = self.next_tag;
        for t in live {
            if let Some(Sent::Appends { wait: w, .. }) = self.sent.get_mut(&t) {
                *w = Some(wait);
            }
        }
    }
}

/// A read's position (`epoch stream`, or `"" none` without one this engine issued), count and
/// length limit.
fn read_args(a: &mut ops::Args, position: Option<&MsgId>, none: &str, page: Page, max_len: usize) {
    match position.and_then(ClientId::parse) {
        Some(id) => a
            .fmt(format_args!("{}", id.epoch))
            .fmt(format_args!("{}", id.stream)),
        None => a.arg("").arg(none),
    };
    a.fmt(format_args!("{}", ops::read_count(page)))
        .fmt(format_args!("{max_len}"));
}
