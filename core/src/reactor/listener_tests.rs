//! Tests of the listener helpers on 127.0.0.1 ephemeral ports.

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
    let err = bind_listener(addr, false, 16).expect_err("without SO_REUSEPORT the port is taken");
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
    let mut acceptor = Acceptor::new().expect("acceptor");
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
    let mut buf = [0u8; 1];
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("the shed client should see a close, got {other:?}"),
    }

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
