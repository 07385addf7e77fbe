//! The broker hosted in the proxy's process: one thread (`BrokerLoop`) that takes [`Request`]s
//! from a bounded channel, runs them through the [`Broker`], and hands each [`Delivery`] to the
//! sink of the gateway worker that owns its session (`sinks[session.worker]`).
//!
//! `BrokerLoop` is the engine's I/O shell too: it owns one mio `Poll` (the mailbox's waker and
//! the engine's Redis sockets, a [`RedisSockets`] for the engine's sans-io client core, if it
//! has one: [`Engine::redis`]). A turn: socket input into the core, [`Engine::handle_tick`]
//! (the turn's clock), the mailbox's requests, completions to the sinks, the sweep,
//! [`Engine::flush`], then the core's actions (connects, one write per socket, closes).
//!
//! A sink that refuses a delivery (its worker's mailbox is full) makes that session *overflowed*:
//! the broker drops its subscriptions at once, later deliveries for it are dropped, and
//! `Event::Overflow` is retried on later loop turns until the sink takes it. The gateway then
//! closes the session with 1008 and the client resumes from its inbox and `since`: nothing
//! stored is lost.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Events, Poll, Waker};

use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::reactor::mailbox::{fair_mailbox, MailboxReceiver, MailboxSender};
use hermod_core::redis::RedisSockets;

use crate::broker::Broker;
use crate::engine::{Engine, EngineStats};

/// Hands a delivery to a gateway worker; gives it back when the worker's mailbox is full.
pub type Sink = Box<dyn Fn(Delivery) -> Result<(), Delivery> + Send>;

/// Called on the broker thread after each loop turn's deliveries went to the sinks (see
/// [`spawn_with_flush`]): lets sinks that only queue wake their consumer once per batch, so a
/// room fan-out is seen whole.
pub type Flush = Box<dyn FnMut() + Send>;

/// How often retention and dedupe expiry run.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How soon an undelivered `Overflow` is retried.
const RETRY_EVERY: Duration = Duration::from_millis(10);
/// Requests taken per wake before deliveries are routed (bounds the delivery batch).
const BATCH: usize = 256;
/// Overflowed sessions remembered until their `Detach`. The gateway always detaches a closed
/// session, so this stays small; the cap only guards against a gateway that does not.
const MAX_OVERFLOWED: usize = 65_536;
/// The waker's token; the engine's sockets use the tokens from [`FIRST_ENGINE_TOKEN`] up.
const WAKE: mio::Token = mio::Token(0);
/// The first token of the engine's Redis sockets.
const FIRST_ENGINE_TOKEN: usize = 1;
/// Readiness events taken per `poll`.
const EVENTS: usize = 256;

/// What the broker loop publishes for the proxy's `/readyz` and `/metrics`.
#[derive(Debug, Default)]
struct Shared {
    /// Set by `shutdown`: the broker loop stops at its next turn.
    stop: AtomicBool,
    /// The engine's `is_ready`, refreshed every loop turn.
    ready: AtomicBool,
    /// The engine's counters, refreshed every loop turn (field order of [`EngineStats`]).
    stats: [AtomicU64; 10],
}

impl Shared {
    fn publish(&self, ready: bool, s: &EngineStats) {
        self.ready.store(ready, Ordering::Relaxed);
        let values = [
            s.round_trips,
            s.pipeline_depth,
            s.failovers_seen,
            s.reconnects,
            s.unavailable,
            s.pending_ops,
            s.store_bytes,
            s.store_budget,
            s.store_refused_budget,
            s.store_refused_quota,
        ];
        for (slot, v) in self.stats.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    fn read(&self) -> EngineStats {
        let v = |i: usize| self.stats[i].load(Ordering::Relaxed);
        EngineStats {
            round_trips: v(0),
            pipeline_depth: v(1),
            failovers_seen: v(2),
            reconnects: v(3),
            unavailable: v(4),
            pending_ops: v(5),
            store_bytes: v(6),
            store_budget: v(7),
            store_refused_budget: v(8),
            store_refused_quota: v(9),
        }
    }
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// Where the gateway sends requests, one lane per sink (gateway worker), drained fairly
    /// (cloned out by [`EmbeddedBroker::sender_for`]).
    requests: Vec<MailboxSender<Request>>,
    /// Wakes the broker loop on shutdown, even while gateway workers still hold request senders.
    waker: Arc<Waker>,
    /// Stop flag, readiness and counters shared with the broker loop.
    shared: Arc<Shared>,
    /// The broker loop's thread.
    thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// A sender for requests. The mailbox is bounded: `try_send` reports it full, `send_timeout`
    /// waits for room.
    pub fn sender(&self) -> MailboxSender<Request> {
        self.sender_for(0)
    }

    /// The sender of `lane` (a gateway worker's id): each lane is its own bounded queue, and the
    /// broker loop takes an equal share of each turn's budget from every lane, so one worker's
    /// flood neither fills the others' queues nor delays them.
    pub fn sender_for(&self, lane: usize) -> MailboxSender<Request> {
        self.requests[lane % self.requests.len()].clone()
    }

    /// Whether the engine can serve operations (Redis reachable and set up): `/readyz`.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    /// The engine's counters as of the broker loop's last loop turn.
    pub fn stats(&self) -> EngineStats {
        self.shared.read()
    }

    /// Stops the broker loop and waits for it.
    pub fn shutdown(self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake the embedded broker to stop it");
        }
        drop(self.requests);
        if self.thread.join().is_err() {
            tracing::error!("embedded broker thread panicked");
        }
    }
}

