//! The connect phase every scenario starts with: open a worker's connections with a bounded number
//! of handshakes in progress, time each one, and keep the open ones answering pings.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Poll, Token};
use tungstenite::protocol::WebSocketConfig;

use crate::conn::{self, Conn, Step, Ws, INTERESTS};
use crate::progress::ThreadProgress;
use crate::report::{new_histogram, record_ns};
use crate::target::{Auth, Target};

/// Failed attempts whose reason is printed; the rest are only counted.
const MAX_LOGGED_FAILURES: u64 = 5;

/// Open connections handed to a scenario: (global connection index, WebSocket).
pub type OpenConns = Vec<(u32, Ws)>;

/// How to open connections.
#[derive(Debug, Clone)]
pub struct ConnectPlan {
    /// Targets, used round-robin by connection index.
    pub targets: Vec<Target>,
    /// Handshakes this worker keeps in progress at once.
    pub concurrency: usize,
    /// Time after which a pending attempt counts as failed.
    pub timeout: Duration,
    /// Settings of every WebSocket.
    pub config: WebSocketConfig,
    /// Identity appended to each connection's URL.
    pub auth: Auth,
    /// Source addresses to bind, round-robin by connection index (empty: the kernel's choice).
    pub sources: Vec<std::net::IpAddr>,
}

impl ConnectPlan {
    /// The URL, address and source address of connection `index`.
    pub fn endpoint(&self, index: u32) -> (String, std::net::SocketAddr, Option<std::net::IpAddr>) {
        let target = &self.targets[index as usize % self.targets.len()];
        let url = self.auth.apply(target.url_for(index), index);
        let source = match self.sources.len() {
            0 => None,
            n => Some(self.sources[index as usize % n]),
        };
        (url, target.addr(), source)
    }
}

/// A worker's connections; the mio token of a connection is its index in `conns`.
pub struct Fleet {
    /// The worker's poll; every connection is registered with it.
    pub poll: Poll,
    /// Every attempted connection, open or not.
    pub conns: Vec<Conn>,
    /// Connect plus handshake times of the connections that opened.
    pub connect_us: Histogram<u64>,
    /// Attempts that failed or timed out.
    pub failures: u64,
    /// Connections that opened and later closed or broke.
    pub dropped: u64,
}

impl Fleet {
    /// Opens the connections with global indexes `indices`, at most `plan.concurrency` at once.
    pub fn connect(
        plan: &ConnectPlan,
        indices: &[u32],
        progress: &ThreadProgress,
    ) -> io::Result<Fleet> {
        let mut fleet = Fleet {
            poll: Poll::new()?,
            conns: Vec::with_capacity(indices.len()),
            connect_us: new_histogram(),
            failures: 0,
            dropped: 0,
        };
        let mut pending: VecDeque<usize> = VecDeque::new();
        let mut in_progress = 0usize;
        let mut events = Events::with_capacity(1024);
        loop {
            while in_progress < plan.concurrency.max(1) && fleet.conns.len() < indices.len() {
                if fleet.start(plan, indices[fleet.conns.len()]) {
                    pending.push_back(fleet.conns.len() - 1);
                    in_progress += 1;
                }
            }
            if in_progress == 0 && fleet.conns.len() == indices.len() {
                return Ok(fleet);
            }
            fleet.poll_once(&mut events, Duration::from_millis(50))?;
            for event in events.iter() {
                in_progress -= usize::from(fleet.on_event(event.token()));
            }
            in_progress -= fleet.expire(&mut pending, plan.timeout);
            progress.set_connects(fleet.connect_us.len(), fleet.failures);
        }
    }

    /// Starts one connection attempt; false (and counted as failed) if it could not start.
    fn start(&mut self, plan: &ConnectPlan, index: u32) -> bool {
        let token = Token(self.conns.len());
        let (url, addr, source) = plan.endpoint(index);
        match Conn::start(
            index,
            (addr, source),
            url,
            plan.config,
            self.poll.registry(),
            token,
        ) {
            Ok(c) => {
                self.conns.push(c);
                true
            }
            Err(e) => {
                self.fail(index, &e.to_string());
                self.conns.push(Conn::failed(index));
                false
            }
        }
    }

    /// Polls, retrying on EINTR.
    pub fn poll_once(&mut self, events: &mut Events, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            other => other,
        }
    }

    /// Handles one readiness event; true when it ended a pending attempt (opened or failed).
    fn on_event(&mut self, token: Token) -> bool {
        let Some(c) = self.conns.get_mut(token.0) else {
            return false;
        };
        c.on_event();
        if !c.is_pending() {
            self.service(token);
            return false;
        }
        match c.advance() {
            Step::Pending => false,
            Step::Opened => {
                let elapsed = c.started.elapsed().as_nanos() as u64;
                record_ns(&mut self.connect_us, elapsed);
                // The 101 may have been followed by data (a welcome frame): no new edge will
                // announce it, so read now.
                self.service(token);
                true
            }
            Step::Failed(e) => {
                let index = c.index;
                c.abort();
                self.fail(index, &e.to_string());
                true
            }
        }
    }

    /// Fails the pending attempts older than `timeout`; returns how many.
    fn expire(&mut self, pending: &mut VecDeque<usize>, timeout: Duration) -> usize {
        let mut expired = 0;
        while let Some(&t) = pending.front() {
            let c = &mut self.conns[t];
            if c.is_pending() {
                if c.started.elapsed() < timeout {
                    break;
                }
                let index = c.index;
                c.abort();
                self.fail(index, "timed out");
                expired += 1;
            }
            pending.pop_front();
        }
        expired
    }

    /// Counts a failed attempt and prints the first few reasons.
    fn fail(&mut self, index: u32, reason: &str) {
        self.failures += 1;
        if self.failures <= MAX_LOGGED_FAILURES {
            eprintln!("hermod-loadgen: connection {index} failed: {reason}");
        }
    }

    /// Reads an open idle connection (answering pings); a closed one is dropped and counted.
    pub fn service(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(token.0) else {
            return;
        };
        if let Some(ws) = c.ws() {
            if conn::drain_idle(ws).is_err() {
                c.abort();
                self.dropped += 1;
            }
        }
    }

    /// Connections open now.
    pub fn open_count(&self) -> u64 {
        self.conns.iter().filter(|c| c.is_open()).count() as u64
    }

    /// Keeps the open connections idle until `until`, answering pings.
    pub fn hold(&mut self, until: Instant) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            self.poll_once(&mut events, left.min(Duration::from_millis(500)))?;
            for event in events.iter() {
                self.service(event.token());
            }
        }
        Ok(())
    }

    /// Closes every open connection with a close frame, best effort.
    pub fn close_all(&mut self) {
        for c in &mut self.conns {
            if let Some(ws) = c.ws() {
                conn::close_politely(ws);
            }
            c.abort();
        }
    }

    /// Hands the open connections over, re-registered so that token `k` is the `k`-th of them.
    pub fn into_open(mut self) -> io::Result<(Poll, OpenConns)> {
        let poll = Poll::new()?;
        let mut open = Vec::new();
        for c in &mut self.conns {
            if let Some(mut ws) = c.take_ws() {
                self.poll.registry().deregister(&mut ws.get_mut().inner)?;
                poll.registry()
                    .register(&mut ws.get_mut().inner, Token(open.len()), INTERESTS)?;
                open.push((c.index, ws));
            }
        }
        Ok((poll, open))
    }
}
