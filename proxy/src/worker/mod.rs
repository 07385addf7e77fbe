//! One reactor thread, [`WorkerLoop`]: a mio `Poll`, this worker's SO_REUSEPORT listener, a slab
//! of connections, a timer wheel and a mailbox for broker deliveries. Nothing here is shared with
//! other workers except the [`Metrics`] atomics, the admission limits ([`SharedLimits`],
//! touched at accept, handshake and close only) and the webhook queue (`HookSender`, a
//! non-blocking `try_send` when a session connects, joins, leaves, publishes or ends).
//!
//! One loop iteration: poll; serve socket events (accept, handshake, read, writable); drain the
//! mailbox (deliveries queue output); continue capped reads; fire timers; retry Attach/Detach
//! the broker had no room for; then flush every session with queued output, once (coalescing).
//!
//! - `slot.rs`: what a slot holds ([`Conn`]: routing, handshake, session or tunnel).
//! - `accept.rs`: a new connection's way in: accept, the first look at its request head (a
//!   route, an upgrade, or an HTTP answer), the WebSocket handshake.
//! - `tunnels.rs`: the loop's side of `--route` tunnels (upstream socket, timers, verdicts).
//! - `context.rs`: what session handlers borrow, and the [`BrokerPort`] to the broker.
//! - This file: the loop itself, event dispatch, and the WebSocket sessions' events.

mod accept;
mod context;
mod slot;
mod tunnels;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermod_core::bus::{Delivery, Request};
use hermod_core::ids::Name;
use hermod_core::rate::Carryover;
use hermod_core::reactor::admission::{AddressTable, UserSessions};
use hermod_core::reactor::interrupted;
use hermod_core::reactor::listener::Acceptor;
use hermod_core::reactor::mailbox::{mailbox, MailboxReceiver, MailboxSender};
use hermod_core::reactor::slots::{Key, Slots};
use hermod_core::reactor::timer::TimerWheel;
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use tungstenite::protocol::WebSocketConfig;

pub use context::{BrokerPort, WorkerContext};
pub use slot::{Conn, Routing};

use crate::metrics::{HeadTimeout, Metrics, Rejected};
use crate::next::{CloseReason, Next, ABNORMAL};
use crate::settings::Settings;
use crate::tunnel::relay::{BufPool, Ready};
use crate::tunnel::{discard_input, Side};
use crate::webhooks::{HookSender, What};
use slot::{upstream_key, Slot};

/// A message for a worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// A broker delivery for one of this worker's sessions.
    Deliver(Delivery),
    /// Close every session with 1012 and return from `run`.
    Shutdown,
}

/// The admission limits every worker shares, built once per process.
#[derive(Debug, Clone)]
pub struct SharedLimits {
    /// `--max-connections-per-ip`, `--max-connects-per-ip-per-sec`.
    pub addresses: Arc<AddressTable>,
    /// `--max-sessions-per-user`.
    pub users: Arc<UserSessions>,
}

