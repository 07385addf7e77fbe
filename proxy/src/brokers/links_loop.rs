//! The broker links thread, [`BrokerLinksLoop`]: one mio `Poll` with the workers' request mailbox
//! (its waker), a socket per broker link, and the registry's Redis client. It feeds the sans-io
//! [`BrokerPool`] and executes
//! what it asks: commands into links (written once per loop turn), deliveries into the workers'
//! sinks. A sink that refuses (mailbox full) overflows its session, as with the embedded broker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::link::{decode_push, LinkPush, LinkSecret};
use hermod_core::reactor::interrupted;
use hermod_core::reactor::mailbox::MailboxReceiver;
use hermod_core::reactor::slots::Key;
use hermod_core::redis::ClientConfig;
use hermod_core::resp::RespLimits;
use mio::{Events, Poll, Token};

use super::link::{BrokerLink, LinkEvent, Pending, OUTPUT_HIGH_WATER};
use super::pool::{BrokerPool, LinkState, Out};
use super::registry::{Discovery, Entry};
use super::rehome::LinkId;
use super::status::{BrokerRow, LinkStatus};

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

/// The waker's token (the mailbox's).
pub const WAKER: Token = Token(0);
/// The registry client's first token (its span stays below the link tokens, whose generation
/// part is never 0).
const REDIS_FIRST_TOKEN: usize = 2;
/// Worker requests taken per loop turn.
const REQUEST_BUDGET: usize = 4096;
/// Poll sleep while something waits to be retried (an overflow notice, backpressured requests).
const RETRY_EVERY: Duration = Duration::from_millis(10);
/// Longest poll sleep.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How often the per-broker rows of `/metrics` are refreshed.
const ROWS_EVERY: Duration = Duration::from_millis(250);
/// Bytes read per `read()`.
const READ_CHUNK: usize = 64 << 10;

/// The broker links thread's loop and everything it owns.
pub struct BrokerLinksLoop {
    poll: Poll,
    /// The placement and re-homing logic.
    pool: BrokerPool,
    /// The link sockets, by the pool's link ids.
    conns: BTreeMap<LinkId, BrokerLink>,
    /// Registry members linked, to diff against each poll.
    by_name: HashMap<String, LinkId>,
    /// The registry poller (`--registry` only).
    discovery: Option<Discovery>,
    /// The workers' requests.
    requests: MailboxReceiver<Request>,
    /// One per worker, by `SessionKey::worker`.
    sinks: Vec<Sink>,
    /// Overflowed sessions whose `Overflow` the sink has not taken yet.
    overflow_retry: Vec<SessionKey>,
    /// Figures for the admin thread.
    status: Arc<LinkStatus>,
    /// Set by the handle to stop.
    stop: Arc<AtomicBool>,
    /// Bounds on what a broker can make us buffer.
    limits: RespLimits,
    /// Presented on every link.
    link_secret: Option<LinkSecret>,
    /// Read buffer shared by the links.
    scratch: Vec<u8>,
    /// When the per-broker rows were last refreshed.
    rows_at: Option<Instant>,
    /// What they showed then (link, up, sessions): republished only when it changed.
    rows_shown: Vec<(LinkId, bool, usize)>,
    /// A change waits for the refresh interval: wake then.
    rows_due: Option<Instant>,
}

/// Marks the links thread dead when the thread ends, even by a panic.
struct AliveGuard(Arc<LinkStatus>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Relaxed);
        self.0.links_up.store(0, Relaxed);
    }
}

/// What the runner is built from.
pub struct Parts {
    pub poll: Poll,
    pub requests: MailboxReceiver<Request>,
    pub sinks: Vec<Sink>,
    pub status: Arc<LinkStatus>,
    pub stop: Arc<AtomicBool>,
    pub upstream: Upstream,
    pub request_timeout: Duration,
    pub limits: RespLimits,
    pub link_secret: Option<LinkSecret>,
}

