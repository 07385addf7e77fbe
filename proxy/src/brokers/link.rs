//! One broker link: a mio socket beside its sans-io [`RespConn`], the HELLO handshake, a
//! PING heartbeat, and reconnects with backoff. Commands are pipelined; each reply answers the
//! oldest pending command (FIFO); pushes are handed up as they come.
//!
//! ```text
//!  Idle(retry at) --tick--> Connecting --connected--> Hello --map reply--> Up
//!       ^                        |                      |                   |
//!       +------- failed / timed out (3 s) / EOF / silent 3 s / bad bytes ---+
//! ```

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use hermod_core::bus::{Request, SessionKey};
use hermod_core::ids::Cid;
use hermod_core::link::{encode_request, LinkSecret, AUTH_USER};
use hermod_core::reactor::slots::Key;
use hermod_core::reactor::{interrupted, would_block};
use hermod_core::resp::{RespConn, RespEvent, RespLimits, Value};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::rehome::LinkId;

/// A PING goes out this often on an idle or busy link alike.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// A link that has sent nothing (not even a PONG) this long is dead; also the budget for the
/// TCP connect and for the HELLO answer.
pub const DEAD_AFTER: Duration = Duration::from_secs(3);
/// First reconnect delay; doubles per failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Output queued for a broker beyond which the workers' requests wait in their mailbox (the
/// workers then answer `unavailable` when it fills): backpressure instead of memory growth.
pub const OUTPUT_HIGH_WATER: usize = 8 << 20;
/// Output beyond which the link is given up (the broker is not reading at all).
const OUTPUT_LIMIT: usize = 64 << 20;

/// When to ping, and when to give up on a silent link. Pure: time comes in.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Last time any byte arrived.
    last_heard: Instant,
    /// When the next PING is due.
    next_ping: Instant,
}

/// What the heartbeat wants now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Nothing to do.
    Quiet,
    /// Send a PING.
    Ping,
    /// Silent for [`DEAD_AFTER`]: close the link.
    Dead,
}

impl Heartbeat {
    /// A heartbeat for a link that just came up.
    pub fn new(now: Instant) -> Self {
        Heartbeat {
            last_heard: now,
            next_ping: now + PING_EVERY,
        }
    }

    /// Bytes arrived.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Beat {
        if now.saturating_duration_since(self.last_heard) >= DEAD_AFTER {
            Beat::Dead
        } else if now >= self.next_ping {
            self.next_ping = now + PING_EVERY;
            Beat::Ping
        } else {
            Beat::Quiet
        }
    }

    /// When [`Heartbeat::poll`] next has something to say.
    pub fn deadline(&self) -> Instant {
        self.next_ping.min(self.last_heard + DEAD_AFTER)
    }
}

/// `min * 2^attempts`, at most [`BACKOFF_MAX`].
pub fn backoff(attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(16)).unwrap_or(u32::MAX);
    BACKOFF_MIN.saturating_mul(factor).min(BACKOFF_MAX)
}

/// What a pending command was, for its reply.
#[derive(Debug)]
pub enum Pending {
    /// The handshake.
    Hello,
    /// A heartbeat sent at that instant (its reply gives the round-trip time).
    Ping(Instant),
    /// An ATTACH: `-DRAINING` means "go elsewhere".
    Attach(SessionKey),
    /// A SEND or PUBLISH: an error reply is told to the client at once.
    Write(SessionKey, Cid),
    /// Anything else: `+OK` expected, errors logged.
    Other,
}

/// What happened on a link.
#[derive(Debug)]
pub enum LinkEvent {
    /// The handshake completed.
    Up,
    /// The link was lost (or an attempt failed); `was_up` tells a loss from a failed attempt,
    /// `first` the first failure since the link was last up (or created).
    Down {
        reason: String,
        was_up: bool,
        first: bool,
    },
    /// A push frame's elements.
    Push(Value),
    /// A command was answered with an error.
    Refused { pending: Pending, message: String },
    /// A PING came back after this long.
    RoundTrip(Duration),
}

/// Where a link stands.
#[derive(Debug)]
enum Phase {
    /// No socket; the next attempt is at `retry_at`.
    Idle { retry_at: Instant },
    /// TCP connect in progress, given up at `deadline`.
    Connecting { deadline: Instant },
    /// HELLO sent, its answer due by `deadline`.
    Hello { deadline: Instant },
    /// Serving.
    Up,
}

/// One broker link. See the module docs.
#[derive(Debug)]
pub struct BrokerLink {
    /// The broker's `host:port`.
    pub addr: String,
    /// This link's id (the slot of its token).
    link: LinkId,
    /// The socket, while connecting or connected.
    stream: Option<TcpStream>,
    /// Bumped per socket, so a stale event for a closed socket is not taken for the new one.
    generation: u32,
    /// Protocol state: output buffer, pending replies, decoder.
    resp: RespConn,
    /// Bounds on what the broker can make us buffer.
    limits: RespLimits,
    /// Commands awaiting a reply, in the order they were queued, with their tags.
    pending: VecDeque<(u64, Pending)>,
    /// Tag of the next command.
    next_tag: u64,
    /// Where the link stands.
    phase: Phase,
    /// Ping and silence tracking (meaningful while `Up`).
    heartbeat: Heartbeat,
    /// Failed attempts in a row: the backoff exponent.
    attempts: u32,
    /// The last write hit WouldBlock: wait for a writable edge.
    write_blocked: bool,
    /// Presented in the HELLO of every connection.
    secret: Option<LinkSecret>,
}

