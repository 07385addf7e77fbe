//! The broker process's resolved settings (see `config.rs` for where they come from).

use std::net::SocketAddr;
use std::time::Duration;

use hermod_core::link::LinkSecret;
use hermod_core::redis::ClientConfig;

use crate::{Durability, Limits};

/// `--link-buffer-budget` by default: room for several gateways each sending and receiving
/// the largest messages at once.
pub const DEFAULT_LINK_BUFFER_BUDGET: usize = 512 << 20;

/// Everything `hermod-broker` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where gateways connect. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// The address announced in the registry; `None`: the bound `listen` address.
    pub advertise: Option<String>,
    /// Admin HTTP listener (`/healthz`, `/readyz`, `/metrics`); `None`: off.
    pub admin_listen: Option<SocketAddr>,
    /// This broker's name in the registry and in `HELLO`/`INFO`.
    pub node_id: String,
    /// The Redis engine's client: target, credentials, lanes, timeouts.
    pub redis: ClientConfig,
    /// When an append counts as stored.
    pub durability: Durability,
    /// Lifetime of the registry entry; renewed every third of it.
    pub registry_ttl: Duration,
    /// A gateway link silent this long is closed and its sessions detached.
    pub link_timeout: Duration,
    /// How long draining waits for gateways to detach every session.
    pub drain_timeout: Duration,
    /// The secret gateways present (`HELLO 3 AUTH hermod <secret>`); `None`: links are not
    /// authenticated, allowed only on a loopback `listen`. `Debug` shows `***`.
    pub link_secret: Option<LinkSecret>,
    /// Most bytes buffered across all gateway links (input and output).
    pub link_buffer_budget: usize,
    /// Retention, dedupe and paging bounds.
    pub limits: Limits,
    /// The tracing env-filter directive, already checked to parse.
    pub log: String,
}

impl Settings {
    /// The defaults around a Redis client.
    pub fn new(redis: ClientConfig) -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            advertise: None,
            admin_listen: None,
            node_id: String::from("broker"),
            redis,
            durability: Durability::Leader,
            registry_ttl: Duration::from_secs(3),
            link_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            link_secret: None,
            link_buffer_budget: DEFAULT_LINK_BUFFER_BUDGET,
            limits: Limits::default(),
            log: String::from("info"),
        }
    }
}
