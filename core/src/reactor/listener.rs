//! Listening sockets built with socket2, and an acceptor that survives running out of fds.
//!
//! mio's own `TcpListener::bind` listens with a backlog of 128, which overflows under a connect
//! storm (clients then wait for SYN retransmits, a full second or more). [`bind_listener`] sets a
//! real backlog and, for one-listener-per-worker setups, SO_REUSEPORT.
//!
//! When the process hits its fd limit, `accept` fails with EMFILE/ENFILE but the connection stays
//! in the backlog; with edge-triggered readiness the reactor would either spin on it or never hear
//! of the listener again. [`Acceptor`] keeps a spare fd: on EMFILE it closes the spare, accepts
//! the pending connection, closes it at once (the client sees a clean close instead of hanging),
//! and reopens the spare.

use std::fs::File;
use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::{interrupted, would_block};

/// The listen backlog to use unless configured otherwise (the kernel caps it at
/// `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: i32 = 4096;

/// Binds a nonblocking TCP listener on `addr` with SO_REUSEADDR (and SO_REUSEPORT when
/// `reuse_port`, so several workers can each own a listener on the same port) and listens with
/// `backlog`.
pub fn bind_listener(
    addr: SocketAddr,
    reuse_port: bool,
    backlog: i32,
) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// What one [`Acceptor::accept`] call produced.
#[derive(Debug)]
pub enum AcceptOutcome {
    /// A new connection, nonblocking, with TCP_NODELAY set; register it.
    Accepted(mio::net::TcpStream, SocketAddr),
    /// The backlog is empty: wait for the listener's next readiness event.
    WouldBlock,
    /// The fd limit was hit: the spare fd was closed, one pending connection accepted and closed
    /// at once, the spare reopened. Keep accepting (more may be pending); count it.
    Shed,
    /// Any other error. Per-connection failures (ECONNABORTED, a failed TCP_NODELAY) leave the
    /// listener usable: log and keep accepting. If [`is_fd_exhaustion`] says so, shedding could
    /// not help (no spare fd): stop accepting for a moment (a timer) rather than spin.
    Error(io::Error),
}

/// Whether an error means the process (EMFILE) or the system (ENFILE) is out of fds.
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Accepts connections, shedding load instead of stalling when fds run out.
#[derive(Debug)]
pub struct Acceptor {
    /// An fd held in reserve (`/dev/null`) and released to make room for one accept when the fd
    /// limit is hit. `None` while it could not be reopened; retried on every accept.
    spare: Option<File>,
}

impl Acceptor {
    /// An acceptor holding its spare fd.
    pub fn new() -> io::Result<Acceptor> {
        Ok(Acceptor {
            spare: Some(open_spare()?),
        })
    }

    /// Whether the spare fd is held (it is missing only while fds are exhausted).
    pub fn has_spare(&self) -> bool {
        self.spare.is_some()
    }

    /// Accepts one connection from `listener`. Call it in a loop until `WouldBlock` (edge
    /// triggered), bounding the loop by a per-event budget.
    pub fn accept(&mut self, listener: &mio::net::TcpListener) -> AcceptOutcome {
        if self.spare.is_none() {
            self.spare = open_spare().ok();
        }
        loop {
            return match listener.accept() {
                Ok((stream, addr)) => match stream.set_nodelay(true) {
                    Ok(()) => AcceptOutcome::Accepted(stream, addr),
                    Err(e) => AcceptOutcome::Error(e),
                },
                Err(e) if interrupted(&e) => continue,
                Err(e) if would_block(&e) => AcceptOutcome::WouldBlock,
                Err(e) if is_fd_exhaustion(&e) && self.spare.is_some() => self.shed(listener),
                Err(e) => AcceptOutcome::Error(e),
            };
        }
    }

    /// Frees the spare fd, accepts and drops one pending connection, and reopens the spare.
    fn shed(&mut self, listener: &mio::net::TcpListener) -> AcceptOutcome {
        self.spare = None;
        let outcome = loop {
            break match listener.accept() {
                Ok((stream, _)) => {
                    drop(stream);
                    AcceptOutcome::Shed
                }
                Err(e) if interrupted(&e) => continue,
                Err(e) if would_block(&e) => AcceptOutcome::WouldBlock,
                Err(e) => AcceptOutcome::Error(e),
            };
        };
        self.spare = open_spare().ok();
        outcome
    }
}

/// Opens the spare fd.
fn open_spare() -> io::Result<File> {
    File::open("/dev/null")
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
