//! The `echo` scenario's event loop (the thin shell): one mio `Poll` per worker, non-blocking
//! tungstenite clients, the schedule and audit from the sans-io modules, and a timerfd that wakes
//! the loop when the next open-loop message is due. Writes are batched per connection per tick and
//! flushed once.

use std::io;
use std::mem;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use tungstenite::Message;

use crate::audit::{Audit, AuditSummary, Receipt};
use crate::conn::{self, Ws};
use crate::payload::{self, Header};
use crate::progress::ThreadProgress;
use crate::report::{new_histogram, record_ns};
use crate::schedule::{ClosedLoop, Nanos, OpenLoop};
use crate::sys::{self, Timer};

/// The token of the worker's timer; connection tokens are `0..connections`.
const TIMER: Token = Token(usize::MAX);
/// Messages one connection writes per tick at most, so one backlog cannot starve the others.
const MAX_BATCH: u64 = 256;
/// Longest sleep of the loop: the progress counters are published at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(200);
/// How often the worker recomputes its p99 for the progress line.
const P99_EVERY: Nanos = 1_000_000_000;

/// How messages are paced.
#[derive(Debug, Clone)]
pub enum Pacing {
    /// Fixed rate, latency from the due time.
    Open(OpenLoop),
    /// Fixed window per connection, latency from the send time.
    Closed(ClosedLoop),
}

/// The timing of a run, as the workers see it.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The shared start of the run; every `Nanos` counts from here.
    pub t0: Instant,
    /// End of the measured window: nothing is sent at or after it.
    pub end: Nanos,
    /// Time by which the drain gives up waiting for replies.
    pub drain_until: Nanos,
    /// Open loop: the send timer fires on multiples of this (0: at every due time).
    pub tick: Nanos,
}

/// What one worker measured.
#[derive(Debug)]
pub struct EchoOutcome {
    /// Audit counts over the measured messages.
    pub audit: AuditSummary,
    /// Broken connections, unparseable or crossed replies, unknown sequence numbers.
    pub errors: u64,
    /// Latency of measured messages, microseconds.
    pub latency: Histogram<u64>,
    /// Open loop: lateness of the loadgen's own sends, microseconds.
    pub send_lag: Histogram<u64>,
    /// Messages sent over the whole run, warmup included (for CPU per message).
    pub sent_all: u64,
    /// Connections still open at the end.
    pub held: u64,
}

/// One connection's sending state.
struct Peer {
    /// Global connection index, checked against the `conn` field of replies.
    index: u32,
    /// The WebSocket; `None` once it broke (its owed messages are never sent).
    ws: Option<Ws>,
    /// Messages due on this connection and not written yet.
    owed: u64,
    /// The socket was full: write nothing more until a writable event.
    blocked: bool,
    /// Already in the ready list for this tick.
    queued: bool,
}

/// One worker's run.
pub struct EchoWorker<'p> {
    /// The worker's poll: its connections and its timer.
    poll: Poll,
    /// Connections; index = mio token = schedule and audit connection.
    peers: Vec<Peer>,
    /// Open or closed loop.
    pacing: Pacing,
    /// Per-connection sequence bookkeeping.
    audit: Audit,
    /// Latency of measured messages.
    latency: Histogram<u64>,
    /// Open loop: how late sends were.
    send_lag: Histogram<u64>,
    /// Errors so far.
    errors: u64,
    /// Messages written, warmup included.
    sent_all: u64,
    /// Connections with something to write or flush this tick.
    ready: Vec<usize>,
    /// Wakes the loop at the next due time.
    timer: Timer,
    /// The due time the timer is armed for, to avoid re-arming it every tick.
    armed: Option<Nanos>,
    /// Run timing.
    timing: Timing,
    /// Payload bytes.
    size: usize,
    /// Where the progress counters go.
    progress: &'p ThreadProgress,
}

impl<'p> EchoWorker<'p> {
    /// A worker over open connections registered in `poll` with tokens `0..conns.len()`.
    pub fn new(
        poll: Poll,
        conns: Vec<(u32, Ws)>,
        pacing: Pacing,
        timing: Timing,
        size: usize,
        progress: &'p ThreadProgress,
    ) -> io::Result<Self> {
        let mut timer = Timer::new()?;
        poll.registry()
            .register(&mut timer, TIMER, Interest::READABLE)?;
        let peers: Vec<Peer> = conns
            .into_iter()
            .map(|(index, ws)| Peer {
                index,
                ws: Some(ws),
                owed: 0,
                blocked: false,
                queued: false,
            })
            .collect();
        Ok(EchoWorker {
            poll,
            audit: Audit::new(peers.len()),
            peers,
            pacing,
            latency: new_histogram(),
            send_lag: new_histogram(),
            errors: 0,
            sent_all: 0,
            ready: Vec::new(),
            timer,
            armed: None,
            timing,
            size,
            progress,
        })
    }

