//! [`AdminLoop`]: the admin listener's thread, a mio loop over at most [`MAX_CONNECTIONS`]
//! connections. Each connection has one deadline: its request head must be complete within
//! [`IO_TIMEOUT`](super::IO_TIMEOUT) of its connect (or of the end of the previous answer), and an answer must be
//! taken within the same time of being queued. Requests are answered in order, one at a time:
//! the next pipelined head is read only once the previous answer is written, so a connection
//! holds at most one head ([`MAX_HEAD`]) and one answer.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::{parse_head, respond, too_large, AdminState, Head, Response, MAX_HEAD};
use crate::reactor::listener::Acceptor;
use crate::reactor::{interrupted, would_block};

/// Admin connections open at once. A full table closes the connection nearest its deadline to
/// admit a new one, so a flood of idle connections delays a probe by at most one loop turn.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections accepted per readiness event before the loop serves the others.
const ACCEPT_BUDGET: usize = 64;
const LISTENER: Token = Token(usize::MAX - 1);
/// The answer of a connection shed for want of file descriptors.
const SHED_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; \
    charset=utf-8\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n";

/// Admin connections closed by a limit, process-wide (one admin server per process), by reason
/// in [`CLOSED_REASONS`] order.
pub(super) static CLOSED: [AtomicU64; 3] =
    [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
/// The `reason` labels of [`CLOSED`].
pub(super) const CLOSED_REASONS: [&str; 3] = ["deadline", "evicted", "bad_request"];
const DEADLINE: usize = 0;
const EVICTED: usize = 1;
const BAD_REQUEST: usize = 2;

/// One admin connection.
struct Conn {
    stream: TcpStream,
    /// Bytes received and not yet answered (at most [`MAX_HEAD`]).
    input: Vec<u8>,
    /// The answer being written, and how much of it is written.
    out: Vec<u8>,
    sent: usize,
    /// Close once `out` is written.
    close_after: bool,
    deadline: Instant,
}

/// What serving a connection decided.
enum Verdict {
    Keep,
    Close,
}

/// The admin server's loop (see the module docs).
pub(super) struct AdminLoop {
    poll: Poll,
    listener: TcpListener,
    acceptor: Acceptor,
    conns: Slab<Conn>,
    state: AdminState,
    /// When to accept again: at once after the budget ran out, later after an fd shortage.
    accept_again: Option<Instant>,
    scratch: Box<[u8; MAX_HEAD]>,
    /// [`super::IO_TIMEOUT`] (shorter in tests).
    limit: Duration,
}

impl AdminLoop {
    pub(super) fn new(
        mut listener: TcpListener,
        state: AdminState,
        limit: Duration,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(AdminLoop {
            poll,
            listener,
            acceptor: Acceptor::new()?.answering(SHED_ANSWER),
            conns: Slab::with_capacity(MAX_CONNECTIONS),
            state,
            accept_again: None,
            scratch: Box::new([0; MAX_HEAD]),
            limit,
        })
    }

    /// Serves until the process exits (or the poll fails).
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if interrupted(&e) {
                    continue;
                }
                tracing::error!(error = %e, "admin poll failed");
                return;
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    Token(key) => self.serve(key, now),
                }
            }
            if self.accept_again.is_some_and(|t| t <= now) {
                self.accept_again = None;
                self.accept(now);
            }
            self.expire(now);
        }
    }

    /// Until the earliest deadline or pending accept (at most a second).
    fn timeout(&self, now: Instant) -> Duration {
        let mut wake = now + Duration::from_secs(1);
        for (_, c) in &self.conns {
            wake = wake.min(c.deadline);
        }
        if let Some(t) = self.accept_again {
            wake = wake.min(t);
        }
        wake.saturating_duration_since(now)
    }

    fn accept(&mut self, now: Instant) {
        let burst = self
            .acceptor
            .accept_burst(&self.listener, ACCEPT_BUDGET, "admin");
        if let Some(at) = burst.end.again(now) {
            self.accept_again = Some(at);
        }
        for (stream, _) in burst.accepted {
            self.admit(stream, now);
        }
    }

    fn admit(&mut self, mut stream: TcpStream, now: Instant) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.evict();
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            tracing::debug!(error = %e, "admin register");
            return;
        }
        entry.insert(Conn {
            stream,
            input: Vec::new(),
            out: Vec::new(),
            sent: 0,
            close_after: false,
            deadline: now + self.limit,
        });
        // A request may already be buffered: edge-triggered readiness still reports it, but
        // serving at once costs nothing.
        self.serve(key, now);
    }

    /// Closes the connection nearest its deadline (the table is full).
    fn evict(&mut self) {
        let oldest = self
            .conns
            .iter()
            .min_by_key(|(_, c)| c.deadline)
            .map(|(k, _)| k);
        if let Some(key) = oldest {
            CLOSED[EVICTED].fetch_add(1, Relaxed);
            self.close(key);
        }
    }

    fn expire(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        CLOSED[DEADLINE].fetch_add(late.len() as u64, Relaxed);
        for key in late {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    fn serve(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let verdict = conn.serve(&self.state, &mut self.scratch[..], now + self.limit);
        if let Verdict::Close = verdict {
            self.close(key);
        }
    }
}

impl Conn {
    /// Writes what is queued, answers the next buffered request, reads more; until the socket
    /// would block or the connection is done.
    /// `deadline`: the connection's next deadline if it finishes an answer now.
    fn serve(&mut self, state: &AdminState, scratch: &mut [u8], deadline: Instant) -> Verdict {
        loop {
            if self.sent < self.out.len() {
                match self.stream.write(&self.out[self.sent..]) {
                    Ok(0) => return Verdict::Close,
                    Ok(n) => self.sent += n,
                    Err(e) if interrupted(&e) => {}
                    Err(e) if would_block(&e) => return Verdict::Keep,
                    Err(_) => return Verdict::Close,
                }
                if self.sent < self.out.len() {
                    continue;
                }
                self.out = Vec::new();
                self.sent = 0;
                if self.close_after {
                    let _ = self.stream.shutdown(Shutdown::Write);
                    return Verdict::Close;
                }
                self.deadline = deadline;
            }
            if self.answer(state, deadline) {
                continue;
            }
            if self.input.len() >= MAX_HEAD {
                // `answer` took a full buffer as too large: unreachable, but never spin.
                return Verdict::Close;
            }
            let room = MAX_HEAD - self.input.len();
            match self.stream.read(&mut scratch[..room]) {
                // Closed: whatever is buffered is no whole request, nothing is left to answer.
                Ok(0) => return Verdict::Close,
                Ok(n) => self.input.extend_from_slice(&scratch[..n]),
                Err(e) if interrupted(&e) => {}
                Err(e) if would_block(&e) => return Verdict::Keep,
                Err(_) => return Verdict::Close,
            }
        }
    }

    /// Queues the answer to the request at the front of `input`, if it is whole (or can never
    /// be); whether one was queued.
    fn answer(&mut self, state: &AdminState, deadline: Instant) -> bool {
        if self.input.is_empty() {
            return false;
        }
        let (response, head_only, keep_alive) = match parse_head(&self.input) {
            Head::Complete {
                method,
                path,
                len,
                keep_alive,
            } => {
                self.input.drain(..len);
                (respond(&method, &path, state), method == "HEAD", keep_alive)
            }
            Head::Partial if self.input.len() < MAX_HEAD => return false,
            Head::Partial | Head::TooLarge => {
                CLOSED[BAD_REQUEST].fetch_add(1, Relaxed);
                (too_large(), false, false)
            }
            Head::Bad => {
                CLOSED[BAD_REQUEST].fetch_add(1, Relaxed);
                let bad = Response::text((400, "Bad Request"), "bad request");
                (bad, false, false)
            }
        };
        if !keep_alive {
            self.input = Vec::new();
        }
        self.out = response.encode(head_only, keep_alive);
        self.sent = 0;
        self.close_after = !keep_alive;
        self.deadline = deadline;
        true
    }
}
