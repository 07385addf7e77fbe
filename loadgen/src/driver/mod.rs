//! The message event loop every message scenario shares (the thin shell): one mio `Poll` per
//! worker, non-blocking tungstenite clients, the schedule from [`crate::schedule`], and the
//! loop's wake-ups.
//!
//! What is sent and how replies are read is a [`Script`]: echo frames for `echo`, Hermod JSON for
//! `direct` and `room`. The driver owns the pacing and the sockets.
//!
//! Batching: with `--tick-us T` the loop wakes on multiples of T, and every message due by then
//! is written in that wake-up, one flush per connection. Latency still counts from each message's
//! due time, so the batching shows in the figures (and in `send_lag_us`); it is not hidden.
//!
//! Wake-ups: by default the loop blocks in the poll, woken by replies and by a timerfd at the
//! next send tick, so a send due while the loop is awake for a reply goes out at once. A reply's
//! arrival time is the kernel's receive timestamp of the bytes that completed it (see
//! [`crate::sock`]), not the time the loop read it, so the loop's own wake-up delay is not
//! counted as the server's latency. With `--read-at-ticks` (open loop) the loop instead sleeps
//! until its next send tick (at most [`wake::READ_EVERY`]) and reads whatever arrived then: fewer
//! wake-ups and less CPU under load, sends always at tick boundaries (a larger `send_lag_us`),
//! and, on loopback, a cheaper server too, since the sender pays for waking a blocked reader.
//!
//! Children: [`wake`], how the loop waits for its next pass; [`arrival`], a reply's arrival
//! time from its kernel receive stamp.

mod arrival;
mod wake;

use std::io;
use std::mem;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use tungstenite::Message;

use crate::conn::{self, Ws};
use crate::outcome::Outcome;
use crate::progress::ThreadProgress;
use crate::reconnect::Sessions;
use crate::report::{new_histogram, record_ns};
use crate::schedule::{ClosedLoop, Nanos, OpenLoop};
use crate::sys::{self, Clock, Timer};

use arrival::arrival;
use wake::Wait;

/// The token of the worker's timer; connection tokens are `0..connections`.
const TIMER: Token = Token(usize::MAX);
/// Messages one connection writes per tick at most, so one backlog cannot starve the others.
const MAX_BATCH: u64 = 256;
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
    /// The shared start of the run; every `Nanos` counts from its t0.
    pub clock: Clock,
    /// End of the measured window: nothing is sent at or after it.
    pub end: Nanos,
    /// Time by which the drain gives up waiting for replies.
    pub drain_until: Nanos,
    /// Open loop: the send timer fires on multiples of this (0: at every due time).
    pub tick: Nanos,
    /// Open loop: sleep until the next send tick and read what arrived then, instead of blocking
    /// in the poll and waking for every reply.
    pub read_at_ticks: bool,
}

/// What a scenario sends and how it reads replies; the driver does the rest.
pub trait Script {
    /// The frame of the next message local sender `k` sends, stamped `stamp` (its due time, or
    /// the send time in closed loop); `measured` when inside the measured window.
    fn frame(&mut self, k: usize, stamp: Nanos, measured: bool) -> Message;
    /// A data message arrived on connection `k` at `now`; returns the closed-loop refills it
    /// earns for `k`.
    fn on_message(&mut self, k: usize, msg: Message, now: Nanos) -> u32;
    /// A frame to write on `k` before its owed messages (an ack), if any.
    fn pending(&mut self, k: usize) -> Option<Message>;
    /// After the end: whether nothing more is expected, so the drain may stop early.
    fn drained(&self, now: Nanos) -> bool;
    /// (Distinct messages received so far, errors so far), for the progress line.
    fn counts(&self) -> (u64, u64);
    /// Latency recorded so far.
    fn latency(&self) -> &Histogram<u64>;
    /// The script's part of the outcome (audit, errors, latency, received).
    fn finish(self) -> Outcome;
    /// Connection `k`'s session ended (closed or broken): forget what it waited for.
    fn on_ended(&mut self, _k: usize) {}
    /// Connection `k` reopened: the frames to send first (room joins).
    fn on_reopened(&mut self, _k: usize) -> Vec<Message> {
        Vec::new()
    }
}

/// One connection's sending state.
struct Peer {
    /// The WebSocket; `None` once it broke (its owed messages are never sent).
    ws: Option<Ws>,
    /// Slot in the open-loop schedule; `None` for connections that only receive.
    slot: Option<usize>,
    /// Messages this connection has sent: its next schedule index is `index_of(slot, sent)`.
    sent: u64,
    /// Messages due on this connection and not written yet.
    owed: u64,
    /// The socket was full: write nothing more until a writable event.
    blocked: bool,
    /// Already in the ready list for this tick.
    queued: bool,
}

