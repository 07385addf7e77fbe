//! The broker process's counters (atomics, written by the link thread) and their Prometheus
//! text for `/metrics`. Every name starts with `hermod_broker_`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::EngineStats;

/// Counters and gauges of the link thread.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Gateway links connected now.
    pub links: AtomicU64,
    /// Sessions attached through links now.
    pub sessions: AtomicU64,
    /// Links accepted since start.
    pub links_accepted: AtomicU64,
    /// Links closed by the broker: silent past the link timeout, or a protocol error.
    pub links_dropped: AtomicU64,
    /// Commands received (requests and operator commands).
    pub commands: AtomicU64,
    /// Commands answered with an error (malformed, unknown session, draining).
    pub command_errors: AtomicU64,
    /// `ev` pushes written.
    pub event_pushes: AtomicU64,
    /// `msg` pushes written (one per message per link, however many sessions it names).
    pub message_pushes: AtomicU64,
    /// Session deliveries carried by `msg` pushes (the gateway makes this many copies).
    pub message_deliveries: AtomicU64,
    /// 1 while draining.
    pub draining: AtomicU64,
    /// 1 while the registry entry is being renewed successfully.
    pub registered: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// Appends the Prometheus text of every figure, with the engine's.
    pub fn render(&self, out: &mut String, redis_up: bool, engine: &EngineStats) {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauges = [
            ("links", "Gateway links connected.", v(&self.links)),
            (
                "sessions",
                "Sessions attached through gateway links.",
                v(&self.sessions),
            ),
            (
                "draining",
                "1 while the broker drains (SIGTERM).",
                v(&self.draining),
            ),
            (
                "registered",
                "1 while the registry entry is renewed.",
                v(&self.registered),
            ),
            (
                "redis_up",
                "1 while Redis is reachable and set up.",
                u64::from(redis_up),
            ),
            (
                "redis_pipeline_depth",
                "Redis commands in flight.",
                engine.pipeline_depth,
            ),
            (
                "redis_pending_ops",
                "Storage operations not yet completed.",
                engine.pending_ops,
            ),
        ];
        for (name, help, value) in gauges {
            metric(out, name, "gauge", help, value);
        }
        let counters = [
            (
                "links_accepted_total",
                "Gateway links accepted.",
                v(&self.links_accepted),
            ),
            (
                "links_dropped_total",
                "Links closed for silence or protocol errors.",
                v(&self.links_dropped),
            ),
            (
                "commands_total",
                "Link commands received.",
                v(&self.commands),
            ),
            (
                "command_errors_total",
                "Link commands answered with an error.",
                v(&self.command_errors),
            ),
            (
                "event_pushes_total",
                "`ev` pushes written.",
                v(&self.event_pushes),
            ),
            (
                "message_pushes_total",
                "`msg` pushes written (one per message per link).",
                v(&self.message_pushes),
            ),
            (
                "message_deliveries_total",
                "Session deliveries carried by `msg` pushes.",
                v(&self.message_deliveries),
            ),
            (
                "redis_round_trips_total",
                "Redis commands answered.",
                engine.round_trips,
            ),
            (
                "redis_failovers_total",
                "Redis master changes followed.",
                engine.failovers_seen,
            ),
            (
                "redis_reconnects_total",
                "Connections (re)established to Redis.",
                engine.reconnects,
            ),
            (
                "redis_unavailable_total",
                "Storage operations answered unavailable.",
                engine.unavailable,
            ),
        ];
        for (name, help, value) in counters {
            metric(out, name, "counter", help, value);
        }
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP hermod_broker_{name} {help}\n# TYPE hermod_broker_{name} {kind}\nhermod_broker_{name} {value}"
    );
}
