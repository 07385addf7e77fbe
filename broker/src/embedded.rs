//! The broker hosted in the proxy's process: one thread that takes [`Request`]s from a bounded
//! channel, runs them through the [`Broker`], and hands each [`Delivery`] to the sink of the
//! gateway worker that owns its session (`sinks[session.worker]`).
//!
//! A sink that refuses a delivery (its worker's mailbox is full) makes that session *overflowed*:
//! the broker drops its subscriptions at once, later deliveries for it are dropped, and
//! `Event::Overflow` is retried on later loop turns until the sink takes it. The gateway then
//! closes the session with 1008 and the client resumes from its inbox and `since`: nothing
//! stored is lost.

use std::collections::HashMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Sender};

use hermod_core::bus::{Delivery, Event, Request, SessionKey};

use crate::broker::Broker;
use crate::engine::Engine;

/// Hands a delivery to a gateway worker; gives it back when the worker's mailbox is full.
pub type Sink = Box<dyn Fn(Delivery) -> Result<(), Delivery> + Send>;

/// How often retention and dedupe expiry run.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How soon an undelivered `Overflow` is retried.
const RETRY_EVERY: Duration = Duration::from_millis(10);
/// Requests taken per loop turn before deliveries are routed (bounds the delivery batch).
const BATCH: usize = 256;
/// Overflowed sessions remembered until their `Detach`. The gateway always detaches a closed
/// session, so this stays small; the cap only guards against a gateway that does not.
const MAX_OVERFLOWED: usize = 65_536;

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// Where the gateway sends requests (cloned out by [`EmbeddedBroker::sender`]).
    requests: Sender<Request>,
    /// Dropped on shutdown: the runner sees the disconnect and stops, even while gateway workers
    /// still hold request senders.
    stop: Sender<()>,
    /// The runner thread.
    thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// A sender for requests. The channel is bounded: `send` blocks while the broker is behind,
    /// `try_send` reports it full.
    pub fn sender(&self) -> Sender<Request> {
        self.requests.clone()
    }

    /// Stops the runner and waits for it.
    pub fn shutdown(self) {
        drop(self.requests);
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("embedded broker thread panicked");
        }
    }
}

/// Starts `broker` on its own thread, with a request channel of `queue` slots.
pub fn spawn<E: Engine + Send + 'static>(
    broker: Broker<E>,
    queue: usize,
    sinks: Vec<Sink>,
) -> std::io::Result<EmbeddedBroker> {
    let (requests, rx) = crossbeam_channel::bounded(queue.max(1));
    let (stop, stop_rx) = crossbeam_channel::bounded(0);
    let mut runner = Runner {
        broker,
        sinks,
        overflowed: HashMap::new(),
        retry: Vec::new(),
        out: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("hermod-broker".into())
        .spawn(move || runner.run(&rx, &stop_rx))?;
    Ok(EmbeddedBroker {
        requests,
        stop,
        thread,
    })
}

/// Where an overflowed session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflowed {
    /// `Overflow` not yet taken by the sink: retried every loop turn.
    Pending,
    /// `Overflow` delivered: waiting for the gateway's `Detach`.
    Told,
}

/// The runner thread's state.
struct Runner<E: Engine> {
    broker: Broker<E>,
    /// One per gateway worker, indexed by `SessionKey::worker`.
    sinks: Vec<Sink>,
    /// Sessions whose deliveries overflowed, until their `Detach`.
    overflowed: HashMap<SessionKey, Overflowed>,
    /// The `Pending` ones of `overflowed`, to retry without scanning the map.
    retry: Vec<SessionKey>,
    /// Deliveries of the current batch.
    out: Vec<Delivery>,
}

impl<E: Engine> Runner<E> {
    fn run(&mut self, rx: &Receiver<Request>, stop: &Receiver<()>) {
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        loop {
            let timeout = if self.retry.is_empty() {
                next_sweep.saturating_duration_since(Instant::now())
            } else {
                RETRY_EVERY
            };
            select! {
                recv(stop) -> _ => break,
                recv(rx) -> req => match req {
                    Ok(req) => {
                        self.on_request(req);
                        for req in rx.try_iter().take(BATCH) {
                            self.on_request(req);
                        }
                    }
                    Err(_) => break,
                },
                default(timeout) => {}
            }
            self.broker.poll_completions(&mut self.out);
            self.route();
            self.retry_overflows();
            if Instant::now() >= next_sweep {
                self.broker.sweep(unix_ms());
                next_sweep = Instant::now() + SWEEP_EVERY;
            }
        }
    }

    fn on_request(&mut self, req: Request) {
        let session = req.session();
        if self.overflowed.contains_key(&session) {
            // Already detached from the broker; only its final `Detach` matters.
            if matches!(req, Request::Detach { .. }) {
                self.overflowed.remove(&session);
                self.retry.retain(|k| *k != session);
            }
            return;
        }
        self.broker.handle(req, unix_ms(), &mut self.out);
    }

    fn route(&mut self) {
        let mut batch = std::mem::take(&mut self.out);
        for delivery in batch.drain(..) {
            let session = delivery.session;
            if self.overflowed.contains_key(&session) {
                continue;
            }
            let told = matches!(delivery.event, Event::Overflow);
            match self.deliver(delivery) {
                Ok(()) if told => self.mark(session, Overflowed::Told),
                Ok(()) => {}
                Err(_) => self.mark(session, Overflowed::Pending),
            }
        }
        // Keep the allocation for the next batch.
        self.out = batch;
    }

    fn deliver(&self, delivery: Delivery) -> Result<(), Delivery> {
        match self.sinks.get(usize::from(delivery.session.worker)) {
            Some(sink) => sink(delivery),
            None => {
                tracing::warn!(session = %delivery.session, "delivery for an unknown worker dropped");
                Ok(())
            }
        }
    }

    /// Records an overflowed session and detaches it from the broker.
    fn mark(&mut self, session: SessionKey, state: Overflowed) {
        if self.overflowed.len() >= MAX_OVERFLOWED {
            self.evict_one();
        }
        if self.broker.is_attached(session) {
            let mut none = Vec::new();
            self.broker
                .handle(Request::Detach { session }, unix_ms(), &mut none);
        }
        self.overflowed.insert(session, state);
        if state == Overflowed::Pending {
            self.retry.push(session);
        }
    }

    fn evict_one(&mut self) {
        let victim = self
            .overflowed
            .iter()
            .find(|(_, s)| **s == Overflowed::Told)
            .or_else(|| self.overflowed.iter().next())
            .map(|(k, _)| *k);
        if let Some(k) = victim {
            tracing::warn!(session = %k, "too many overflowed sessions: forgetting one");
            self.overflowed.remove(&k);
            self.retry.retain(|r| *r != k);
        }
    }

    fn retry_overflows(&mut self) {
        let mut waiting = std::mem::take(&mut self.retry);
        waiting.retain(|&session| {
            let delivery = Delivery {
                session,
                event: Event::Overflow,
            };
            match self.deliver(delivery) {
                Ok(()) => {
                    self.overflowed.insert(session, Overflowed::Told);
                    false
                }
                Err(_) => true,
            }
        });
        self.retry = waiting;
    }
}

/// Wall-clock time in unix milliseconds: message timestamps and retention ages.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
