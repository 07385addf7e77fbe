//! [`GatewayLinksLoop`], the gateway links thread (`hermod-links`): owns the listener and the
//! gateway links on its own mio `Poll`, feeds what they send through the [`GatewaySessions`],
//! forwards requests to the runner's mailbox, takes the runner's deliveries from its own
//! mailbox, and writes each link once per loop turn.
//!
//! Backpressure: a request the full runner mailbox refuses is parked on its link, and that link
//! is not read again until it went through (TCP then pushes back on the gateway). A link whose
//! unwritten output passes [`OUT_PAUSE`] is not read until it drains; past [`OUT_MAX`] (the
//! gateway stopped reading) it is closed. A link silent for the link timeout is closed. Closing
//! a link detaches every session it attached.
//!
//! Bounds: a link that has not authenticated reads with `pre_auth_limits` (a few KiB, flat
//! commands), is not read while 4 KiB of its replies wait, is closed at the auth deadline, and
//! is evicted when [`MAX_UNAUTHENTICATED`] newer links wait; an authenticated one reads with
//! `command_limits` (one bulk of at most a message plus a margin). The bytes buffered across
//! all links are held to the [`LinkBudget`]: a link past its share when the cap is reached is
//! closed, counted.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hermod_core::bus::{Delivery, Request};
use hermod_core::link::{command_limits, pre_auth_limits, MAX_FRAME_LEN, PRE_AUTH_FRAME};
use hermod_core::reactor::backlog::Backlog;
use hermod_core::reactor::listener::{AcceptOutcome, Acceptor};
use hermod_core::reactor::mailbox::MailboxSender;
use hermod_core::reactor::slots::Key;
use hermod_core::reactor::{interrupted, would_block};
use hermod_core::resp::{encode_value, RespReader, Value};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::auth::Refusal;
use super::budget::{LinkBudget, Over};
use super::sessions::{GatewaySessions, Handled, RequestSink};
use crate::metrics::{LimitClose, Metrics};

/// The waker's token (a runner turn's deliveries, drain).
pub const WAKE: Token = Token(0);
/// The listener's token.
const LISTENER: Token = Token(1);
/// Requests the runner's mailbox holds (it is created with this capacity).
pub const REQUEST_QUEUE: usize = 65_536;
/// Deliveries taken per wake before the links are served again.
const DELIVERY_BATCH: usize = 4096;
/// Reads of one link per pass before other links get a turn.
const READS_PER_PASS: usize = 16;
/// Read buffer, shared by every link.
const READ_CHUNK: usize = 64 << 10;
/// Stop reading a link while this much of its output is unwritten.
const OUT_PAUSE: usize = 8 << 20;
/// Close a link with this much unwritten output: its gateway is not reading.
const OUT_MAX: usize = 2 * MAX_FRAME_LEN;
/// Most links at once; more are accepted and closed.
const MAX_LINKS: usize = 1024;
/// Most links not yet authenticated at once: a new one evicts the oldest, so strangers holding
/// connections open cannot keep a gateway from linking (it authenticates within a round trip).
const MAX_UNAUTHENTICATED: usize = 64;
/// How often silent links are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// Poll timeout while something waits for room (a parked request, a control backlog).
const RETRY_EVERY: Duration = Duration::from_millis(1);

/// The main thread's handle on the link thread: start draining, wake it.
#[derive(Debug)]
pub struct Control {
    /// Set by the main thread on SIGTERM/SIGINT.
    pub draining: AtomicBool,
    /// The link thread's waker.
    pub waker: Arc<Waker>,
}

impl Control {
    /// Asks the link thread to drain.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake the link thread");
        }
    }
}

/// One link's socket side.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    /// Decodes the gateway's commands, bounded.
    reader: RespReader,
    /// The socket may hold bytes we have not read (we stopped early): no new edge will come.
    unread: bool,
    /// Bytes of input and output counted against the [`LinkBudget`].
    held: usize,
}

/// The runner's mailbox as [`GatewaySessions`] sees it, with the ordered backlog of control
/// requests.
struct Mailbox {
    requests: MailboxSender<Request>,
    /// Detaches (and requests that raced a full mailbox), sent in order before anything else.
    control: Backlog<Request>,
}

impl RequestSink for Mailbox {
    fn has_room(&self) -> bool {
        self.control.is_empty() && self.requests.len() < REQUEST_QUEUE
    }

    fn send(&mut self, req: Request) {
        self.send_control(req);
    }

    fn send_control(&mut self, req: Request) {
        let requests = &self.requests;
        self.control.send(req, |r| requests.try_send(r));
    }
}

