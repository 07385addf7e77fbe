//! The worker's first look at a connection and its side of tunnel routes: peeking at a new
//! connection's request head to choose between a WebSocket handshake, a tunnel and an HTTP
//! answer, opening the upstream connection, and driving [`Tunnel`]s from readiness events and
//! timers.
//!
//! The request head is read with `MSG_PEEK`, so for a WebSocket upgrade nothing was consumed and
//! tungstenite's handshake reads the request as if the gateway had never looked. A head that is
//! not an upgrade tungstenite would accept (a plain `GET`, a `POST`, garbage) gets its HTTP
//! answer here instead ([`precheck`]), since tungstenite would close without one.
//!
//! A tunnel's two sockets share one slot: the client socket is registered with the slot's token,
//! the upstream socket with the same token plus [`UPSTREAM_BIT`] in its slot half. Slot indexes
//! stay far below that bit (connections are capped at a million per process), and the token keeps
//! the slot's generation, so stale events for either socket find nothing.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use hermod_core::reactor::interrupted;
use hermod_core::reactor::slots::Key;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Token};
use parking_lot::Mutex;
use tungstenite::handshake::server::ServerHandshake;

use super::{Reactor, Slot};
use crate::handshake::{precheck, Gate, Precheck, Refusal};
use crate::metrics::Rejected;
use crate::relay::Ready;
use crate::route::{classify, Head, MAX_HEAD};
use crate::session::{Conn, Handshaking};
use crate::tunnel::{answer_and_close, discard_input, Routing, Side, Tunnel, TunnelCx, Verdict};

/// Marks a token as a tunnel's upstream socket (bit 31: in the slot half of the token).
pub(super) const UPSTREAM_BIT: usize = 1 << 31;

/// The slot an upstream socket's token names, or `None` for any other token.
pub(super) fn upstream_key(token: Token) -> Option<Key> {
    if token.0 & UPSTREAM_BIT == 0 {
        return None;
    }
    Key::from_token(Token(token.0 & !UPSTREAM_BIT))
}

/// What looking at a request head decided.
enum Decision {
    Wait,
    Drop,
    /// A routed path (never [`Head::Local`]).
    Route(Head),
    /// Any other path.
    Local(Precheck),
}

impl Reactor {
    /// A new connection's first state: the peek at its request head.
    pub(super) fn first_conn(&self, stream: TcpStream, deadline: Instant) -> Conn {
        Conn::Routing(Box::new(Routing {
            stream: Some(stream),
            deadline,
        }))
    }

    /// tungstenite's handshake with our routing and auth callback.
    fn handshaking(&self, stream: TcpStream, deadline: Instant) -> Conn {
        let admission = Arc::new(Mutex::new(None));
        let gate = Gate {
            settings: Arc::clone(&self.env.settings),
            admission: Arc::clone(&admission),
        };
        let mid = ServerHandshake::start(stream, gate, Some(self.ws_config));
        Conn::Handshaking(Box::new(Handshaking {
            mid: Some(mid),
            admission,
            deadline,
        }))
    }

    /// Runs whichever first step a just-registered connection is in.
    pub(super) fn first_step(&mut self, key: Key, now: Instant) {
        match self.slots.get(key).map(|s| &s.conn) {
            Some(Conn::Routing(_)) => self.on_routing(key, now),
            _ => self.drive_handshake(key, now),
        }
    }

    /// Hands a peeked connection to tungstenite's handshake, which reads the head itself.
    fn start_handshake(&mut self, key: Key, now: Instant) {
        let Some((stream, deadline)) = self.take_routing(key) else {
            return;
        };
        let conn = self.handshaking(stream, deadline);
        if let Some(slot) = self.slots.get_mut(key) {
            slot.conn = conn;
        }
        // The head is already buffered: no new edge would announce it.
        self.drive_handshake(key, now);
    }

