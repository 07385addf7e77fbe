//! [`ClientCore`]: the Redis client's lanes, phases, timeouts and reconnects, sans-io.
//!
//! No socket, no clock, no DNS: every connection (each lane, and the sentinel connection) is a
//! [`ConnId`] that the shell ([`RedisSockets`](super::RedisSockets), or a test's scripted
//! network) opens, writes and closes on the core's behalf. Inputs: [`ClientCore::send`],
//! [`ClientCore::handle_connected`], [`ClientCore::handle_input`],
//! [`ClientCore::handle_closed`], [`ClientCore::handle_timeout`] (when
//! [`ClientCore::next_deadline`] passes) and [`ClientCore::flush`] (once per loop turn).
//! Outputs: [`ClientCore::poll_action`] ([`Action`]: open, write, close a connection) and
//! [`ClientCore::poll_event`] ([`ClientEvent`]s). A `ConnId` is never reused: input for a
//! connection the core closed is ignored.
//!
//! ```text
//!  Waiting{until} --timeout--> Resolving (Sentinel: Discovery asks the sentinels in turn)
//!      ^   ^                      | Resolved{master}             (Direct: straight on)
//!      |   | round failed         v
//!      |   +------------- Connecting{master, deadline}: Open every lane; on connect each
//!      |                          | pipelines HELLO 3 [AUTH] SETNAME, [SELECT db], ROLE
//!      |                          | every lane answered, ROLE = master
//!      |                          v
//!      +--- fail(backoff) ---- Up{master} --+switch-master / resolved elsewhere--> Connecting
//!   (a lane closed, a handshake refused, ROLE != master, connect deadline, a lane stalled)
//! ```
//!
//! - Leaving `Up` (or the first attempt failing) emits one [`ClientEvent::Down`] per outage and
//!   fails every in-flight tag with [`CommandError::ConnectionLost`] exactly once.
//! - Backoff: `backoff_min * 2^failed attempts`, at most `backoff_max`; reset on `Up`.
//! - A command without a reply after `command_timeout` fails with [`CommandError::Timeout`]
//!   (its late reply is discarded); a lane silent for `3 * command_timeout` while replies are
//!   due is reset (stall).
//! - Sentinel: `-READONLY` on a command, or a `ROLE` that is not `master`, makes the sentinels
//!   be asked again; `+switch-master` (or an answer naming another master) moves every lane at
//!   once, without backoff. A lost sentinel watch is retried after `backoff_max`.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod discovery;
mod lanes;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::sentinel::Discovery;
use super::{ClientConfig, ClientError, ClientEvent, ClientStats, Target};
use crate::resp::RespConn;

/// Most lanes a client opens.
const MAX_LANES: usize = 16;
/// A connection silent this many command timeouts while commands wait is reset.
const STALL_FACTOR: u32 = 3;

/// Names one connection the core asked the shell to open; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// What the shell must do for the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `addr` (`host:port`, resolved by the shell), then report
    /// [`ClientCore::handle_connected`] or [`ClientCore::handle_closed`].
    Open { conn: ConnId, addr: String },
    /// Write what [`ClientCore::output`] holds for `conn` (one write), then
    /// [`ClientCore::consume_output`] what was written.
    Write { conn: ConnId },
    /// Close `conn`; nothing more is reported about it.
    Close { conn: ConnId },
}

/// Why the shell lost a connection (the wording of the client's `Down` reasons).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The connect (or the address resolution) failed.
    Connect(String),
    /// Reading failed, or the server closed the connection.
    Read(String),
    /// Writing failed.
    Write(String),
}

/// Handshake steps, each awaiting one reply, in the order they were pipelined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Hello,
    Select,
    Role,
}

/// A lane's connection progress.
#[derive(Debug)]
enum LaneState {
    /// TCP connect in progress.
    Connecting,
    /// Handshake commands sent; their replies are due in this order.
    Handshake(VecDeque<Step>),
    /// Serving user commands.
    Ready,
}

