//! The Redis client: lanes of pipelined RESP3 connections to a master (direct, or found through
//! Sentinel), split into a sans-io core and a thin mio shell.
//!
//! - [`ClientCore`] (`client/`): every decision (phases, backoff, the `HELLO 3 [AUTH]` /
//!   `SELECT` / `ROLE` handshake, lanes, per-command timeouts, stall resets, Sentinel rules,
//!   `ConnectionLost` exactly once). No socket, no clock, no DNS: each connection is a
//!   [`ConnId`]; inputs `handle_connected` / `handle_input` / `handle_closed` /
//!   `handle_timeout` / `send` / `flush`, outputs [`Action`]s (open, write, close), the
//!   [`ClientEvent`]s and `next_deadline`. Its module docs draw the lifecycle.
//! - [`sentinel::Discovery`] (`sentinel/`): which sentinel to ask, what its answers mean; the
//!   core runs it on its sentinel connection.
//! - [`RedisSockets`] (`sockets.rs`): the mio shell. It owns the `TcpStream` of each `ConnId`
//!   (tokens with generations), resolves the address, reads until `WouldBlock` into the core,
//!   writes once per socket per turn, closes. [`RedisClient`] is a core and its sockets
//!   together, for a loop that runs nothing else (registry heartbeats, tests).
//! - `scripted` (feature `testkit`): a scripted network that plays the sockets for tests; the
//!   test answers every command and owns the clock.
//!
//! A loop turn with the split: socket events into [`RedisSockets::handle_event`], then
//! [`ClientCore::handle_timeout`] when [`ClientCore::next_deadline`] passed, the caller's
//! `send`s and `poll_event`s, then [`ClientCore::flush`] and [`RedisSockets::run`] (the
//! core's actions: connects, one write per socket, closes).

mod client;
#[cfg(any(test, feature = "testkit"))]
pub mod scripted;
mod secret;
pub mod sentinel;
mod sockets;
mod url;

use std::time::Duration;

pub use client::{Action, ClientCore, Closed, ConnId};
pub use secret::Secret;
pub use sockets::{RedisClient, RedisSockets};
pub use url::{parse_redis_url, UrlError};

/// Where the master is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One fixed server, `host:port`.
    Direct { addr: String },
    /// Ask these sentinels (`host:port` each) for the master named `master`.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// The client's settings. Build with [`ClientConfig::new`] (or [`parse_redis_url`]) and adjust
/// fields. Its `Debug` shows `***` for the passwords ([`Secret`]).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server, or the sentinels that know it.
    pub target: Target,
    /// ACL user for `HELLO 3 AUTH` (`default` when only a password is set).
    pub username: Option<String>,
    /// Password for `HELLO 3 AUTH`; none: no AUTH.
    pub password: Option<Secret>,
    /// Password the sentinels require (their `requirepass`), if any.
    pub sentinel_password: Option<Secret>,
    /// Database selected on every connection (`SELECT` when not 0).
    pub db: u32,
    /// Lanes: long-lived connections, each pipelining its commands. Lane 0 for reads and
    /// latency-critical work, lane 1 for writes (+WAIT), ... Clamped to 1..=16.
    pub connections: usize,
    /// A command without a reply by then fails with [`CommandError::Timeout`]; a connection that
    /// stays silent for three times this while commands wait is reset.
    pub command_timeout: Duration,
    /// Budget for connecting a lane (TCP connect + handshake), or for a sentinel's answer.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Commands in flight per lane (sent, no reply yet); beyond it `send` fails with
    /// [`ClientError::Busy`]: bounds memory and queueing delay.
    pub max_in_flight: usize,
    /// Bounds on replies; exceeding one resets the connection.
    pub limits: crate::resp::RespLimits,
}

impl ClientConfig {
    /// Defaults for `target`: 2 lanes, 5 s command timeout, 2 s connect timeout, backoff
    /// 100 ms .. 5 s, 10,000 commands in flight per lane, db 0, no AUTH.
    pub fn new(target: Target) -> Self {
        ClientConfig {
            target,
            username: None,
            password: None,
            sentinel_password: None,
            db: 0,
            connections: 2,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_in_flight: 10_000,
            limits: crate::resp::RespLimits::default(),
        }
    }
}

/// Why a command could not be queued; nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The client is not up (connecting, backing off, or resolving the master).
    #[error("redis is not connected")]
    NotConnected,
    /// The lane has `max_in_flight` commands waiting.
    #[error("too many redis commands in flight")]
    Busy,
}

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No reply within `command_timeout` (the late reply will be discarded).
    #[error("redis command timed out")]
    Timeout,
    /// The connection was lost before the reply; the command may or may not have run.
    #[error("redis connection lost")]
    ConnectionLost,
    /// The client was not connected.
    #[error("redis is not connected")]
    NotConnected,
    /// The server answered with an error (`-ERR ...`).
    #[error("redis error: {0}")]
    Server(String),
    /// The reply could not be understood.
    #[error("redis protocol error: {0}")]
    Protocol(String),
}

/// What happened, pulled with [`ClientCore::poll_event`].
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// The outcome of the command sent with `tag` (exactly one per successful `send`).
    Reply {
        tag: u64,
        result: Result<crate::resp::Value, CommandError>,
    },
    /// Every lane is connected to `master` (`host:port`), a verified master.
    Up { master: String },
    /// The client left `Up`, or (before the first `Up`) the first attempt failed: one per
    /// outage; [`ClientCore::last_error`] has the latest reason.
    Down { reason: String },
    /// The master moved (Sentinel `+switch-master`, or re-resolution after a failed ROLE
    /// check gave another address).
    MasterChanged { from: String, to: String },
    /// An out-of-band RESP3 push frame (its elements) that arrived on `lane`: a pub/sub
    /// `["message", channel, payload]`, or a further (un)subscribe confirmation. Pushes arrive
    /// in the order the server sent them on that lane; a subscription does not survive a
    /// `Down` (the caller subscribes again after `Up`).
    Push {
        lane: usize,
        value: crate::resp::Value,
    },
}

/// Counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Replies received for user commands.
    pub round_trips: u64,
    /// User commands in flight now, over all lanes.
    pub in_flight: usize,
    /// Connection attempts after the first.
    pub reconnects: u64,
    /// Master changes seen.
    pub failovers_seen: u64,
    /// Commands that timed out.
    pub timeouts: u64,
    /// Sum of round-trip times of replied commands, in microseconds (mean = sum / round_trips).
    pub rtt_sum_us: u64,
    /// Largest round-trip time seen, in microseconds.
    pub rtt_max_us: u64,
}
