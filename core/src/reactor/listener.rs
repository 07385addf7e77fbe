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
//! and reopens the spare. An acceptor made [`Acceptor::answering`] writes a short answer (an
//! HTTP 503) to that connection first, best effort: one read of what it sent, one write, no fd.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

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

/// Pause before accepting again after running out of fds with no spare to shed with.
pub const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// What one [`Acceptor::accept_burst`] produced.
#[derive(Debug)]
pub struct Burst {
    /// The new connections (nonblocking, TCP_NODELAY set), to register.
    pub accepted: Vec<(mio::net::TcpStream, SocketAddr)>,
    /// Connections shed for want of fds (answered and closed): count them.
    pub shed: usize,
    /// Why it stopped.
    pub end: BurstEnd,
}

/// Why a burst of accepts stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstEnd {
    /// The backlog is empty: wait for the listener's next readiness event.
    Drained,
    /// The budget ran out (sheds and failed accepts use it up too): more may be pending and no
    /// new edge will announce them.
    BudgetSpent,
    /// Out of fds with no spare to shed with: pause rather than spin.
    OutOfFds,
}

impl BurstEnd {
    /// When the loop must accept again without a readiness event, if it must.
    pub fn again(self, now: std::time::Instant) -> Option<std::time::Instant> {
        match self {
            BurstEnd::Drained => None,
            BurstEnd::BudgetSpent => Some(now),
            BurstEnd::OutOfFds => Some(now + ACCEPT_BACKOFF),
        }
    }
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
    /// Written to a connection shed for want of fds before it is closed.
    shed_answer: Option<&'static [u8]>,
}

impl Acceptor {
    /// An acceptor holding its spare fd.
    pub fn new() -> io::Result<Acceptor> {
        Ok(Acceptor {
            spare: Some(open_spare()?),
            shed_answer: None,
        })
    }

