//! One WebSocket connection of the gateway, from the upgrade request to the close handshake.
//!
//! - [`handshake`]: routing and auth of the upgrade request (pure functions; the time tokens are
//!   checked against comes in).
//! - [`upgrade`]: an upgrade in progress (tungstenite's server handshake with our callback).
//! - [`session`]: one upgraded connection's state machine (tungstenite on the socket).
//! - [`protocol`]: the v1 client protocol of one session: client frames become broker requests,
//!   broker events become server frames (sans-io: requests go out through [`RequestPort`]).
//! - [`outbound`]: the per-session output queue, bounded in bytes.
//! - [`refusal`]: the HTTP answer of a connection refused before its upgrade (4xx, 503, 429).

pub mod handshake;
pub mod outbound;
pub mod protocol;
pub mod refusal;
pub mod session;
pub mod upgrade;

pub use protocol::RequestPort;