    /// Runs the load, then drains; returns what was measured.
    pub fn run(mut self) -> io::Result<EchoOutcome> {
        sys::tighten_timer_slack();
        if let Pacing::Closed(c) = &self.pacing {
            let window = u64::from(c.initial_window());
            for k in 0..self.peers.len() {
                self.peers[k].owed = window;
                self.queue(k);
            }
        }
        let mut events = Events::with_capacity(1024);
        let mut next_p99 = P99_EVERY;
        loop {
            let now = self.now();
            self.release(now);
            self.send_ready(now);
            if now >= self.timing.end
                && (self.audit.outstanding() == 0 || now >= self.timing.drain_until)
            {
                break;
            }
            self.publish(now, &mut next_p99);
            let timeout = self.wakeup()?;
            match self.poll.poll(&mut events, Some(timeout)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            for event in events.iter() {
                if event.token() == TIMER {
                    // No read needed: re-arming resets the timerfd's expiry count.
                    self.armed = None;
                    continue;
                }
                let k = event.token().0;
                if event.is_writable() {
                    self.on_writable(k);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(k);
                }
            }
        }
        self.publish(self.now(), &mut 0);
        Ok(self.outcome())
    }

    /// Nanoseconds since t0.
    fn now(&self) -> Nanos {
        self.timing.t0.elapsed().as_nanos() as Nanos
    }

    /// Open loop: hands every newly due message to its connection.
    fn release(&mut self, now: Nanos) {
        let Pacing::Open(schedule) = &mut self.pacing else {
            return;
        };
        for i in schedule.poll_due(now) {
            let k = schedule.conn_of(i);
            if let Some(p) = self.peers.get_mut(k) {
                p.owed += 1;
                if !p.queued {
                    p.queued = true;
                    self.ready.push(k);
                }
            }
        }
    }

    /// Puts connection `k` in this tick's ready list.
    fn queue(&mut self, k: usize) {
        if let Some(p) = self.peers.get_mut(k) {
            if !p.queued {
                p.queued = true;
                self.ready.push(k);
            }
        }
    }

    /// Writes what every ready connection owes (nothing once the run has ended) and flushes it.
    fn send_ready(&mut self, now: Nanos) {
        let mut list = mem::take(&mut self.ready);
        for k in list.drain(..) {
            if let Some(p) = self.peers.get_mut(k) {
                p.queued = false;
            }
            self.send_owed(k, now);
        }
        if self.ready.is_empty() {
            self.ready = list;
        }
    }

    /// Writes up to `MAX_BATCH` owed messages on connection `k`, then flushes once.
    fn send_owed(&mut self, k: usize, now: Nanos) {
        let may_send = now < self.timing.end;
        let Some(peer) = self.peers.get_mut(k) else {
            return;
        };
        let Some(ws) = peer.ws.as_mut() else {
            return;
        };
        if !may_send {
            peer.owed = 0;
        }
        if peer.blocked {
            return;
        }
        let mut broken = false;
        for _ in 0..peer.owed.min(MAX_BATCH) {
            let seq = self.audit.next_seq(k);
            let (stamp, measured) = match &self.pacing {
                Pacing::Open(s) => {
                    let index = s.index_of(k, seq);
                    (s.due(index), s.is_measured(index))
                }
                Pacing::Closed(c) => (now, c.is_measured(now)),
            };
            let header = Header {
                conn: peer.index,
                seq,
                stamp,
            };
            let frame = Message::Binary(payload::encode(header, self.size).into());
            match ws.write(frame) {
                Ok(()) => {}
                // The frame is queued in tungstenite's buffer: it counts as sent.
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    peer.blocked = true;
                }
                Err(_) => {
                    broken = true;
                    break;
                }
            }
            self.audit.on_sent(k, measured);
            self.sent_all += 1;
            peer.owed -= 1;
            if measured && matches!(self.pacing, Pacing::Open(_)) {
                record_ns(&mut self.send_lag, now.saturating_sub(stamp));
            }
            if peer.blocked {
                break;
            }
        }
        if !broken && !peer.blocked {
            match conn::flush(ws) {
                Ok(true) => {}
                Ok(false) => peer.blocked = true,
                Err(_) => broken = true,
            }
        }
        let more = !broken && !peer.blocked && peer.owed > 0 && may_send;
        if broken {
            self.kill(k);
        } else if more {
            self.queue(k);
        }
    }

