//! The server API: HTTP/1.1 + JSON on `--api-listen`, for application backends that push to
//! users and rooms without a WebSocket of their own. docs/api.md is its reference and
//! docs/openapi.yaml its schema.
//!
//! Every request carries `Authorization: Bearer KEY` with one of the `--api-key`s (compared in
//! constant time); otherwise it is answered 401 and counted. One thread, `hermod-api`, runs
//! [`ApiLoop`](api_loop::ApiLoop): a mio loop with keep-alive, pipelining (answered in order,
//! one call at a time per connection), bounded heads and bodies and per-connection deadlines.
//! To the broker it is one more gateway worker: its own lane of the broker's mailbox and its
//! own sink for the answers, so a write goes the way a client's does (and, in a broker tier,
//! through the same links) and is answered once stored at the configured durability.
//!
//! - `http.rs`: parsing a request, encoding an answer (sans-io).
//! - `calls.rs`: a request's call, a write's targets and cids, its answer (sans-io).
//! - `queries.rs`: the reads and disconnects, one request each (sans-io).
//! - `dispatch.rs`: the API's broker sessions and the calls in flight (sans-io).
//! - `api_loop.rs`: the thread.

mod api_loop;
pub mod calls;
pub mod dispatch;
pub mod http;
pub mod queries;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use hermod_core::bus::{Delivery, Request};
use hermod_core::reactor::mailbox::{mailbox, MailboxReceiver, MailboxSender};
use mio::{Poll, Token, Waker};

use crate::metrics::Metrics;
use crate::settings::Settings;

/// Broker answers the API's mailbox holds.
const MAILBOX_CAPACITY: usize = 65_536;
const WAKER: Token = Token(usize::MAX);

/// What `GET /api/info` reports besides the API's own figures, supplied by the server.
pub struct NodeInfo {
    /// `memory`, `redis`, `sentinel`, `brokers` or `registry`.
    pub storage: &'static str,
    /// Broker links up and known, with external brokers.
    pub brokers: Option<Box<dyn Fn() -> (usize, usize) + Send>>,
}

/// The API thread before it runs: its poll, listener and mailbox.
pub struct PreparedApi {
    poll: Poll,
    listener: mio::net::TcpListener,
    mailbox: MailboxReceiver<Delivery>,
    stop: Arc<AtomicBool>,
}

/// The server's handle on the API thread: its sink for broker answers, and shutdown.
pub struct ApiHandle {
    tx: MailboxSender<Delivery>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

/// Prepares the API thread on `listener` (already bound).
pub fn prepare(listener: std::net::TcpListener) -> io::Result<(PreparedApi, ApiHandle)> {
    listener.set_nonblocking(true)?;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mailbox(MAILBOX_CAPACITY, Arc::clone(&waker));
    let stop = Arc::new(AtomicBool::new(false));
    let prepared = PreparedApi {
        poll,
        listener: mio::net::TcpListener::from_std(listener),
        mailbox: rx,
        stop: Arc::clone(&stop),
    };
    Ok((prepared, ApiHandle { tx, waker, stop }))
}

impl ApiHandle {
    /// For the broker (or the broker links): hands over an answer; Err gives it back when the
    /// mailbox is full.
    pub fn sink(&self) -> Box<dyn Fn(Delivery) -> Result<(), Delivery> + Send> {
        let tx = self.tx.clone();
        Box::new(move |d| tx.try_send(d).map_err(|e| e.into_inner()))
    }

    /// Asks the thread to detach its sessions and return.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            tracing::warn!("waking the API thread for shutdown: {e}");
        }
    }
}

impl PreparedApi {
    /// Starts the thread `hermod-api`; `lane` is the API's worker id towards the broker.
    pub fn spawn(
        self,
        lane: u16,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
        info: NodeInfo,
        broker: MailboxSender<Request>,
    ) -> io::Result<JoinHandle<()>> {
        let api = api_loop::ApiLoop::new(self, lane, settings, metrics, info, broker)?;
        thread::Builder::new()
            .name("hermod-api".to_owned())
            .spawn(move || api.run())
    }
}
