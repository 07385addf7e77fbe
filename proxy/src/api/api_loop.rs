//! [`ApiLoop`]: the server API's thread, a mio loop over at most [`MAX_CONNECTIONS`]
//! connections and the API's broker mailbox.
//!
//! A connection is served one request at a time: its next pipelined request is parsed only once
//! the previous answer is queued, and while a write waits for the broker nothing more is read
//! from it. Deadlines: a started request must be whole within [`IO_TIMEOUT`], an answer taken
//! within the same time, and a kept-alive connection may idle [`IDLE_TIMEOUT`]. A full table
//! closes the idle connection nearest its deadline to admit a new one.

use std::collections::HashMap;
use std::io::{self, Read, Write as _};
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermod_core::bus::Request;
use hermod_core::ids::Cid;
use hermod_core::reactor::listener::Acceptor;
use hermod_core::reactor::mailbox::MailboxSender;
use hermod_core::reactor::{interrupted, would_block};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::calls::{parse_call, BrokerCall, Call};
use super::dispatch::{Dispatcher, Outcome};
use super::http::{parse_request, Answer, ApiError, ApiRequest, Parsed, MAX_HEAD};
use super::{NodeInfo, PreparedApi, WAKER};
use crate::metrics::Metrics;
use crate::settings::Settings;

