//! Appends go out in batches: every append admitted during a loop turn joins the turn's batch,
//! and [`RedisEngine::flush`](crate::Engine::flush) sends it as one `FCALL hermod_append` (or
//! earlier, once the batch is full). A batch never waits for more appends: it leaves in the turn
//! that made it, so batching adds no latency, and the function call (and, per channel, the
//! epoch, length and expiry reads) is paid once per batch rather than once per message.
//!
//! A batch mixes channels (inboxes and rooms alike): on a single Redis any keys may share a
//! function call. Every key is declared, each channel's keys share its hash tag; on Redis
//! Cluster, batches would have to be split by hash slot. Redis applies a batch's messages in
//! order, each with its own dedupe; the reply holds one result per message, and each operation
//! completes on its own (a message whose keys are broken fails alone). A batch that fails as a
//! whole (connection lost, timeout) fails every operation in it `Unavailable`: the clients retry
//! with their cids, and dedupe answers the ids of those that were stored.

use std::time::Instant;

use hermod_core::redis::CommandError;
use hermod_core::resp::Value;

use super::gate::{Class, Queued};
use super::{ops, unavailable, Durability, RedisEngine, Sent};
use crate::engine::{EngineError, Op};

/// Most messages in one batch (bounds one function call's run time and reply).
const MAX_MESSAGES: usize = 64;
/// Most payload bytes in one batch (bounds the command's size).
const MAX_BYTES: usize = 256 * 1024;

/// The appends of the current loop turn, in arrival order.
#[derive(Debug, Default)]
pub struct Batch {
    /// The appends.
    appends: Vec<Queued>,
    /// Their payload bytes.
    bytes: usize,
}

impl Batch {
    /// Appends queued and not sent yet.
    pub fn len(&self) -> usize {
        self.appends.len()
    }

    /// Whether no append is queued.
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
    }
}

/// The payload size of an append (0 for anything else).
fn payload(q: &Queued) -> usize {
    match &q.op {
        Op::Append { data, .. } => data.get().len(),
        _ => 0,
    }
}

impl RedisEngine {
    /// Queues an admitted append into the turn's batch; a full batch is sent first.
    pub(super) fn queue_append(&mut self, q: Queued, now: Instant) {
        let bytes = payload(&q);
        let full = self.batch.appends.len() >= MAX_MESSAGES
            || self.batch.bytes.saturating_add(bytes) > MAX_BYTES;
        if full {
            let appends = std::mem::take(&mut self.batch.appends);
            self.batch.bytes = 0;
            self.send_batch(appends, now);
        }
        self.batch.appends.push(q);
        self.batch.bytes += bytes;
    }

    /// Sends the turn's batch (at the turn's flush). Failing a batch may let other operations of
    /// its channels through their gates, and they may queue more appends: repeated until none.
    pub(super) fn send_batch_now(&mut self, now: Instant) {
        while !self.batch.is_empty() {
            let appends = std::mem::take(&mut self.batch.appends);
            self.batch.bytes = 0;
            self.send_batch(appends, now);
            self.dispatch(now);
        }
    }

    /// Sends one batch as one FCALL; if the client refuses it, its appends fail at once.
    fn send_batch(&mut self, appends: Vec<Queued>, now: Instant) {
        if appends.is_empty() {
            return;
        }
        ops::appends(
            &mut self.args,
            &self.config.limits,
            &appends,
            self.config.publish,
        );
        match self.send_args(self.write_lane, now) {
            Some(tag) => {
                if self.config.durability == Durability::Replica {
                    self.unwaited.push(tag);
                }
                let sent = Sent::Appends {
                    appends,
                    wait: None,
                };
                self.track(tag, sent);
            }
            None => {
                for q in appends {
                    let err = EngineError::Unavailable("redis not connected".into());
                    self.finish_gated(q.token, &q.channel(), Class::Write, Err(err));
                }
            }
        }
    }

    /// A batch's reply: one result per append, each completed (or parked for its WAIT).
    pub(super) fn appends_reply(
        &mut self,
        tag: u64,
        appends: Vec<Queued>,
        wait: Option<u64>,
        result: Result<Value, CommandError>,
    ) {
        let results: Result<Vec<Value>, EngineError> = match result {
            Err(e) => Err(unavailable(&e)),
            Ok(value) => match value.error_message() {
                Some(message) => Err(EngineError::Unavailable(format!("redis: {message}"))),
                None => match value {
                    Value::Array(items) if items.len() == appends.len() => Ok(items),
                    _ => Err(EngineError::Unavailable(
                        "unexpected reply from redis (append)".into(),
                    )),
                },
            },
        };
        match results {
            Ok(items) => {
                for (q, item) in appends.into_iter().zip(items) {
                    let channel = q.channel();
                    let outcome = self.decode(&q, &channel, &item);
                    self.append_done(tag, q, wait, outcome);
                }
            }
            Err(e) => {
                for q in appends {
                    self.append_done(tag, q, wait, Err(e.clone()));
                }
            }
        }
    }

    /// One append of a batch answered: done, or (replica durability) parked until the WAIT
    /// sent after it answers; without one it cannot be confirmed and fails.
    fn append_done(
        &mut self,
        tag: u64,
        q: Queued,
        wait: Option<u64>,
        outcome: Result<crate::engine::Done, EngineError>,
    ) {
        let (channel, token) = (q.channel(), q.token);
        let replica = self.config.durability == Durability::Replica;
        if replica && outcome.is_ok() {
            if wait.is_some_and(|w| self.sent.contains_key(&w)) {
                self.parked
                    .entry(tag)
                    .or_default()
                    .push((token, channel, outcome));
                return;
            }
            let err = EngineError::Unavailable("write not confirmed by a replica".into());
            return self.finish_gated(token, &channel, Class::Write, Err(err));
        }
        self.finish_gated(token, &channel, Class::Write, outcome);
    }
}
