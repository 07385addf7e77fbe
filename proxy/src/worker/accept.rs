//! A new connection's way in: accept (with a budget, shedding when out of fds), the admission
//! limits (per-address connections and rate, then `--max-connections`: past any, a 503), register,
//! then the first look at its request head to choose between a WebSocket handshake, a tunnel and
//! an HTTP answer, and the handshake itself (where the per-user cap answers 429).
//!
//! Deadlines: a connection has `--first-byte-timeout` to send a byte, and `--handshake-timeout`
//! from its accept to a whole request head and upgrade.
//!
//! A refused connection is answered, not reset: it becomes a [`Conn::Refusing`] slot that writes
//! the 503, shuts its write side and discards input until the client closes or
//! [`REFUSE_LINGER`] passes. At most [`MAX_REFUSING`] of those per worker, so the answers cannot
//! become a way to exhaust fds; past that, the answer is written once, best effort, and the
//! socket closed at once.
//!
//! The request head is read with `MSG_PEEK`, so for a WebSocket upgrade nothing was consumed and
//! tungstenite's handshake reads the request as if the gateway had never looked. A head that is
//! not an upgrade tungstenite would accept (a plain `GET`, a `POST`, garbage) gets its HTTP
//! answer here instead ([`precheck`]), since tungstenite would close without one.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ws::handshake::Endpoint;
use hermod_core::bus::Request;
use hermod_core::reactor::admission::AddressRefusal;
use hermod_core::reactor::slots::Key;
use hermod_core::reactor::{interrupted, would_block};
use mio::net::TcpStream;
use mio::Interest;
use parking_lot::Mutex;
use tungstenite::handshake::server::ServerHandshake;

use super::slot::{Conn, Refusing, Routing, Slot};
use super::{WorkerLoop, ACCEPT_BUDGET};
use crate::metrics::{Refused, Rejected};
use crate::settings::Settings;
use crate::tunnel::http::{classify, Head, Peer, MAX_HEAD};
use crate::tunnel::{answer_and_close, discard_input};
use crate::webhooks::What;
use crate::ws::handshake::{precheck, AdmissionCell, Gate, Precheck, Refusal};
use crate::ws::session::Session;
use crate::ws::upgrade::{Handshaking, Step};

/// Refused connections a worker holds at once while their answer is taken.
pub(super) const MAX_REFUSING: usize = 64;
/// How long a refused connection is kept to take its answer and close first.
const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// Reads of a refused connection's input per event (the linger bounds the rest).
const REFUSE_READS: usize = 16;

/// What looking at a request head decided.
enum Decision {
    Wait,
    Drop,
    /// A routed path (never [`Head::Local`]).
    Route(Head),
    /// Any other path.
    Local(Precheck),
}

impl WorkerLoop {
    pub(super) fn accept(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        let burst = self
            .acceptor
            .accept_burst(listener, ACCEPT_BUDGET, "client");
        let shed = u64::try_from(burst.shed).unwrap_or(u64::MAX);
        self.cx.metrics.connections_refused.fetch_add(shed, Relaxed);
        if let Some(at) = burst.end.again(now) {
            self.accept_again = Some(at);
        }
        for (stream, addr) in burst.accepted {
            self.admit(stream, addr.ip(), now);
        }
    }

    fn admit(&mut self, stream: TcpStream, ip: IpAddr, now: Instant) {
        let address = match self.limits.addresses.try_open(ip, now) {
            Ok(permit) => permit,
            Err(why) => {
                let reason = match why {
                    AddressRefusal::Connections => Refused::AddressConnections,
                    AddressRefusal::Rate => Refused::AddressRate,
                };
                self.cx.metrics.refused(reason);
                return self.refuse_at_accept(stream, &Refusal::address_limit(why), now);
            }
        };
        if !self.cx.metrics.try_open(self.cx.settings.max_connections) {
            self.cx.metrics.refused(Refused::ServerFull);
            return self.refuse_at_accept(stream, &Refusal::server_full(), now);
        }
        let settings = &self.cx.settings;
        let deadline = now + settings.first_byte_timeout.min(settings.handshake_timeout);
        let key = self.slots.insert(Slot {
            conn: self.first_conn(stream, deadline, now),
            timer: None,
            flush_queued: false,
            read_queued: false,
            address,
            user: None,
        });
        if !self.register_new(key, deadline) {
            return;
        }
        self.first_step(key, now);
    }