    /// Answers a request that is no WebSocket upgrade, then closes: the head is consumed (so
    /// the close sends no reset before the client read the answer), the answer written in one
    /// go (a fresh socket's send buffer holds it) and the write side shut down.
    fn refuse_local(&mut self, key: Key, refusal: &Refusal, head_only: bool) {
        self.env
            .metrics
            .rejected(Rejected::Status(refusal.status.as_u16()));
        if let Some((mut stream, _)) = self.take_routing(key) {
            discard_input(&mut stream);
            match refusal.to_http(head_only) {
                Ok(answer) => {
                    let _ = stream.write_all(&answer);
                }
                Err(e) => tracing::debug!("cannot render a refusal: {e}"),
            }
            let _ = stream.shutdown(Shutdown::Write);
        }
        self.remove(key, None);
    }

    /// Peeks at the request head and acts on what it asks for.
    pub(super) fn on_routing(&mut self, key: Key, now: Instant) {
        let decision = match self.slots.get(key).map(|s| &s.conn) {
            Some(Conn::Routing(r)) => match &r.stream {
                Some(stream) => peek_head(stream, &self.env.settings),
                None => Decision::Drop,
            },
            _ => return,
        };
        match decision {
            Decision::Wait
            | Decision::Route(Head::Partial)
            | Decision::Local(Precheck::Partial) => {}
            Decision::Drop => {
                self.env.metrics.rejected(Rejected::Failed);
                self.remove(key, None);
            }
            Decision::Route(Head::Local) | Decision::Local(Precheck::Upgrade) => {
                self.start_handshake(key, now);
            }
            Decision::Local(Precheck::Refuse { refusal, head_only }) => {
                self.refuse_local(key, &refusal, head_only);
            }
            Decision::Route(Head::Refuse(status)) => {
                self.env.metrics.rejected(Rejected::Status(status));
                if let Some((mut stream, _)) = self.take_routing(key) {
                    discard_input(&mut stream);
                    answer_and_close(&mut stream, status);
                }
                self.remove(key, None);
            }
            Decision::Route(Head::Tunnel {
                route,
                len,
                request,
            }) => self.open_tunnel(key, route, len, request, now),
        }
    }

    fn take_routing(&mut self, key: Key) -> Option<(TcpStream, Instant)> {
        match self.slots.get_mut(key).map(|s| &mut s.conn) {
            Some(Conn::Routing(r)) => r.stream.take().map(|s| (s, r.deadline)),
            _ => None,
        }
    }