/// One worker's run.
pub struct Driver<'p, S: Script> {
    /// The worker's poll: its connections and its timer.
    poll: Poll,
    /// Connections; index = mio token.
    peers: Vec<Peer>,
    /// Schedule slot to connection index.
    senders: Vec<usize>,
    /// Open or closed loop.
    pacing: Pacing,
    /// The scenario.
    script: S,
    /// Open loop: how late sends were.
    send_lag: Histogram<u64>,
    /// Broken connections.
    broken: u64,
    /// Close counts and reconnects.
    sessions: Sessions,
    /// Messages written, warmup included.
    sent_all: u64,
    /// Measured messages written by the end of the window plus one tick.
    on_time: u64,
    /// Connections with something to write or flush this tick.
    ready: Vec<usize>,
    /// Wakes the loop at the next due tick.
    timer: Timer,
    /// The time the timer is armed for, to avoid re-arming it every pass.
    armed: Option<Nanos>,
    /// Run timing.
    timing: Timing,
    /// Where the progress counters go.
    progress: &'p ThreadProgress,
}

impl<'p, S: Script> Driver<'p, S> {
    /// A driver over `conns` registered in `poll` with tokens `0..conns.len()`; `senders` lists
    /// the connections that send (schedule slot order). An open-loop schedule must have been
    /// built over `senders.len()` connections. `sessions` counts closes and reconnects.
    pub fn new(
        poll: Poll,
        conns: Vec<Ws>,
        senders: Vec<usize>,
        (pacing, timing): (Pacing, Timing),
        script: S,
        sessions: Sessions,
        progress: &'p ThreadProgress,
    ) -> io::Result<Self> {
        let mut timer = Timer::new()?;
        poll.registry()
            .register(&mut timer, TIMER, Interest::READABLE)?;
        let mut peers: Vec<Peer> = conns
            .into_iter()
            .map(|ws| Peer {
                ws: Some(ws),
                slot: None,
                sent: 0,
                owed: 0,
                blocked: false,
                queued: false,
            })
            .collect();
        for (slot, &k) in senders.iter().enumerate() {
            if let Some(p) = peers.get_mut(k) {
                p.slot = Some(slot);
            }
        }
        Ok(Driver {
            poll,
            peers,
            senders,
            pacing,
            script,
            send_lag: new_histogram(),
            broken: 0,
            sessions,
            sent_all: 0,
            on_time: 0,
            ready: Vec::new(),
            timer,
            armed: None,
            timing,
            progress,
        })
    }