    pub(super) fn drive_handshake(&mut self, key: Key, now: Instant) {
        let Some(Slot {
            conn: Conn::Handshaking(h),
            ..
        }) = self.slots.get_mut(key)
        else {
            return;
        };
        match h.drive(super::context::unix_now()) {
            Step::Pending => {}
            Step::Failed(status) => {
                if status == Some(429) {
                    self.cx.metrics.refused(Refused::UserSessions);
                }
                let why = status.map_or(Rejected::Failed, Rejected::Status);
                self.cx.metrics.rejected(why);
                self.remove(key, None);
            }
            Step::Upgraded(ws, endpoint) => {
                self.cx.metrics.handshakes_ok.fetch_add(1, Relaxed);
                let cx = self.cx.session_cx(key, now);
                let carried = match &endpoint {
                    Endpoint::Client { user, .. } => self.carry.take(user, now),
                    Endpoint::Echo => None,
                };
                let (session, next) = Session::open(*ws, endpoint, carried, &cx);
                let attach = session.identity().map(|(user, device)| Request::Attach {
                    session: cx.key,
                    user: user.clone(),
                    device: device.clone(),
                });
                if let Some(slot) = self.slots.get_mut(key) {
                    if let Conn::Handshaking(h) = &slot.conn {
                        slot.user = h.admission.lock().permit.take();
                    }
                    slot.conn = Conn::Ws(Box::new(session));
                    if let Some(id) = slot.timer.take() {
                        self.timers.cancel(id);
                    }
                }
                if let Some(attach) = attach {
                    if let Request::Attach { user, device, .. } = &attach {
                        self.cx.report(What::Connect, user, device, key);
                    }
                    self.cx.broker.send_control(attach);
                }
                self.after(key, next, now);
                // Input may have arrived right behind the request: no new edge would announce it.
                self.on_socket(key, true, false, now);
            }
        }
    }

    /// A new connection's first state: the peek at its request head.
    fn first_conn(&self, stream: TcpStream, deadline: Instant, now: Instant) -> Conn {
        Conn::Routing(Box::new(Routing {
            stream: Some(stream),
            deadline,
            opened: now,
            started: false,
        }))
    }

