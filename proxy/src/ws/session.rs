//! One client connection's state machine, from TCP accept to the end of the close handshake.
//!
//! ```text
//!  accept ──> Routing ──upgrade──> Handshaking ──101──> Ws(Open) ──close sent──> Ws(Closing) ──> gone
//!               │ │ not an upgrade:     │ 4xx/timeout/garbage  │ peer close acked, reset, I/O error
//!               │ │ 426/405/404/400     └──────────> gone      └──────────────────────────────> gone
//!               │ └──> gone        (Routing: the head peeked, see worker/routing.rs)
//!               └──route──> Tunnel (tunnel/)
//! ```
//!
//! The worker owns the sockets' readiness and the clock; it calls `on_ready`, `deliver`,
//! `flush_out` and `on_timer` and acts on the returned [`Next`]. Handlers only queue output;
//! [`Session::flush_out`] moves it into tungstenite once per tick (output coalescing).

use std::io::Read;
use std::net::Shutdown;
use std::time::Instant;

use hermod_core::bus::Event;
use hermod_core::ids::Name;
use hermod_core::rate::RateLimiter;
use hermod_core::reactor::{interrupted, would_block};
use mio::net::TcpStream;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use super::handshake::Endpoint;
use super::outbound::Outbound;
use super::protocol::access::TokenAccess;
use super::protocol::{push, ClientProtocol, SessionCx};
use crate::next::{CloseReason, Next, ABNORMAL, NORMAL, NO_STATUS};
use crate::settings::Settings;
use hermod_core::grants::TokenGrants;

/// Messages read per readiness event before the session yields to others (it stays on the
/// worker's read-ready list, since no new edge will come for bytes already buffered).
const READ_BUDGET: usize = 64;
/// Socket reads (4 KiB each) discarded per event while closing; a peer that keeps streaming past
/// that is dropped.
const DISCARD_BUDGET: usize = 64;
/// Which endpoint a session serves. The client protocol's state is boxed so that an echo
/// session does not carry its size.
#[derive(Debug)]
enum Role {
    Client(Box<ClientProtocol>),
    Echo,
}

/// An upgraded WebSocket.
#[derive(Debug)]
pub struct Session {
    /// tungstenite's protocol state with the socket.
    ws: WebSocket<TcpStream>,
    /// Open or closing.
    phase: Phase,
    /// The broker knows this session (it was attached): it must be detached when it ends.
    pub attached: bool,
}

#[derive(Debug)]
enum Phase {
    Open(Open),
    Closing(Closing),
}

/// An open session.
#[derive(Debug)]
struct Open {
    role: Role,
    /// Messages waiting for the end of the tick.
    out: Outbound,
    /// tungstenite's last write hit WouldBlock: feed it nothing more until the socket is writable.
    blocked: bool,
    /// Reading stopped because output was blocked: a peer that does not read cannot make us
    /// queue pongs (tungstenite answers every ping it reads) or echoes. Resumed once the
    /// socket took our output.
    read_paused: bool,
    /// When the peer last sent anything (pongs included): drives ping and idle timeout.
    last_seen: Instant,
    /// A ping went out since `last_seen`.
    pinged: bool,
    /// The peer's close code once it started the close handshake (1005: no code).
    peer_close: Option<u16>,
}

/// Our close frame is queued; waiting for it to drain, then for the peer's EOF.
#[derive(Debug)]
struct Closing {
    /// Drop the connection at this point whatever happens (a peer that never reads).
    deadline: Instant,
    /// The code we sent, for metrics.
    code: u16,
    /// Our side is shut down (close frame fully written).
    write_shut: bool,
    /// A client session's user, device and rate limiter, for [`Session::into_limiter`] and
    /// [`Session::client_identity`].
    carried: Option<(Name, Name, RateLimiter)>,
}

/// What a tungstenite error means for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// WouldBlock: wait for readiness.
    Wait,
    /// The connection is finished or broken: drop it.
    Gone,
    /// The peer broke the protocol: close for this reason.
    Fail(CloseReason),
}

