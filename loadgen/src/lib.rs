//! `hermod-loadgen`: Hermod's load generator and delivery auditor.
//!
//! Map of the crate. Sans-io cores (no sockets, no clock; unit-tested):
//! - [`schedule`]: when each message is due and which connection sends it (open loop), or the
//!   in-flight window (closed loop);
//! - [`payload`]: the binary header of echo messages (connection, sequence, timestamp);
//! - [`wire`]: Hermod's protocol as `direct`/`room` speak it: who writes to whom, frames, parsing;
//! - [`audit`]: per-connection and per-stream sequence bookkeeping: lost, duplicated, reordered;
//! - [`outcome`]: what a worker measured, merged across threads and processes (V2 histograms);
//! - [`report`], [`hdrtext`]: percentiles, validity, the table, the JSON document, and the
//!   HdrHistogram percentile-distribution text.
//!
//! Thin shells (mio, tungstenite, threads, processes, the clock):
//! - [`sock`]: a TCP stream that skips the read that would only return EAGAIN;
//! - [`conn`]: one connection's connect-then-handshake state machine (source-address binding);
//! - [`fleet`]: the connect phase with bounded pending handshakes, and idle holding;
//! - [`reconnect`]: closes counted by code, and `direct`/`room` sessions dialed again after a
//!   backoff (the backoff itself is sans-io);
//! - [`driver`]: the message event loop (timer ticks, batched writes, reads) running a `Script`:
//!   [`echo`] or [`chat`] (`direct`, `room`);
//! - [`churn`]: `connect --churn` cycles;
//! - [`run`]: worker threads of one process, the common t0, progress; [`procs`]: `--procs`
//!   worker processes and their line protocol; [`scenarios`]: options to runs to report;
//! - [`sys`]: timerfd, getrusage, the shared monotonic clock (the only unsafe code);
//! - [`cli`], [`target`], [`progress`]: options, URLs with `{i}` and auth, live counters.

pub mod audit;
pub mod chat;
pub mod churn;
pub mod cli;
pub mod conn;
pub mod driver;
pub mod echo;
pub mod fleet;
pub mod hdrtext;
pub mod outcome;
pub mod payload;
pub mod procs;
pub mod progress;
pub mod reconnect;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod schedule;
pub mod sock;
pub mod sys;
pub mod target;
pub mod wire;
