//! What a worker keeps per connection: the [`Slot`] in its slab, holding a [`Conn`] in one of
//! its stages (request head peeked, WebSocket handshake, WebSocket session, tunnel, or a refusal
//! being answered), the permits it holds against the shared admission limits, and the tokens of
//! its sockets.

use std::time::Instant;

use hermod_core::reactor::admission::{AddressPermit, UserPermit};
use hermod_core::reactor::slots::Key;
use hermod_core::reactor::timer::{TimerId, TimerWheel};
use mio::net::TcpStream;
use mio::Token;

use crate::tunnel::Tunnel;
use crate::ws::session::Session;
use crate::ws::upgrade::Handshaking;

/// Marks a token as a tunnel's upstream socket (bit 31: in the slot half of the token).
pub(super) const UPSTREAM_BIT: usize = 1 << 31;

/// The slot an upstream socket's token names, or `None` for any other token.
pub(super) fn upstream_key(token: Token) -> Option<Key> {
    if token.0 & UPSTREAM_BIT == 0 {
        return None;
    }
    Key::from_token(Token(token.0 & !UPSTREAM_BIT))
}

/// Everything in a slot.
#[derive(Debug)]
pub(super) struct Slot {
    pub conn: Conn,
    /// The armed timer (handshake deadline, ping/idle/request timeout, or close linger).
    pub timer: Option<TimerId>,
    /// On the flush list for this tick.
    pub flush_queued: bool,
    /// On the read-again list.
    pub read_queued: bool,
    /// Counted against its client address (given back when the slot is dropped: held only
    /// for its `Drop`).
    #[allow(dead_code)]
    pub address: Option<AddressPermit>,
    /// Counted against its user's session cap, once admitted to the client protocol.
    pub user: Option<UserPermit>,
}

impl Slot {
    /// Keeps the slot's timer in step with the connection's next `deadline` (`None`: no timer).
    /// A later deadline than the armed one leaves the armed timer alone: its early firing
    /// re-arms, so traffic causes no timer churn per message or per byte relayed.
    pub fn arm_timer(&mut self, timers: &mut TimerWheel<Key>, key: Key, deadline: Option<Instant>) {
        let Some(want) = deadline else {
            if let Some(id) = self.timer.take() {
                timers.cancel(id);
            }
            return;
        };
        let armed = self.timer.and_then(|id| timers.deadline(id));
        if armed.is_none_or(|t| t > want) {
            if let Some(id) = self.timer.take() {
                timers.cancel(id);
            }
            self.timer = Some(timers.insert(want, key));
        }
    }
}

/// A connection in its slot.
#[derive(Debug)]
pub enum Conn {
    /// The request head is being peeked at: a route, a WebSocket upgrade, or an HTTP answer?
    Routing(Box<Routing>),
    Handshaking(Box<Handshaking>),
    Ws(Box<Session>),
    /// A `--route` tunnel.
    Tunnel(Box<Tunnel>),
    /// Refused at accept (server full, an address over its limits): the answer is written,
    /// the client's input discarded until it closes or a short linger ends. Not counted as a
    /// connection; a worker holds a bounded number of them.
    Refusing(Box<Refusing>),
}

impl Conn {
    /// The client's socket before the connection was handed to a session or a tunnel (to
    /// register it).
    pub fn new_stream_mut(&mut self) -> Option<&mut TcpStream> {
        match self {
            Conn::Routing(r) => r.stream.as_mut(),
            Conn::Refusing(r) => Some(&mut r.stream),
            Conn::Handshaking(h) => h.mid.as_mut().map(|mid| mid.get_mut().get_mut()),
            Conn::Ws(_) | Conn::Tunnel(_) => None,
        }
    }
}

/// A new connection whose request head is being looked at (route, WebSocket upgrade, or an
/// HTTP answer).
#[derive(Debug)]
pub struct Routing {
    /// The client's socket; taken when the connection becomes a handshake or a tunnel.
    pub stream: Option<TcpStream>,
    /// When an unfinished request head is dropped: the first-byte deadline until a byte
    /// arrives, then the handshake timeout from `opened`.
    pub deadline: Instant,
    /// When the connection was accepted.
    pub opened: Instant,
    /// Whether a byte of the request arrived (the deadline is then the handshake timeout's).
    pub started: bool,
}

/// A connection refused at accept, being answered (see [`Conn::Refusing`]).
#[derive(Debug)]
pub struct Refusing {
    pub stream: TcpStream,
    /// The whole answer, and how much of it is written.
    pub answer: Vec<u8>,
    pub written: usize,
    /// When it is dropped whatever the client does.
    pub deadline: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slot(now: Instant) -> Slot {
        Slot {
            conn: Conn::Routing(Box::new(Routing {
                stream: None,
                deadline: now,
                opened: now,
                started: false,
            })),
            timer: None,
            flush_queued: false,
            read_queued: false,
            address: None,
            user: None,
        }
    }

    #[test]
    fn the_timer_moves_only_earlier_and_is_cancelled_without_a_deadline() {
        let now = Instant::now();
        let mut timers = TimerWheel::new(now, Duration::from_millis(10), 64);
        let key = Key {
            slot: 3,
            generation: 1,
        };
        let mut s = slot(now);
        let at = |ms| now + Duration::from_millis(ms);
        let armed = |s: &Slot, timers: &TimerWheel<Key>| s.timer.and_then(|id| timers.deadline(id));
        s.arm_timer(&mut timers, key, Some(at(500)));
        assert_eq!(armed(&s, &timers), Some(at(500)));
        // Later: the armed timer stays (its early firing re-arms).
        s.arm_timer(&mut timers, key, Some(at(900)));
        assert_eq!(armed(&s, &timers), Some(at(500)));
        // Earlier: moved.
        s.arm_timer(&mut timers, key, Some(at(200)));
        assert_eq!(armed(&s, &timers), Some(at(200)));
        s.arm_timer(&mut timers, key, None);
        assert_eq!(s.timer, None);
        assert_eq!(timers.next_deadline(), None);
    }
}