impl SharedLimits {
    pub fn new(settings: &Settings) -> Self {
        SharedLimits {
            addresses: Arc::new(AddressTable::new(
                settings.max_connections_per_ip,
                settings.max_connects_per_ip_per_sec,
            )),
            users: Arc::new(UserSessions::new(settings.max_sessions_per_user)),
        }
    }
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Deliveries a worker's mailbox holds; a full mailbox makes the broker back off or overflow
/// the session.
const MAILBOX_CAPACITY: usize = 16 * 1024;
/// Mailbox messages handled per loop iteration.
const MAILBOX_BUDGET: usize = 4096;
/// Connections accepted per listener event before serving others.
const ACCEPT_BUDGET: usize = 256;
/// How long a closing session may take to drain its close frame and see the peer's EOF.
const CLOSE_LINGER: Duration = Duration::from_secs(30);
/// Pause before retrying Attach/Detach when the broker channel is full.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);
/// Longest poll sleep (the stop flag is also checked then).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// tungstenite buffers output up to this before writing by itself; we flush once per tick.
const WRITE_BUFFER: usize = 64 * 1024;
/// Read buffer per connection, resident after the first read: tungstenite's default (128 KiB)
/// dominates idle memory. Measured per idle `/ws` session (proxy RSS, broker included): 5.4 KiB
/// with 4 KiB here, 3.6 KiB with 2 KiB. Larger messages just take more reads.
const READ_BUFFER: usize = 2048;
/// Most slots a worker reserves up front (see `WorkerLoop::new`).
const MAX_RESERVED_SLOTS: usize = 1 << 17;
/// Free tunnel relay buffers a worker keeps for reuse (16 KiB each).
const POOL_KEEP: usize = 64;

/// The sending side of a worker's mailbox, for the broker and the shell.
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    tx: MailboxSender<WorkerMsg>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl WorkerHandle {
    /// For the embedded broker: try to hand over a delivery; Err gives it back when the mailbox
    /// is full (or the worker is gone).
    pub fn sink(&self) -> Box<dyn Fn(Delivery) -> Result<(), Delivery> + Send> {
        let tx = self.tx.clone();
        Box::new(move |d| match tx.try_send(WorkerMsg::Deliver(d)) {
            Ok(()) => Ok(()),
            Err(e) => match e.into_inner() {
                WorkerMsg::Deliver(d) => Err(d),
                // Never happens: only deliveries go in here.
                WorkerMsg::Shutdown => Ok(()),
            },
        })
    }

    /// Asks the worker to close every session with 1012, flush, and return from `run()`.
    pub fn shutdown(&self) {
        self.stop.store(true, Relaxed);
        if let Err(e) = self.waker.wake() {
            tracing::warn!("waking worker for shutdown: {e}");
        }
    }
}

/// A worker ready to run on its own thread, once the broker's channel exists.
#[derive(Debug)]
pub struct PreparedWorker {
    id: u16,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    limits: SharedLimits,
    /// Where session events go (`--webhook-url`; off: nowhere).
    hooks: HookSender,
    poll: Poll,
    listener: TcpListener,
    mailbox: MailboxReceiver<WorkerMsg>,
    stop: Arc<AtomicBool>,
}

/// Builds worker `id` around its listener, with what every worker shares.
pub fn prepare(
    id: u16,
    settings: Arc<Settings>,
    mut listener: TcpListener,
    (metrics, limits, hooks): (Arc<Metrics>, SharedLimits, HookSender),
) -> std::io::Result<(PreparedWorker, WorkerHandle)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let (tx, rx) = mailbox(MAILBOX_CAPACITY, Arc::clone(&waker));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = PreparedWorker {
        id,
        settings,
        metrics,
        limits,
        hooks,
        poll,
        listener,
        mailbox: rx,
        stop: Arc::clone(&stop),
    };
    Ok((worker, WorkerHandle { tx, stop, waker }))
}

impl PreparedWorker {
    /// Runs the loop, sending to the broker through `broker`; returns after shutdown completes
    /// (or its grace elapsed).
    pub fn run(self, broker: MailboxSender<Request>) {
        match WorkerLoop::new(self, broker) {
            Ok(worker) => worker.run(),
            Err(e) => tracing::error!("worker cannot start: {e}"),
        }
    }
}

/// One worker thread's loop and everything it owns.
pub struct WorkerLoop {
    cx: WorkerContext,
    poll: Poll,
    /// `None` once shutdown began (deregistered and closed).
    listener: Option<TcpListener>,
    acceptor: Acceptor,
    mailbox: MailboxReceiver<WorkerMsg>,
    stop: Arc<AtomicBool>,
    slots: Slots<Slot>,
    timers: TimerWheel<Key>,
    /// Sessions with queued output for the end of this tick.
    flush_list: Vec<Key>,
    /// Sessions whose read budget ran out.
    read_list: Vec<Key>,
    /// When to accept again: after an fd shortage, or at once when the budget ran out.
    accept_again: Option<Instant>,
    /// Set when shutdown began: return once every session is gone or at this instant.
    shutdown_deadline: Option<Instant>,
    ws_config: WebSocketConfig,
    /// Relay buffers for tunnels, lent only while bytes are in flight.
    pool: BufPool,
    /// Rate limiters of sessions that ended in debt, by user: a reconnect inherits them.
    carry: Carryover<Name>,
    /// The current loop turn's time (read once per turn).
    now: Instant,
    /// Admission limits shared with the other workers.
    limits: SharedLimits,
    /// Slots in [`Conn::Refusing`] (at most `accept::MAX_REFUSING`).
    refusing: usize,
}

