//! One tunnelled connection (`--route`): the client's socket, the upstream's, and the phase.
//!
//! ```text
//!  Routing (peek the request head) ──routed──> Connecting ──connected──> Awaiting ──101──> Relaying
//!     │ other path: tungstenite's handshake        │ refused/timeout: 502    │ garbage: 502    │ both EOFs passed on,
//!     │ too large/malformed: 431/400               │                         │ timeout: 504    │ reset, idle timeout
//!     v                                            v                         │ other status    v
//!   (ws/session.rs)                              gone                        └──> Answering ──> gone
//! ```
//!
//! `Routing` lives in the worker (`worker/routing.rs`: it decides between this and a WebSocket
//! session). Here:
//! `Connecting` waits for the non-blocking TCP connect; `Awaiting` writes the rewritten request
//! and reads the upstream's response head (bounded); on 101 the head and anything behind it go to
//! the client and `Relaying` copies bytes both ways with no framing work ([`relay`]); any
//! other answer is passed on in `Answering` (head plus `Content-Length` bytes, or until the
//! upstream closes) and the connection closes. Half-close: an EOF read from one side is passed on
//! as `shutdown(Write)` to the other once its buffered bytes are written; the tunnel ends when
//! both directions have ended, or at the first error (reset), or after `--route-idle-timeout`
//! without a byte either way when one is set.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use hermod_core::reactor::{interrupted, would_block};
use mio::net::TcpStream;

pub mod http;
pub mod relay;

use http::{parse_answer, status_response, Answer, Body, MAX_HEAD};
use relay::{BufPool, Pipe, Ready};

use crate::metrics::Metrics;
use crate::settings::Settings;

/// Which socket of a tunnel an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// What a tunnel's handlers need from the worker.
pub struct TunnelCx<'a> {
    pub now: Instant,
    /// The worker's relay buffers.
    pub pool: &'a mut BufPool,
    pub metrics: &'a Metrics,
    pub settings: &'a Settings,
}

/// What the worker must do after a tunnel handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wait for the next event or the deadline.
    Continue,
    /// A read budget ran out with input possibly left: run again next tick.
    MoreToDo,
    /// The tunnel is over: drop both sockets.
    Close,
}

/// What reading the upstream's answer gave.
enum Heard {
    /// Not a complete head yet.
    Nothing,
    /// EOF, an error, garbage or a head too large: 502.
    Failed,
    /// A complete head.
    Answer { status: u16, len: usize, body: Body },
}

/// A routed connection after its request head was read.
#[derive(Debug)]
pub struct Tunnel {
    client: TcpStream,
    upstream: TcpStream,
    /// The client socket's readiness as last reported.
    client_ready: Ready,
    /// The upstream socket's readiness as last reported.
    upstream_ready: Ready,
    phase: Phase,
    /// When a byte last moved either way: drives `--route-idle-timeout`.
    last_active: Instant,
}

#[derive(Debug)]
enum Phase {
    /// The TCP connect to the upstream is in progress.
    Connecting {
        /// The rewritten request head to send once connected.
        request: Vec<u8>,
        /// Past it: 502.
        deadline: Instant,
    },
    /// Sending the request and reading the upstream's response head.
    Awaiting {
        /// The request head; emptied (and freed) once written.
        request: Vec<u8>,
        /// Bytes of `request` written.
        sent: usize,
        /// The response read so far (a pool buffer), `got` bytes of it.
        head: Option<Box<[u8]>>,
        got: usize,
        /// Past it: 504.
        deadline: Instant,
    },
    /// After the 101: bytes both ways.
    Relaying {
        /// Client to upstream.
        up: Pipe,
        /// Upstream to client.
        down: Pipe,
    },
    /// A non-101 answer on its way to the client; then the connection closes.
    Answering {
        down: Pipe,
        /// Past it the answer is cut short.
        deadline: Instant,
    },
}

impl Tunnel {
    /// A tunnel whose upstream connect was just started; `request` goes out once it completes.
    pub fn new(
        client: TcpStream,
        upstream: TcpStream,
        request: Vec<u8>,
        now: Instant,
        settings: &Settings,
    ) -> Self {
        Tunnel {
            client,
            upstream,
            // Bytes behind the request head may already wait: no edge would announce them.
            client_ready: Ready {
                readable: true,
                writable: true,
                closed: false,
            },
            upstream_ready: Ready::default(),
            phase: Phase::Connecting {
                request,
                deadline: now + settings.route_connect_timeout,
            },
            last_active: now,
        }
    }

    /// The upstream socket, to register it.
    pub fn upstream_mut(&mut self) -> &mut TcpStream {
        &mut self.upstream
    }

