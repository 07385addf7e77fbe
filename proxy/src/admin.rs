//! The gateway's admin HTTP listener: `GET /healthz`, `/readyz`, `/metrics` (spec §4). The
//! listener itself (bounded heads, timeouts, concurrency cap, routing) is
//! `hermod_core::admin_http`, shared with `hermod-broker`; the gateway adds the process figures
//! and, with the Redis engine, the engine's.

use std::fmt::Write as _;
use std::io;
use std::net::TcpListener;
use std::thread::JoinHandle;

pub use hermod_core::admin_http::AdminState;
use hermod_core::admin_http::{self, gauge, render_process};

/// Starts the admin listener on its own thread (`hermod-admin`); `/metrics` answers the
/// gateway's figures, then the process's. It runs until the process exits.
pub fn spawn(listener: TcpListener, state: AdminState) -> io::Result<JoinHandle<()>> {
    let AdminState {
        ready,
        render_metrics,
    } = state;
    let render_metrics = Box::new(move |out: &mut String| {
        render_metrics(out);
        render_process(out);
    });
    admin_http::spawn(
        listener,
        AdminState {
            ready,
            render_metrics,
        },
    )
}

/// Appends the storage engine's figures (Redis engine only): reachability, round trips,
/// pipeline depth, failovers followed, reconnects, operations refused `unavailable`.
pub fn render_engine(out: &mut String, up: bool, s: &hermod_broker::EngineStats) {
    let help = "1 while Redis is reachable and set up (the broker is ready), else 0.";
    gauge(out, "hermod_redis_up", help, u64::from(up));
    let counters = [
        (
            "hermod_redis_round_trips_total",
            "Redis commands answered (each pipelined command counts once).",
            s.round_trips,
        ),
        (
            "hermod_redis_failovers_total",
            "Redis master changes (failovers) followed.",
            s.failovers_seen,
        ),
        (
            "hermod_redis_reconnects_total",
            "Connections (re)established to Redis.",
            s.reconnects,
        ),
        (
            "hermod_redis_unavailable_total",
            "Storage operations answered unavailable.",
            s.unavailable,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let help = "Redis commands sent and not yet answered.";
    gauge(out, "hermod_redis_pipeline_depth", help, s.pipeline_depth);
    let help = "Storage operations accepted and not yet completed.";
    gauge(out, "hermod_redis_pending_ops", help, s.pending_ops);
}