    /// Answers a connection refused at accept (see the module docs) and closes it.
    fn refuse_at_accept(&mut self, mut stream: TcpStream, refusal: &Refusal, now: Instant) {
        let answer = match refusal.to_http(false) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!("cannot render a refusal: {e}");
                return;
            }
        };
        if self.refusing >= MAX_REFUSING {
            discard_input(&mut stream);
            let _ = stream.write(&answer);
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
        let key = self.slots.insert(Slot {
            conn: Conn::Refusing(Box::new(Refusing {
                stream,
                answer,
                written: 0,
                deadline: now + REFUSE_LINGER,
            })),
            timer: None,
            flush_queued: false,
            read_queued: false,
            address: None,
            user: None,
        });
        self.refusing += 1;
        if self.register_new(key, now + REFUSE_LINGER) {
            self.on_refusing(key);
        }
    }

    /// Registers the new connection in `key` for reading and writing and arms its timer at
    /// `deadline`; false (the slot removed) when it could not be registered.
    fn register_new(&mut self, key: Key, deadline: Instant) -> bool {
        let stream = self
            .slots
            .get_mut(key)
            .and_then(|s| s.conn.new_stream_mut());
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registered = match stream {
            Some(stream) => self.poll.registry().register(stream, key.token(), interest),
            None => Err(std::io::Error::other("slot vanished")),
        };
        if let Err(e) = registered {
            tracing::warn!("register: {e}");
            self.remove(key, None);
            return false;
        }
        if let Some(slot) = self.slots.get_mut(key) {
            slot.timer = Some(self.timers.insert(deadline, key));
        }
        true
    }

    /// Writes what is left of a refusal, then discards input until the client closes.
    pub(super) fn on_refusing(&mut self, key: Key) {
        let Some(Slot {
            conn: Conn::Refusing(r),
            ..
        }) = self.slots.get_mut(key)
        else {
            return;
        };
        let mut done = false;
        while r.written < r.answer.len() {
            match r.stream.write(&r.answer[r.written..]) {
                Ok(0) => {
                    done = true;
                    break;
                }
                Ok(n) => {
                    r.written += n;
                    if r.written == r.answer.len() {
                        let _ = r.stream.shutdown(Shutdown::Write);
                    }
                }
                Err(e) if interrupted(&e) => {}
                Err(e) if would_block(&e) => break,
                Err(_) => {
                    done = true;
                    break;
                }
            }
        }
        let mut buf = [0u8; 4096];
        for _ in 0..REFUSE_READS {
            if done {
                break;
            }
            match r.stream.read(&mut buf) {
                Ok(0) => done = true,
                Ok(_) => {}
                Err(e) if interrupted(&e) => {}
                Err(e) if would_block(&e) => break,
                Err(_) => done = true,
            }
        }
        if done {
            self.remove(key, None);
        }
    }

    /// tungstenite's handshake with our routing and auth callback.
    fn handshaking(&self, stream: TcpStream, deadline: Instant) -> Conn {
        let admission = Arc::new(Mutex::new(AdmissionCell::default()));
        let gate = Gate {
            settings: Arc::clone(&self.cx.settings),
            admission: Arc::clone(&admission),
            users: Arc::clone(&self.limits.users),
        };
        let mid = ServerHandshake::start(stream, gate, Some(self.ws_config));
        Conn::Handshaking(Box::new(Handshaking {
            mid: Some(mid),
            admission,
            deadline,
        }))
    }

    /// Runs whichever first step a just-registered connection is in.
    fn first_step(&mut self, key: Key, now: Instant) {
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
        self.cx
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
                Some(stream) => peek_head(stream, &self.cx.settings),
                None => Decision::Drop,
            },
            _ => return,
        };
        if !matches!(decision, Decision::Wait | Decision::Drop) {
            self.request_started(key);
        }
        match decision {
            Decision::Wait
            | Decision::Route(Head::Partial)
            | Decision::Local(Precheck::Partial) => {}
            Decision::Drop => {
                self.cx.metrics.rejected(Rejected::Failed);
                self.remove(key, None);
            }
            Decision::Route(Head::Local) | Decision::Local(Precheck::Upgrade) => {
                self.start_handshake(key, now);
            }
            Decision::Local(Precheck::Refuse { refusal, head_only }) => {
                self.refuse_local(key, &refusal, head_only);
            }
            Decision::Route(Head::Refuse(status)) => {
                self.cx.metrics.rejected(Rejected::Status(status));
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

    /// The first byte of the request arrived: the deadline becomes the whole head's.
    fn request_started(&mut self, key: Key) {
        let limit = self.cx.settings.handshake_timeout;
        if let Some(Slot {
            conn: Conn::Routing(r),
            ..
        }) = self.slots.get_mut(key)
        {
            if !r.started {
                r.started = true;
                r.deadline = r.opened + limit;
            }
        }
    }

    pub(super) fn take_routing(&mut self, key: Key) -> Option<(TcpStream, Instant)> {
        match self.slots.get_mut(key).map(|s| &mut s.conn) {
            Some(Conn::Routing(r)) => r.stream.take().map(|s| (s, r.deadline)),
            _ => None,
        }
    }
}

/// Peeks at up to [`MAX_HEAD`] bytes of the request and classifies them: a route (only with
/// `--route`), else one of the endpoints served here.
fn peek_head(stream: &TcpStream, settings: &Settings) -> Decision {
    let mut buf = [0u8; MAX_HEAD];
    loop {
        return match stream.peek(&mut buf) {
            Ok(0) => Decision::Drop,
            Ok(n) => {
                let (input, full) = (&buf[..n], n == MAX_HEAD);
                let peer = || Peer {
                    ip: stream
                        .peer_addr()
                        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip()),
                    trusted: &settings.route_trusted_proxies,
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