    /// Whether bytes are being relayed (the upgrade went through).
    pub fn is_relaying(&self) -> bool {
        matches!(self.phase, Phase::Relaying { .. })
    }

    /// When the tunnel's timer should fire; `None`: no timer (relaying without idle timeout).
    pub fn deadline(&self, settings: &Settings) -> Option<Instant> {
        match &self.phase {
            Phase::Connecting { deadline, .. }
            | Phase::Awaiting { deadline, .. }
            | Phase::Answering { deadline, .. } => Some(*deadline),
            Phase::Relaying { .. } => settings.route_idle_timeout.map(|d| self.last_active + d),
        }
    }

    /// A readiness event for one side (`None`: from the worker's read-again list, nothing new).
    pub fn on_event(&mut self, event: Option<(Side, Ready)>, cx: &mut TunnelCx) -> Verdict {
        match event {
            Some((Side::Client, ready)) => self.client_ready.merge(ready),
            Some((Side::Upstream, ready)) => self.upstream_ready.merge(ready),
            None => {}
        }
        self.drive(cx)
    }

    /// The timer fired (possibly early: the idle deadline moves with traffic).
    pub fn on_timer(&mut self, cx: &mut TunnelCx) -> Verdict {
        let Some(deadline) = self.deadline(cx.settings) else {
            return Verdict::Continue;
        };
        if cx.now < deadline {
            return Verdict::Continue;
        }
        match self.phase {
            Phase::Connecting { .. } => self.fail(502, cx),
            Phase::Awaiting { .. } => self.fail(504, cx),
            Phase::Relaying { .. } | Phase::Answering { .. } => Verdict::Close,
        }
    }

    /// Gives back any relay buffer (the tunnel is being dropped).
    pub fn release(&mut self, pool: &mut BufPool) {
        match &mut self.phase {
            Phase::Connecting { .. } => {}
            Phase::Awaiting { head, .. } => {
                if let Some(buf) = head.take() {
                    pool.give(buf);
                }
            }
            Phase::Relaying { up, down } => {
                up.release(pool);
                down.release(pool);
            }
            Phase::Answering { down, .. } => down.release(pool),
        }
    }

    /// Advances the phase as far as the sockets allow.
    fn drive(&mut self, cx: &mut TunnelCx) -> Verdict {
        if let Phase::Connecting { request, .. } = &mut self.phase {
            let touched = self.upstream_ready.readable || self.upstream_ready.writable;
            if !touched {
                return Verdict::Continue;
            }
            match connected(&self.upstream) {
                Ok(false) => {
                    self.upstream_ready = Ready::default();
                    return Verdict::Continue;
                }
                Ok(true) => {
                    let request = std::mem::take(request);
                    let deadline = cx.now + cx.settings.handshake_timeout;
                    self.phase = Phase::Awaiting {
                        request,
                        sent: 0,
                        head: None,
                        got: 0,
                        deadline,
                    };
                }
                Err(e) => {
                    tracing::debug!("tunnel upstream connect: {e}");
                    return self.fail(502, cx);
                }
            }
        }
        if let Phase::Awaiting { .. } = self.phase {
            if let Some(verdict) = self.await_answer(cx) {
                return verdict;
            }
        }
        self.relay(cx)
    }

    /// Writes the request and reads the response head. `Some` when the caller must stop here.
    fn await_answer(&mut self, cx: &mut TunnelCx) -> Option<Verdict> {
        if !self.send_request() {
            return Some(self.fail(502, cx));
        }
        match self.read_answer(cx.pool) {
            Heard::Nothing => Some(Verdict::Continue),
            Heard::Failed => Some(self.fail(502, cx)),
            Heard::Answer { status, len, body } => {
                self.on_answer(status, len, body, cx);
                None
            }
        }
    }

    /// Writes as much of the request as the upstream takes; `false` on a broken connection.
    fn send_request(&mut self) -> bool {
        let Phase::Awaiting { request, sent, .. } = &mut self.phase else {
            return true;
        };
        while *sent < request.len() && self.upstream_ready.writable {
            match self.upstream.write(&request[*sent..]) {
                Ok(n) if n > 0 => *sent += n,
                Err(e) if would_block(&e) => self.upstream_ready.writable = false,
                Err(e) if interrupted(&e) => {}
                Ok(_) | Err(_) => return false,
            }
        }
        if *sent == request.len() && request.capacity() > 0 {
            *request = Vec::new();
        }
        true
    }

