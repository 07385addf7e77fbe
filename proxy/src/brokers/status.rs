//! What the link hub publishes for `/readyz` and `/metrics`: atomics written by the hub thread
//! once per loop turn, read by the admin thread. Every link metric name lives here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::Mutex;

/// One broker link as `/metrics` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRow {
    /// Registry member or `--brokers` address.
    pub name: String,
    /// 1 up, 0 down; draining links count as up (they still serve their sessions).
    pub up: bool,
    /// Sessions homed on it.
    pub sessions: usize,
}

/// The hub's figures. See the module docs.
#[derive(Debug, Default)]
pub struct LinkStatus {
    /// Set while the hub thread runs; cleared when it ends (even by a panic).
    pub alive: AtomicBool,
    /// Links connected, handshaken and not draining: `/readyz` is 200 iff this is > 0.
    pub links_up: AtomicUsize,
    /// Sessions moved off a broker that died, drained or left the registry.
    pub rehomed: AtomicU64,
    /// Sessions waiting for a live broker.
    pub unplaced: AtomicUsize,
    /// Heartbeats answered.
    pub round_trips: AtomicU64,
    /// Sum of heartbeat round-trip times, microseconds.
    pub rtt_sum_us: AtomicU64,
    /// Links lost after being up.
    pub links_lost: AtomicU64,
    /// Sessions closed because their worker's mailbox was full (`Overflow`).
    pub overflows: AtomicU64,
    /// Every link, refreshed a few times a second.
    pub brokers: Mutex<Vec<BrokerRow>>,
}

impl LinkStatus {
    /// `/readyz`: the hub runs and at least one broker link is up.
    pub fn is_ready(&self) -> bool {
        self.alive.load(Relaxed) && self.links_up.load(Relaxed) > 0
    }

    /// Appends the link metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let gauges = [
            (
                "hermod_broker_links_up",
                "Broker links connected and not draining.",
                self.links_up.load(Relaxed) as u64,
            ),
            (
                "hermod_sessions_unplaced",
                "Sessions waiting for a live broker.",
                self.unplaced.load(Relaxed) as u64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters = [
            (
                "hermod_sessions_rehomed_total",
                "Sessions moved to another broker (link lost, draining, deregistered).",
                self.rehomed.load(Relaxed),
            ),
            (
                "hermod_broker_link_round_trips_total",
                "Broker link heartbeats answered.",
                self.round_trips.load(Relaxed),
            ),
            (
                "hermod_broker_links_lost_total",
                "Broker links lost after being up.",
                self.links_lost.load(Relaxed),
            ),
            (
                "hermod_broker_overflows_total",
                "Sessions overflowed (worker mailbox full) and closed 1008.",
                self.overflows.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let name = "hermod_broker_link_rtt_seconds_sum";
        let sum = self.rtt_sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP {name} Sum of heartbeat round-trip times (divide by round trips).\n\
             # TYPE {name} counter\n{name} {sum}"
        );
        self.render_rows(out);
    }

    /// The per-broker gauges.
    fn render_rows(&self, out: &mut String) {
        let rows = self.brokers.lock().clone();
        let _ = writeln!(
            out,
            "# HELP hermod_broker_link_up 1 while the link to this broker is up.\n\
             # TYPE hermod_broker_link_up gauge"
        );
        for row in &rows {
            let _ = writeln!(
                out,
                "hermod_broker_link_up{{broker=\"{}\"}} {}",
                label(&row.name),
                u8::from(row.up)
            );
        }
        let _ = writeln!(
            out,
            "# HELP hermod_broker_link_sessions Sessions homed on this broker.\n\
             # TYPE hermod_broker_link_sessions gauge"
        );
        for row in &rows {
            let _ = writeln!(
                out,
                "hermod_broker_link_sessions{{broker=\"{}\"}} {}",
                label(&row.name),
                row.sessions
            );
        }
    }
}

/// A label value with `\`, `"` and newlines escaped (names come from the registry).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let s = LinkStatus::default();
        assert!(!s.is_ready());
        s.alive.store(true, Relaxed);
        s.links_up.store(2, Relaxed);
        assert!(s.is_ready());
        *s.brokers.lock() = vec![BrokerRow {
            name: "n\"1@127.0.0.1:7".into(),
            up: true,
            sessions: 3,
        }];
        let mut out = String::new();
        s.render(&mut out);
        assert!(out.contains("\nhermod_broker_links_up 2\n"), "{out}");
        assert!(out.contains("hermod_sessions_rehomed_total 0\n"), "{out}");
        assert!(
            out.contains("hermod_broker_link_sessions{broker=\"n\\\"1@127.0.0.1:7\"} 3\n"),
            "{out}"
        );
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("hermod_"), "{line}");
        }
    }
}