/// API connections open at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a started request has to arrive whole, and an answer to be taken.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a kept-alive connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Request bodies beyond the largest `data`: room for the other fields and up to 1,000 names.
const BODY_MARGIN: usize = 256 * 1024;
/// Broker answers handled per wake.
const DRAIN_BUDGET: usize = 4096;
const ACCEPT_BUDGET: usize = 64;
const LISTENER: Token = Token(usize::MAX - 1);
/// The answer of a connection shed for want of file descriptors.
const SHED_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
    Content-Length: 56\r\nConnection: close\r\n\r\n{\"error\":\"unavailable\",\"message\":\"too many connections\"}";

/// One API connection.
struct Conn {
    stream: TcpStream,
    /// Bytes received and not yet parsed.
    input: Vec<u8>,
    /// Answers queued, and how much of them is written.
    out: Vec<u8>,
    sent: usize,
    /// The call waiting for the broker, and whether the connection stays open after it.
    busy: Option<(u64, bool)>,
    /// Close once `out` is written.
    close_after: bool,
    deadline: Instant,
}

/// The API thread's loop (see the module docs).
pub(super) struct ApiLoop {
    poll: Poll,
    listener: mio::net::TcpListener,
    acceptor: Acceptor,
    conns: Slab<Conn>,
    mailbox: hermod_core::reactor::mailbox::MailboxReceiver<hermod_core::bus::Delivery>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    broker: MailboxSender<Request>,
    dispatcher: Dispatcher,
    /// Call id -> the connection waiting for it.
    calls: HashMap<u64, usize>,
    next_call: u64,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    info: NodeInfo,
    accept_again: Option<Instant>,
    started: Instant,
    scratch: Box<[u8; 16 * 1024]>,
}

impl ApiLoop {
    pub(super) fn new(
        prepared: PreparedApi,
        lane: u16,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
        info: NodeInfo,
        broker: MailboxSender<Request>,
    ) -> io::Result<Self> {
        let PreparedApi {
            poll,
            mut listener,
            mailbox,
            stop,
        } = prepared;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(ApiLoop {
            poll,
            listener,
            acceptor: Acceptor::new()?.answering(SHED_ANSWER),
            conns: Slab::with_capacity(64),
            mailbox,
            stop,
            broker,
            dispatcher: Dispatcher::new(lane),
            calls: HashMap::new(),
            next_call: 0,
            settings,
            metrics,
            info,
            accept_again: None,
            started: Instant::now(),
            scratch: Box::new([0; 16 * 1024]),
        })
    }

    /// Serves until shutdown (or until the poll fails).
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut done = Vec::new();
        while !self.stop.load(Acquire) {
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if interrupted(&e) {
                    continue;
                }
                tracing::error!(error = %e, "API poll failed");
                break;
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    Token(key) => self.serve(key, now),
                }
            }
            let dispatcher = &mut self.dispatcher;
            self.mailbox
                .drain(DRAIN_BUDGET, |d| dispatcher.handle(d, &mut done));
            self.dispatcher.expire(now, &mut done);
            for (call, outcome) in done.drain(..) {
                self.finish(call, outcome, now);
            }
            if self.accept_again.is_some_and(|t| t <= now) {
                self.accept_again = None;
                self.accept(now);
            }
            self.expire_conns(now);
        }
        let broker = &self.broker;
        self.dispatcher
            .detach_all(&mut |r| broker.try_send(r).is_ok());
    }

    /// Until the earliest deadline (at most a second).
    fn timeout(&self, now: Instant) -> Duration {
        let mut wake = now + Duration::from_secs(1);
        if let Some(t) = self.dispatcher.next_deadline() {
            wake = wake.min(t);
        }
        if let Some(t) = self.accept_again {
            wake = wake.min(t);
        }
        for (_, c) in &self.conns {
            if c.busy.is_none() {
                wake = wake.min(c.deadline);
            }
        }
        wake.saturating_duration_since(now)
    }

    fn accept(&mut self, now: Instant) {
        let burst = self
            .acceptor
            .accept_burst(&self.listener, ACCEPT_BUDGET, "api");
        if let Some(at) = burst.end.again(now) {
            self.accept_again = Some(at);
        }
        for (stream, _) in burst.accepted {
            self.admit(stream, now);
        }
    }

    fn admit(&mut self, mut stream: TcpStream, now: Instant) {
        if self.conns.len() >= MAX_CONNECTIONS && !self.evict_idle() {
            let _ = stream.write(SHED_ANSWER);
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            tracing::debug!(error = %e, "API register");
            return;
        }
        entry.insert(Conn {
            stream,
            input: Vec::new(),
            out: Vec::new(),
            sent: 0,
            busy: None,
            close_after: false,
            deadline: now + IO_TIMEOUT,
        });
    }

    /// Closes the connection not waiting for the broker that is nearest its deadline.
    fn evict_idle(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| c.busy.is_none())
            .min_by_key(|(_, c)| c.deadline)
            .map(|(k, _)| k);
        match victim {
            Some(k) => {
                self.close(k);
                true
            }
            None => false,
        }
    }

    /// Reads, answers what can be answered, writes.
    fn serve(&mut self, key: usize, now: Instant) {
        if !self.conns.contains(key) {
            return;
        }
        let max_input = MAX_HEAD + self.max_body();
        let mut eof = false;
        loop {
            self.answer_buffered(key, now);
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.busy.is_some() || conn.close_after || conn.input.len() >= max_input {
                break;
            }
            match conn.stream.read(&mut self.scratch[..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    if conn.input.is_empty() && conn.out.is_empty() {
                        conn.deadline = now + IO_TIMEOUT;
                    }
                    conn.input.extend_from_slice(&self.scratch[..n]);
                }
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(_) => {
                    self.close(key);
                    return;
                }
            }
        }
        if eof && self.conns.get(key).is_some_and(|c| c.busy.is_none()) {
            self.conns[key].close_after = true;
        }
        self.flush(key, now);
    }

    fn max_body(&self) -> usize {
        self.settings.max_message_size + BODY_MARGIN
    }

    /// Answers the requests already buffered, in order, until one waits for the broker.
    fn answer_buffered(&mut self, key: usize, now: Instant) {
        let max_body = self.max_body();
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.busy.is_some() || conn.close_after || conn.input.is_empty() {
                return;
            }
            match parse_request(&conn.input, max_body) {
                Parsed::Partial => return,
                Parsed::Refused(e) => {
                    conn.input.clear();
                    self.metrics.api_refused.fetch_add(1, Relaxed);
                    self.queue(key, &e.answer(), false);
                    return;
                }
                Parsed::Complete(req, used) => {
                    conn.input.drain(..used);
                    self.call(key, req, now);
                }
            }
        }
    }

    /// One request: refused, answered at once, or started (the connection then waits).
    fn call(&mut self, key: usize, req: ApiRequest, now: Instant) {
        let keep = req.keep_alive;
        let authorized = req
            .bearer
            .as_deref()
            .is_some_and(|k| self.settings.api_keys.verify(k.as_bytes()));
        if !authorized {
            self.metrics.api_unauthorized.fetch_add(1, Relaxed);
            let e = ApiError::new(401, "unauthorized", "missing or unknown API key");
            return self.queue(key, &e.answer(), keep);
        }
        let max_data = self.settings.max_message_size;
        let call = match parse_call(&req, max_data, &mut fresh_cid) {
            Err(e) => {
                self.metrics.api_refused.fetch_add(1, Relaxed);
                return self.queue(key, &e.answer(), keep);
            }
            Ok(Call::Info) => {
                self.metrics.api_calls.fetch_add(1, Relaxed);
                return self.queue(key, &Answer::ok(self.node_info()), keep);
            }
            Ok(Call::Broker(call)) => call,
        };
        let id = self.next_call;
        self.next_call += 1;
        let broker = &self.broker;
        let mut port = |r| broker.try_send(r).is_ok();
        let timeout = self.settings.request_timeout;
        let dispatcher = &mut self.dispatcher;
        let started = match call {
            BrokerCall::Write(w) => dispatcher.start(id, w, now, timeout, &mut port),
            BrokerCall::Query(q) => {
                dispatcher.start_query(id, q, fresh_cid(), now, timeout, &mut port)
            }
        };
        match started {
            Ok(()) => {
                self.calls.insert(id, key);
                self.conns[key].busy = Some((id, keep));
            }
            Err(e) => {
                self.metrics.api_refused.fetch_add(1, Relaxed);
                self.queue(key, &e.answer(), keep);
            }
        }
    }

    /// A write finished: its answer goes to its connection, which may read on.
    fn finish(&mut self, call: u64, outcome: Outcome, now: Instant) {
        let Some(key) = self.calls.remove(&call) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some((_, keep)) = conn.busy.take() else {
            return;
        };
        let answer = match outcome {
            Ok(body) => {
                self.metrics.api_calls.fetch_add(1, Relaxed);
                Answer::ok(body)
            }
            Err(e) => {
                self.metrics.api_refused.fetch_add(1, Relaxed);
                e.answer()
            }
        };
        self.queue(key, &answer, keep);
        self.serve(key, now);
    }

    fn queue(&mut self, key: usize, answer: &Answer, keep_alive: bool) {
        let conn = &mut self.conns[key];
        conn.out.extend_from_slice(&answer.encode(keep_alive));
        if !keep_alive {
            conn.close_after = true;
        }
    }

    /// Writes what is queued; closes when done and asked to.
    fn flush(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        while conn.sent < conn.out.len() {
            match conn.stream.write(&conn.out[conn.sent..]) {
                Ok(0) => return self.close(key),
                Ok(n) => conn.sent += n,
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(_) => return self.close(key),
            }
        }
        let wrote = !conn.out.is_empty();
        conn.out.clear();
        conn.sent = 0;
        if conn.close_after && conn.busy.is_none() {
            return self.close(key);
        }
        if wrote && conn.busy.is_none() {
            conn.deadline = now
                + if conn.input.is_empty() {
                    IDLE_TIMEOUT
                } else {
                    IO_TIMEOUT
                };
        }
    }

    /// Closes connections past their deadline (never one waiting for the broker: its call
    /// has its own).
    fn expire_conns(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.busy.is_none() && c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            if let Some((call, _)) = conn.busy {
                self.calls.remove(&call);
            }
        }
    }

    /// `GET /api/info`.
    fn node_info(&self) -> String {
        let brokers = self.info.brokers.as_ref().map(|f| {
            let (up, known) = f();
            serde_json::json!({"up": up, "known": known})
        });
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "storage": self.info.storage,
            "workers": self.settings.workers,
            "connections": self.metrics.connections_open.load(Relaxed),
            "brokers": brokers,
            "uptime_s": self.started.elapsed().as_secs(),
            "api": {
                "in_flight": self.dispatcher.in_flight(),
                "sender_sessions": self.dispatcher.senders(),
            },
        })
        .to_string()
    }
}

/// A cid no other call anywhere shares: `~` and 128 random bits.
fn fresh_cid() -> Cid {
    let bits: u128 = rand::random();
    Cid::parse(&format!("~{bits:032x}")).expect("33 bytes fit a cid")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shed_answer_declares_its_length() {
        let text = std::str::from_utf8(super::SHED_ANSWER).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(body).is_ok(),
            "{body}"
        );
    }
}
