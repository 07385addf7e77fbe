//! The mio shell of the Redis client: [`RedisSockets`] owns the `TcpStream` of every
//! [`ConnId`] the [`ClientCore`] opened and only moves bytes between them and the core
//! (resolve the address, connect, read until `WouldBlock`, one write per socket per turn,
//! close). [`RedisClient`] bundles a core and its sockets for a loop that runs nothing else
//! (the broker's registry heartbeat, tests).
//!
//! Tokens: `first_token + generation * SLOTS + slot`, the generation bumped on every
//! connection opened, so an event still queued for a closed socket never reaches its
//! successor in the same slot.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::client::{Action, ClientCore, Closed, ConnId};
use super::{ClientConfig, ClientError, ClientEvent, ClientStats};
use crate::reactor::{interrupted, would_block};

/// Bytes read per `read()` call: big reads keep the decoder from re-parsing large replies.
const READ_CHUNK: usize = 64 << 10;
/// Token slots per generation (16 lanes and the sentinel connection fit).
const SLOTS: usize = 32;

/// One socket.
#[derive(Debug)]
struct Sock {
    /// The core's name for it.
    conn: ConnId,
    /// The non-blocking socket, registered once for both readiness kinds (edge-triggered).
    stream: TcpStream,
    /// Its token.
    token: Token,
    /// Whether the TCP connect completed.
    connected: bool,
    /// Whether the last write hit WouldBlock: wait for a writable edge before writing again.
    write_blocked: bool,
}

/// The sockets of one [`ClientCore`], on the caller's mio `Poll`. See the module docs.
#[derive(Debug)]
pub struct RedisSockets {
    /// First of our [`RedisSockets::TOKEN_SPAN`] tokens.
    first_token: usize,
    /// Bumped on every connection opened.
    generation: usize,
    /// Open sockets by slot.
    socks: Vec<Option<Sock>>,
    /// Read buffer shared by every socket.
    scratch: Vec<u8>,
}

impl RedisSockets {
    /// Tokens the sockets use: `[first_token, first_token + TOKEN_SPAN)`.
    pub const TOKEN_SPAN: usize = 1024;

    /// No socket yet; tokens from `first_token` up.
    pub fn new(first_token: usize) -> Self {
        RedisSockets {
            first_token,
            generation: 0,
            socks: (0..SLOTS).map(|_| None).collect(),
            scratch: vec![0; READ_CHUNK],
        }
    }