impl WorkerLoop {
    fn new(w: PreparedWorker, broker: MailboxSender<Request>) -> std::io::Result<Self> {
        let max = w.settings.max_message_size;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(WRITE_BUFFER + 2 * (w.settings.max_outbound_bytes + max) + 4096)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        // Room for every connection the server admits, reserved once: only the slots in use
        // become resident, and the slab never reallocates (a doubling slab leaves the old array
        // behind as heap holes: 3.68 -> 3.60 KiB per idle `/ws` session at 15,000, medians).
        let slots = Slots::with_capacity(w.settings.max_connections.min(MAX_RESERVED_SLOTS));
        Ok(WorkerLoop {
            cx: WorkerContext::new(w.id, w.settings, w.metrics, BrokerPort::new(broker))
                .with_hooks(w.hooks),
            poll: w.poll,
            listener: Some(w.listener),
            acceptor: Acceptor::new()?.answering(crate::ws::refusal::SHED_ANSWER),
            mailbox: w.mailbox,
            stop: w.stop,
            slots,
            timers: TimerWheel::new(Instant::now(), Duration::from_millis(10), 8192),
            flush_list: Vec::new(),
            read_list: Vec::new(),
            accept_again: None,
            shutdown_deadline: None,
            ws_config,
            pool: BufPool::new(POOL_KEEP),
            carry: Carryover::default(),
            now: Instant::now(),
            limits: w.limits,
            refusing: 0,
        })
    }