/// Maps a tungstenite read/write error to what the session does (the close codes of
/// docs/protocol.md, "Limits and closing").
pub fn fate(e: &WsError) -> Fate {
    match e {
        WsError::Io(io) if would_block(io) => Fate::Wait,
        WsError::Capacity(_) => Fate::Fail(CloseReason::MessageTooBig),
        WsError::Utf8(_) => Fate::Fail(CloseReason::InvalidUtf8),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Fate::Gone,
        WsError::Protocol(_) => Fate::Fail(CloseReason::ProtocolError),
        _ => Fate::Gone,
    }
}

impl Session {
    /// A freshly upgraded session; a client session's welcome is queued.
    /// `carried` is the limiter a previous session of the same user left in debt, if any.
    pub fn open(
        ws: WebSocket<TcpStream>,
        endpoint: Endpoint,
        carried: Option<RateLimiter>,
        cx: &SessionCx<'_>,
    ) -> (Self, Next) {
        let mut out = Outbound::new(cx.settings.max_outbound_bytes);
        let (role, next) = match endpoint {
            Endpoint::Client {
                user,
                device,
                claims,
            } => {
                let limiter = carried.unwrap_or_else(|| RateLimiter::new(cx.now));
                // The handshake refused tokens with bad patterns: these grants are valid.
                let access = claims.map(|claims| {
                    let grants = TokenGrants::from_claims(&claims).unwrap_or_default();
                    Box::new(TokenAccess::new(grants, claims.exp, cx.now, cx.now_unix))
                });
                let client = ClientProtocol::new(user, device, limiter, access);
                let next = client.welcome(cx.key, &mut out);
                (Role::Client(Box::new(client)), next)
            }
            Endpoint::Echo => (Role::Echo, Next::Continue),
        };
        let attached = matches!(role, Role::Client(_));
        let mut open = Open {
            role,
            out,
            blocked: false,
            read_paused: false,
            last_seen: cx.now,
            pinged: false,
            peer_close: None,
        };
        let mut ws = ws;
        // The welcome goes out now rather than at the end of the tick, and the queue then gives
        // back the buffer it took: an idle session holds no queue memory.
        let next = match next {
            Next::Continue if !open.out.is_empty() => open.flush_out(&mut ws, cx),
            next => next,
        };
        open.out.release_if_empty();
        let phase = Phase::Open(open);
        (
            Session {
                ws,
                phase,
                attached,
            },
            next,
        )
    }

    /// A client session's user and rate limiter as it ends, so that a reconnect of that user
    /// inherits what the limiter holds against it (`Carryover`).
    pub fn into_limiter(self) -> Option<(Name, RateLimiter)> {
        match self.phase {
            Phase::Open(Open {
                role: Role::Client(client),
                ..
            }) => Some(client.into_limiter()),
            Phase::Open(_) => None,
            Phase::Closing(c) => c.carried.map(|(user, _, limiter)| (user, limiter)),
        }
    }

    /// A client session's user and device: attached to the broker, reported to webhooks.
    pub fn identity(&self) -> Option<(&Name, &Name)> {
        match &self.phase {
            Phase::Open(Open {
                role: Role::Client(c),
                ..
            }) => Some((&c.user, &c.device)),
            Phase::Closing(Closing {
                carried: Some((user, device, _)),
                ..
            }) => Some((user, device)),
            _ => None,
        }
    }

    /// Socket readiness.
    pub fn on_ready(&mut self, readable: bool, writable: bool, cx: &SessionCx<'_>) -> Next {
        match &mut self.phase {
            Phase::Open(open) => {
                // Also when not blocked: a pong tungstenite could not write during a read waits
                // in its buffer too. Flushing an empty buffer costs no syscall.
                if writable {
                    open.blocked = false;
                    let next = open.flush_out(&mut self.ws, cx);
                    if next != Next::Continue {
                        return next;
                    }
                }
                // A read paused while output was blocked resumes without a new readable edge.
                if readable || (open.read_paused && !open.blocked) {
                    return open.read(&mut self.ws, cx);
                }
                Next::Continue
            }
            Phase::Closing(closing) => closing.drive(&mut self.ws),
        }
    }

