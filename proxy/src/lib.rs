//! # hermod-proxy
//!
//! The gateway. `main.rs` resolves [`settings::Settings`] (`config.rs`), starts the embedded broker,
//! one reactor thread per worker (`worker.rs`, sessions in `session.rs`), and the admin HTTP
//! listener (`admin.rs`). Counters shared with the admin listener live in `metrics.rs`. Tunnel
//! routes (`--route`): `route.rs` (parsing and HTTP), `tunnel.rs` (one tunnel's state machine),
//! `relay.rs` (the byte pipes and buffer pool), driven from `worker_tunnel.rs`.

pub mod admin;
pub mod client;
pub mod config;
pub mod env;
pub mod handshake;
pub mod link;
pub mod metrics;
pub mod outbound;
pub mod relay;
pub mod route;
pub mod server;
pub mod session;
pub mod settings;
pub mod tunnel;
pub mod worker;
