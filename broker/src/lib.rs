//! # hermod-broker
//!
//! The message processor: takes [`Request`](hermod_core::bus::Request)s from gateways and answers
//! with [`Delivery`](hermod_core::bus::Delivery)s (inboxes, acks, rooms, dedupe:
//! docs/protocol.md).
//!
//! - [`Broker`] (`broker.rs`): sessions, subscriptions and fan-out. Sans-io:
//!   `handle(request, now_ms, &mut out)`, `sweep(now_ms)`; no clock, no threads.
//! - [`Engine`] (`engine.rs`): the storage interface. The broker submits [`Op`]s under a
//!   [`Token`] and collects completions, so an asynchronous, pipelined engine (Redis) fits.
//! - [`MemoryEngine`] (`memory.rs`, with `history.rs` and `dedupe.rs`): the in-memory engine.
//! - [`RedisEngine`] (`redis/`): the durable engine, one FCALL of the `hermod` Redis function
//!   library per operation, pipelined on a sans-io Redis client core whose sockets the
//!   broker loop owns.
//! - [`embedded`]: the broker on its own thread inside the proxy, fed by a bounded channel,
//!   delivering through one sink per gateway worker.
//! - `replay.rs`: paged replay with flow control. A replay (inbox backlog on attach, room
//!   history after `since`) goes out a [`Page`] at a time; after a full page the session gets
//!   `Event::ReplayPaused` and the next page only after `Request::ResumeReplay`.
//! - `gateways/`: serving gateway links over the RESP3 link protocol (`hermod_core::link`):
//!   `GatewaySessions` (sans-io: links, sessions, sid mapping) inside the `hermod-links`
//!   thread's `GatewayLinksLoop`, with the runner of [`embedded`] behind it.
//! - [`metrics`]: the process's counters and the Prometheus text of them and of the engine's
//!   figures (names from `hermod_core::metrics::names`).
//! - [`server`]: the `hermod-broker` process (`src/main.rs`): settings (`config/`), the
//!   gateway links thread, the registry heartbeat in Redis (`registry.rs`), draining, and the
//!   optional admin HTTP listener.
//! - [`Limits`] (`limits.rs`): retention, dedupe and replay-page bounds.
//!
//! Invariants: per inbox and per room, every session receives messages in storage order; an
//! attaching session first gets every inbox message after its device's cursor, then live ones,
//! none twice; every map a client can grow is bounded (retention, dedupe cap and expiry,
//! cursor and membership caps, one queue entry per paused subscription, sweep of empty
//! channels).

mod broker;
mod budget;
mod dedupe;
pub mod embedded;
mod engine;
mod gateways;
mod history;
mod limits;
mod memory;
pub mod metrics;
pub mod redis;
mod replay;
pub mod server;

pub use broker::{Broker, MAX_ROOMS_PER_SESSION};
pub use dedupe::MAX_DEDUPE_ENTRIES;
pub use engine::{
    Channel, Completion, Done, Engine, EngineError, EngineStats, Live, Op, Page, Stored, Token,
};
pub use history::MAX_CURSORS_PER_INBOX;
pub use limits::{Limits, DEFAULT_MEMORY_BUDGET, DEFAULT_MEMORY_PER_USER};
pub use memory::MemoryEngine;
pub use redis::{Durability, RedisEngine, RedisEngineConfig};
pub use replay::MAX_REPLAY_BUFFER;
