//! The gateway's settings: [`Settings`], what every part of the gateway reads, and how it is
//! resolved from the command line, the `HERMOD_*` environment and the `--config` TOML file.
//!
//! - [`resolve`]: the flags (`RunArgs`, the `token` subcommand) and `resolve()`: flag beats env
//!   beats file beats default.
//! - [`storage`]: memory, Redis or Sentinel storage; embedded or external brokers.
//! - [`routes`]: a tunnel route (`--route`), its upstream resolved once, at startup.
//! - [`permissions`]: the room namespaces (`[[namespace]]` in the file) and
//!   `--direct-messages`.
//! - [`paths`]: the one rule for the paths the gateway serves (`/ws`, echo, routes).
//! - [`auth`]: `--auth`, the token keys and claim rules, `hermod-proxy token`'s options.
//! - [`origins`]: `--allowed-origins`, the browser origins allowed to open `/ws`.
//! - [`api`]: `--api-listen` and `--api-key`, the server API's listener and keys.
//! - [`webhooks`]: `--webhook-*`, where events to the application backend are POSTed.
//! - [`events_stream`]: `--events-stream*`, the Redis stream the same events are appended to.
//!
//! Pure functions of (flags, environment lookup, file text), except the DNS lookup of route
//! upstreams and the read of a `--jwt-public-key` file: tests need no process environment.

pub mod api;
pub mod auth;
pub mod events_stream;
pub mod origins;
pub mod paths;
pub mod permissions;
pub mod resolve;
pub mod routes;
pub mod storage;
#[cfg(test)]
mod tests;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use hermod_broker::Durability;
pub use hermod_core::reactor::admission::AddressLimit;
use hermod_core::redis::ClientConfig;

use api::ApiKeys;
use events_stream::EventsStreamSettings;
use routes::Route;
use webhooks::WebhookSettings;

use crate::auth::TokenVerifier;
use hermod_core::grants::{DirectMessages, RoomPolicy};
use hermod_core::jwt;
use hermod_core::rate::RateConfig;

/// How clients prove who they are at the handshake: a JWT in `?token=` or
/// `Authorization: Bearer`, or (development only) nothing.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Tokens checked by a [`TokenVerifier`]: the HS256 secret and/or public keys, under the
    /// configured claim rules. What `resolve` makes of `--auth jwt`.
    Tokens(Arc<TokenVerifier>),
    /// Identity from the `user` query parameter. Development only.
    None,
}

impl PartialEq for AuthMode {
    /// Same kind and keys: verifiers are equal only as the same shared one.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (AuthMode::Tokens(a), AuthMode::Tokens(b)) => Arc::ptr_eq(a, b),
            (AuthMode::None, AuthMode::None) => true,
            _ => false,
        }
    }
}

impl AuthMode {
    /// Verifies a client's token at `now_unix` (the handshake's, and a session's `refresh`).
    /// Under [`AuthMode::None`] there are no tokens: every one is refused.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<jwt::Claims, jwt::JwtError> {
        match self {
            AuthMode::Tokens(verifier) => verifier.verify(token, now_unix),
            AuthMode::None => Err(jwt::JwtError::UnsupportedAlgorithm),
        }
    }

    /// Whether clients must present a token (every mode but [`AuthMode::None`]).
    pub fn requires_token(&self) -> bool {
        !matches!(self, AuthMode::None)
    }
}

/// Where the embedded broker stores messages.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In this process's memory: gone with it (the default, single node).
    Memory,
    /// In Redis, reached directly (`--redis`) or through Sentinel (`--sentinel`).
    Redis {
        /// Target, credentials, lanes and timeouts of the Redis client (boxed: it is large and
        /// `Memory` is empty).
        client: Box<ClientConfig>,
        /// When a write counts as stored (`sent`): on the master, or also on a replica (WAIT).
        durability: Durability,
    },
}

/// Where the broker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brokers {
    /// In this process, on [`Settings::storage`] (the default).
    Embedded,
    /// External `hermod-broker`s at these `host:port` addresses (`--brokers`).
    Static(Vec<String>),
    /// External brokers listed in the registry of the Redis that [`Settings::storage`] names
    /// (`--registry`).
    Registry,
}

