//! # hermod-core
//!
//! The pieces every Hermod program shares. Nothing here reads the clock or owns a thread
//! (except the `server` feature's admin listener and signal thread); the programs (proxy,
//! broker, loadgen) drive these parts from their own loops.
//!
//! - [`ids`]: validated names, client request ids and message ids.
//! - [`protocol`]: the v1 client protocol (JSON frames), parse and encode.
//! - [`jwt`]: tokens: HS256 mint and verify, RS256/ES256 public keys (PEM, JWKS), the claim rules.
//! - [`grants`]: room and direct-message permissions: token grant patterns and the namespaces
//!   of the configuration.
//! - [`bus`]: the broker's message interface (requests in, deliveries out).
//! - [`reactor`]: the parts of a mio reactor: generation-tagged slots, a timer wheel,
//!   a cross-thread mailbox, and listeners.
//! - [`resp`]: a sans-io RESP3 client connection (pipelined commands, replies matched FIFO,
//!   pushes apart, bounded input) and the RESP encoders.
//! - [`link`]: the gateway <-> broker link protocol (RESP3 commands and push frames), sans-io
//!   encode/decode.
//! - [`rate`]: per-session rate limits (token buckets on messages and bytes, a `now` passed in).
//! - [`metrics`]: the one table of every Prometheus metric the server binaries export, and the
//!   one writer of the text exposition format (plus a checker that reads it back).
//! - [`redis`]: the Redis client: a sans-io core (lanes of pipelined connections, timeouts,
//!   reconnect with backoff, Sentinel discovery) and the mio shell that moves its bytes.
//! - `settings`, `admin_http`, `startup` (feature `server`): what the two server binaries,
//!   `hermod-proxy` and `hermod-broker`, share: settings resolution (flag > env > file >
//!   default) with its value parsers and one-line errors, the blocking admin HTTP listener, and
//!   startup errors and the signal thread.
//! - `testkit` (feature `testkit`): start real `redis-server`s and sentinels for tests.

#[cfg(feature = "server")]
pub mod admin_http;
pub mod bus;
pub mod grants;
pub mod ids;
pub mod jwt;
pub mod link;
pub mod metrics;
pub mod protocol;
pub mod rate;
pub mod reactor;
pub mod redis;
pub mod resp;
#[cfg(feature = "server")]
pub mod settings;
#[cfg(feature = "server")]
pub mod startup;
#[cfg(feature = "testkit")]
pub mod testkit;