    /// Reads the upstream's answer into the head buffer until its head is complete.
    fn read_answer(&mut self, pool: &mut BufPool) -> Heard {
        let Phase::Awaiting { head, got, .. } = &mut self.phase else {
            return Heard::Nothing;
        };
        loop {
            if !self.upstream_ready.readable {
                return Heard::Nothing;
            }
            let buf = head.get_or_insert_with(|| pool.take());
            match self.upstream.read(&mut buf[*got..]) {
                Ok(0) => return Heard::Failed,
                Ok(n) => *got += n,
                Err(e) if would_block(&e) => self.upstream_ready.readable = false,
                Err(e) if interrupted(&e) => {}
                Err(_) => return Heard::Failed,
            }
            match parse_answer(&buf[..*got]) {
                Answer::Partial => {}
                Answer::Invalid => return Heard::Failed,
                Answer::Complete { status, len, body } => {
                    return Heard::Answer { status, len, body }
                }
            }
        }
    }

    /// The answer's head is complete: relay it, and then bytes both ways (101) or the rest of
    /// the answer only.
    fn on_answer(&mut self, status: u16, len: usize, body: Body, cx: &mut TunnelCx) {
        let Phase::Awaiting { head, got, .. } = &mut self.phase else {
            return;
        };
        let (Some(buf), got) = (head.take(), *got) else {
            return;
        };
        self.last_active = cx.now;
        if status == 101 {
            cx.metrics.tunnels_upgraded.fetch_add(1, Relaxed);
            self.phase = Phase::Relaying {
                up: Pipe::default(),
                down: Pipe::with(buf, got, None),
            };
            return;
        }
        let (shown, limit) = match body {
            Body::Length(n) => {
                let total = u64::try_from(len).unwrap_or(u64::MAX).saturating_add(n);
                let got = u64::try_from(got).unwrap_or(u64::MAX);
                (got.min(total), Some(total.saturating_sub(got)))
            }
            Body::UntilClose => (got as u64, None),
        };
        let shown = usize::try_from(shown).unwrap_or(got);
        self.phase = Phase::Answering {
            down: Pipe::with(buf, shown, limit),
            deadline: cx.now + cx.settings.handshake_timeout,
        };
    }

    /// Relaying or answering: pump the pipes.
    fn relay(&mut self, cx: &mut TunnelCx) -> Verdict {
        let (up, down) = match &mut self.phase {
            Phase::Relaying { up, down } => (Some(up), down),
            Phase::Answering { down, .. } => (None, down),
            Phase::Connecting { .. } | Phase::Awaiting { .. } => return Verdict::Continue,
        };
        let mut more = false;
        if let Some(up) = up {
            let flow = up.pump(
                &mut self.client,
                &mut self.client_ready,
                &mut self.upstream,
                &mut self.upstream_ready,
                cx.pool,
            );
            match flow {
                Ok(f) => {
                    more |= f.more;
                    if f.moved > 0 {
                        cx.metrics.tunnel_bytes_up.fetch_add(f.moved, Relaxed);
                        self.last_active = cx.now;
                    }
                }
                Err(_) => return Verdict::Close,
            }
        }
        let flow = down.pump(
            &mut self.upstream,
            &mut self.upstream_ready,
            &mut self.client,
            &mut self.client_ready,
            cx.pool,
        );
        match flow {
            Ok(f) => {
                more |= f.more;
                if f.moved > 0 {
                    cx.metrics.tunnel_bytes_down.fetch_add(f.moved, Relaxed);
                    self.last_active = cx.now;
                }
            }
            Err(_) => return Verdict::Close,
        }
        let done = match &self.phase {
            Phase::Relaying { up, down } => up.is_done() && down.is_done(),
            Phase::Answering { down, .. } => down.is_done(),
            _ => false,
        };
        match (done, more) {
            (true, _) => Verdict::Close,
            (false, true) => Verdict::MoreToDo,
            (false, false) => Verdict::Continue,
        }
    }

    /// Answers the client with `status` (the upstream failed it) and ends the tunnel.
    fn fail(&mut self, status: u16, cx: &mut TunnelCx) -> Verdict {
        cx.metrics.tunnel_upstream_failures.fetch_add(1, Relaxed);
        answer_and_close(&mut self.client, status);
        self.release(cx.pool);
        Verdict::Close
    }
}

/// Writes the gateway's own short answer and shuts the write side (best effort: the socket is
/// fresh, the answer fits its send buffer).
pub fn answer_and_close(stream: &mut TcpStream, status: u16) {
    let response = status_response(status);
    let _ = stream.write_all(&response);
    let _ = stream.shutdown(Shutdown::Write);
}

/// Discards what the client sent (up to a bound), so that closing does not reset the
/// connection before the client read our answer.
pub fn discard_input(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    for _ in 0..(4 * MAX_HEAD / buf.len()) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if interrupted(&e) => {}
            Err(_) => return,
        }
    }
}

/// Whether a non-blocking connect finished: `Ok(false)` still in progress, `Err` failed.
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}