    /// A broker event for this session.
    pub fn deliver(&mut self, event: Event, cx: &SessionCx<'_>) -> Next {
        match &mut self.phase {
            Phase::Open(Open {
                role: Role::Client(client),
                out,
                ..
            }) => client.on_event(event, cx, out),
            _ => Next::Continue,
        }
    }

    /// Whether queued output waits for the end-of-tick flush.
    pub fn wants_flush(&self) -> bool {
        matches!(&self.phase, Phase::Open(o) if !o.blocked && !o.out.is_empty())
    }

    /// Whether the broker should resume a paused replay now: it was paused and everything queued
    /// has been written to the socket. Clears the mark (one `ResumeReplay` per pause).
    pub fn take_resume(&mut self) -> bool {
        match &mut self.phase {
            Phase::Open(Open {
                role: Role::Client(client),
                out,
                blocked: false,
                ..
            }) if out.is_empty() => client.take_replay_paused(),
            _ => false,
        }
    }

    /// Moves queued output into tungstenite and flushes once.
    pub fn flush_out(&mut self, cx: &SessionCx<'_>) -> Next {
        match &mut self.phase {
            Phase::Open(open) => open.flush_out(&mut self.ws, cx),
            Phase::Closing(_) => Next::Continue,
        }
    }

    /// The session's timer fired (possibly early: deadlines move as traffic arrives).
    pub fn on_timer(&mut self, cx: &SessionCx<'_>) -> Next {
        match &mut self.phase {
            Phase::Open(open) => open.on_timer(cx),
            Phase::Closing(c) if cx.now >= c.deadline => Next::Drop(c.code),
            Phase::Closing(_) => Next::Continue,
        }
    }

    /// When the session's timer should next fire.
    pub fn next_deadline(&self, settings: &Settings) -> Instant {
        match &self.phase {
            Phase::Open(open) => open.next_deadline(settings),
            Phase::Closing(c) => c.deadline,
        }
    }

    /// Sends our close frame and moves to `Closing` (no-op when already closing); then drives the
    /// closing as far as the socket allows. What was queued before the close goes out first (an
    /// echo of the message before a protocol error, answers before a 1012), as far as
    /// tungstenite's write buffer takes it; a slow consumer's queue is dropped instead: what the
    /// client did not ack waits in its inbox.
    pub fn begin_close(&mut self, reason: CloseReason, linger: Instant) -> Next {
        if let Phase::Open(open) = &mut self.phase {
            if reason != CloseReason::SlowConsumer {
                open.feed_before_close(&mut self.ws);
            }
            let code = reason.code();
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.text().into(),
            };
            // Errors (WouldBlock, a dead socket) surface again in `Closing::drive`.
            let _ = self.ws.close(Some(frame));
            let closing = Phase::Closing(Closing {
                deadline: linger,
                code,
                write_shut: false,
                carried: None,
            });
            let carried = match std::mem::replace(&mut self.phase, closing) {
                Phase::Open(Open {
                    role: Role::Client(client),
                    ..
                }) => Some(client.into_parts()),
                _ => None,
            };
            if let Phase::Closing(c) = &mut self.phase {
                c.carried = carried;
            }
        }
        match &mut self.phase {
            Phase::Closing(closing) => closing.drive(&mut self.ws),
            Phase::Open(_) => Next::Continue,
        }
    }
}