    /// Writes `answer` (e.g. an HTTP 503) to each connection shed for want of fds, best effort.
    pub fn answering(mut self, answer: &'static [u8]) -> Acceptor {
        self.shed_answer = Some(answer);
        self
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

    /// Accepts up to `budget` connections from `listener` (see [`Burst`]), so that a flood of
    /// connects cannot starve the loop's other events. Failed accepts are logged (`what` names
    /// the listener) and skipped.
    #[cfg_attr(not(feature = "server"), allow(unused_variables))]
    pub fn accept_burst(
        &mut self,
        listener: &mio::net::TcpListener,
        budget: usize,
        what: &str,
    ) -> Burst {
        let mut burst = Burst {
            accepted: Vec::new(),
            shed: 0,
            end: BurstEnd::BudgetSpent,
        };
        for _ in 0..budget {
            match self.accept(listener) {
                AcceptOutcome::Accepted(stream, addr) => burst.accepted.push((stream, addr)),
                AcceptOutcome::WouldBlock => {
                    burst.end = BurstEnd::Drained;
                    break;
                }
                AcceptOutcome::Shed => burst.shed += 1,
                AcceptOutcome::Error(e) if is_fd_exhaustion(&e) => {
                    // Logging is part of the server feature (the fuzz builds go without).
                    #[cfg(feature = "server")]
                    tracing::warn!(listener = what, "out of file descriptors; pausing accepts");
                    burst.end = BurstEnd::OutOfFds;
                    break;
                }
                AcceptOutcome::Error(_e) => {
                    #[cfg(feature = "server")]
                    tracing::debug!(listener = what, error = %_e, "accept");
                }
            }
        }
        burst
    }

    /// Frees the spare fd, accepts and drops one pending connection, and reopens the spare.
    fn shed(&mut self, listener: &mio::net::TcpListener) -> AcceptOutcome {
        self.spare = None;
        let outcome = loop {
            break match listener.accept() {
                Ok((stream, _)) => {
                    if let Some(answer) = self.shed_answer {
                        // Read what already came so the close is no reset, then answer.
                        let _ = (&stream).read(&mut [0u8; 2048]);
                        let _ = (&stream).write(answer);
                        let _ = stream.shutdown(Shutdown::Write);
                    }
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
mod tests {
    // Tests of the listener helpers on 127.0.0.1 ephemeral ports.

    use std::fs::File;
    use std::io::Read;
    use std::net::{Ipv4Addr, TcpStream};
    use std::process::Command;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);

    fn loopback_any_port() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    /// Calls `accept` until it returns something other than `WouldBlock` (the connection may take a
    /// moment to reach the backlog on a loaded machine).
    fn accept_next(acceptor: &mut Acceptor, listener: &mio::net::TcpListener) -> AcceptOutcome {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match acceptor.accept(listener) {
                AcceptOutcome::WouldBlock if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5));
                }
                outcome => return outcome,
            }
        }
    }

    #[test]
    fn reuse_port_lets_two_listeners_share_a_port() {
        let first = bind_listener(loopback_any_port(), true, DEFAULT_BACKLOG).expect("first bind");
        let addr = first.local_addr().expect("addr");
        assert_ne!(addr.port(), 0);
        let second = bind_listener(addr, true, DEFAULT_BACKLOG).expect("second bind, same port");
        assert_eq!(second.local_addr().expect("addr"), addr);
        let err =
            bind_listener(addr, false, 16).expect_err("without SO_REUSEPORT the port is taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn accepts_with_nodelay_then_would_block() {
        let listener = bind_listener(loopback_any_port(), false, 64).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut acceptor = Acceptor::new().expect("acceptor");
        assert!(matches!(
            acceptor.accept(&listener),
            AcceptOutcome::WouldBlock
        ));
        let client = TcpStream::connect(addr).expect("connect");
        match accept_next(&mut acceptor, &listener) {
            AcceptOutcome::Accepted(stream, peer) => {
                assert_eq!(peer, client.local_addr().expect("client addr"));
                assert!(stream.nodelay().expect("nodelay"));
            }
            other => panic!("expected a connection, got {other:?}"),
        }
        assert!(matches!(
            acceptor.accept(&listener),
            AcceptOutcome::WouldBlock
        ));
    }

    #[test]
    fn fd_exhaustion_predicate() {
        assert!(is_fd_exhaustion(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(is_fd_exhaustion(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!is_fd_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }

    /// Set in the child process that runs the fd-exhaustion scenario under a low `ulimit -n`.
    const CHILD_ENV: &str = "HERMOD_TEST_EMFILE_CHILD";
    /// This test's path inside the unit-test binary, for the child's `--exact` filter.
    #[test]
    fn a_burst_stops_at_its_budget_and_says_whether_to_come_back() {
        let listener = bind_listener(loopback_any_port(), false, 16).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut acceptor = Acceptor::new().expect("acceptor");
        let _clients: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let now = std::time::Instant::now();
        let first = acceptor.accept_burst(&listener, 2, "test");
        assert_eq!(
            (first.accepted.len(), first.end),
            (2, BurstEnd::BudgetSpent)
        );
        assert_eq!(first.end.again(now), Some(now));
        let second = acceptor.accept_burst(&listener, 2, "test");
        assert_eq!((second.accepted.len(), second.end), (1, BurstEnd::Drained));
        assert_eq!(second.end.again(now), None);
        assert_eq!(BurstEnd::OutOfFds.again(now), Some(now + ACCEPT_BACKOFF));
    }

    const SELF_NAME: &str = "reactor::listener::tests::sheds_when_out_of_fds";

    /// Runs itself again in a child process with a low fd limit (so the limit touches no other test),
    /// where it exhausts fds and checks that the acceptor sheds instead of stalling.
    #[test]
    fn sheds_when_out_of_fds() {
        if std::env::var_os(CHILD_ENV).is_some() {
            shed_scenario();
            return;
        }
        let exe = std::env::current_exe().expect("test binary");
        let output = Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
            .arg(exe)
            .args([SELF_NAME, "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD_ENV, "1")
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child failed:\n{stdout}\n{stderr}"
        );
    }

    /// The child's half: fill the fd table, then accept.
    fn shed_scenario() {
        let listener = bind_listener(loopback_any_port(), false, 16).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut acceptor = Acceptor::new().expect("acceptor").answering(b"busy\n");
        let mut client = TcpStream::connect(addr).expect("connect");
        client.set_read_timeout(Some(PATIENCE)).expect("timeout");

        let mut hog = Vec::new();
        loop {
            match File::open("/dev/null") {
                Ok(file) => hog.push(file),
                Err(e) => {
                    assert!(is_fd_exhaustion(&e), "unexpected {e}");
                    break;
                }
            }
            assert!(hog.len() < 100_000, "the fd limit was not lowered");
        }

        let outcome = accept_next(&mut acceptor, &listener);
        assert!(matches!(outcome, AcceptOutcome::Shed), "got {outcome:?}");
        assert!(acceptor.has_spare(), "the spare fd must be reopened");
        let mut answer = Vec::new();
        client
            .read_to_end(&mut answer)
            .expect("the shed client reads the answer, then a close");
        assert_eq!(answer, b"busy\n");

        // With room again, connections are accepted normally.
        drop(client);
        hog.truncate(hog.len().saturating_sub(2));
        let _client = TcpStream::connect(addr).expect("connect again");
        let outcome = accept_next(&mut acceptor, &listener);
        assert!(
            matches!(outcome, AcceptOutcome::Accepted(..)),
            "got {outcome:?}"
        );
    }
}
