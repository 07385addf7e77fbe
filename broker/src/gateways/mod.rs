//! The broker's side of the link protocol (`hermod_core::link`): serving the gateways
//! (`hermod-proxy --brokers`/`--registry`) that link to this broker.
//!
//! - [`GatewaySessions`] (`sessions.rs`, sans-io): the links and the sessions attached
//!   through them; maps each (link, gateway sid) to a broker `SessionKey` of its own slab and
//!   back, answers link commands, groups a room's message into one `msg` push per link, and
//!   detaches every session of a link that closes or stays silent.
//! - `auth.rs` (sans-io): the gate before authentication: only HELLO/AUTH/PING until the link
//!   secret was presented (compared in constant time), a wrong one refused and closed.
//! - `budget.rs` (sans-io): [`LinkBudget`](budget::LinkBudget), the cap on the bytes buffered
//!   across every link, each link held to its fair share when the cap is reached.
//! - `GatewayLinksLoop` (`links_loop.rs`): the `hermod-links` thread's mio loop around it:
//!   the listener, the link sockets, the runner's request mailbox and delivery queue, draining.
//!   Started with [`GatewayLinks::spawn`]; the main thread drains it through [`Control`].

mod auth;
mod budget;
mod links_loop;
mod sessions;

pub use links_loop::{Control, GatewayLinks, REQUEST_QUEUE, WAKE};
pub use sessions::{GatewaySessions, MAX_SESSIONS};

#[cfg(test)]
mod tests;