/// One long-lived pipelined connection.
#[derive(Debug)]
struct Lane {
    /// The shell's connection.
    conn: ConnId,
    /// Protocol state.
    resp: RespConn,
    /// How far the connection got.
    state: LaneState,
    /// User commands awaiting a reply (not timed out), FIFO like the replies: tag and send time.
    sent: VecDeque<(u64, Instant)>,
    /// Last time bytes arrived, or a command was sent to an idle lane: stall detection.
    last_progress: Instant,
}

/// The client's phase; every lane follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing open (but maybe the sentinel watch); connect at `until` (backoff).
    Waiting { until: Instant },
    /// Asking the sentinels where the master is.
    Resolving,
    /// Lanes connecting to `master`; give up at `deadline`.
    Connecting { master: String, deadline: Instant },
    /// Every lane ready on `master`.
    Up { master: String },
}

/// The sentinel connection the discovery machine drives.
#[derive(Debug)]
struct SentinelConn {
    /// The shell's connection.
    conn: ConnId,
    /// Protocol state.
    resp: RespConn,
    /// Whether the TCP connect completed.
    connected: bool,
    /// Tag for the next command (replies all go to the machine; tags only keep FIFO).
    next_tag: u64,
    /// Since when an answer (or the connect) has been awaited.
    since: Instant,
}

/// The sans-io Redis client. See the module docs.
#[derive(Debug)]
pub struct ClientCore {
    /// Settings.
    config: ClientConfig,
    /// The next connection id.
    next_conn: u64,
    /// The lanes; empty unless connecting or up.
    lanes: Vec<Lane>,
    /// Where the client is.
    phase: Phase,
    /// The master lanes last connected to: to notice a change.
    master: Option<String>,
    /// Failed attempts in a row: the backoff exponent.
    attempts: u32,
    /// Whether any attempt was made (the next ones count as reconnects).
    started: bool,
    /// Sentinel discovery (Sentinel targets only).
    discovery: Option<Discovery>,
    /// The discovery machine's connection.
    sentinel: Option<SentinelConn>,
    /// When to ask the sentinels again while the lanes are fine (a lost watch, `-READONLY`).
    sentinel_retry: Option<Instant>,
    /// Events not yet pulled.
    events: VecDeque<ClientEvent>,
    /// Actions not yet pulled.
    actions: VecDeque<Action>,
    /// Counters.
    stats: ClientStats,
    /// The reason of the last failure (also of attempts that emit no `Down`).
    last_down: Option<String>,
    /// Whether this outage's `Down` went out: one per outage, not one per failed attempt.
    down_reported: bool,
    /// The latest `now` handed in.
    now: Instant,
}

impl ClientCore {
    /// A client that starts connecting at the first [`ClientCore::handle_timeout`].
    pub fn new(mut config: ClientConfig, now: Instant) -> Self {
        config.connections = config.connections.clamp(1, MAX_LANES);
        let discovery = match &config.target {
            Target::Sentinel { sentinels, master } => Some(Discovery::new(
                sentinels.clone(),
                master.clone(),
                config.sentinel_password.clone(),
            )),
            Target::Direct { .. } => None,
        };
        ClientCore {
            config,
            next_conn: 0,
            lanes: Vec::new(),
            phase: Phase::Waiting { until: now },
            master: None,
            attempts: 0,
            started: false,
            discovery,
            sentinel: None,
            sentinel_retry: None,
            events: VecDeque::new(),
            actions: VecDeque::new(),
            stats: ClientStats::default(),
            last_down: None,
            down_reported: false,
            now,
        }
    }

    /// The latest instant handed in (a shell that has no clock of its own uses it).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The settings (lane count clamped).
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The shell connected `conn`.
    pub fn handle_connected(&mut self, conn: ConnId, now: Instant) {
        self.now = now;
        if self.is_sentinel(conn) {
            return self.sentinel_connected(now);
        }
        let Some(i) = self.lane_of(conn) else {
            return;
        };
        if matches!(self.lanes[i].state, LaneState::Connecting) {
            let steps = self.handshake_commands(i);
            self.lanes[i].state = LaneState::Handshake(steps);
        }
    }

