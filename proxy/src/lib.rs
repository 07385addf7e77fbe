//! # hermod-proxy
//!
//! The gateway. Layers, bottom to top; a module imports only from the ones below it:
//!
//! ```text
//!  main.rs ── server.rs ──────────────── admin.rs (/healthz /readyz /metrics)
//!                │ starts
//!                ├── worker/   WorkerLoop: one reactor thread (mio Poll, slots, timers)
//!                │     ├── accept.rs: the first look at a connection (route? upgrade? answer)
//!                │     ├── tunnels.rs: the loop's side of tunnels (upstream socket, verdicts)
//!                │     └── context.rs: what handlers borrow (settings, metrics, broker port)
//!                ├── brokers/  with --brokers/--registry: BrokerLinksLoop, the links to brokers
//!                │             (BrokerPool: placement and re-homing, sans-io)
//!                ├── ws/       one WebSocket session: handshake (sans-io), session state machine,
//!                │             client protocol (sans-io), outbound queue
//!                ├── tunnel/   one --route tunnel: state machine, HTTP heads (pure), relay pipes
//!                ├── webhooks/ events to backends: HookSender (the workers' try_send end of a
//!                │             bounded queue), WebhookLoop (the POSTing thread), Delivery
//!                │             (batching, retry and backoff, sans-io)
//!                ├── next.rs   Next and CloseReason: what a handler hands back to the loop
//!                ├── metrics.rs  counters shared with the admin listener
//!                ├── settings/ Settings, resolved from flags, HERMOD_* env and the TOML file
//!                │             (pure, except the DNS lookup of route upstreams and the read of
//!                │             a public key file at startup)
//!                └── auth/     TokenVerifier: tokens checked with the HS256 secret, a key file
//!                              or JWKS keys (JwksRefresher: the background fetch thread)
//! ```

pub mod admin;
pub mod api;
pub mod auth;
pub mod brokers;
pub mod metrics;
pub mod next;
pub mod server;
pub mod settings;
pub mod tunnel;
pub mod webhooks;
pub mod worker;
pub mod ws;