    /// Runs the loop until shutdown completes (or its grace elapsed).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut batch = Vec::new();
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if interrupted(&e) {
                    continue;
                }
                tracing::error!("poll failed: {e}");
                break;
            }
            let now = Instant::now();
            self.now = now;
            self.cx.tick(now);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    _ => self.on_event(ev, now),
                }
            }
            self.mailbox.drain(MAILBOX_BUDGET, |m| batch.push(m));
            for msg in batch.drain(..) {
                match msg {
                    WorkerMsg::Deliver(d) => self.deliver(d, now),
                    WorkerMsg::Shutdown => self.stop.store(true, Relaxed),
                }
            }
            self.tick(now);
            if let Some(deadline) = self.shutdown_deadline {
                if self.slots.is_empty() || now >= deadline {
                    break;
                }
            }
        }
        self.finish();
    }

    /// The end-of-iteration work.
    fn tick(&mut self, now: Instant) {
        if self.stop.load(Relaxed) && self.shutdown_deadline.is_none() {
            self.begin_shutdown(now);
        }
        if self.accept_again.is_some_and(|t| t <= now) {
            self.accept_again = None;
            self.accept(now);
        }
        for key in std::mem::take(&mut self.read_list) {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.read_queued = false;
            }
            self.read_again(key, now);
        }
        let mut expired = Vec::new();
        self.timers.poll_expired(now, &mut expired);
        for key in expired {
            self.on_timer(key, now);
        }
        self.cx.broker.retry_parked();
        for key in std::mem::take(&mut self.flush_list) {
            self.flush(key, now);
        }
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if !self.read_list.is_empty() || !self.flush_list.is_empty() {
            return Duration::ZERO;
        }
        let mut wake = now + MAX_SLEEP;
        let candidates = [
            self.timers.next_deadline(),
            self.accept_again,
            self.shutdown_deadline,
            self.cx.broker.has_parked().then(|| now + BACKLOG_RETRY),
        ];
        for t in candidates.into_iter().flatten() {
            wake = wake.min(t);
        }
        // Round up to the next millisecond so that a sub-millisecond wait does not spin.
        let d = wake.saturating_duration_since(now);
        if d.is_zero() {
            d
        } else {
            d.max(Duration::from_millis(1))
        }
    }

    // ---- events -------------------------------------------------------------------------------

    /// A socket event: to the tunnel it belongs to, or to the session or handshake of its slot.
    fn on_event(&mut self, ev: &Event, now: Instant) {
        let ready = Ready {
            readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
            writable: ev.is_writable() || ev.is_write_closed(),
            closed: ev.is_read_closed() || ev.is_error(),
        };
        if let Some(key) = upstream_key(ev.token()) {
            return self.on_tunnel(key, Some((Side::Upstream, ready)), now);
        }
        let Some(key) = Key::from_token(ev.token()) else {
            return;
        };
        match self.slots.get(key).map(|s| &s.conn) {
            Some(Conn::Tunnel(_)) => self.on_tunnel(key, Some((Side::Client, ready)), now),
            _ => self.on_socket(key, ready.readable, ready.writable, now),
        }
    }

    /// Runs a connection from the read-again list.
    fn read_again(&mut self, key: Key, now: Instant) {
        match self.slots.get(key).map(|s| &s.conn) {
            Some(Conn::Tunnel(_)) => self.on_tunnel(key, None, now),
            _ => self.on_socket(key, true, false, now),
        }
    }

    // ---- events on sessions ------------------------------------------------------------------

    fn on_socket(&mut self, key: Key, readable: bool, writable: bool, now: Instant) {
        let cx = self.cx.session_cx(key, now);
        let next = match self.slots.get_mut(key).map(|s| &mut s.conn) {
            Some(Conn::Ws(session)) => session.on_ready(readable, writable, &cx),
            Some(Conn::Handshaking(_)) => return self.drive_handshake(key, now),
            Some(Conn::Routing(_)) => return self.on_routing(key, now),
            Some(Conn::Refusing(_)) => return self.on_refusing(key),
            Some(Conn::Tunnel(_)) => {
                let ready = Ready {
                    readable,
                    writable,
                    closed: false,
                };
                return self.on_tunnel(key, Some((Side::Client, ready)), now);
            }
            None => return,
        };
        self.after(key, next, now);
    }

    fn deliver(&mut self, d: Delivery, now: Instant) {
        if d.session.worker != self.cx.id {
            return;
        }
        let key = Key {
            slot: d.session.slot,
            generation: d.session.generation,
        };
        let cx = self.cx.session_cx(key, now);
        // A stale key (session gone, slot reused) finds nothing: the delivery is dropped.
        let next = match self.slots.get_mut(key).map(|s| &mut s.conn) {
            Some(Conn::Ws(session)) => session.deliver(d.event, &cx),
            _ => return,
        };
        self.after(key, next, now);
    }

    fn on_timer(&mut self, key: Key, now: Instant) {
        let cx = self.cx.session_cx(key, now);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        slot.timer = None;
        let next = match &mut slot.conn {
            Conn::Handshaking(h) if now >= h.deadline => {
                self.cx.metrics.rejected(Rejected::Failed);
                self.cx.metrics.head_timeout(HeadTimeout::Head);
                // Read what the peer sent so the close is a FIN, not a reset.
                if let Some(mid) = h.mid.as_mut() {
                    discard_input(mid.get_mut().get_mut());
                }
                return self.remove(key, None);
            }
            Conn::Handshaking(h) => {
                slot.timer = Some(self.timers.insert(h.deadline, key));
                return;
            }
            Conn::Routing(r) if now >= r.deadline => {
                self.cx.metrics.rejected(Rejected::Failed);
                let stage = if r.started {
                    HeadTimeout::Head
                } else {
                    HeadTimeout::FirstByte
                };
                self.cx.metrics.head_timeout(stage);
                if let Some(stream) = r.stream.as_mut() {
                    discard_input(stream);
                }
                return self.remove(key, None);
            }
            Conn::Routing(r) => {
                slot.timer = Some(self.timers.insert(r.deadline, key));
                return;
            }
            Conn::Tunnel(_) => return self.on_tunnel_timer(key, now),
            Conn::Refusing(_) => return self.remove(key, None),
            Conn::Ws(session) => session.on_timer(&cx),
        };
        self.after(key, next, now);
    }

    fn flush(&mut self, key: Key, now: Instant) {
        let cx = self.cx.session_cx(key, now);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        slot.flush_queued = false;
        let next = match &mut slot.conn {
            Conn::Ws(session) => session.flush_out(&cx),
            Conn::Handshaking(_) | Conn::Routing(_) | Conn::Tunnel(_) | Conn::Refusing(_) => return,
        };
        self.after(key, next, now);
    }

    /// Acts on a handler's verdict, then keeps the session's lists and timer up to date.
    fn after(&mut self, key: Key, next: Next, now: Instant) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Conn::Ws(session) = &mut slot.conn else {
            return;
        };
        let next = match next {
            Next::Close(reason) => {
                if reason == CloseReason::SlowConsumer {
                    self.cx.metrics.slow_consumer_closes.fetch_add(1, Relaxed);
                }
                session.begin_close(reason, now + CLOSE_LINGER)
            }
            other => other,
        };
        match next {
            Next::Drop(code) => return self.remove(key, Some(code)),
            Next::MoreToRead if !slot.read_queued => {
                slot.read_queued = true;
                self.read_list.push(key);
            }
            _ => {}
        }
        if session.take_resume() {
            let session = self.cx.session_key(key);
            self.cx
                .broker
                .send_control(Request::ResumeReplay { session });
        }
        if session.wants_flush() && !slot.flush_queued {
            slot.flush_queued = true;
            self.flush_list.push(key);
        }
        let deadline = session.next_deadline(&self.cx.settings);
        slot.arm_timer(&mut self.timers, key, Some(deadline));
    }

    /// Ends a connection: `code` is the close code of an upgraded session (`None`: handshake).
    fn remove(&mut self, key: Key, code: Option<u16>) {
        let Some(slot) = self.slots.remove(key) else {
            return;
        };
        if let Some(id) = slot.timer {
            self.timers.cancel(id);
        }
        if let Conn::Refusing(_) = slot.conn {
            // Never counted as a connection.
            self.refusing -= 1;
            return;
        }
        self.cx.metrics.connections_open.fetch_sub(1, Relaxed);
        match slot.conn {
            Conn::Ws(session) => {
                let code = code.unwrap_or(ABNORMAL);
                self.cx.metrics.closed(code);
                if let Some((user, device)) = session.identity() {
                    self.cx.report(What::Disconnect { code }, user, device, key);
                }
                if session.attached {
                    let session = self.cx.session_key(key);
                    self.cx.broker.send_control(Request::Detach { session });
                }
                if let Some((user, limiter)) = session.into_limiter() {
                    self.carry.put(user, limiter, self.now);
                }
            }
            Conn::Tunnel(mut tunnel) => {
                tunnel.release(&mut self.pool);
                self.cx.metrics.tunnels_open.fetch_sub(1, Relaxed);
            }
            Conn::Handshaking(_) | Conn::Routing(_) | Conn::Refusing(_) => {}
        }
    }

    // ---- shutdown ------------------------------------------------------------------------------

    fn begin_shutdown(&mut self, now: Instant) {
        tracing::debug!(
            worker = self.cx.id,
            sessions = self.slots.len(),
            "shutting down"
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_again = None;
        self.shutdown_deadline = Some(now + self.cx.settings.shutdown_grace);
        let keys: Vec<Key> = self.slots.keys().collect();
        for key in keys {
            match self.slots.get(key).map(|s| &s.conn) {
                Some(Conn::Handshaking(_) | Conn::Routing(_) | Conn::Refusing(_)) => {
                    self.remove(key, None)
                }
                Some(Conn::Ws(_)) => {
                    self.after(key, Next::Close(CloseReason::ServiceRestart), now);
                }
                Some(Conn::Tunnel(t)) if !t.is_relaying() => self.remove(key, None),
                // A tunnel cannot send a close frame (it does no framing): it relays on until
                // its peers end it or the grace period runs out.
                Some(Conn::Tunnel(_)) | None => {}
            }
        }
    }

    /// Drops whatever is left after the grace period and tells the broker.
    fn finish(&mut self) {
        let keys: Vec<Key> = self.slots.keys().collect();
        for key in keys {
            self.remove(key, None);
        }
        self.cx.broker.retry_parked();
    }
}
