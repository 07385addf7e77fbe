//! The harness every end-to-end test shares: start the real `hermod-proxy` binary on ephemeral
//! loopback ports, talk to it with tungstenite's blocking *client* (code no one on this project
//! wrote), and read its frames as JSON.
//!
//! Every wait is bounded by [`TIMEOUT`]; nothing asserts on timing beyond "within the timeout".
//! A [`Proxy`] kills its child on drop, so a failing test never leaks a process.
//!
//! - [`proxy`]: the `hermod-proxy` child process ([`Proxy`]): start, ports, log, metrics, exit.
//! - [`client`]: the WebSocket client ([`Client`]), refused handshakes and raw frames.
//! - [`net`]: blocking loopback sockets with timeouts, and a minimal HTTP GET.
//! - [`broker`]: real `hermod-broker` processes; [`python`]: the Python interop scripts;
//!   [`pyjwt`]: tokens and keys made by PyJWT, a raw upgrade, a Python file server.

#![allow(dead_code)]

pub mod broker;
mod client;
mod net;
mod proxy;
pub mod pyjwt;
pub mod python;

// Re-exported so the tests name them `common::X`; each test binary uses only some of them.
#[allow(unused_imports)]
pub use client::{
    handshake_status, handshake_status_with, id_of, raw_frame, raw_frame_with, Client, Ending,
};
#[allow(unused_imports)]
pub use net::{api_call, http_get, read_response, set_timeouts, tcp};
#[allow(unused_imports)]
pub use proxy::Proxy;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bound for every single wait in these tests (a loaded 2-core machine can be slow).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The HS256 secret the JWT-mode proxies are started with.
pub const SECRET: &str = "e2e-test-secret-0123456789abcdefghij";

/// The storage engine a test's proxy runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The embedded in-memory engine (no flags).
    Memory,
    /// The Redis engine on a `redis-server` of its own, started for the proxy and killed with it.
    Redis,
}

/// Generates, for each named `fn NAME(engine: Engine)`, the tests `memory::NAME` and
/// `redis::NAME`: the same scenario on both engines (`cargo test redis::` runs the Redis half).
#[allow(unused_macros)]
macro_rules! engine_tests {
    ($($name:ident),+ $(,)?) => {
        mod memory {
            $( #[test] fn $name() { super::$name($crate::common::Engine::Memory) } )+
        }
        mod redis {
            $( #[test] fn $name() { super::$name($crate::common::Engine::Redis) } )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use engine_tests;

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// An HS256 token, minted by the project's own `hermod_core::jwt::mint`.
pub fn mint(secret: &str, sub: &str, exp: u64) -> String {
    hermod_core::jwt::mint(secret.as_bytes(), sub, exp)
}

/// An HS256 token carrying `claims` (room grants, `send` patterns).
pub fn mint_claims(secret: &str, claims: &hermod_core::jwt::Claims) -> String {
    hermod_core::jwt::mint_claims(secret.as_bytes(), claims)
}