    /// A full socket drained: resume writing.
    fn on_writable(&mut self, k: usize) {
        let Some(peer) = self.peers.get_mut(k) else {
            return;
        };
        let Some(ws) = peer.ws.as_mut() else {
            return;
        };
        if !peer.blocked {
            return;
        }
        match conn::flush(ws) {
            Ok(true) => {
                peer.blocked = false;
                self.queue(k);
            }
            Ok(false) => {}
            Err(_) => self.kill(k),
        }
    }

    /// Reads every reply available on connection `k` (until WouldBlock).
    fn on_readable(&mut self, k: usize) {
        let now = self.now();
        if let Some(ws) = self.peers.get_mut(k).and_then(|p| p.ws.as_mut()) {
            ws.get_mut().on_readable();
        }
        loop {
            let Some(ws) = self.peers.get_mut(k).and_then(|p| p.ws.as_mut()) else {
                return;
            };
            match ws.read() {
                Ok(Message::Binary(b)) => self.on_reply(k, &b, now),
                Ok(Message::Text(t)) => self.on_reply(k, t.as_bytes(), now),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.kill(k);
                    return;
                }
            }
        }
        // Pongs, and closed-loop refills, are flushed with this tick's writes.
        self.queue(k);
    }

    /// Audits and times one reply.
    fn on_reply(&mut self, k: usize, bytes: &[u8], now: Nanos) {
        let Ok(header) = payload::decode(bytes) else {
            self.errors += 1;
            return;
        };
        if self.peers.get(k).map(|p| p.index) != Some(header.conn) {
            self.errors += 1;
            return;
        }
        match self.audit.on_received(k, header.seq) {
            Receipt::First { measured } => {
                if measured {
                    record_ns(&mut self.latency, now.saturating_sub(header.stamp));
                }
                if let (Pacing::Closed(c), Some(p)) = (&self.pacing, self.peers.get_mut(k)) {
                    p.owed += u64::from(c.refill(now));
                }
            }
            Receipt::Duplicate => {}
            Receipt::Unknown => self.errors += 1,
        }
    }

    /// Drops a broken connection; what it owes is never sent.
    fn kill(&mut self, k: usize) {
        if let Some(p) = self.peers.get_mut(k) {
            if p.ws.take().is_some() {
                self.errors += 1;
            }
        }
    }

    /// Arms the timer for the next due message and returns the poll timeout.
    fn wakeup(&mut self) -> io::Result<Duration> {
        if !self.ready.is_empty() {
            return Ok(Duration::ZERO);
        }
        let now = self.now();
        let until = if now < self.timing.end {
            self.timing.end
        } else {
            self.timing.drain_until
        };
        let timeout = Duration::from_nanos(until.saturating_sub(now)).min(MAX_SLEEP);
        if let (Pacing::Open(s), true) = (&self.pacing, now < self.timing.end) {
            if let Some(due) = s.next_due() {
                if due <= now {
                    return Ok(Duration::ZERO);
                }
                let wake = match self.timing.tick {
                    0 => due,
                    tick => due.div_ceil(tick) * tick,
                };
                if self.armed != Some(wake) {
                    self.timer.arm(Duration::from_nanos(wake - now))?;
                    self.armed = Some(wake);
                }
            }
        }
        Ok(timeout)
    }

    /// Publishes counters, and the p99 once a second.
    fn publish(&mut self, now: Nanos, next_p99: &mut Nanos) {
        let audit = self.audit.summary();
        self.progress.set_counts(
            self.sent_all,
            self.audit.received_all(),
            self.errors + audit.unknown,
        );
        if now >= *next_p99 {
            self.progress.set_p99(self.latency.value_at_quantile(0.99));
            *next_p99 = now + P99_EVERY;
        }
    }

    /// The final figures.
    fn outcome(self) -> EchoOutcome {
        let audit = self.audit.summary();
        EchoOutcome {
            errors: self.errors + audit.unknown,
            audit,
            latency: self.latency,
            send_lag: self.send_lag,
            sent_all: self.sent_all,
            held: self.peers.iter().filter(|p| p.ws.is_some()).count() as u64,
        }
    }
}