    /// Bytes the shell read from `conn`.
    pub fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        self.now = now;
        if self.is_sentinel(conn) {
            return self.sentinel_input(data, now);
        }
        if let Some(i) = self.lane_of(conn) {
            self.lane_input(i, data, now);
        }
    }

    /// The shell lost `conn` (connect refused, peer closed, read or write error).
    pub fn handle_closed(&mut self, conn: ConnId, reason: Closed, now: Instant) {
        self.now = now;
        if self.is_sentinel(conn) {
            let reason = match reason {
                Closed::Connect(r) | Closed::Read(r) | Closed::Write(r) => r,
            };
            self.sentinel.take();
            return self.sentinel_lost(&reason, now);
        }
        if self.lane_of(conn).is_none() {
            return;
        }
        let master = self.master_name();
        let reason = match reason {
            Closed::Connect(e) => format!("connect to {master}: {e}"),
            Closed::Read(e) => format!("{master}: {e}"),
            Closed::Write(e) => e,
        };
        self.fail(reason, now);
    }

    /// Timeouts, connects, reconnects, sentinel retries. Call when `next_deadline` passes (and
    /// at start).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.expire_commands(now);
        if let Some(reason) = self.stalled_lane(now) {
            self.fail(reason, now);
        }
        match &self.phase {
            Phase::Waiting { until } if now >= *until => self.start_attempt(now),
            Phase::Connecting { master, deadline } if now >= *deadline => {
                let reason = format!("connecting to {master} timed out");
                self.fail(reason, now);
            }
            _ => {}
        }
        self.tick_sentinel(now);
    }

    /// The earliest instant `handle_timeout` has work at (the last `now` handed in while
    /// events wait to be pulled).
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.events.is_empty() {
            return Some(self.now);
        }
        let timeout = self.config.command_timeout;
        let phase = match &self.phase {
            Phase::Waiting { until } => Some(*until),
            Phase::Connecting { deadline, .. } => Some(*deadline),
            Phase::Resolving | Phase::Up { .. } => None,
        };
        let lanes = self.lanes.iter().flat_map(|lane| {
            let command = lane.sent.front().map(|(_, sent)| *sent + timeout);
            let stall =
                (lane.resp.in_flight() > 0).then(|| lane.last_progress + timeout * STALL_FACTOR);
            [command, stall]
        });
        let sentinel = self.sentinel_deadline();
        [phase, sentinel, self.sentinel_retry]
            .into_iter()
            .chain(lanes)
            .flatten()
            .min()
    }

    /// Queues a command on `lane` (modulo the lane count). Its outcome comes back as exactly one
    /// [`ClientEvent::Reply`] with `tag`. Fails at once when not up or the lane is full.
    pub fn send(
        &mut self,
        lane: usize,
        args: &[&[u8]],
        tag: u64,
        now: Instant,
    ) -> Result<(), ClientError> {
        self.now = now;
        if !self.is_up() || self.lanes.is_empty() {
            return Err(ClientError::NotConnected);
        }
        let count = self.lanes.len();
        let max = self.config.max_in_flight;
        let lane = &mut self.lanes[lane % count];
        if lane.resp.in_flight() >= max {
            return Err(ClientError::Busy);
        }
        if lane.resp.in_flight() == 0 {
            lane.last_progress = now;
        }
        lane.resp.queue(args, tag);
        lane.sent.push_back((tag, now));
        Ok(())
    }

    /// End of a loop turn: a [`Action::Write`] for every connected connection with output.
    pub fn flush(&mut self) {
        for lane in &self.lanes {
            let connected = !matches!(lane.state, LaneState::Connecting);
            if connected && !lane.resp.output().is_empty() {
                self.actions.push_back(Action::Write { conn: lane.conn });
            }
        }
        if let Some(s) = self.sentinel.as_ref() {
            if s.connected && !s.resp.output().is_empty() {
                self.actions.push_back(Action::Write { conn: s.conn });
            }
        }
    }

    /// The bytes waiting to be written to `conn` (empty for a connection not ours).
    pub fn output(&self, conn: ConnId) -> &[u8] {
        self.resp(conn).map_or(&[], RespConn::output)
    }

    /// The first `n` bytes of `conn`'s output were written.
    pub fn consume_output(&mut self, conn: ConnId, n: usize) {
        if let Some(resp) = self.resp_mut(conn) {
            resp.consume_output(n);
        }
    }

    /// The next thing the shell must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Whether every lane is connected to a verified master.
    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up { .. })
    }

    /// The master the lanes are connected (or connecting) to.
    pub fn master(&self) -> Option<&str> {
        self.master.as_deref()
    }

    /// The reason of the last failure, while not up.
    pub fn last_error(&self) -> Option<&str> {
        self.last_down.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            in_flight: self.lanes.iter().map(|l| l.sent.len()).sum(),
            ..self.stats.clone()
        }
    }

    /// A new connection to `addr`: the shell is asked to open it.
    fn open(&mut self, addr: &str) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.actions.push_back(Action::Open {
            conn,
            addr: addr.to_owned(),
        });
        conn
    }

    fn is_sentinel(&self, conn: ConnId) -> bool {
        self.sentinel.as_ref().is_some_and(|s| s.conn == conn)
    }

    fn lane_of(&self, conn: ConnId) -> Option<usize> {
        self.lanes.iter().position(|l| l.conn == conn)
    }

    fn resp(&self, conn: ConnId) -> Option<&RespConn> {
        match self.sentinel.as_ref().filter(|s| s.conn == conn) {
            Some(s) => Some(&s.resp),
            None => self.lanes.iter().find(|l| l.conn == conn).map(|l| &l.resp),
        }
    }

    fn resp_mut(&mut self, conn: ConnId) -> Option<&mut RespConn> {
        if let Some(s) = self.sentinel.as_mut().filter(|s| s.conn == conn) {
            return Some(&mut s.resp);
        }
        self.lanes
            .iter_mut()
            .find(|l| l.conn == conn)
            .map(|l| &mut l.resp)
    }

    /// A connection attempt: resolve (Sentinel) or connect the lanes (direct).
    fn start_attempt(&mut self, now: Instant) {
        if self.started {
            self.stats.reconnects += 1;
        }
        self.started = true;
        match &self.config.target {
            Target::Direct { addr } => {
                let addr = addr.clone();
                self.connect_lanes(&addr, now);
            }
            Target::Sentinel { .. } => {
                self.phase = Phase::Resolving;
                if let Some(d) = self.discovery.as_mut() {
                    d.resolve();
                }
                self.run_discovery(now);
            }
        }
    }

    /// Opens every lane to `master`.
    fn connect_lanes(&mut self, master: &str, now: Instant) {
        if let Some(old) = self.master.replace(master.to_owned()) {
            if old != master {
                self.stats.failovers_seen += 1;
                self.events.push_back(ClientEvent::MasterChanged {
                    from: old,
                    to: master.to_owned(),
                });
            }
        }
        for _ in 0..self.config.connections {
            let conn = self.open(master);
            self.lanes.push(Lane {
                conn,
                resp: RespConn::new(self.config.limits.clone()),
                state: LaneState::Connecting,
                sent: VecDeque::new(),
                last_progress: now,
            });
        }
        self.phase = Phase::Connecting {
            master: master.to_owned(),
            deadline: now + self.config.connect_timeout,
        };
    }

    /// Closes every lane: `Down` if we were up, every in-flight tag fails with ConnectionLost.
    fn teardown(&mut self, reason: &str) {
        if self.is_up() || !self.down_reported {
            self.events.push_back(ClientEvent::Down {
                reason: reason.to_owned(),
            });
            self.down_reported = true;
        }
        self.last_down = Some(reason.to_owned());
        for lane in self.lanes.drain(..) {
            for (tag, _) in lane.sent {
                self.events.push_back(ClientEvent::Reply {
                    tag,
                    result: Err(super::CommandError::ConnectionLost),
                });
            }
            self.actions.push_back(Action::Close { conn: lane.conn });
        }
    }

    /// Teardown, then wait out the backoff before the next attempt.
    fn fail(&mut self, reason: String, now: Instant) {
        self.teardown(&reason);
        let delay = backoff(
            self.config.backoff_min,
            self.config.backoff_max,
            self.attempts,
        );
        self.attempts = self.attempts.saturating_add(1);
        self.phase = Phase::Waiting { until: now + delay };
    }

    fn master_name(&self) -> String {
        self.master.clone().unwrap_or_else(|| "redis".to_owned())
    }
}

/// `min * 2^attempts`, at most `max`.
fn backoff(min: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max).max(min.min(max))
}