impl Mailbox {
    fn retry(&mut self) {
        let requests = &self.requests;
        self.control.retry(|r| requests.try_send(r));
    }
}

/// What the gateway links thread needs to start ([`GatewayLinks::spawn`]).
pub struct GatewayLinks {
    pub poll: Poll,
    pub listener: TcpListener,
    pub sessions: GatewaySessions<Conn>,
    pub requests: MailboxSender<Request>,
    pub deliveries: Receiver<Delivery>,
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
    pub link_timeout: Duration,
    pub drain_timeout: Duration,
    /// A link that has not authenticated by then is closed.
    pub auth_timeout: Duration,
    /// Most bytes buffered across all links (`--link-buffer-budget`).
    pub buffer_budget: usize,
}

impl GatewayLinks {
    /// Starts the thread (`hermod-links`). It ends once draining is done (every session
    /// detached, or the drain timeout passed).
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("hermod-links".into())
            .spawn(move || {
                GatewayLinksLoop::new(self)
                    .and_then(GatewayLinksLoop::run)
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "link thread failed");
                    })
            })
    }
}

/// The running loop's state: the shell around [`GatewaySessions`] (sockets, mailboxes, clock).
struct GatewayLinksLoop {
    t: GatewayLinks,
    /// None once draining (no new links).
    listening: bool,
    acceptor: Acceptor,
    mailbox: Mailbox,
    /// Links to read again without waiting for an edge.
    again: Vec<Key>,
    scratch: Vec<u8>,
    drain_deadline: Option<Instant>,
    next_sweep: Instant,
    budget: LinkBudget,
}