    /// Runs the load from t0, then drains; returns what was measured.
    pub fn run(mut self) -> io::Result<Outcome> {
        sys::tighten_timer_slack();
        self.timing.clock.wait_start();
        if let Pacing::Closed(c) = &self.pacing {
            let window = u64::from(c.initial_window());
            for k in self.senders.clone() {
                self.peers[k].owed = window;
                self.queue(k);
            }
        }
        let mut events = Events::with_capacity(1024);
        let mut next_p99 = P99_EVERY;
        loop {
            let now = self.now();
            self.sessions.dial_due(now, self.poll.registry());
            self.release(now);
            self.send_ready(now);
            if now >= self.timing.end
                && ((self.sessions.settled() && self.script.drained(now))
                    || now >= self.timing.drain_until)
            {
                break;
            }
            self.publish(now, &mut next_p99);
            let timeout = match self.wakeup()? {
                Wait::Poll(timeout) => timeout,
                Wait::Until(at) => {
                    self.timing.clock.sleep_until(at);
                    Duration::ZERO
                }
            };
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
                if self.sessions.is_dialing(k) {
                    self.on_dial_event(k);
                    continue;
                }
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
        self.timing.clock.now()
    }

    /// Open loop: hands every newly due message to its connection.
    fn release(&mut self, now: Nanos) {
        let Pacing::Open(schedule) = &mut self.pacing else {
            return;
        };
        for i in schedule.poll_due(now) {
            let Some(&k) = self.senders.get(schedule.conn_of(i)) else {
                continue;
            };
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

    /// The stamp and measured flag of the next message of connection `k`.
    fn stamp(&self, k: usize, now: Nanos) -> (Nanos, bool) {
        match (&self.pacing, self.peers.get(k)) {
            (
                Pacing::Open(s),
                Some(Peer {
                    slot: Some(slot),
                    sent,
                    ..
                }),
            ) => {
                let index = s.index_of(*slot, *sent);
                (s.due(index), s.is_measured(index))
            }
            (Pacing::Closed(c), _) => (now, c.is_measured(now)),
            _ => (now, false),
        }
    }

    /// Writes a pending control frame and up to `MAX_BATCH` owed messages on connection `k`,
    /// then flushes once.
    fn send_owed(&mut self, k: usize, now: Nanos) {
        // Open loop: every released message was due before the end and is sent, however late
        // the loop gets to it. Closed loop: nothing new after the end.
        let may_send = now < self.timing.end || matches!(self.pacing, Pacing::Open(_));
        let Some(peer) = self.peers.get_mut(k) else {
            return;
        };
        if !may_send {
            peer.owed = 0;
        }
        if peer.ws.is_none() || peer.blocked {
            return;
        }
        let mut broken = false;
        if let Some(frame) = self.script.pending(k) {
            broken = self.write(k, frame);
        }
        let budget = self.peers[k].owed.min(MAX_BATCH);
        for _ in 0..budget {
            if broken || self.peers[k].blocked {
                break;
            }
            let (stamp, measured) = self.stamp(k, now);
            let frame = self.script.frame(k, stamp, measured);
            broken = self.write(k, frame);
            let peer = &mut self.peers[k];
            peer.sent += 1;
            peer.owed -= 1;
            self.sent_all += 1;
            let grace = self.timing.tick.max(1_000_000);
            self.on_time += u64::from(measured && now <= self.timing.end + grace);
            if measured && matches!(self.pacing, Pacing::Open(_)) {
                record_ns(&mut self.send_lag, now.saturating_sub(stamp));
            }
        }
        let peer = &mut self.peers[k];
        if let (false, false, Some(ws)) = (broken, peer.blocked, peer.ws.as_mut()) {
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

    /// Queues one frame on `k`; true when the connection broke. A WouldBlock still queued the
    /// frame in tungstenite's buffer: it counts as sent, and the connection waits to be writable.
    fn write(&mut self, k: usize, frame: Message) -> bool {
        let Some(peer) = self.peers.get_mut(k) else {
            return true;
        };
        let Some(ws) = peer.ws.as_mut() else {
            return true;
        };
        match ws.write(frame) {
            Ok(()) => false,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                peer.blocked = true;
                false
            }
            Err(_) => true,
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

    /// Reads every message available on connection `k` (until WouldBlock), each stamped with
    /// its arrival time.
    fn on_readable(&mut self, k: usize) {
        let now = self.now();
        let real_now = sys::realtime_ns();
        if let Some(ws) = self.peers.get_mut(k).and_then(|p| p.ws.as_mut()) {
            ws.get_mut().on_readable();
        }
        loop {
            let Some(ws) = self.peers.get_mut(k).and_then(|p| p.ws.as_mut()) else {
                return;
            };
            match ws.read() {
                Ok(msg @ (Message::Binary(_) | Message::Text(_))) => {
                    let at = arrival(now, real_now, ws.get_ref().rx_stamp());
                    let refill = self.script.on_message(k, msg, at);
                    let closed = matches!(self.pacing, Pacing::Closed(_));
                    if closed && refill > 0 && now < self.timing.end {
                        if let Some(p) = self.peers.get_mut(k) {
                            p.owed += u64::from(refill);
                        }
                    }
                }
                Ok(Message::Close(frame)) => {
                    // The session is over: send tungstenite's reply (best effort) and drop the
                    // socket now. Waiting for the server's EOF could wait forever: it may have
                    // arrived with the close frame, and a short read consumed that edge.
                    let code = frame.map(|f| u16::from(f.code));
                    self.sessions.on_close_frame(k, code);
                    let _ = conn::flush(ws);
                    self.kill(k);
                    return;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.kill(k);
                    return;
                }
            }
        }
        // Pongs, acks and closed-loop refills are flushed with this tick's writes.
        self.queue(k);
    }

    /// Drops a closed or broken connection; what it owes waits for a reconnect (never sent
    /// without one).
    fn kill(&mut self, k: usize) {
        if let Some(p) = self.peers.get_mut(k) {
            if p.ws.take().is_some() {
                p.blocked = false;
                self.broken += 1;
                let now = self.now();
                self.sessions.on_ended(k, now);
                self.script.on_ended(k);
            }
        }
    }

    /// An event for connection `k` while it is being dialed again; once open, the script's
    /// frames (room joins) go first, then whatever followed the 101 is read.
    fn on_dial_event(&mut self, k: usize) {
        let now = self.now();
        let Some(ws) = self.sessions.on_dial_event(k, now) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(k) else {
            return;
        };
        peer.ws = Some(ws);
        peer.blocked = false;
        let mut broken = false;
        for frame in self.script.on_reopened(k) {
            broken = broken || self.write(k, frame);
        }
        if broken {
            self.kill(k);
        } else {
            self.on_readable(k);
        }
    }

    /// Publishes counters, and the p99 once a second.
    fn publish(&mut self, now: Nanos, next_p99: &mut Nanos) {
        let (received, errors) = self.script.counts();
        self.progress
            .set_counts(self.sent_all, received, errors + self.broken);
        if now >= *next_p99 {
            let latency = self.script.latency();
            self.progress.set_p99(latency.value_at_quantile(0.99));
            *next_p99 = now + P99_EVERY;
        }
    }

    /// The final figures.
    fn outcome(self) -> Outcome {
        let held = self.peers.iter().filter(|p| p.ws.is_some()).count() as u64;
        let mut outcome = self.script.finish();
        outcome.errors += self.broken;
        outcome.send_lag = self.send_lag;
        outcome.sent_all = self.sent_all;
        outcome.on_time = self.on_time;
        outcome.held = held;
        outcome.reconnects = self.sessions.reconnects;
        outcome.closed_by_code = self.sessions.closed_by_code;
        outcome
    }
}