/// Starts `broker` on its own thread, with a request mailbox of `queue` slots shared out between
/// one lane per sink.
pub fn spawn<E: Engine + Send + 'static>(
    broker: Broker<E>,
    queue: usize,
    sinks: Vec<Sink>,
) -> io::Result<EmbeddedBroker> {
    spawn_with_flush(broker, queue, sinks, None)
}

/// [`spawn`], with `flush` called after every loop turn's deliveries were handed to the sinks.
pub fn spawn_with_flush<E: Engine + Send + 'static>(
    broker: Broker<E>,
    queue: usize,
    sinks: Vec<Sink>,
    flush: Option<Flush>,
) -> io::Result<EmbeddedBroker> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let lanes = sinks.len().max(1);
    let (requests, rx) = fair_mailbox(lanes, (queue / lanes).max(1), Arc::clone(&waker));
    let shared = Arc::new(Shared::default());
    shared.publish(broker.engine().is_ready(), &broker.engine().stats());
    let broker_loop = BrokerLoop {
        broker,
        poll,
        rx,
        requests: Vec::new(),
        sockets: RedisSockets::new(FIRST_ENGINE_TOKEN),
        sinks,
        flush,
        overflowed: HashMap::new(),
        retry: Vec::new(),
        out: Vec::new(),
        shared: Arc::clone(&shared),
    };
    let thread = std::thread::Builder::new()
        .name("hermod-broker".into())
        .spawn(move || broker_loop.run())?;
    Ok(EmbeddedBroker {
        requests,
        waker,
        shared,
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

/// The broker thread: one mio `Poll` for the request mailbox and the engine's Redis sockets.
struct BrokerLoop<E: Engine> {
    broker: Broker<E>,
    /// Waits for requests (the mailbox's waker) and socket readiness.
    poll: Poll,
    /// The request mailbox: one lane per gateway worker, drained round-robin.
    rx: MailboxReceiver<Request>,
    /// The requests of the current turn (the allocation is kept).
    requests: Vec<Request>,
    /// The sockets of the engine's Redis client core (none for in-process engines).
    sockets: RedisSockets,
    /// One per gateway worker, indexed by `SessionKey::worker`.
    sinks: Vec<Sink>,
    /// Called after each turn's deliveries (batching sinks wake their consumer here).
    flush: Option<Flush>,
    /// Sessions whose deliveries overflowed, until their `Detach`.
    overflowed: HashMap<SessionKey, Overflowed>,
    /// The `Pending` ones of `overflowed`, to retry without scanning the map.
    retry: Vec<SessionKey>,
    /// Deliveries of the current batch.
    out: Vec<Delivery>,
    /// Stop flag, readiness and counters shared with the [`EmbeddedBroker`].
    shared: Arc<Shared>,
}

impl<E: Engine> BrokerLoop<E> {
    /// Runs turns until shutdown, or until every request sender is gone. A turn: wait; feed
    /// socket input to the engine's client core; the engine's tick (client events, timeouts);
    /// the mailbox's requests; completions routed to the sinks; sweep; the engine's flush and
    /// the core's actions (connects, one write per socket, closes).
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        loop {
            let timeout = self.timeout(next_sweep);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "embedded broker poll failed");
                    break;
                }
            }
            let now = Instant::now();
            let mut woken = false;
            for event in events.iter() {
                if event.token() == WAKE {
                    woken = true;
                } else if let Some(core) = self.broker.engine_mut().redis() {
                    self.sockets
                        .handle_event(core, self.poll.registry(), event, now);
                }
            }
            self.broker.engine_mut().handle_tick(now);
            if woken {
                let mut requests = std::mem::take(&mut self.requests);
                self.rx.drain(BATCH, |req| requests.push(req));
                for req in requests.drain(..) {
                    self.on_request(req);
                }
                self.requests = requests;
            }
            self.broker.poll_completions(&mut self.out);
            self.route();
            self.retry_overflows();
            if let Some(flush) = self.flush.as_mut() {
                flush();
            }
            if now >= next_sweep {
                self.broker.sweep(unix_ms());
                next_sweep = now + SWEEP_EVERY;
            }
            self.broker.engine_mut().flush();
            if let Some(core) = self.broker.engine_mut().redis() {
                self.sockets.run(core, self.poll.registry(), now);
            }
            let engine = self.broker.engine();
            self.shared.publish(engine.is_ready(), &engine.stats());
            let gone = self.rx.is_disconnected() && self.rx.is_empty();
            if self.shared.stop.load(Ordering::Acquire) || gone {
                break;
            }
        }
    }

    /// How long the next `poll` may sleep: until the sweep, the engine's next deadline, or the
    /// next overflow retry.
    fn timeout(&self, next_sweep: Instant) -> Duration {
        let now = Instant::now();
        let mut until = next_sweep;
        if let Some(d) = self.broker.engine().next_deadline() {
            until = until.min(d);
        }
        let wait = until.saturating_duration_since(now);
        if self.retry.is_empty() {
            wait
        } else {
            wait.min(RETRY_EVERY)
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
