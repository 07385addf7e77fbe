//! `hermod-loadgen`: Hermod's load generator and delivery auditor.
//!
//! Map of the crate. Sans-io cores (no sockets, no clock; unit-tested):
//! - [`schedule`]: when each message is due and which connection sends it (open loop), or the
//!   in-flight window (closed loop);
//! - [`payload`]: the header every message carries (connection, sequence, timestamp);
//! - [`audit`]: per-connection sequence bookkeeping giving lost, duplicated, reordered;
//! - [`report`]: histograms, percentiles, validity, the table and the JSON document.
//!
//! Thin shells (mio, tungstenite, threads, the clock):
//! - [`sock`]: a TCP stream that skips the read that would only return EAGAIN;
//! - [`conn`]: one connection's connect-then-handshake state machine;
//! - [`fleet`]: the connect phase with bounded pending handshakes, and idle holding;
//! - [`echo`]: the `echo` event loop (timerfd-paced sends, batched writes, reads, audit);
//! - [`run`]: worker threads, the common start, the progress line, merging into a report;
//! - [`sys`]: timerfd, getrusage and timer slack (the only unsafe code);
//! - [`cli`], [`target`], [`progress`]: options, URLs with `{i}`, live counters.

pub mod audit;
pub mod cli;
pub mod conn;
pub mod echo;
pub mod fleet;
pub mod payload;
pub mod progress;
pub mod report;
pub mod run;
pub mod schedule;
pub mod sock;
pub mod sys;
pub mod target;