    /// Whether `token` is one of ours.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.first_token && token.0 - self.first_token < Self::TOKEN_SPAN
    }

    /// A readiness event for one of our tokens (stale ones are ignored): connect completion,
    /// reads until `WouldBlock` fed to the core, a blocked write resumed.
    pub fn handle_event(
        &mut self,
        core: &mut ClientCore,
        registry: &Registry,
        event: &Event,
        now: Instant,
    ) {
        let Some(slot) = self.slot_of(event.token()) else {
            return;
        };
        let Some(sock) = self.socks[slot].as_mut() else {
            return;
        };
        let conn = sock.conn;
        if !sock.connected {
            match check_connected(sock) {
                Ok(true) => core.handle_connected(conn, now),
                Ok(false) => return,
                Err(e) => {
                    let why = Closed::Connect(e.to_string());
                    return self.lost(core, registry, slot, why, now);
                }
            }
        }
        if let Err(reason) = self.read(core, registry, slot, now) {
            return self.lost(core, registry, slot, Closed::Read(reason), now);
        }
        if event.is_writable() {
            if let Some(sock) = self.socks[slot].as_mut() {
                sock.write_blocked = false;
            }
            self.write(core, registry, slot, now);
        }
        self.run(core, registry, now);
    }

    /// Carries out the core's actions: open, write, close. Call after every input to the core
    /// (the loop's turn end included, after [`ClientCore::flush`]).
    pub fn run(&mut self, core: &mut ClientCore, registry: &Registry, now: Instant) {
        while let Some(action) = core.poll_action() {
            match action {
                Action::Open { conn, addr } => self.open(core, registry, conn, &addr, now),
                Action::Write { conn } => {
                    if let Some(slot) = self.find(conn) {
                        self.write(core, registry, slot, now);
                    }
                }
                Action::Close { conn } => {
                    if let Some(slot) = self.find(conn) {
                        self.close(registry, slot);
                    }
                }
            }
        }
    }

    fn open(
        &mut self,
        core: &mut ClientCore,
        registry: &Registry,
        conn: ConnId,
        addr: &str,
        now: Instant,
    ) {
        let Some(slot) = self.socks.iter().position(Option::is_none) else {
            return core.handle_closed(conn, Closed::Connect("no free socket slot".into()), now);
        };
        self.generation = (self.generation + 1) % (Self::TOKEN_SPAN / SLOTS);
        let token = Token(self.first_token + self.generation * SLOTS + slot);
        let opened = resolve(addr).and_then(|a| {
            let mut stream = TcpStream::connect(a)?;
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => {
                self.socks[slot] = Some(Sock {
                    conn,
                    stream,
                    token,
                    connected: false,
                    write_blocked: false,
                })
            }
            Err(e) => core.handle_closed(conn, Closed::Connect(e.to_string()), now),
        }
    }

    /// Reads until `WouldBlock`, feeding the core. `Err` with a reason when the peer closed or
    /// the socket failed.
    fn read(
        &mut self,
        core: &mut ClientCore,
        registry: &Registry,
        slot: usize,
        now: Instant,
    ) -> Result<(), String> {
        loop {
            let Some(sock) = self.socks[slot].as_mut() else {
                return Ok(());
            };
            let conn = sock.conn;
            match sock.stream.read(&mut self.scratch) {
                Ok(0) => return Err("connection closed by the server".into()),
                Ok(n) => {
                    core.handle_input(conn, self.scratch.get(..n).unwrap_or_default(), now);
                    self.run(core, registry, now);
                    if self.find(conn).is_none() {
                        return Ok(()); // closed by the core meanwhile
                    }
                }
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// One `write()` of the connection's pending output (unless blocked or not connected).
    fn write(&mut self, core: &mut ClientCore, registry: &Registry, slot: usize, now: Instant) {
        let Some(sock) = self.socks[slot].as_mut() else {
            return;
        };
        let conn = sock.conn;
        if !sock.connected || sock.write_blocked || core.output(conn).is_empty() {
            return;
        }
        loop {
            match sock.stream.write(core.output(conn)) {
                Ok(n) => return core.consume_output(conn, n),
                Err(e) if would_block(&e) => {
                    sock.write_blocked = true;
                    return;
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    let why = Closed::Write(format!("write: {e}"));
                    return self.lost(core, registry, slot, why, now);
                }
            }
        }
    }

    /// The socket failed: drop it and tell the core.
    fn lost(
        &mut self,
        core: &mut ClientCore,
        registry: &Registry,
        slot: usize,
        why: Closed,
        now: Instant,
    ) {
        let Some(conn) = self.socks[slot].as_ref().map(|s| s.conn) else {
            return;
        };
        self.close(registry, slot);
        core.handle_closed(conn, why, now);
    }

    fn close(&mut self, registry: &Registry, slot: usize) {
        if let Some(mut sock) = self.socks[slot].take() {
            // The socket is dropped right after; a failed deregister changes nothing.
            let _ = registry.deregister(&mut sock.stream);
        }
    }

    fn find(&self, conn: ConnId) -> Option<usize> {
        self.socks
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.conn == conn))
    }

    fn slot_of(&self, token: Token) -> Option<usize> {
        let slot = token.0.checked_sub(self.first_token)? % SLOTS;
        self.socks
            .get(slot)?
            .as_ref()
            .is_some_and(|s| s.token == token)
            .then_some(slot)
    }
}

/// After a writable (or error) event while connecting: `Ok(true)` once connected,
/// `Ok(false)` if still in progress, `Err` if the connect failed.
fn check_connected(sock: &mut Sock) -> io::Result<bool> {
    if let Some(e) = sock.stream.take_error()? {
        return Err(e);
    }
    match sock.stream.peer_addr() {
        Ok(_) => {
            sock.connected = true;
            // Latency over batching: we coalesce ourselves (one write per flush).
            sock.stream.set_nodelay(true)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotConnected || would_block(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The first address `addr` resolves to (the system resolver; IP literals do not block).
fn resolve(addr: &str) -> io::Result<SocketAddr> {
    if let Ok(parsed) = addr.parse::<SocketAddr>() {
        return Ok(parsed);
    }
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to nothing"),
        )
    })
}

/// A [`ClientCore`] with its [`RedisSockets`], for a loop that drives nothing else: the calls
/// of the client before it was split (`on_event`, `on_tick`, `flush`).
#[derive(Debug)]
pub struct RedisClient {
    core: ClientCore,
    sockets: RedisSockets,
}

impl RedisClient {
    /// Tokens a client uses: `[first_token, first_token + TOKEN_SPAN)`.
    pub const TOKEN_SPAN: usize = RedisSockets::TOKEN_SPAN;

    /// A client that connects at the first [`RedisClient::on_tick`].
    pub fn new(config: ClientConfig, first_token: usize, now: Instant) -> Self {
        RedisClient {
            core: ClientCore::new(config, now),
            sockets: RedisSockets::new(first_token),
        }
    }

    /// Whether `token` is one of ours.
    pub fn owns(&self, token: Token) -> bool {
        self.sockets.owns(token)
    }

    /// Handles a readiness event for one of our tokens.
    pub fn on_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        self.sockets
            .handle_event(&mut self.core, registry, event, now);
    }

    /// Timeouts, connects, reconnects. Call when `next_deadline` passes (and at start).
    pub fn on_tick(&mut self, registry: &Registry, now: Instant) {
        self.core.handle_timeout(now);
        self.sockets.run(&mut self.core, registry, now);
    }

    /// One turn of a loop that runs only this client (and its own timers): waits for I/O until
    /// `until` or the client's next deadline (at least 1 ms), handles the client's events,
    /// ticks, and returns the time after. An interrupted poll is an empty turn; any other
    /// poll error ends the loop.
    pub fn turn(
        &mut self,
        poll: &mut mio::Poll,
        events: &mut mio::Events,
        until: Instant,
    ) -> io::Result<Instant> {
        let now = Instant::now();
        let until = self.next_deadline().map_or(until, |d| until.min(d));
        let timeout = until
            .saturating_duration_since(now)
            .max(std::time::Duration::from_millis(1));
        if let Err(e) = poll.poll(events, Some(timeout)) {
            if !interrupted(&e) {
                return Err(e);
            }
        }
        let now = Instant::now();
        for event in events.iter() {
            if self.owns(event.token()) {
                self.on_event(poll.registry(), event, now);
            }
        }
        self.on_tick(poll.registry(), now);
        Ok(now)
    }

    /// Writes what each connection has queued: one `write()` per connection.
    pub fn flush(&mut self, registry: &Registry) {
        self.core.flush();
        let now = self.core.now();
        self.sockets.run(&mut self.core, registry, now);
    }

    /// See [`ClientCore::next_deadline`].
    pub fn next_deadline(&self) -> Option<Instant> {
        self.core.next_deadline()
    }

    /// See [`ClientCore::send`].
    pub fn send(
        &mut self,
        lane: usize,
        args: &[&[u8]],
        tag: u64,
        now: Instant,
    ) -> Result<(), ClientError> {
        self.core.send(lane, args, tag, now)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.core.poll_event()
    }

    /// Whether every lane is connected to a verified master.
    pub fn is_up(&self) -> bool {
        self.core.is_up()
    }

    /// The master the lanes are connected (or connecting) to.
    pub fn master(&self) -> Option<&str> {
        self.core.master()
    }

    /// The reason of the last failure, while not up.
    pub fn last_error(&self) -> Option<&str> {
        self.core.last_error()
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.core.stats()
    }
}