impl Open {
    /// Reads messages until WouldBlock or the budget runs out, or until output blocks: then
    /// reading pauses until the socket is writable again (see `read_paused`).
    fn read(&mut self, ws: &mut WebSocket<TcpStream>, cx: &SessionCx<'_>) -> Next {
        for _ in 0..READ_BUDGET {
            if self.blocked {
                if !self.read_paused {
                    self.read_paused = true;
                    cx.metrics
                        .reads_paused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return Next::Continue;
            }
            self.read_paused = false;
            let msg = match ws.read() {
                Ok(msg) => msg,
                Err(WsError::Io(e)) if interrupted(&e) => continue,
                Err(e) => {
                    return match fate(&e) {
                        Fate::Wait => Next::Continue,
                        Fate::Gone => Next::Drop(self.peer_close.unwrap_or(ABNORMAL)),
                        Fate::Fail(reason) => Next::Close(reason),
                    }
                }
            };
            self.last_seen = cx.now;
            self.pinged = false;
            let ping = matches!(msg, Message::Ping(_));
            let next = self.on_message(msg, cx);
            if next != Next::Continue {
                return next;
            }
            if ping {
                // tungstenite queued the pong in its write buffer, outside our bound: write it
                // now (tungstenite would try on its next read anyway), and if the peer is not
                // reading, stop reading its pings.
                match ws.flush() {
                    Ok(()) => {}
                    Err(WsError::Io(e)) if would_block(&e) => self.blocked = true,
                    Err(e) => return self.write_failed(&e),
                }
            }
        }
        Next::MoreToRead
    }

    fn on_message(&mut self, msg: Message, cx: &SessionCx<'_>) -> Next {
        use std::sync::atomic::Ordering::Relaxed;
        if msg.is_text() || msg.is_binary() {
            cx.metrics.messages_in.fetch_add(1, Relaxed);
            cx.metrics.bytes_in.fetch_add(msg.len() as u64, Relaxed);
        }
        match (msg, &mut self.role) {
            (Message::Text(text), Role::Client(client)) => client.on_text(&text, cx, &mut self.out),
            (Message::Binary(_), Role::Client(_)) => Next::Close(CloseReason::BinaryUnsupported),
            (msg @ (Message::Text(_) | Message::Binary(_)), Role::Echo) => push(&mut self.out, msg),
            (Message::Close(frame), _) => {
                self.peer_close = Some(frame.map_or(NO_STATUS, |f| u16::from(f.code)));
                Next::Continue
            }
            // tungstenite answers pings itself; pings and pongs count against a client
            // session's rate limits and as activity.
            (msg @ (Message::Ping(_) | Message::Pong(_)), Role::Client(client)) => {
                client.charge_control(msg.len(), cx)
            }
            _ => Next::Continue,
        }
    }

    /// Feeds queued messages to tungstenite, then flushes once.
    fn flush_out(&mut self, ws: &mut WebSocket<TcpStream>, cx: &SessionCx<'_>) -> Next {
        use std::sync::atomic::Ordering::Relaxed;
        if self.blocked {
            return Next::Continue;
        }
        while let Some(msg) = self.out.pop() {
            let data = msg.is_text() || msg.is_binary();
            let len = msg.len() as u64;
            let result = ws.write(msg);
            if data && !matches!(result, Err(WsError::WriteBufferFull(_))) {
                cx.metrics.messages_out.fetch_add(1, Relaxed);
                cx.metrics.bytes_out.fetch_add(len, Relaxed);
            }
            match result {
                Ok(()) => {}
                // The frame is in tungstenite's buffer: never resend it.
                Err(WsError::Io(e)) if would_block(&e) => {
                    self.blocked = true;
                    return Next::Continue;
                }
                Err(WsError::WriteBufferFull(msg)) => {
                    self.out.push_front(*msg);
                    self.blocked = true;
                    return Next::Continue;
                }
                Err(e) => return self.write_failed(&e),
            }
        }
        match ws.flush() {
            Ok(()) => Next::Continue,
            Err(WsError::Io(e)) if would_block(&e) => {
                self.blocked = true;
                Next::Continue
            }
            Err(e) => self.write_failed(&e),
        }
    }

    /// Moves queued messages into tungstenite's buffer without waiting for the socket: the close
    /// frame follows them, and `Closing::drive` flushes it all.
    fn feed_before_close(&mut self, ws: &mut WebSocket<TcpStream>) {
        while let Some(msg) = self.out.pop() {
            match ws.write(msg) {
                // Queued (WouldBlock still queues the frame): keep going.
                Ok(()) => {}
                Err(WsError::Io(e)) if would_block(&e) => {}
                // Buffer full or the socket is gone: the rest cannot go out.
                Err(_) => break,
            }
        }
        self.out.clear();
    }

    fn write_failed(&self, e: &WsError) -> Next {
        match e {
            WsError::ConnectionClosed => Next::Drop(self.peer_close.unwrap_or(NORMAL)),
            _ => Next::Drop(self.peer_close.unwrap_or(ABNORMAL)),
        }
    }

    fn on_timer(&mut self, cx: &SessionCx<'_>) -> Next {
        let s = cx.settings;
        if cx.now >= self.last_seen + s.idle_timeout {
            return Next::Close(CloseReason::IdleTimeout);
        }
        if !self.pinged && cx.now >= self.last_seen + s.ping_interval {
            self.pinged = true;
            let next = push(&mut self.out, Message::Ping(Default::default()));
            if next != Next::Continue {
                return next;
            }
        }
        match &mut self.role {
            Role::Client(client) => client.expire(cx, &mut self.out),
            Role::Echo => Next::Continue,
        }
    }

    fn next_deadline(&self, s: &Settings) -> Instant {
        let idle = self.last_seen + s.idle_timeout;
        let mut deadline = if self.pinged {
            idle
        } else {
            idle.min(self.last_seen + s.ping_interval)
        };
        if let Role::Client(client) = &self.role {
            if let Some(d) = client.next_deadline(s) {
                deadline = deadline.min(d);
            }
        }
        deadline
    }
}

impl Closing {
    /// Flushes the close frame, then shuts our side and discards input until the peer's EOF.
    /// Returns `Drop` once the connection is over.
    fn drive(&mut self, ws: &mut WebSocket<TcpStream>) -> Next {
        if !self.write_shut {
            match ws.flush() {
                Ok(()) | Err(WsError::ConnectionClosed) => {
                    self.write_shut = true;
                    if ws.get_ref().shutdown(Shutdown::Write).is_err() {
                        return Next::Drop(self.code);
                    }
                }
                Err(WsError::Io(e)) if would_block(&e) => {}
                Err(_) => return Next::Drop(self.code),
            }
        }
        // The peer's close reply and anything after it are not needed: read raw and discard.
        let mut buf = [0u8; 4096];
        for _ in 0..DISCARD_BUDGET {
            match ws.get_mut().read(&mut buf) {
                Ok(0) => return Next::Drop(self.code),
                Ok(_) => {}
                Err(e) if interrupted(&e) => {}
                Err(e) if would_block(&e) => return Next::Continue,
                Err(_) => return Next::Drop(self.code),
            }
        }
        Next::Drop(self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use tungstenite::error::CapacityError;

    #[test]
    fn close_codes_follow_the_protocol() {
        let too_long = CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        };
        assert_eq!(
            fate(&WsError::Capacity(too_long)),
            Fate::Fail(CloseReason::MessageTooBig)
        );
        assert_eq!(
            fate(&WsError::Utf8("x".into())),
            Fate::Fail(CloseReason::InvalidUtf8)
        );
        let masked = WsError::Protocol(ProtocolError::UnmaskedFrameFromClient);
        assert_eq!(fate(&masked), Fate::Fail(CloseReason::ProtocolError));
        let reset = WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert_eq!(fate(&reset), Fate::Gone);
        let wb = WsError::Io(io::Error::from(io::ErrorKind::WouldBlock));
        assert_eq!(fate(&wb), Fate::Wait);
        let broken = WsError::Io(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(fate(&broken), Fate::Gone);
        assert_eq!(fate(&WsError::ConnectionClosed), Fate::Gone);
    }

    /// Every connection's session is one allocation of this size (measured per idle session
    /// in docs/benchmarks.md): the client protocol's state is boxed, so an echo session does
    /// not carry it, and a client session's grows without growing every session.
    #[test]
    fn the_client_protocol_is_not_inline_in_every_session() {
        assert_eq!(std::mem::size_of::<Role>(), std::mem::size_of::<usize>());
    }
}