impl BrokerLink {
    /// A link to `addr`, first attempt at once.
    pub fn new(
        link: LinkId,
        addr: String,
        limits: RespLimits,
        secret: Option<LinkSecret>,
        now: Instant,
    ) -> Self {
        BrokerLink {
            secret,
            addr,
            link,
            stream: None,
            generation: 0,
            resp: RespConn::new(limits.clone()),
            limits,
            pending: VecDeque::new(),
            next_tag: 0,
            phase: Phase::Idle { retry_at: now },
            heartbeat: Heartbeat::new(now),
            attempts: 0,
            write_blocked: false,
        }
    }

    /// The token of the current socket.
    fn token(&self) -> Token {
        Key {
            slot: self.link.0,
            generation: self.generation,
        }
        .token()
    }

    /// Whether `token` names this link's current socket.
    pub fn owns(&self, token: Token) -> bool {
        self.stream.is_some() && token == self.token()
    }

    /// Whether commands can be sent.
    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up)
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.resp.output().len()
    }

    /// Queues `request` (only while up; the pool never targets a link that is not).
    pub fn send(&mut self, request: &Request) {
        if !self.is_up() {
            return;
        }
        let pending = match request {
            Request::Attach { session, .. } => Pending::Attach(*session),
            Request::Send { session, cid, .. } | Request::Publish { session, cid, .. } => {
                Pending::Write(*session, cid.clone())
            }
            _ => Pending::Other,
        };
        let tag = self.tag();
        self.resp
            .queue_encoded(tag, |out| encode_request(request, out));
        self.pending.push_back((tag, pending));
    }

    fn tag(&mut self) -> u64 {
        self.next_tag = self.next_tag.wrapping_add(1);
        self.next_tag
    }

    /// When [`BrokerLink::tick`] next has work.
    pub fn deadline(&self) -> Instant {
        match self.phase {
            Phase::Idle { retry_at } => retry_at,
            Phase::Connecting { deadline } | Phase::Hello { deadline } => deadline,
            Phase::Up => self.heartbeat.deadline(),
        }
    }

    /// Connect attempts, handshake timeouts, heartbeat.
    pub fn tick(&mut self, registry: &Registry, now: Instant, events: &mut Vec<LinkEvent>) {
        match self.phase {
            Phase::Idle { retry_at } if now >= retry_at => self.connect(registry, now, events),
            Phase::Connecting { deadline } | Phase::Hello { deadline } if now >= deadline => {
                self.fail(registry, "connect or HELLO timed out".into(), now, events);
            }
            Phase::Up => match self.heartbeat.poll(now) {
                Beat::Dead => {
                    let reason = format!("silent for {}s", DEAD_AFTER.as_secs());
                    self.fail(registry, reason, now, events);
                }
                Beat::Ping => {
                    let tag = self.tag();
                    self.resp.queue(&[b"PING"], tag);
                    self.pending.push_back((tag, Pending::Ping(now)));
                }
                Beat::Quiet => {}
            },
            _ => {}
        }
    }

    fn connect(&mut self, registry: &Registry, now: Instant, events: &mut Vec<LinkEvent>) {
        let opened = resolve(&self.addr).and_then(|addr| {
            let mut stream = TcpStream::connect(addr)?;
            self.generation = self.generation.wrapping_add(1).max(1);
            registry.register(
                &mut stream,
                self.token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => {
                self.stream = Some(stream);
                self.phase = Phase::Connecting {
                    deadline: now + DEAD_AFTER,
                };
            }
            Err(e) => self.fail(registry, format!("connect: {e}"), now, events),
        }
    }

    /// A readiness event for this link's socket.
    pub fn on_ready(
        &mut self,
        registry: &Registry,
        writable: bool,
        now: Instant,
        scratch: &mut [u8],
        events: &mut Vec<LinkEvent>,
    ) {
        if let Phase::Connecting { .. } = self.phase {
            match self.check_connected() {
                Ok(true) => {
                    let tag = self.tag();
                    match &self.secret {
                        Some(secret) => {
                            let hello: [&[u8]; 5] = [
                                b"HELLO",
                                b"3",
                                b"AUTH",
                                AUTH_USER.as_bytes(),
                                secret.expose().as_bytes(),
                            ];
                            self.resp.queue(&hello, tag);
                        }
                        None => self.resp.queue(&[b"HELLO", b"3"], tag),
                    }
                    self.pending.push_back((tag, Pending::Hello));
                    self.phase = Phase::Hello {
                        deadline: now + DEAD_AFTER,
                    };
                }
                Ok(false) => return,
                Err(e) => return self.fail(registry, format!("connect: {e}"), now, events),
            }
        }
        if writable {
            self.write_blocked = false;
        }
        let read = self.read(now, scratch);
        // What arrived before a close is handled first: a refused HELLO (`-WRONGPASS` from a
        // broker with another link secret) is the reason to report, not the close after it.
        if let Err(reason) = self.take_events(now, events) {
            return self.fail(registry, reason, now, events);
        }
        if let Err(reason) = read {
            self.fail(registry, reason, now, events);
        }
    }

    fn check_connected(&mut self) -> io::Result<bool> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::Error::other("no socket"));
        };
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => {
                stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected || would_block(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads until WouldBlock into the decoder.
    fn read(&mut self, now: Instant, scratch: &mut [u8]) -> Result<(), String> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        loop {
            match stream.read(scratch) {
                Ok(0) => return Err("closed by the broker".into()),
                Ok(n) => {
                    self.heartbeat.heard(now);
                    let data = scratch.get(..n).unwrap_or_default();
                    self.resp.handle_input(data).map_err(|e| e.to_string())?;
                }
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Matches decoded replies to pending commands and hands pushes up.
    fn take_events(&mut self, now: Instant, events: &mut Vec<LinkEvent>) -> Result<(), String> {
        while let Some(event) = self.resp.poll_event() {
            let (tag, value) = match event {
                RespEvent::Push(value) => {
                    events.push(LinkEvent::Push(value));
                    continue;
                }
                RespEvent::Reply { tag, value } => (tag, value),
            };
            let Some((expected, pending)) = self.pending.pop_front() else {
                return Err("reply without a command".into());
            };
            if expected != tag {
                return Err("replies out of order".into());
            }
            match (pending, value.error_message()) {
                (Pending::Hello, Some(e)) => return Err(format!("HELLO refused: {e}")),
                (Pending::Hello, None) => {
                    self.phase = Phase::Up;
                    self.attempts = 0;
                    self.heartbeat = Heartbeat::new(now);
                    events.push(LinkEvent::Up);
                }
                (Pending::Ping(sent), _) => {
                    events.push(LinkEvent::RoundTrip(now.saturating_duration_since(sent)));
                }
                (pending, Some(message)) => events.push(LinkEvent::Refused { pending, message }),
                (_, None) => {}
            }
        }
        Ok(())
    }

    /// Writes queued output until done or WouldBlock. A link whose output keeps growing past
    /// [`OUTPUT_LIMIT`] is given up.
    pub fn flush(&mut self, registry: &Registry, now: Instant, events: &mut Vec<LinkEvent>) {
        if self.backlog() > OUTPUT_LIMIT {
            let reason = "the broker does not read its link".to_owned();
            return self.fail(registry, reason, now, events);
        }
        let connected = matches!(self.phase, Phase::Hello { .. } | Phase::Up);
        if !connected || self.write_blocked {
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        while !self.resp.output().is_empty() {
            match stream.write(self.resp.output()) {
                Ok(n) => self.resp.consume_output(n),
                Err(e) if would_block(&e) => {
                    self.write_blocked = true;
                    return;
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => return self.fail(registry, format!("write: {e}"), now, events),
            }
        }
    }

    /// Closes the socket; the next attempt after the backoff.
    fn fail(
        &mut self,
        registry: &Registry,
        reason: String,
        now: Instant,
        events: &mut Vec<LinkEvent>,
    ) {
        let was_up = self.is_up();
        let first = self.attempts == 0;
        self.close(registry);
        let delay = backoff(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        self.phase = Phase::Idle {
            retry_at: now + delay,
        };
        events.push(LinkEvent::Down {
            reason,
            was_up,
            first,
        });
    }

    /// Drops the socket and everything in flight on it.
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut stream) = self.stream.take() {
            // The socket is dropped right after; a failed deregister changes nothing.
            let _ = registry.deregister(&mut stream);
        }
        self.resp = RespConn::new(self.limits.clone());
        self.pending.clear();
        self.write_blocked = false;
    }
}

/// The first address `addr` resolves to (a host name through the system resolver).
fn resolve(addr: &str) -> io::Result<SocketAddr> {
    if let Ok(parsed) = addr.parse::<SocketAddr>() {
        return Ok(parsed);
    }
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_pings_every_second_and_dies_after_three_silent() {
        let t0 = Instant::now();
        let s = Duration::from_millis;
        let mut hb = Heartbeat::new(t0);
        assert_eq!(hb.poll(t0 + s(500)), Beat::Quiet);
        assert_eq!(hb.deadline(), t0 + s(1000));
        assert_eq!(hb.poll(t0 + s(1000)), Beat::Ping);
        assert_eq!(hb.poll(t0 + s(1100)), Beat::Quiet);
        hb.heard(t0 + s(1200));
        assert_eq!(hb.poll(t0 + s(2000)), Beat::Ping);
        assert_eq!(hb.poll(t0 + s(3000)), Beat::Ping);
        assert_eq!(hb.poll(t0 + s(4100)), Beat::Ping);
        assert_eq!(hb.deadline(), t0 + s(4200));
        assert_eq!(hb.poll(t0 + s(4200)), Beat::Dead);
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(1600));
        assert_eq!(backoff(5), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