    /// Consumes the request head and starts the upstream connect.
    fn open_tunnel(&mut self, key: Key, route: usize, len: usize, request: Vec<u8>, now: Instant) {
        let Some((mut client, _)) = self.take_routing(key) else {
            return;
        };
        let metrics = Arc::clone(&self.env.metrics);
        metrics.tunnel_requests.fetch_add(1, Relaxed);
        if !consume(&mut client, len) {
            metrics.rejected(Rejected::Failed);
            return self.remove(key, None);
        }
        let addr = self.env.settings.routes.get(route).map(|r| r.upstream.addr);
        let upstream = match addr.map(TcpStream::connect) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::debug!("tunnel upstream connect: {e}");
                metrics.tunnel_upstream_failures.fetch_add(1, Relaxed);
                answer_and_close(&mut client, 502);
                return self.remove(key, None);
            }
            None => return self.remove(key, None),
        };
        // Latency matters more than segment count, as for the client socket (nginx: tcp_nodelay).
        let _ = upstream.set_nodelay(true);
        let tunnel = Tunnel::new(client, upstream, request, now, &self.env.settings);
        metrics.tunnels_open.fetch_add(1, Relaxed);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        slot.conn = Conn::Tunnel(Box::new(tunnel));
        let Conn::Tunnel(t) = &mut slot.conn else {
            return;
        };
        let token = Token(key.token().0 | UPSTREAM_BIT);
        let fits = upstream_key(token) == Some(key);
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registered = fits
            && self
                .poll
                .registry()
                .register(t.upstream_mut(), token, interest)
                .is_ok();
        if !registered {
            tracing::warn!("cannot register a tunnel's upstream socket");
            return self.remove(key, None);
        }
        self.tunnel_after(key, Verdict::Continue, now);
    }

    /// A socket event: to the tunnel it belongs to, or to the session or handshake of its slot.
    pub(super) fn on_event(&mut self, ev: &Event, now: Instant) {
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

    /// A readiness event for a tunnel (`None`: from the read-again list).
    pub(super) fn on_tunnel(&mut self, key: Key, event: Option<(Side, Ready)>, now: Instant) {
        self.drive_tunnel(key, now, |t, cx| t.on_event(event, cx));
    }

    /// A tunnel's timer fired.
    pub(super) fn on_tunnel_timer(&mut self, key: Key, now: Instant) {
        self.drive_tunnel(key, now, Tunnel::on_timer);
    }

    /// Runs `step` on the tunnel in `key`'s slot (if it still holds one), then acts on its
    /// verdict.
    fn drive_tunnel(
        &mut self,
        key: Key,
        now: Instant,
        step: impl FnOnce(&mut Tunnel, &mut TunnelCx<'_>) -> Verdict,
    ) {
        let Some(Slot {
            conn: Conn::Tunnel(t),
            ..
        }) = self.slots.get_mut(key)
        else {
            return;
        };
        let mut cx = TunnelCx {
            now,
            pool: &mut self.pool,
            metrics: &self.env.metrics,
            settings: &self.env.settings,
        };
        let verdict = step(t, &mut cx);
        self.tunnel_after(key, verdict, now);
    }

    /// Runs a connection from the read-again list.
    pub(super) fn read_again(&mut self, key: Key, now: Instant) {
        match self.slots.get(key).map(|s| &s.conn) {
            Some(Conn::Tunnel(_)) => self.on_tunnel(key, None, now),
            _ => self.on_socket(key, true, false, now),
        }
    }

    /// Acts on a tunnel's verdict and keeps its timer and the read-again list up to date.
    fn tunnel_after(&mut self, key: Key, verdict: Verdict, _now: Instant) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Conn::Tunnel(t) = &slot.conn else {
            return;
        };
        match verdict {
            Verdict::Close => return self.remove(key, None),
            Verdict::MoreToDo if !slot.read_queued => {
                slot.read_queued = true;
                self.read_list.push(key);
            }
            Verdict::MoreToDo | Verdict::Continue => {}
        }
        let armed = slot.timer.and_then(|id| self.timers.deadline(id));
        match t.deadline(&self.env.settings) {
            None => {
                if let Some(id) = slot.timer.take() {
                    self.timers.cancel(id);
                }
            }
            // A later deadline than the armed one: the early firing re-arms (no timer churn
            // per byte relayed).
            Some(want) if armed.is_none_or(|t| t > want) => {
                if let Some(id) = slot.timer.take() {
                    self.timers.cancel(id);
                }
                slot.timer = Some(self.timers.insert(want, key));
            }
            Some(_) => {}
        }
    }
}

/// Peeks at up to [`MAX_HEAD`] bytes of the request and classifies them: a route (only with
/// `--route`), else one of the endpoints served here.
fn peek_head(stream: &TcpStream, settings: &crate::settings::Settings) -> Decision {
    let mut buf = [0u8; MAX_HEAD];
    loop {
        return match stream.peek(&mut buf) {
            Ok(0) => Decision::Drop,
            Ok(n) => {
                let (input, full) = (&buf[..n], n == MAX_HEAD);
                let peer = || {
                    stream
                        .peer_addr()
                        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
                };
                let head = if settings.routes.is_empty() {
                    Head::Local
                } else {
                    classify(input, full, &settings.routes, peer)
                };
                match head {
                    Head::Local => Decision::Local(precheck(input, full, settings)),
                    // Input that cannot be HTTP is answered before a path shows up.
                    Head::Partial => match precheck(input, full, settings) {
                        refuse @ Precheck::Refuse { .. } => Decision::Local(refuse),
                        _ => Decision::Route(Head::Partial),
                    },
                    head => Decision::Route(head),
                }
            }
            Err(e) if interrupted(&e) => continue,
            Err(e) if hermod_core::reactor::would_block(&e) => Decision::Wait,
            Err(_) => Decision::Drop,
        };
    }
}

/// Reads exactly `len` bytes (the request head, already peeked, so they are all there).
fn consume(stream: &mut TcpStream, mut len: usize) -> bool {
    let mut buf = [0u8; MAX_HEAD];
    while len > 0 {
        match stream.read(&mut buf[..len.min(MAX_HEAD)]) {
            Ok(0) => return false,
            Ok(n) => len -= n,
            Err(e) if interrupted(&e) => {}
            Err(_) => return false,
        }
    }
    true
}
