//! What the link hub publishes for `/readyz` and `/metrics`: atomics written by the hub thread
//! once per loop turn, read by the admin thread, which writes them through `hermod_core::metrics`
//! (whose table names every metric).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use hermod_core::metrics::{names, Exposition};
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
    /// Pushes dropped: their session is not placed on the link they came from.
    pub foreign_pushes: AtomicU64,
    /// Every link, refreshed a few times a second.
    pub brokers: Mutex<Vec<BrokerRow>>,
}

impl LinkStatus {
    /// `/readyz`: the hub runs and at least one broker link is up.
    pub fn is_ready(&self) -> bool {
        self.alive.load(Relaxed) && self.links_up.load(Relaxed) > 0
    }

    /// Broker links up, and brokers known (up or not).
    pub fn counts(&self) -> (usize, usize) {
        (self.links_up.load(Relaxed), self.brokers.lock().len())
    }

    /// Appends the link metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let mut w = Exposition::new(out);
        w.gauge(&names::BROKER_LINKS_UP, self.links_up.load(Relaxed) as u64);
        w.gauge(
            &names::SESSIONS_UNPLACED,
            self.unplaced.load(Relaxed) as u64,
        );
        let counters = [
            (&names::SESSIONS_REHOMED, &self.rehomed),
            (&names::BROKER_LINK_ROUND_TRIPS, &self.round_trips),
            (&names::BROKER_LINKS_LOST, &self.links_lost),
            (&names::BROKER_OVERFLOWS, &self.overflows),
        ];
        for (family, value) in counters {
            w.counter(family, value.load(Relaxed));
        }
        let dropped = &names::BROKER_PUSHES_DROPPED;
        w.header(dropped);
        w.sample(
            dropped,
            &[&"foreign_session"],
            self.foreign_pushes.load(Relaxed),
        );
        let rtt_sum = self.rtt_sum_us.load(Relaxed) as f64 / 1e6;
        w.counter(&names::BROKER_LINK_RTT_SUM, rtt_sum);
        self.render_rows(&mut w);
    }

    /// The per-broker gauges.
    fn render_rows(&self, w: &mut Exposition<'_>) {
        let rows = self.brokers.lock();
        let up = &names::BROKER_LINK_UP;
        w.header(up);
        for row in rows.iter() {
            w.sample(up, &[&row.name], u64::from(row.up));
        }
        let sessions = &names::BROKER_LINK_SESSIONS;
        w.header(sessions);
        for row in rows.iter() {
            w.sample(sessions, &[&row.name], row.sessions as u64);
        }
    }
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
