//! The [`ClientCore`]'s side of Sentinel discovery: it runs the sans-io
//! [`Discovery`](crate::redis::sentinel::Discovery) machine's actions on the sentinel
//! connection and turns its answers into lane (re)connects.

use std::time::Instant;

use super::{ClientCore, Phase, SentinelConn};
use crate::redis::sentinel::{Action as Found, Discovery};
use crate::redis::ClientEvent;
use crate::resp::{RespConn, RespEvent};

impl ClientCore {
    /// The sentinel connection is established.
    pub(super) fn sentinel_connected(&mut self, now: Instant) {
        let Some(s) = self.sentinel.as_mut() else {
            return;
        };
        if !s.connected {
            s.connected = true;
            s.since = now;
            self.with_discovery(Discovery::handle_connected);
            self.run_discovery(now);
        }
    }

    /// Bytes arrived on the sentinel connection.
    pub(super) fn sentinel_input(&mut self, data: &[u8], now: Instant) {
        let Some(s) = self.sentinel.as_mut() else {
            return;
        };
        let conn = s.conn;
        if let Err(e) = s.resp.handle_input(data) {
            return self.sentinel_lost(&e.to_string(), now);
        }
        // Feed events one by one: an answer may close this connection.
        while let Some(event) = self
            .sentinel
            .as_mut()
            .filter(|s| s.conn == conn)
            .and_then(|s| s.resp.poll_event())
        {
            if let (RespEvent::Reply { .. }, Some(s)) = (&event, self.sentinel.as_mut()) {
                s.since = now;
            }
            self.with_discovery(|d| match event {
                RespEvent::Reply { value, .. } => d.handle_reply(value),
                RespEvent::Push(value) => d.handle_push(value),
            });
            self.run_discovery(now);
        }
    }

    /// Sentinel answer timeouts and watch retries.
    pub(super) fn tick_sentinel(&mut self, now: Instant) {
        if self.sentinel_deadline().is_some_and(|at| now >= at) {
            self.sentinel_lost("no answer in time", now);
        }
        if self.sentinel_retry.is_some_and(|at| now >= at) {
            self.sentinel_retry = None;
            self.with_discovery(Discovery::resolve);
            self.run_discovery(now);
        }
    }

    /// When the sentinel connection's awaited connect or answer is overdue.
    pub(super) fn sentinel_deadline(&self) -> Option<Instant> {
        let s = self.sentinel.as_ref()?;
        let waiting = !s.connected || s.resp.in_flight() > 0;
        waiting.then(|| s.since + self.config.connect_timeout)
    }

    /// The sentinel connection failed: close it and let the machine move on.
    pub(super) fn sentinel_lost(&mut self, reason: &str, now: Instant) {
        self.close_sentinel();
        self.with_discovery(|d| d.handle_closed(reason));
        self.run_discovery(now);
    }

    fn close_sentinel(&mut self) {
        if let Some(s) = self.sentinel.take() {
            self.actions
                .push_back(super::Action::Close { conn: s.conn });
        }
    }

    /// Carries out the machine's actions until it has none.
    pub(super) fn run_discovery(&mut self, now: Instant) {
        while let Some(action) = self.discovery.as_mut().and_then(Discovery::poll_action) {
            match action {
                Found::Connect { addr } => self.open_sentinel(&addr, now),
                Found::Send(args) => self.send_sentinel(&args, now),
                Found::Close => self.close_sentinel(),
                Found::Resolved { master } => self.on_resolved(master, now),
                Found::Failed(error) => {
                    if self.phase == Phase::Resolving {
                        self.fail(error.to_string(), now);
                    } else {
                        // The lanes are fine; only the watch is gone. Retry it later.
                        self.sentinel_retry = Some(now + self.config.backoff_max);
                    }
                }
                Found::SwitchMaster { to, .. } => {
                    if self.master.as_deref() != Some(to.as_str()) {
                        self.switch_to(&to, now);
                    }
                }
            }
        }
    }

    /// The sentinels named the master.
    fn on_resolved(&mut self, master: String, now: Instant) {
        match &self.phase {
            Phase::Resolving => self.connect_lanes(&master, now),
            Phase::Up { master: current }
            | Phase::Connecting {
                master: current, ..
            } if *current != master => self.switch_to(&master, now),
            _ => {}
        }
    }

    /// Moves every lane to `master` at once (no backoff): a failover.
    fn switch_to(&mut self, master: &str, now: Instant) {
        let from = self.master.replace(master.to_owned());
        if let Some(from) = from.filter(|from| from != master) {
            self.stats.failovers_seen += 1;
            self.events.push_back(ClientEvent::MasterChanged {
                from,
                to: master.to_owned(),
            });
        }
        self.teardown(&format!("master moved to {master}"));
        self.connect_lanes(master, now);
    }

    fn open_sentinel(&mut self, addr: &str, now: Instant) {
        self.close_sentinel();
        let conn = self.open(addr);
        self.sentinel = Some(SentinelConn {
            conn,
            resp: RespConn::new(self.config.limits.clone()),
            connected: false,
            next_tag: 0,
            since: now,
        });
    }

    fn send_sentinel(&mut self, args: &[Vec<u8>], now: Instant) {
        let Some(s) = self.sentinel.as_mut() else {
            self.with_discovery(|d| d.handle_closed("not connected"));
            return;
        };
        if s.resp.in_flight() == 0 {
            s.since = now;
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        s.resp.queue(&refs, s.next_tag);
        s.next_tag = s.next_tag.wrapping_add(1);
    }

    fn with_discovery(&mut self, f: impl FnOnce(&mut Discovery)) {
        if let Some(d) = self.discovery.as_mut() {
            f(d);
        }
    }
}