impl BrokerLinksLoop {
    /// The runner, with links to the static brokers (or the registry poller).
    pub fn new(parts: Parts) -> Self {
        let now = Instant::now();
        let mut runner = BrokerLinksLoop {
            poll: parts.poll,
            pool: BrokerPool::new(parts.request_timeout),
            conns: BTreeMap::new(),
            by_name: HashMap::new(),
            discovery: None,
            requests: parts.requests,
            sinks: parts.sinks,
            overflow_retry: Vec::new(),
            status: parts.status,
            stop: parts.stop,
            limits: parts.limits,
            link_secret: parts.link_secret,
            scratch: vec![0; READ_CHUNK],
            rows_at: None,
            rows_shown: Vec::new(),
            rows_due: None,
        };
        match parts.upstream {
            Upstream::Static(addrs) => {
                for addr in addrs {
                    runner.add_link(addr.clone(), addr, now);
                }
            }
            Upstream::Registry(config) => {
                runner.discovery = Some(Discovery::new(*config, REDIS_FIRST_TOKEN, now));
            }
        }
        runner
    }

    fn add_link(&mut self, name: String, addr: String, now: Instant) -> LinkId {
        let id = self.pool.add_link(name);
        let secret = self.link_secret.clone();
        let conn = BrokerLink::new(id, addr, self.limits.clone(), secret, now);
        self.conns.insert(id, conn);
        id
    }