/// Everything a gateway worker needs to know. Cloned into each worker at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Client listener address. Port 0 picks a free port (tests); workers then share that port.
    pub listen: SocketAddr,
    /// Admin HTTP listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// Server API listener (`--api-listen`); `None`: off (no key, or `off`).
    pub api_listen: Option<SocketAddr>,
    /// Keys the server API accepts (`--api-key`).
    pub api_keys: ApiKeys,
    /// Reactor threads.
    pub workers: usize,
    pub auth: AuthMode,
    /// Who may join and publish to which rooms (the file's namespaces; shared by the workers,
    /// matched on every join and publish). Not consulted under `--auth none`.
    pub rooms: Arc<RoomPolicy>,
    /// Who may send direct messages to whom (`--direct-messages`).
    pub direct_messages: DirectMessages,
    /// Path of the client protocol endpoint (`/ws`).
    pub ws_path: String,
    /// Built-in echo endpoint, off when `None`.
    pub echo_path: Option<String>,
    /// Largest WebSocket message (and frame) accepted; larger closes with 1009.
    pub max_message_size: usize,
    /// A peer silent this long is closed.
    pub idle_timeout: Duration,
    /// How often the server pings a quiet peer.
    pub ping_interval: Duration,
    /// Time a new connection has to send the first byte of its request.
    pub first_byte_timeout: Duration,
    /// Time allowed from connect to a whole request head and finished upgrade.
    pub handshake_timeout: Duration,
    /// Bytes a session may have queued for a client that is not reading; past it, close 1008
    /// `slow consumer`.
    pub max_outbound_bytes: usize,
    /// Open client connections per process; past it new connections are answered 503.
    pub max_connections: usize,
    /// Concurrent connections per client address (IPv6: per /64); past it, 503. The default
    /// does not apply to loopback addresses; a value set explicitly does.
    pub max_connections_per_ip: AddressLimit,
    /// New connections per second per client address (a burst of one second's worth); past
    /// it, 503. Same loopback rule.
    pub max_connects_per_ip_per_sec: AddressLimit,
    /// Sessions one user may hold at once, over all workers (0 = off); past it, 429.
    pub max_sessions_per_user: u32,
    /// Time a `send`/`publish` may wait for the broker before the answer is `unavailable`.
    pub request_timeout: Duration,
    /// How long graceful shutdown waits for close handshakes and flushes before exiting.
    pub shutdown_grace: Duration,
    /// Per-session rate limits of `/ws` sessions (`--session-rate`, `--session-burst`,
    /// `--session-byte-rate`).
    pub rate: RateConfig,
    /// Broker retention and dedupe settings.
    pub broker: hermod_broker::Limits,
    /// The embedded broker's storage engine (with `Brokers::Registry`: the registry's Redis).
    pub storage: Storage,
    /// Embedded broker, or external ones (then no engine runs in this process).
    pub brokers: Brokers,
    /// The secret presented on every broker link (`--link-secret`); `Debug` shows `***`.
    pub link_secret: Option<hermod_core::link::LinkSecret>,
    /// Browser origins allowed to open the protocol path (`--allowed-origins`, lowercased
    /// patterns with `*`); empty: no Origin check. An upgrade without `Origin` passes.
    pub allowed_origins: Vec<String>,
    /// Tunnel routes (`--route`), matched by exact path before any WebSocket handling.
    pub routes: Vec<Route>,
    /// Time a tunnel's TCP connect to its upstream may take; past it the client gets 502.
    pub route_connect_timeout: Duration,
    /// Close a tunnel after this long without a byte either way (default 300 s; WebSocket pings
    /// cross the tunnel, so a pinging idle WebSocket stays up); `None`: never.
    pub route_idle_timeout: Option<Duration>,
    /// Front proxies whose `X-Forwarded-For`, `Forwarded` and `X-Real-IP` a tunnel trusts (it
    /// appends the peer to `X-Forwarded-For`); from any other peer they are replaced.
    pub route_trusted_proxies: Vec<std::net::IpAddr>,
    /// Events to the application backend by signed POSTs (`--webhook-url`); `None`: off.
    pub webhooks: Option<WebhookSettings>,
    /// The same events appended to a Redis stream (`--events-stream`); `None`: off.
    pub events_stream: Option<EventsStreamSettings>,
}

impl Settings {
    /// The defaults (each flag's help states its own), the base that file, env and flags
    /// override.
    pub fn defaults() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            api_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9091))),
            api_keys: ApiKeys::default(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            auth: AuthMode::None,
            rooms: Arc::new(RoomPolicy::default()),
            direct_messages: DirectMessages::Any,
            ws_path: "/ws".to_owned(),
            echo_path: None,
            max_message_size: 64 * 1024,
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            first_byte_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            max_outbound_bytes: 1024 * 1024,
            max_connections: 19_000,
            max_connections_per_ip: AddressLimit {
                max: 256,
                loopback: false,
            },
            max_connects_per_ip_per_sec: AddressLimit {
                max: 50,
                loopback: false,
            },
            max_sessions_per_user: 64,
            request_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            rate: RateConfig::DEFAULT,
            broker: hermod_broker::Limits::default(),
            storage: Storage::Memory,
            brokers: Brokers::Embedded,
            link_secret: None,
            allowed_origins: Vec::new(),
            routes: Vec::new(),
            route_connect_timeout: Duration::from_secs(5),
            route_idle_timeout: Some(Duration::from_secs(300)),
            route_trusted_proxies: Vec::new(),
            webhooks: None,
            events_stream: None,
        }
    }
}

impl Settings {
    /// Whether `path` is one of the WebSocket endpoints this process terminates (the protocol
    /// path, or the echo path when on).
    pub fn serves_path(&self, path: &str) -> bool {
        path == self.ws_path || self.echo_path.as_deref() == Some(path)
    }
}