impl GatewayLinksLoop {
    fn new(mut t: GatewayLinks) -> io::Result<GatewayLinksLoop> {
        t.poll
            .registry()
            .register(&mut t.listener, LISTENER, Interest::READABLE)?;
        let budget = LinkBudget::new(t.buffer_budget);
        let mailbox = Mailbox {
            requests: t.requests.clone(),
            control: Backlog::new(),
        };
        Ok(GatewayLinksLoop {
            t,
            listening: true,
            acceptor: Acceptor::new()?,
            mailbox,
            again: Vec::new(),
            scratch: vec![0; READ_CHUNK],
            drain_deadline: None,
            next_sweep: Instant::now() + SWEEP_EVERY,
            budget,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let waiting = !self.again.is_empty() || !self.mailbox.control.is_empty();
            let timeout = if !self.t.deliveries.is_empty() {
                Duration::ZERO
            } else if waiting {
                RETRY_EVERY
            } else {
                SWEEP_EVERY
            };
            if let Err(e) = self.t.poll.poll(&mut events, Some(timeout)) {
                if !interrupted(&e) {
                    return Err(e);
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKE => {} // deliveries are taken every turn, below
                    LISTENER => self.accept(now),
                    token => {
                        let Some(key) = Key::from_token(token) else {
                            continue;
                        };
                        if event.is_writable() {
                            self.write(key);
                        }
                        if event.is_readable() || event.is_read_closed() {
                            self.read(key, now);
                        }
                    }
                }
            }
            self.take_deliveries();
            self.mailbox.retry();
            for key in std::mem::take(&mut self.again) {
                self.read(key, now);
            }
            self.housekeeping(now);
            for key in self.t.sessions.end_tick() {
                self.write(key);
            }
            if self.drained(now) {
                return Ok(());
            }
        }
    }

    /// Routes what the runner delivered, at most a batch per turn (the rest next turn).
    fn take_deliveries(&mut self) {
        for d in self.t.deliveries.try_iter().take(DELIVERY_BATCH) {
            self.t.sessions.route(d);
        }
    }

    fn accept(&mut self, now: Instant) {
        while self.listening {
            match self.acceptor.accept(&self.t.listener) {
                AcceptOutcome::Accepted(stream, peer) => self.add_link(stream, peer, now),
                AcceptOutcome::WouldBlock => return,
                AcceptOutcome::Shed => tracing::warn!("out of file descriptors: link refused"),
                AcceptOutcome::Error(e) => {
                    tracing::warn!(error = %e, "accepting a link failed");
                    return;
                }
            }
        }
    }

    fn add_link(&mut self, stream: TcpStream, peer: std::net::SocketAddr, now: Instant) {
        if self.t.sessions.link_count() >= MAX_LINKS {
            tracing::warn!(%peer, "too many links: refused");
            return;
        }
        if self.t.sessions.requires_auth() {
            let (count, oldest) = self.t.sessions.unauthenticated();
            if let Some(oldest) = oldest.filter(|_| count >= MAX_UNAUTHENTICATED) {
                let reason = "evicted: too many links not authenticated";
                self.refuse(oldest, Refusal::Evicted, reason);
            }
        }
        let limits = if self.t.sessions.requires_auth() {
            pre_auth_limits()
        } else {
            command_limits(READ_CHUNK)
        };
        let conn = Conn {
            stream,
            reader: RespReader::new(limits),
            unread: true,
            held: 0,
        };
        let key = self.t.sessions.add_link(conn, now);
        self.budget.open();
        let registry = self.t.poll.registry();
        let registered = self.t.sessions.link_mut(key).map(|l| {
            registry.register(
                &mut l.io.stream,
                key.token(),
                Interest::READABLE | Interest::WRITABLE,
            )
        });
        match registered {
            Some(Ok(())) => {
                Metrics::add(&self.t.metrics.links_accepted, 1);
                tracing::info!(%peer, "gateway link up");
                self.again.push(key);
            }
            _ => {
                tracing::warn!(%peer, "cannot register a link");
                self.close(key, "register failed");
            }
        }
    }

    /// Reads and handles what a link sent, within a budget (see the module doc).
    fn read(&mut self, key: Key, now: Instant) {
        if self.t.sessions.retry_parked(key, &mut self.mailbox) == Handled::Parked {
            self.again.push(key);
            return;
        }
        for _ in 0..READS_PER_PASS {
            if !self.handle_buffered(key) {
                return;
            }
            let pause = self.out_pause(key);
            let Some(link) = self.t.sessions.link_mut(key) else {
                return;
            };
            if link.out.len() > pause {
                link.io.unread = true;
                return; // resumed by `write` once the output drained
            }
            match link.io.stream.read(&mut self.scratch) {
                Ok(0) => return self.close(key, "closed by the gateway"),
                Ok(n) => {
                    link.last_heard = now;
                    if let Err(e) = link.io.reader.feed(&self.scratch[..n]) {
                        return self.refuse_frame(key, &e.to_string());
                    }
                    if !self.account(key) {
                        return;
                    }
                }
                Err(e) if would_block(&e) => {
                    link.io.unread = false;
                    return;
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.close(key, &e.to_string()),
            }
        }
        if let Some(link) = self.t.sessions.link_mut(key) {
            link.io.unread = true;
            self.again.push(key);
        }
    }

    /// Handles every whole command buffered; false when the link is gone or parked.
    fn handle_buffered(&mut self, key: Key) -> bool {
        loop {
            let next = match self.t.sessions.link_mut(key) {
                Some(link) => link.io.reader.next_value(),
                None => return false,
            };
            match next {
                Ok(Some(value)) => match self.t.sessions.handle(key, value, &mut self.mailbox) {
                    Handled::Done => {}
                    Handled::Parked => {
                        self.again.push(key);
                        return false;
                    }
                    Handled::Authenticated => {
                        if let Some(link) = self.t.sessions.link_mut(key) {
                            link.io.reader.set_limits(command_limits(READ_CHUNK));
                        }
                    }
                    Handled::Close(why) => {
                        self.refuse(key, why, "refused before authenticating");
                        return false;
                    }
                },
                Ok(None) => return true,
                Err(e) => {
                    self.refuse_frame(key, &e.to_string());
                    return false;
                }
            }
        }
    }

    /// Writes what a link has queued, until the socket would block.
    fn write(&mut self, key: Key) {
        let pause = self.out_pause(key);
        let Some(link) = self.t.sessions.link_mut(key) else {
            return;
        };
        while !link.out.is_empty() {
            match link.io.stream.write(&link.out) {
                Ok(0) => return self.close(key, "write returned 0"),
                Ok(n) => {
                    let _ = link.out.split_to(n);
                }
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.close(key, &e.to_string()),
            }
        }
        if link.out.len() > OUT_MAX {
            return self.limit_close(key, LimitClose::Output, "gateway not reading its link");
        }
        let resume = link.out.len() <= pause && link.io.unread;
        if self.account(key) && resume {
            self.again.push(key);
        }
    }

    /// Unwritten output past which a link is not read: a link that has not authenticated may
    /// not make the broker hold more than a few KiB of replies (PINGs it does not read).
    fn out_pause(&self, key: Key) -> usize {
        if self.t.sessions.is_authenticated(key) {
            OUT_PAUSE
        } else {
            PRE_AUTH_FRAME
        }
    }

    /// Counts what a link holds against the budget; false (and the link closed) when it is
    /// past its share with the budget spent.
    fn account(&mut self, key: Key) -> bool {
        let Some(link) = self.t.sessions.link_mut(key) else {
            return false;
        };
        let input = link.io.reader.buffered();
        let result = self.budget.update(&mut link.io.held, input, link.out.len());
        Metrics::set(&self.t.metrics.link_buffered, self.budget.total() as u64);
        match result {
            Ok(()) => true,
            Err(Over::Input) => {
                self.limit_close(
                    key,
                    LimitClose::InputBudget,
                    "link input past its budget share",
                );
                false
            }
            Err(Over::Output) => {
                let why = "link output past its budget share";
                self.limit_close(key, LimitClose::OutputBudget, why);
                false
            }
        }
    }

    /// A frame the reader refused (past the bounds, or not RESP): answered with an error, then
    /// the link is closed, counted as a refusal before authentication or a limit after it.
    fn refuse_frame(&mut self, key: Key, error: &str) {
        if let Some(link) = self.t.sessions.link_mut(key) {
            let text = format!("ERR Protocol error: {error}");
            encode_value(&mut link.out, &Value::Error(text.into()));
        }
        if self.t.sessions.is_authenticated(key) {
            self.limit_close(key, LimitClose::Frame, error);
        } else {
            self.refuse(key, Refusal::Frame, error);
        }
    }

    /// Closes a link refused before it authenticated, after writing what it was answered
    /// (best effort).
    fn refuse(&mut self, key: Key, why: Refusal, reason: &str) {
        Metrics::add(&self.t.metrics.auth_refusals[why as usize], 1);
        self.flush_and_drop(key, reason);
    }

    /// Closes an authenticated link at a bound, counted by reason.
    fn limit_close(&mut self, key: Key, why: LimitClose, reason: &str) {
        Metrics::add(&self.t.metrics.limit_closes[why as usize], 1);
        tracing::warn!(reason, "gateway link closed at a limit");
        self.flush_and_drop(key, reason);
    }

    /// One attempt at writing what is queued (an error reply), then the link is dropped.
    fn flush_and_drop(&mut self, key: Key, reason: &str) {
        if let Some(link) = self.t.sessions.link_mut(key) {
            let n = link.out.len().min(4096);
            let _ = link.io.stream.write(&link.out[..n]);
        }
        self.drop_link(key, reason);
    }

    /// Drops a link for misbehaving (counted).
    fn drop_link(&mut self, key: Key, reason: &str) {
        Metrics::add(&self.t.metrics.links_dropped, 1);
        self.close(key, reason);
    }

    fn close(&mut self, key: Key, reason: &str) {
        if let Some(mut link) = self.t.sessions.remove_link(key, &mut self.mailbox) {
            self.budget.close(link.io.held);
            Metrics::set(&self.t.metrics.link_buffered, self.budget.total() as u64);
            let _ = self.t.poll.registry().deregister(&mut link.io.stream);
            tracing::info!(reason, "gateway link closed");
        }
    }

    /// Silent links, and the start of draining.
    fn housekeeping(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            let deadline = self.t.auth_timeout;
            for key in self.t.sessions.unauthenticated_past(now, deadline) {
                let reason = "not authenticated by the auth deadline";
                self.refuse(key, Refusal::Deadline, reason);
            }
            for key in self.t.sessions.silent_links(now, self.t.link_timeout) {
                self.drop_link(key, "link silent past the link timeout");
            }
        }
        if self.t.control.draining.load(Ordering::Acquire) && !self.t.sessions.is_draining() {
            self.t.sessions.start_drain();
            self.listening = false;
            let _ = self.t.poll.registry().deregister(&mut self.t.listener);
            self.drain_deadline = Some(now + self.t.drain_timeout);
            tracing::info!(
                sessions = self.t.sessions.session_count(),
                "draining: waiting for gateways to move their sessions"
            );
        }
    }

    /// Whether draining is over: every session detached (and the detaches handed to the
    /// runner), or the drain timeout passed.
    fn drained(&self, now: Instant) -> bool {
        let Some(deadline) = self.drain_deadline else {
            return false;
        };
        let done = self.t.sessions.session_count() == 0 && self.mailbox.control.is_empty();
        if done {
            tracing::info!("drained: every session detached");
        } else if now >= deadline {
            tracing::warn!(
                sessions = self.t.sessions.session_count(),
                "drain timeout: stopping with sessions still attached"
            );
        }
        done || now >= deadline
    }
}
