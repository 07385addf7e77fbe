//! The [`RedisClient`]'s side of Sentinel discovery: it runs the sans-io
//! [`Discovery`](super::sentinel::Discovery) machine's actions on a real connection and turns
//! its answers into lane (re)connects.

use std::time::Instant;

use mio::event::Event;
use mio::Registry;

use super::client::{Phase, RedisClient, SentinelConn};
use super::conn::Conn;
use super::sentinel::Action;
use super::ClientEvent;
use crate::resp::RespEvent;

/// Token slot of the sentinel connection (after the lanes').
const SENTINEL_SLOT: usize = 16;

impl RedisClient {
    /// The sentinel connection's socket is ready.
    pub(super) fn on_sentinel_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        let Some(s) = self.sentinel.as_mut() else {
            return;
        };
        let token = s.conn.token;
        if !s.conn.connected {
            match s.conn.check_connected() {
                Ok(true) => {
                    s.since = now;
                    self.with_discovery(|d| d.handle_connected());
                    self.run_discovery(registry, now);
                }
                Ok(false) => return,
                Err(e) => return self.sentinel_lost(registry, &e.to_string(), now),
            }
        }
        let Some(s) = self.sentinel.as_mut().filter(|s| s.conn.token == token) else {
            return;
        };
        if event.is_writable() {
            s.conn.on_writable();
        }
        if let Err(reason) = s.conn.read(&mut self.scratch) {
            return self.sentinel_lost(registry, &reason, now);
        }
        // Feed events one by one: an answer may close this connection.
        while let Some(event) = self
            .sentinel
            .as_mut()
            .filter(|s| s.conn.token == token)
            .and_then(|s| s.conn.resp.poll_event())
        {
            if let (RespEvent::Reply { .. }, Some(s)) = (&event, self.sentinel.as_mut()) {
                s.since = now;
            }
            self.with_discovery(|d| match event {
                RespEvent::Reply { value, .. } => d.handle_reply(value),
                RespEvent::Push(value) => d.handle_push(value),
            });
            self.run_discovery(registry, now);
        }
        let failed = self
            .sentinel
            .as_mut()
            .filter(|s| s.conn.token == token)
            .and_then(|s| s.conn.flush().err());
        if let Some(reason) = failed {
            self.sentinel_lost(registry, &reason, now);
        }
    }

    /// Sentinel answer timeouts and watch retries.
    pub(super) fn tick_sentinel(&mut self, registry: &Registry, now: Instant) {
        if self.sentinel_deadline().is_some_and(|at| now >= at) {
            self.sentinel_lost(registry, "no answer in time", now);
        }
        if self.sentinel_retry.is_some_and(|at| now >= at) {
            self.sentinel_retry = None;
            self.with_discovery(|d| d.resolve());
            self.run_discovery(registry, now);
        }
    }

    /// When the sentinel connection's awaited connect or answer is overdue.
    pub(super) fn sentinel_deadline(&self) -> Option<Instant> {
        let s = self.sentinel.as_ref()?;
        let waiting = !s.conn.connected || s.conn.resp.in_flight() > 0;
        waiting.then(|| s.since + self.config.connect_timeout)
    }

    /// The sentinel connection failed: close it and let the machine move on.
    pub(super) fn sentinel_lost(&mut self, registry: &Registry, reason: &str, now: Instant) {
        if let Some(s) = self.sentinel.take() {
            s.conn.close(registry);
        }
        self.with_discovery(|d| d.handle_closed(reason));
        self.run_discovery(registry, now);
    }

    /// Carries out the machine's actions until it has none.
    pub(super) fn run_discovery(&mut self, registry: &Registry, now: Instant) {
        while let Some(action) = self.discovery.as_mut().and_then(|d| d.poll_action()) {
            match action {
                Action::Connect { addr } => self.open_sentinel(registry, &addr, now),
                Action::Send(args) => self.send_sentinel(&args, now),
                Action::Close => {
                    if let Some(s) = self.sentinel.take() {
                        s.conn.close(registry);
                    }
                }
                Action::Resolved { master } => self.on_resolved(registry, master, now),
                Action::Failed(error) => {
                    if self.phase == Phase::Resolving {
                        self.fail(registry, error.to_string(), now);
                    } else {
                        // The lanes are fine; only the watch is gone. Retry it later.
                        self.sentinel_retry = Some(now + self.config.backoff_max);
                    }
                }
                Action::SwitchMaster { to, .. } => {
                    if self.master.as_deref() != Some(to.as_str()) {
                        self.switch_to(registry, &to, now);
                    }
                }
            }
        }
    }

    /// The sentinels named the master.
    fn on_resolved(&mut self, registry: &Registry, master: String, now: Instant) {
        match &self.phase {
            Phase::Resolving => self.connect_lanes(registry, &master, now),
            Phase::Up { master: current }
            | Phase::Connecting {
                master: current, ..
            } if *current != master => self.switch_to(registry, &master, now),
            _ => {}
        }
    }

    /// Moves every lane to `master` at once (no backoff): a failover.
    fn switch_to(&mut self, registry: &Registry, master: &str, now: Instant) {
        let from = self.master.replace(master.to_owned());
        if let Some(from) = from.filter(|from| from != master) {
            self.stats.failovers_seen += 1;
            self.events.push_back(ClientEvent::MasterChanged {
                from,
                to: master.to_owned(),
            });
        }
        self.teardown(registry, &format!("master moved to {master}"));
        self.connect_lanes(registry, master, now);
    }

    fn open_sentinel(&mut self, registry: &Registry, addr: &str, now: Instant) {
        if let Some(s) = self.sentinel.take() {
            s.conn.close(registry);
        }
        let token = self.next_token(SENTINEL_SLOT);
        match Conn::open(addr, token, registry, self.config.limits.clone()) {
            Ok(conn) => {
                self.sentinel = Some(SentinelConn {
                    conn,
                    next_tag: 0,
                    since: now,
                })
            }
            Err(e) => self.with_discovery(|d| d.handle_closed(&e.to_string())),
        }
    }

    fn send_sentinel(&mut self, args: &[Vec<u8>], now: Instant) {
        let Some(s) = self.sentinel.as_mut() else {
            self.with_discovery(|d| d.handle_closed("not connected"));
            return;
        };
        if s.conn.resp.in_flight() == 0 {
            s.since = now;
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        s.conn.resp.queue(&refs, s.next_tag);
        s.next_tag = s.next_tag.wrapping_add(1);
    }

    fn with_discovery(&mut self, f: impl FnOnce(&mut super::sentinel::Discovery)) {
        if let Some(d) = self.discovery.as_mut() {
            f(d);
        }
    }
}