    /// Runs until stopped.
    pub fn run(mut self) {
        self.status.alive.store(true, Relaxed);
        let _guard = AliveGuard(Arc::clone(&self.status));
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if !interrupted(&e) {
                    tracing::error!(error = %e, "broker links poll failed");
                    break;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                self.on_event(event, now);
            }
            let stopping = self.stop.load(Relaxed);
            self.turn(now, stopping);
            if stopping {
                break;
            }
        }
        self.finish();
    }

    /// One loop turn after the socket events.
    fn turn(&mut self, now: Instant, stopping: bool) {
        self.tick_links(now);
        self.tick_discovery(now);
        if stopping || !self.backpressured() {
            let budget = if stopping { usize::MAX } else { REQUEST_BUDGET };
            let pool = &mut self.pool;
            self.requests.drain(budget, |r| pool.on_request(r, now));
        }
        self.execute();
        self.retry_overflows();
        self.flush(now);
        self.publish(now);
    }

    fn on_event(&mut self, event: &mio::event::Event, now: Instant) {
        let token = event.token();
        if token == WAKER {
            return;
        }
        if let Some(d) = self.discovery.as_mut().filter(|d| d.owns(token)) {
            d.on_event(self.poll.registry(), event, now);
            return;
        }
        let Some(key) = Key::from_token(token) else {
            return;
        };
        let link = LinkId(key.slot);
        let mut out = Vec::new();
        if let Some(conn) = self.conns.get_mut(&link).filter(|c| c.owns(token)) {
            let writable = event.is_writable() || event.is_write_closed();
            conn.on_ready(
                self.poll.registry(),
                writable,
                now,
                &mut self.scratch,
                &mut out,
            );
        }
        self.on_conn_events(link, out, now);
    }

    fn tick_links(&mut self, now: Instant) {
        let due: Vec<LinkId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline() <= now)
            .map(|(id, _)| *id)
            .collect();
        for link in due {
            let mut out = Vec::new();
            if let Some(conn) = self.conns.get_mut(&link) {
                conn.tick(self.poll.registry(), now, &mut out);
            }
            self.on_conn_events(link, out, now);
        }
    }

    fn on_conn_events(&mut self, link: LinkId, events: Vec<LinkEvent>, now: Instant) {
        for event in events {
            let addr = || self.pool.name(link).unwrap_or_default().to_owned();
            match event {
                LinkEvent::Up => {
                    tracing::info!(broker = %addr(), "broker link up");
                    self.pool.link_up(link, now);
                }
                LinkEvent::Down {
                    reason,
                    was_up,
                    first,
                } => {
                    if was_up {
                        tracing::warn!(broker = %addr(), reason, "broker link lost; re-homing its sessions");
                        self.status.links_lost.fetch_add(1, Relaxed);
                    } else if first {
                        tracing::warn!(broker = %addr(), reason, "cannot reach broker; retrying");
                    } else {
                        tracing::debug!(broker = %addr(), reason, "broker link attempt failed");
                    }
                    self.pool.link_down(link, now);
                }
                LinkEvent::Push(value) => match decode_push(value) {
                    Ok(LinkPush::Event { sid, event }) => self.pool.on_event(link, sid, event),
                    Ok(LinkPush::Message { id, frame, sids }) => {
                        self.pool.on_message(link, &id, &frame, &sids)
                    }
                    Ok(LinkPush::Draining) => {
                        tracing::info!(broker = %addr(), "broker draining; re-homing its sessions");
                        self.pool.draining(link, now);
                    }
                    Err(e) => tracing::debug!(broker = %addr(), error = %e, "bad push ignored"),
                },
                LinkEvent::Refused { pending, message } => {
                    self.on_refused(link, pending, &message, now)
                }
                LinkEvent::RoundTrip(rtt) => {
                    self.status.round_trips.fetch_add(1, Relaxed);
                    let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
                    self.status.rtt_sum_us.fetch_add(us, Relaxed);
                }
            }
        }
    }

    fn on_refused(&mut self, link: LinkId, pending: Pending, message: &str, now: Instant) {
        match pending {
            Pending::Attach(_) if message.starts_with("DRAINING") => self.pool.draining(link, now),
            Pending::Write(sid, cid) => self.pool.command_failed(sid, &cid, message),
            other => tracing::debug!(?other, message, "broker refused a command"),
        }
    }

    fn tick_discovery(&mut self, now: Instant) {
        let Some(discovery) = self.discovery.as_mut() else {
            return;
        };
        if let Some(entries) = discovery.tick(self.poll.registry(), now, unix_ms()) {
            self.sync_registry(entries, now);
        }
    }

    /// Adds links for new registry members, removes those of members gone.
    fn sync_registry(&mut self, entries: Vec<Entry>, now: Instant) {
        let live: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let gone: Vec<(String, LinkId)> = self
            .by_name
            .iter()
            .filter(|(name, _)| !live.contains(name.as_str()))
            .map(|(n, id)| (n.clone(), *id))
            .collect();
        for (name, link) in gone {
            tracing::info!(broker = %name, "broker left the registry; dropping its link");
            self.by_name.remove(&name);
            self.pool.remove_link(link, now);
            if let Some(mut conn) = self.conns.remove(&link) {
                conn.close(self.poll.registry());
            }
        }
        for entry in entries {
            if !self.by_name.contains_key(&entry.name) {
                tracing::info!(broker = %entry.name, "broker found in the registry");
                let id = self.add_link(entry.name.clone(), entry.addr, now);
                self.by_name.insert(entry.name, id);
            }
        }
    }

    /// Whether some link has so much unwritten output that requests should wait.
    fn backpressured(&self) -> bool {
        self.conns.values().any(|c| c.backlog() > OUTPUT_HIGH_WATER)
    }

    /// Carries out everything the pool queued.
    fn execute(&mut self) {
        while let Some(out) = self.pool.poll_out() {
            match out {
                Out::Command { link, request } => {
                    if let Some(conn) = self.conns.get_mut(&link) {
                        conn.send(&request);
                    }
                }
                Out::Deliver(delivery) => self.deliver(delivery),
            }
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let session = delivery.session;
        let Some(sink) = self.sinks.get(usize::from(session.worker)) else {
            return;
        };
        // Deliveries queued behind the one that overflowed must not reach the session either:
        // the client would see a gap just before its 1008 close.
        if self.pool.is_overflowed(session) {
            return;
        }
        if sink(delivery).is_err() {
            self.status.overflows.fetch_add(1, Relaxed);
            self.pool.overflowed(session);
            self.overflow_retry.push(session);
        }
    }

    fn retry_overflows(&mut self) {
        let sinks = &self.sinks;
        self.overflow_retry.retain(|&session| {
            let notice = Delivery {
                session,
                event: Event::Overflow,
            };
            match sinks.get(usize::from(session.worker)) {
                Some(sink) => sink(notice).is_err(),
                None => false,
            }
        });
    }

    /// Writes every link's output; links that fail re-home their sessions, whose commands go
    /// out in the same pass.
    fn flush(&mut self, now: Instant) {
        for _ in 0..4 {
            let mut failed = Vec::new();
            for (link, conn) in &mut self.conns {
                let mut out = Vec::new();
                conn.flush(self.poll.registry(), now, &mut out);
                if !out.is_empty() {
                    failed.push((*link, out));
                }
            }
            if failed.is_empty() {
                break;
            }
            for (link, out) in failed {
                self.on_conn_events(link, out, now);
            }
            self.execute();
        }
        if let Some(d) = self.discovery.as_mut() {
            d.flush(self.poll.registry());
        }
    }

    fn timeout(&self, now: Instant) -> Duration {
        let mut until = now + MAX_SLEEP;
        for conn in self.conns.values() {
            until = until.min(conn.deadline());
        }
        if let Some(d) = self.discovery.as_ref().and_then(Discovery::deadline) {
            until = until.min(d);
        }
        if let Some(due) = self.rows_due {
            until = until.min(due);
        }
        let mut wait = until.saturating_duration_since(now);
        let waiting_requests = self.backpressured() && !self.requests.is_empty();
        if !self.overflow_retry.is_empty() || waiting_requests {
            wait = wait.min(RETRY_EVERY);
        }
        wait
    }

    /// Publishes the figures: the cheap ones every turn, the per-broker rows (and the count of
    /// unplaced sessions, which walks them all) when they changed, at most every [`ROWS_EVERY`].
    fn publish(&mut self, now: Instant) {
        self.status.links_up.store(self.pool.links_up(), Relaxed);
        self.status.rehomed.store(self.pool.rehomed(), Relaxed);
        let foreign = self.pool.foreign_pushes();
        self.status.foreign_pushes.store(foreign, Relaxed);
        let shown: Vec<(LinkId, bool, usize)> = self
            .conns
            .keys()
            .map(|id| {
                let up = matches!(
                    self.pool.state(*id),
                    Some(LinkState::Up | LinkState::Draining)
                );
                (*id, up, self.pool.sessions_on(*id))
            })
            .collect();
        if shown == self.rows_shown && self.rows_at.is_some() {
            self.rows_due = None;
            return;
        }
        if let Some(due) = self
            .rows_at
            .map(|t| t + ROWS_EVERY)
            .filter(|due| now < *due)
        {
            self.rows_due = Some(due);
            return;
        }
        self.status
            .unplaced
            .store(self.pool.stats().unplaced, Relaxed);
        let rows = shown
            .iter()
            .map(|(id, up, sessions)| BrokerRow {
                name: self.pool.name(*id).unwrap_or_default().to_owned(),
                up: *up,
                sessions: *sessions,
            })
            .collect();
        *self.status.brokers.lock() = rows;
        self.rows_shown = shown;
        self.rows_at = Some(now);
        self.rows_due = None;
    }

    /// Last writes before the thread ends (the workers' final Detaches).
    fn finish(&mut self) {
        let now = Instant::now();
        for conn in self.conns.values_mut() {
            let mut ignored = Vec::new();
            conn.flush(self.poll.registry(), now, &mut ignored);
            conn.close(self.poll.registry());
        }
    }
}

/// Wall-clock time in unix milliseconds (the registry's scores).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Creates the Poll and its waker for a runner.
pub fn poll_and_waker() -> io::Result<(Poll, Arc<mio::Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
    Ok((poll, waker))
}
