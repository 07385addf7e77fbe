//! The `hermod-broker` process's counters (atomics, written by the gateway links thread and the
//! registry thread, read by the admin thread) and the Prometheus text of them and of the storage
//! engine's figures, which the proxy's `/metrics` shows too ([`render_engine`]). Every name
//! comes from `hermod_core::metrics::names`.

use std::sync::atomic::{AtomicU64, Ordering};

use hermod_core::metrics::{names, Exposition};

use crate::EngineStats;

/// The `reason` labels of `hermod_broker_link_auth_refusals_total`, indexed as
/// `gateways::auth::Refusal` is.
pub const AUTH_REFUSAL_REASONS: [&str; 5] = [
    "wrong_secret",
    "not_authenticated",
    "deadline",
    "frame",
    "evicted",
];
/// The `reason` labels of `hermod_broker_link_limit_closes_total`, indexed as
/// [`LimitClose`] is.
pub const LIMIT_CLOSE_REASONS: [&str; 4] = ["frame", "input_budget", "output_budget", "output"];

/// Why an authenticated link was closed at a bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitClose {
    /// A frame past the command bounds (or not RESP).
    Frame = 0,
    /// Its unparsed input passed its share of the link buffer budget.
    InputBudget = 1,
    /// Its unwritten output passed its share of the link buffer budget.
    OutputBudget = 2,
    /// Its unwritten output passed the per-link bound (the gateway is not reading).
    Output = 3,
}

/// Counters and gauges of the gateway links thread and the registry heartbeat.
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
    /// Links closed before authenticating, by [`AUTH_REFUSAL_REASONS`].
    pub auth_refusals: [AtomicU64; 5],
    /// Authenticated links closed at a bound, by [`LIMIT_CLOSE_REASONS`].
    pub limit_closes: [AtomicU64; 4],
    /// Bytes buffered across every link now (input and output).
    pub link_buffered: AtomicU64,
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

    /// Appends the Prometheus text of every figure, then the engine's.
    pub fn render(&self, out: &mut String, redis_up: bool, engine: &EngineStats) {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut w = Exposition::new(out);
        let gauges = [
            (&names::BROKER_GATEWAY_LINKS, &self.links),
            (&names::BROKER_SESSIONS, &self.sessions),
            (&names::BROKER_DRAINING, &self.draining),
            (&names::BROKER_REGISTERED, &self.registered),
        ];
        for (family, value) in gauges {
            w.gauge(family, v(value));
        }
        let counters = [
            (&names::BROKER_LINKS_ACCEPTED, &self.links_accepted),
            (&names::BROKER_LINKS_DROPPED, &self.links_dropped),
            (&names::BROKER_COMMANDS, &self.commands),
            (&names::BROKER_COMMAND_ERRORS, &self.command_errors),
            (&names::BROKER_EVENT_PUSHES, &self.event_pushes),
            (&names::BROKER_MESSAGE_PUSHES, &self.message_pushes),
            (&names::BROKER_MESSAGE_DELIVERIES, &self.message_deliveries),
        ];
        for (family, value) in counters {
            w.counter(family, v(value));
        }
        let labelled: [(_, &[&str], &[AtomicU64]); 2] = [
            (
                &names::BROKER_LINK_AUTH_REFUSALS,
                &AUTH_REFUSAL_REASONS,
                &self.auth_refusals,
            ),
            (
                &names::BROKER_LINK_LIMIT_CLOSES,
                &LIMIT_CLOSE_REASONS,
                &self.limit_closes,
            ),
        ];
        for (family, reasons, values) in labelled {
            w.header(family);
            for (reason, value) in reasons.iter().zip(values) {
                w.sample(family, &[reason], v(value));
            }
        }
        w.gauge(&names::BROKER_LINK_BUFFERED, v(&self.link_buffered));
        render_engine(out, redis_up, engine);
    }
}

/// Appends the storage engine's figures (the Redis engine's; the proxy writes them only when it
/// runs one): reachability, round trips, failovers followed, reconnects, operations refused
/// `unavailable`, pipeline depth, operations pending.
pub fn render_engine(out: &mut String, up: bool, s: &EngineStats) {
    let mut w = Exposition::new(out);
    w.gauge(&names::REDIS_UP, u64::from(up));
    w.counter(&names::REDIS_ROUND_TRIPS, s.round_trips);
    w.counter(&names::REDIS_FAILOVERS, s.failovers_seen);
    w.counter(&names::REDIS_RECONNECTS, s.reconnects);
    w.counter(&names::REDIS_UNAVAILABLE, s.unavailable);
    w.gauge(&names::REDIS_PIPELINE_DEPTH, s.pipeline_depth);
    w.gauge(&names::REDIS_PENDING_OPS, s.pending_ops);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when the broker emits a family the table in `hermod_core::metrics::names` does not
    /// list, or writes invalid Prometheus text.
    #[test]
    fn every_family_is_in_the_table_and_the_text_is_valid() {
        let m = Metrics::default();
        Metrics::set(&m.sessions, 3);
        Metrics::add(&m.commands, 5);
        let stats = EngineStats {
            round_trips: 9,
            ..EngineStats::default()
        };
        let mut out = String::new();
        m.render(&mut out, true, &stats);
        let families = hermod_core::metrics::check(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(families.len(), 21, "{out}");
        assert!(out.contains("\nhermod_broker_sessions 3\n"), "{out}");
        assert!(out.contains("\nhermod_broker_commands_total 5\n"), "{out}");
        assert!(
            out.contains("\nhermod_redis_round_trips_total 9\n"),
            "{out}"
        );
        assert!(out.contains("\nhermod_redis_up 1\n"), "{out}");
    }
}
