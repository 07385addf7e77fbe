//! The gateway's links to brokers: with `--brokers` or `--registry` the proxy runs no broker of
//! its own; the `hermod-links` thread ([`BrokerLinksLoop`](links_loop::BrokerLinksLoop)) takes
//! its place. Workers are unchanged: they send [`Request`]s to a bounded mailbox and get
//! [`hermod_core::bus::Delivery`]s through their sinks. The loop multiplexes every session over
//! one pipelined RESP3 link per broker (the protocol of [`hermod_core::link`]), and moves
//! sessions to another broker when theirs dies or drains, so clients keep their connections.
//!
//! - [`placement`]: rendezvous hashing of users over live brokers (pure).
//! - [`rehome`]: what a session needs to move: rooms and last ids, in-flight requests (pure).
//! - [`pool`]: [`BrokerPool`](pool::BrokerPool), the state machine: placement, routing,
//!   re-homing, overflow (sans-io, `Out`s queued).
//! - [`link`]: [`BrokerLink`](link::BrokerLink), one broker link: socket, handshake, heartbeat,
//!   reconnect backoff.
//! - [`registry`]: discovery of brokers in Redis (`hermod:brokers`).
//! - [`links_loop`]: the thread's mio loop; [`status`]: `/readyz` and `/metrics`.

pub mod link;
pub mod links_loop;
pub mod placement;
pub mod pool;
pub mod registry;
pub mod rehome;
pub mod status;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hermod_core::bus::Request;
use hermod_core::link::LinkSecret;
use hermod_core::reactor::mailbox::{fair_mailbox, MailboxSender};
use hermod_core::resp::RespLimits;

pub use links_loop::{Sink, Upstream};
pub use status::LinkStatus;

/// What the links thread needs to know.
#[derive(Debug, Clone)]
pub struct BrokersConfig {
    /// The brokers, or where to find them.
    pub upstream: Upstream,
    /// The workers' request timeout: older in-flight requests are not re-sent on a re-home.
    pub request_timeout: Duration,
    /// The largest client message: bounds the frames a broker may push.
    pub max_message_size: usize,
    /// Requests the workers' mailbox to the links thread holds.
    pub queue: usize,
    /// Presented on every link (`HELLO 3 AUTH hermod <secret>`).
    pub link_secret: Option<LinkSecret>,
}

/// The running links thread, as the server holds it.
#[derive(Debug)]
pub struct BrokerLinks {
    /// Where the workers send requests: one lane per worker, drained fairly.
    requests: Vec<MailboxSender<Request>>,
    /// Wakes the thread to stop it, even while workers still hold senders.
    waker: Arc<mio::Waker>,
    /// Set to stop the thread.
    stop: Arc<AtomicBool>,
    /// Figures for the admin thread.
    status: Arc<LinkStatus>,
    /// The thread.
    thread: JoinHandle<()>,
}

impl BrokerLinks {
    /// The sender of worker `lane`'s requests (its own bounded lane of the mailbox).
    pub fn sender_for(&self, lane: usize) -> MailboxSender<Request> {
        self.requests[lane % self.requests.len()].clone()
    }

    /// `/readyz` and `/metrics` figures.
    pub fn status(&self) -> Arc<LinkStatus> {
        Arc::clone(&self.status)
    }

    /// Stops the thread after it has passed on what the workers sent (their final Detaches).
    pub fn shutdown(self) {
        self.stop.store(true, Relaxed);
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake the broker links thread to stop it");
        }
        drop(self.requests);
        if self.thread.join().is_err() {
            tracing::error!("broker links thread panicked");
        }
    }
}

/// Starts the links thread (`hermod-links`) with one sink per worker.
pub fn spawn(config: BrokersConfig, sinks: Vec<Sink>) -> io::Result<BrokerLinks> {
    let (poll, waker) = links_loop::poll_and_waker()?;
    let lanes = sinks.len().max(1);
    let capacity = (config.queue / lanes).max(1);
    let (requests, rx) = fair_mailbox(lanes, capacity, Arc::clone(&waker));
    let status = Arc::new(LinkStatus::default());
    let stop = Arc::new(AtomicBool::new(false));
    let max_bulk = config.max_message_size.saturating_add(64 << 10);
    let limits = RespLimits {
        max_bulk,
        max_array_len: hermod_core::link::MAX_SIDS_PER_PUSH + 8,
        max_buffer: max_bulk.saturating_mul(4).max(16 << 20),
        ..RespLimits::default()
    };
    let parts = links_loop::Parts {
        poll,
        requests: rx,
        sinks,
        status: Arc::clone(&status),
        stop: Arc::clone(&stop),
        upstream: config.upstream,
        request_timeout: config.request_timeout,
        limits,
        link_secret: config.link_secret,
    };
    let runner = links_loop::BrokerLinksLoop::new(parts);
    status.alive.store(true, Relaxed);
    let thread = std::thread::Builder::new()
        .name("hermod-links".into())
        .spawn(move || runner.run())?;
    Ok(BrokerLinks {
        requests,
        waker,
        stop,
        status,
        thread,
    })
}
