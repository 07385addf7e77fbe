//! One TCP connection of the client: a mio socket beside its sans-io [`RespConn`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::reactor::{interrupted, would_block};
use crate::resp::{RespConn, RespLimits};

/// Bytes read per `read()` call: big reads keep the decoder from re-parsing large replies.
pub(crate) const READ_CHUNK: usize = 64 << 10;

/// A connection's socket and protocol state.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The non-blocking socket, registered once for both readiness kinds (edge-triggered).
    stream: TcpStream,
    /// The token it is registered with (carries a generation, see the client).
    pub(crate) token: Token,
    /// The protocol state.
    pub(crate) resp: RespConn,
    /// Whether the TCP connect completed.
    pub(crate) connected: bool,
    /// Whether the last write hit WouldBlock: wait for a writable edge before writing again.
    write_blocked: bool,
}

impl Conn {
    /// Starts a non-blocking connect to `addr` (`host:port`) and registers the socket.
    /// A host name is resolved here, with the system resolver (IP literals do not block).
    pub(crate) fn open(
        addr: &str,
        token: Token,
        registry: &Registry,
        limits: RespLimits,
    ) -> io::Result<Conn> {
        let socket_addr = resolve(addr)?;
        let mut stream = TcpStream::connect(socket_addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Conn {
            stream,
            token,
            resp: RespConn::new(limits),
            connected: false,
            write_blocked: false,
        })
    }

    /// After a writable (or error) event while connecting: `Ok(true)` once connected,
    /// `Ok(false)` if still in progress, `Err` if the connect failed.
    pub(crate) fn check_connected(&mut self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                // Latency over batching: we coalesce ourselves (one write per flush).
                self.stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected || would_block(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads until WouldBlock, feeding the protocol state. `Err` with a reason when the peer
    /// closed, the socket failed, or the bytes broke the protocol. Returns bytes read.
    pub(crate) fn read(&mut self, scratch: &mut [u8]) -> Result<usize, String> {
        let mut total = 0;
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Err("connection closed by the server".into()),
                Ok(n) => {
                    total += n;
                    let data = scratch.get(..n).unwrap_or_default();
                    self.resp.handle_input(data).map_err(|e| e.to_string())?;
                }
                Err(e) if would_block(&e) => return Ok(total),
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// One `write()` of the pending output (unless blocked or not yet connected).
    pub(crate) fn flush(&mut self) -> Result<(), String> {
        if !self.connected || self.write_blocked || self.resp.output().is_empty() {
            return Ok(());
        }
        loop {
            match self.stream.write(self.resp.output()) {
                Ok(n) => {
                    self.resp.consume_output(n);
                    return Ok(());
                }
                Err(e) if would_block(&e) => {
                    self.write_blocked = true;
                    return Ok(());
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
    }

    /// A writable edge: writing may resume.
    pub(crate) fn on_writable(&mut self) {
        self.write_blocked = false;
    }

    /// Deregisters the socket (it closes when dropped).
    pub(crate) fn close(mut self, registry: &Registry) {
        // The socket is dropped right after; a failed deregister changes nothing.
        let _ = registry.deregister(&mut self.stream);
    }
}

/// The first address `addr` resolves to.
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
