//! The engine's side of replies and client events: setup (library load, rollback checks),
//! operation replies, WAIT batches, and what a fresh append leaves behind for later (the
//! rollback check's tip, age trimming).

use std::time::Instant;

use hermod_core::redis::{ClientEvent, CommandError};
use hermod_core::resp::Value;

use super::gate::{Class, Queued};
use super::ids::StreamId;
use super::{
    millis, ops, unavailable, Phase, RedisEngine, Sent, Trim, LIBRARY, MAX_TIPS, MAX_TRIMMED,
    RETRY_SETUP, ROLLBACK_HORIZON_MS,
};
use crate::engine::{Channel, Done, EngineError, Op};

impl RedisEngine {
    /// Drains the client's events.
    pub(super) fn pump(&mut self, now: Instant) {
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Reply { tag, result } => {
                    self.on_reply(tag, result, now);
                    self.dispatch(now);
                }
                ClientEvent::Up { master } => {
                    tracing::info!(%master, "redis up: loading the function library");
                    self.start_setup(now);
                    self.resubscribe(now);
                }
                ClientEvent::Down { reason } => {
                    // One per outage, and one when the first attempt fails (e.g. a wrong
                    // password): the operator sees why it is not ready.
                    tracing::warn!(%reason, "redis down");
                    self.phase = Phase::Down;
                    self.fail_waiting("redis not connected");
                    self.subscriptions_lost();
                }
                ClientEvent::MasterChanged { from, to } => {
                    tracing::warn!(%from, %to, "redis master changed");
                }
                ClientEvent::Push { lane, value } => self.on_push(lane, &value),
            }
        }
    }

    /// Fails every held and gate-waiting operation.
    pub(super) fn fail_waiting(&mut self, why: &str) {
        let mut failed: Vec<Queued> = self.held.drain(..).collect();
        self.gates.drain_waiting(&mut failed);
        for q in failed {
            self.finish(q.token, Err(EngineError::Unavailable(why.into())));
        }
    }

    /// Loads the library and sends the rollback checks; operations are held until all answered.
    pub(super) fn start_setup(&mut self, now: Instant) {
        self.args
            .clear()
            .arg("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(LIBRARY);
        if !self.send(self.write_lane, Sent::Load, now) {
            self.phase = Phase::Retry {
                at: now + RETRY_SETUP,
            };
            return;
        }
        let mut outstanding = 1;
        let tips: Vec<(Channel, StreamId)> = self
            .tips
            .iter()
            .map(|(c, (t, _))| (c.clone(), *t))
            .collect();
        for (channel, tip) in tips {
            ops::fcall(&mut self.args, "hermod_check", &channel, 0).fmt(format_args!("{tip}"));
            if self.send(self.write_lane, Sent::Check(channel), now) {
                outstanding += 1;
            }
        }
        self.phase = Phase::Loading { outstanding };
    }

    /// One setup reply in; the last one makes the engine ready.
    fn setup_reply(&mut self, now: Instant) {
        let Phase::Loading { outstanding } = self.phase else {
            return;
        };
        let outstanding = outstanding.saturating_sub(1);
        self.phase = Phase::Loading { outstanding };
        if outstanding == 0 {
            tracing::info!(held = self.held.len(), "redis engine ready");
            self.phase = Phase::Ready;
            while let Some(q) = self.held.pop_front() {
                self.admit(q, now);
            }
        }
    }

    pub(super) fn on_reply(&mut self, tag: u64, result: Result<Value, CommandError>, now: Instant) {
        let Some(sent) = self.sent.remove(&tag) else {
            return;
        };
        match sent {
            Sent::Op { q } => self.op_reply(q, result),
            Sent::Appends { appends, wait } => self.appends_reply(tag, appends, wait, result),
            Sent::Load => match result {
                Ok(_) => self.setup_reply(now),
                Err(e) => {
                    tracing::error!(error = %e, "loading the redis function library failed");
                    self.phase = Phase::Retry {
                        at: now + RETRY_SETUP,
                    };
                    self.fail_waiting("redis function library not loaded");
                }
            },
            Sent::Check(channel) => {
                match &result {
                    Ok(v) if v.as_int() == Some(1) => {
                        tracing::warn!(?channel, "stream rolled back by a failover: new epoch");
                        self.tips.remove(&channel);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(?channel, error = %e, "rollback check failed"),
                }
                self.setup_reply(now);
            }
            Sent::Trim => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "age trim failed");
                }
            }
            Sent::Wait(members) => self.wait_reply(&members, &result),
            Sent::Subscribe(channel) => {
                let ok = matches!(&result, Ok(v) if v.error_message().is_none());
                if !ok {
                    tracing::warn!(?channel, ?result, "redis SUBSCRIBE failed");
                }
                self.subscribe_reply(tag, channel, ok, now);
            }
            Sent::Unsubscribe => {}
            Sent::Expired(slots) => {
                for (channel, class) in slots {
                    self.gates.finish(&channel, class, &mut self.work);
                }
            }
            Sent::Tip(channel) => match &result {
                Ok(value) => self.tip_reply(&channel, value),
                Err(e) => tracing::debug!(?channel, error = %e, "tip read failed"),
            },
        }
    }

    /// A read's or an ack's reply.
    fn op_reply(&mut self, q: Queued, result: Result<Value, CommandError>) {
        let (channel, class, token) = (q.channel(), q.class(), q.token);
        let outcome = match result {
            Ok(value) => self.decode(&q, &channel, &value),
            Err(e) => Err(unavailable(&e)),
        };
        self.finish_gated(token, &channel, class, outcome);
    }

    pub(super) fn decode(
        &mut self,
        q: &Queued,
        channel: &Channel,
        value: &Value,
    ) -> Result<Done, EngineError> {
        if let Some(message) = value.error_message() {
            return Err(EngineError::Unavailable(format!("redis: {message}")));
        }
        match &q.op {
            Op::Append { from, data, .. } => {
                let (mut done, stream) = ops::appended(value, channel, from, data, q.now_ms)?;
                if let Some(stream) = stream {
                    self.note_append(channel, stream, q.now_ms);
                    if let (true, Done::Appended { fresh, .. }) = (self.config.publish, &mut done) {
                        // Stored now: delivered live through the subscription, in order with
                        // everyone's. (A duplicate's stored entry is still handed back: the
                        // broker repeats it, at-least-once, as without `publish`.)
                        *fresh = None;
                    }
                }
                Ok(done)
            }
            Op::ReadInbox { page, .. } => ops::inbox_page(value, channel, *page),
            Op::Ack { .. } => ops::acked(value),
            Op::ReadRoom { page, .. } => ops::room_page(value, channel, *page),
        }
    }

    /// Remembers a fresh append for the rollback check and age trimming.
    fn note_append(&mut self, channel: &Channel, stream: StreamId, now_ms: u64) {
        if self.tips.len() >= MAX_TIPS && !self.tips.contains_key(channel) {
            let horizon = now_ms.saturating_sub(ROLLBACK_HORIZON_MS / 2);
            self.tips.retain(|_, (_, at)| *at >= horizon);
            if self.tips.len() >= MAX_TIPS {
                tracing::warn!("too many channels written recently: rollback tracking reset");
                self.tips.clear();
            }
        }
        let tip = self.tips.entry(channel.clone()).or_insert((stream, now_ms));
        *tip = (tip.0.max(stream), now_ms);
        if self.trims.len() < MAX_TRIMMED || self.trims.contains_key(channel) {
            let interval = self.trim_interval(channel);
            let t = self.trims.entry(channel.clone()).or_insert(Trim {
                last_ms: now_ms,
                next_ms: now_ms.saturating_add(interval),
            });
            t.last_ms = t.last_ms.max(now_ms);
        }
    }

    pub(super) fn max_age_ms(&self, channel: &Channel) -> u64 {
        millis(match channel {
            Channel::Inbox(_) => self.config.limits.inbox_max_age,
            Channel::Room(_) => self.config.limits.room_max_age,
        })
    }

    /// How often a channel is trimmed by age: a sixtieth of its age limit, at least each second.
    pub(super) fn trim_interval(&self, channel: &Channel) -> u64 {
        (self.max_age_ms(channel) / 60).max(1_000)
    }

    fn wait_reply(&mut self, members: &[u64], result: &Result<Value, CommandError>) {
        let confirmed = matches!(result, Ok(v) if v.as_int().is_some_and(|n| n >= 1));
        if !confirmed {
            tracing::warn!(
                ?result,
                appends = members.len(),
                "no replica confirmed the writes in time"
            );
        }
        for tag in members {
            for channel in self.expired_parked.remove(tag).unwrap_or_default() {
                self.gates.finish(&channel, Class::Write, &mut self.work);
            }
            for (token, channel, outcome) in self.parked.remove(tag).unwrap_or_default() {
                let outcome = match outcome {
                    Ok(_) if !confirmed => Err(EngineError::Unavailable(
                        "write not confirmed by a replica in time".into(),
                    )),
                    other => other,
                };
                self.finish_gated(token, &channel, Class::Write, outcome);
            }
        }
    }
}
