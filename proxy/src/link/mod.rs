//! The gateway's side of the broker tier: with `--brokers` or `--registry` the proxy runs no
//! broker of its own; a "link hub" thread takes its place. Workers are unchanged: they send
//! [`Request`]s to a bounded mailbox and get [`hermod_core::bus::Delivery`]s through their
//! sinks. The hub multiplexes every session over one pipelined RESP3 link per broker (the
//! protocol of [`hermod_core::link`]), and moves sessions to another broker when theirs dies or
//! drains, so clients keep their connections.
//!
//! - [`placement`]: rendezvous hashing of users over live brokers (pure).
//! - [`session`]: what a session needs to be re-homed: rooms and last ids, in-flight requests (pure).
//! - [`hub`]: the state machine: placement, routing, re-homing, overflow (pure, `Out`s queued).
//! - [`conn`]: one broker link: socket, handshake, heartbeat, reconnect backoff.
//! - [`registry`]: discovery of brokers in Redis (`hermod:brokers`).
//! - [`runner`]: the thread's mio loop; [`status`]: `/readyz` and `/metrics`.

pub mod conn;
pub mod hub;
pub mod placement;
pub mod registry;
pub mod runner;
pub mod session;
pub mod status;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hermod_core::bus::Request;
use hermod_core::reactor::mailbox::{mailbox, MailboxSender};
use hermod_core::redis::ClientConfig;
use hermod_core::resp::RespLimits;

pub use status::LinkStatus;

/// Hands a delivery to a gateway worker; gives it back when the worker's mailbox is full.
pub type Sink = hermod_broker::embedded::Sink;

/// Where the brokers are.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// These `host:port` addresses (`--brokers`).
    Static(Vec<String>),
    /// Whatever the registry in this Redis lists (`--registry`).
    Registry(Box<ClientConfig>),
}

/// What the hub needs to know.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The brokers, or where to find them.
    pub upstream: Upstream,
    /// The workers' request timeout: older in-flight requests are not re-sent on a re-home.
    pub request_timeout: Duration,
    /// The largest client message: bounds the frames a broker may push.
    pub max_message_size: usize,
    /// Requests the workers' mailbox to the hub holds.
    pub queue: usize,
}

/// A running link hub.
#[derive(Debug)]
pub struct LinkHub {
    /// Where the workers send requests.
    requests: MailboxSender<Request>,
    /// Wakes the thread to stop it, even while workers still hold senders.
    waker: Arc<mio::Waker>,
    /// Set to stop the thread.
    stop: Arc<AtomicBool>,
    /// Figures for the admin thread.
    status: Arc<LinkStatus>,
    /// The thread.
    thread: JoinHandle<()>,
}

impl LinkHub {
    /// A sender for a worker's requests.
    pub fn sender(&self) -> MailboxSender<Request> {
        self.requests.clone()
    }

    /// `/readyz` and `/metrics` figures.
    pub fn status(&self) -> Arc<LinkStatus> {
        Arc::clone(&self.status)
    }

    /// Stops the thread after it has passed on what the workers sent (their final Detaches).
    pub fn shutdown(self) {
        self.stop.store(true, Relaxed);
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake the link hub to stop it");
        }
        drop(self.requests);
        if self.thread.join().is_err() {
            tracing::error!("link hub thread panicked");
        }
    }
}

/// Starts the hub thread (`hermod-links`) with one sink per worker.
pub fn spawn(config: HubConfig, sinks: Vec<Sink>) -> io::Result<LinkHub> {
    let (poll, waker) = runner::poll_and_waker()?;
    let (requests, rx) = mailbox(config.queue.max(1), Arc::clone(&waker));
    let status = Arc::new(LinkStatus::default());
    let stop = Arc::new(AtomicBool::new(false));
    let max_bulk = config.max_message_size.saturating_add(64 << 10);
    let limits = RespLimits {
        max_bulk,
        max_array_len: hermod_core::link::MAX_SIDS_PER_PUSH + 8,
        max_buffer: max_bulk.saturating_mul(4).max(16 << 20),
        ..RespLimits::default()
    };
    let parts = runner::Parts {
        poll,
        requests: rx,
        sinks,
        status: Arc::clone(&status),
        stop: Arc::clone(&stop),
        upstream: config.upstream,
        request_timeout: config.request_timeout,
        limits,
    };
    let runner = runner::Runner::new(parts);
    status.alive.store(true, Relaxed);
    let thread = std::thread::Builder::new()
        .name("hermod-links".into())
        .spawn(move || runner.run())?;
    Ok(LinkHub {
        requests,
        waker,
        stop,
        status,
        thread,
    })
}
