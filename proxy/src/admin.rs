//! The gateway's admin HTTP listener: `GET /healthz`, `/readyz`, `/metrics` (what they answer:
//! docs/operations.md, "Health endpoints"). The listener itself (bounded heads, timeouts,
//! deadlines, keep-alive, routing; a mio loop no client can starve) is `hermod_core::admin_http`, shared with `hermod-broker`; the
//! gateway adds the process figures and, with the Redis engine, the engine's.

use std::io;
use std::net::TcpListener;
use std::thread::JoinHandle;

pub use hermod_core::admin_http::AdminState;
use hermod_core::admin_http::{self, render_process};

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
/// failovers followed, reconnects, operations refused `unavailable`, pipeline depth, pending
/// operations. The same figures, under the same names, as `hermod-broker`'s.
pub fn render_engine(out: &mut String, up: bool, s: &hermod_broker::EngineStats) {
    hermod_broker::metrics::render_engine(out, up, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when the gateway emits a family the table in `hermod_core::metrics::names` does
    /// not list, or writes invalid Prometheus text: every render function of the gateway, in
    /// the order `/metrics` writes them (embedded-broker and broker-links modes together).
    #[test]
    fn every_family_is_in_the_table_and_the_text_is_valid() {
        let mut out = String::new();
        crate::metrics::Metrics::default().render(&mut out);
        crate::brokers::LinkStatus::default().render(&mut out);
        render_engine(&mut out, true, &hermod_broker::EngineStats::default());
        render_process(&mut out);
        let families = hermod_core::metrics::check(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert!(
            families.contains(&"hermod_redis_round_trips_total"),
            "{out}"
        );
        assert!(families.contains(&"hermod_broker_links_up"), "{out}");
        assert!(families.contains(&"hermod_build_info"), "{out}");
    }
}
