//! The [`ClientCore`]'s lanes: handshake (`HELLO 3 [AUTH]`, `SELECT`, `ROLE`), replies to user
//! commands, timeouts and stall detection.

use std::collections::VecDeque;
use std::time::Instant;

use super::{ClientCore, LaneState, Phase, Step, STALL_FACTOR};
use crate::redis::{ClientEvent, CommandError};
use crate::resp::{RespEvent, Value};

impl ClientCore {
    /// Bytes arrived on lane `i`.
    pub(super) fn lane_input(&mut self, i: usize, data: &[u8], now: Instant) {
        let Some(lane) = self.lanes.get_mut(i) else {
            return;
        };
        if let Err(e) = lane.resp.handle_input(data) {
            let reason = format!("{}: {e}", self.master_name());
            return self.fail(reason, now);
        }
        if !data.is_empty() {
            lane.last_progress = now;
        }
        if let Err(reason) = self.drain_lane(i, now) {
            self.fail(reason, now);
        }
    }

    /// Queues `HELLO 3 [AUTH]`, `SELECT` (db != 0) and `ROLE` on lane `i`.
    pub(super) fn handshake_commands(&mut self, i: usize) -> VecDeque<Step> {
        let mut steps = VecDeque::new();
        let config = &self.config;
        let Some(lane) = self.lanes.get_mut(i) else {
            return steps;
        };
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = &config.password {
            let user = config.username.as_deref().unwrap_or("default");
            hello.extend([&b"AUTH"[..], user.as_bytes(), password.expose().as_bytes()]);
        }
        hello.extend([&b"SETNAME"[..], b"hermod"]);
        lane.resp.queue(&hello, 0);
        steps.push_back(Step::Hello);
        if config.db != 0 {
            let db = config.db.to_string();
            lane.resp.queue(&[b"SELECT", db.as_bytes()], 0);
            steps.push_back(Step::Select);
        }
        lane.resp.queue(&[b"ROLE"], 0);
        steps.push_back(Step::Role);
        steps
    }

    /// Handles every decoded event of lane `i`; `Err` when the lane must go.
    fn drain_lane(&mut self, i: usize, now: Instant) -> Result<(), String> {
        while let Some(event) = self.lanes.get_mut(i).and_then(|l| l.resp.poll_event()) {
            let (tag, value) = match event {
                RespEvent::Reply { tag, value } => (tag, value),
                RespEvent::Push(value) => {
                    self.events.push_back(ClientEvent::Push { lane: i, value });
                    continue;
                }
            };
            let Some(lane) = self.lanes.get_mut(i) else {
                return Ok(());
            };
            match &mut lane.state {
                LaneState::Ready => self.user_reply(i, tag, value, now),
                LaneState::Handshake(steps) => {
                    let step = steps.pop_front();
                    let done = steps.is_empty();
                    self.handshake_reply(step, value)?;
                    if done {
                        if let Some(lane) = self.lanes.get_mut(i) {
                            lane.state = LaneState::Ready;
                        }
                        self.maybe_up();
                    }
                }
                LaneState::Connecting => return Err("reply before connect".into()),
            }
        }
        Ok(())
    }

    /// Checks one handshake reply.
    fn handshake_reply(&mut self, step: Option<Step>, value: Value) -> Result<(), String> {
        let master = self.master_name();
        match (step, value.error_message()) {
            (Some(Step::Hello), Some(msg)) => {
                Err(format!("{master}: HELLO 3 / AUTH refused: {msg}"))
            }
            (Some(Step::Select), Some(msg)) => Err(format!(
                "{master}: SELECT {} refused: {msg}",
                self.config.db
            )),
            (Some(Step::Role), Some(msg)) => Err(format!("{master}: ROLE refused: {msg}")),
            (Some(Step::Role), None) => {
                let role = value
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(Value::as_str);
                match role {
                    Some("master") => Ok(()),
                    other => Err(format!(
                        "{master}: ROLE says {}, not master",
                        other.unwrap_or("?")
                    )),
                }
            }
            (Some(_), None) => Ok(()),
            (None, _) => Err("unexpected handshake reply".into()),
        }
    }

    /// A user command's reply.
    fn user_reply(&mut self, i: usize, tag: u64, value: Value, now: Instant) {
        let Some(lane) = self.lanes.get_mut(i) else {
            return;
        };
        let sent = match lane.sent.front() {
            Some((front, sent)) if *front == tag => {
                let sent = *sent;
                lane.sent.pop_front();
                Some(sent)
            }
            _ => lane
                .sent
                .iter()
                .position(|(t, _)| *t == tag)
                .and_then(|pos| lane.sent.remove(pos))
                .map(|(_, sent)| sent),
        };
        if let Some(sent) = sent {
            let rtt =
                u64::try_from(now.saturating_duration_since(sent).as_micros()).unwrap_or(u64::MAX);
            self.stats.rtt_sum_us = self.stats.rtt_sum_us.saturating_add(rtt);
            self.stats.rtt_max_us = self.stats.rtt_max_us.max(rtt);
        }
        self.stats.round_trips += 1;
        let result = match value {
            Value::Error(msg) => Err(CommandError::Server(
                String::from_utf8_lossy(&msg).into_owned(),
            )),
            value => Ok(value),
        };
        if let Err(CommandError::Server(msg)) = &result {
            if msg.starts_with("READONLY") && self.discovery.is_some() {
                // We write to a replica: the master moved. Re-resolve at the next tick.
                self.sentinel_retry = Some(now);
            }
        }
        self.events.push_back(ClientEvent::Reply { tag, result });
    }

    /// Goes up once every lane is ready.
    fn maybe_up(&mut self) {
        let all_ready = self
            .lanes
            .iter()
            .all(|l| matches!(l.state, LaneState::Ready));
        if let (true, Phase::Connecting { master, .. }) = (all_ready, &self.phase) {
            let master = master.clone();
            self.attempts = 0;
            self.last_down = None;
            self.down_reported = false;
            self.events.push_back(ClientEvent::Up {
                master: master.clone(),
            });
            self.phase = Phase::Up { master };
        }
    }

    /// Fails commands older than the timeout; their late replies will be discarded.
    pub(super) fn expire_commands(&mut self, now: Instant) {
        let timeout = self.config.command_timeout;
        for lane in &mut self.lanes {
            while let Some(&(tag, sent)) = lane.sent.front() {
                if now < sent + timeout {
                    break;
                }
                lane.sent.pop_front();
                lane.resp.abandon(tag);
                self.stats.timeouts += 1;
                self.events.push_back(ClientEvent::Reply {
                    tag,
                    result: Err(CommandError::Timeout),
                });
            }
        }
    }

    /// A lane that has been silent too long while replies are due.
    pub(super) fn stalled_lane(&self, now: Instant) -> Option<String> {
        let limit = self.config.command_timeout * STALL_FACTOR;
        self.lanes
            .iter()
            .any(|l| l.resp.in_flight() > 0 && now >= l.last_progress + limit)
            .then(|| format!("{}: no reply for {limit:?}", self.master_name()))
    }
}
