//! Bounded connections (issue 11): idle sockets closed at the first-byte and head deadlines, a
//! full server and the per-address limits answering 503 (never a reset), the per-user session
//! cap answering 429, and the admin port serving `/healthz` whatever other admin clients do.
//! Each attack runs against a real `hermod-proxy` with raw sockets as the attacker, and a
//! well-behaved tungstenite client on the same server must be unaffected.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{handshake_status, http_get, id_of, set_timeouts, Client, Proxy, TIMEOUT};
use serde_json::json;
use socket2::{Domain, Socket, Type};

/// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 is all loopback on
/// Linux: no setup needed).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let local: IpAddr = from.parse().expect("address");
    socket
        .bind(&SocketAddr::new(local, 0).into())
        .expect("bind source address");
    socket
        .connect_timeout(&to.into(), TIMEOUT)
        .expect("connect to proxy");
    let stream: TcpStream = socket.into();
    set_timeouts(&stream);
    stream
}

/// A WebSocket client for `user` connected from `from`, welcome read.
fn client_from(proxy: &Proxy, from: &str, user: &str, device: &str) -> Client {
    let url = proxy.ws_url(user, device);
    let mut c = Client::handshake(&url, connect_from(from, proxy.client))
        .unwrap_or_else(|e| panic!("handshake from {from}: {e}\n{}", proxy.log()));
    c.expect_welcome(user, device);
    c
}

/// Sends an upgrade request on `s` and reads the whole answer (a refused connection is closed
/// after it). A reset instead of an answer fails the test.
fn upgrade_answer(s: TcpStream) -> String {
    answer_to(
        s,
        "GET /ws?user=x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
    )
}

/// Sends `request` on `s` and reads the whole answer, up to the server's close.
fn answer_to(mut s: TcpStream, request: &str) -> String {
    // The answer may already be there (it is written at accept): a failed write is fine.
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{e} after {:?}", String::from_utf8_lossy(&out).into_owned()),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// alice sends bob one message and gets `sent`; bob receives it: the server serves.
fn exchange(alice: &mut Client, bob: &mut Client, cid: &str) {
    let id = alice.send_to("bob", cid, json!(cid));
    let m = bob.recv_op("msg");
    assert_eq!(id_of(&m), id);
}

/// Whether the server closed `s` (EOF or reset) within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn idle_sockets_are_closed_at_their_deadlines_while_a_client_is_served() {
    let proxy = Proxy::start_open(&["--first-byte-timeout", "1s", "--handshake-timeout", "3s"]);
    // 100 sockets that send nothing, 100 that send half a request head.
    let mut silent: Vec<TcpStream> = (0..100).map(|_| common::tcp(proxy.client)).collect();
    let mut half: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = common::tcp(proxy.client);
            s.write_all(b"GET /ws?user=slow HTTP/1.1\r\nHost: h\r\nX-Slow: ")
                .expect("write half a head");
            s
        })
        .collect();
    // Meanwhile a real client connects and is served.
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    exchange(&mut alice, &mut bob, "during");
    let deadline = Duration::from_secs(15);
    for s in silent.iter_mut().chain(half.iter_mut()) {
        assert!(closed_within(s, deadline), "an idle socket stayed open");
    }
    // The sessions are untouched by the deadlines.
    exchange(&mut alice, &mut bob, "after");
    let first_byte = proxy.metric_sum(&["hermod_handshake_timeouts_total", "first_byte"]);
    let head = proxy.metric_sum(&["hermod_handshake_timeouts_total", "stage=\"head\""]);
    assert!(first_byte.unwrap_or(0.0) >= 100.0, "{first_byte:?}");
    assert!(head.unwrap_or(0.0) >= 100.0, "{head:?}");
}

#[test]
fn idle_sockets_that_fill_the_server_get_503s_then_their_deadline_frees_it() {
    let proxy = Proxy::start_open(&[
        "--max-connections",
        "100",
        "--first-byte-timeout",
        "3s",
        "--handshake-timeout",
        "5s",
    ]);
    // 200 sockets that send nothing: 100 take every place, the others are answered 503.
    let mut idle: Vec<TcpStream> = (0..200).map(|_| common::tcp(proxy.client)).collect();
    // A real client meanwhile: a 503, not a reset.
    assert_eq!(
        handshake_status(&proxy.ws_url("early", "d"), proxy.client),
        Err("503".to_owned())
    );
    let mut answered = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut head = [0u8; 12];
        if s.read_exact(&mut head).is_ok() {
            assert_eq!(&head, b"HTTP/1.1 503");
            answered += 1;
        }
    }
    assert!(
        answered >= 99,
        "{answered} of the 100 over the cap were answered 503"
    );
    // Past the first-byte deadline the places are free again: a client is served.
    let url_a = proxy.ws_url("alice", "d");
    let start = Instant::now();
    let mut alice = loop {
        match Client::handshake(&url_a, common::tcp(proxy.client)) {
            Ok(c) => break c,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                assert!(e.contains("503"), "{e}");
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("never admitted: {e}"),
        }
    };
    alice.expect_welcome("alice", "d");
    let mut bob = proxy.connect("bob");
    exchange(&mut alice, &mut bob, "after-idle");
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(15)),
            "an idle socket stayed open"
        );
    }
}

#[test]
fn a_full_server_answers_503_and_serves_again_once_a_place_frees() {
    let proxy = Proxy::start_open(&["--max-connections", "10"]);
    let mut held: Vec<Client> = (0..8).map(|i| proxy.connect(&format!("u{i}"))).collect();
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    // Full: every further connection gets a 503 with `Connection: close`, then EOF.
    let refusals: Vec<thread::JoinHandle<String>> = (0..40)
        .map(|_| {
            let s = common::tcp(proxy.client);
            thread::spawn(move || upgrade_answer(s))
        })
        .collect();
    for r in refusals {
        let answer = r.join().expect("refusal thread");
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        assert!(answer.contains("connection: close\r\n"), "{answer:?}");
    }
    assert_eq!(
        handshake_status(&proxy.ws_url("carol", "d"), proxy.client),
        Err("503".to_owned())
    );
    // The sessions held are unaffected.
    exchange(&mut alice, &mut bob, "full");
    // A place frees: the next client is served.
    held.pop().expect("a held client").close();
    let url = proxy.ws_url("carol", "d");
    let start = Instant::now();
    let mut carol = loop {
        match Client::handshake(&url, common::tcp(proxy.client)) {
            Ok(c) => break c,
            Err(e) if start.elapsed() < TIMEOUT => {
                assert!(e.contains("503"), "{e}");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("never admitted: {e}"),
        }
    };
    carol.expect_welcome("carol", "d");
    let full = proxy.metric_sum(&["hermod_admission_refused_total", "server_full"]);
    assert!(full.unwrap_or(0.0) >= 41.0, "{full:?}");
}

#[test]
fn per_address_connections_are_capped_with_503_and_other_addresses_are_not() {
    // Set explicitly, the limit applies to loopback addresses too.
    let proxy = Proxy::start_open(&["--max-connections-per-ip", "4"]);
    let held: Vec<Client> = (0..4)
        .map(|i| client_from(&proxy, "127.0.0.1", &format!("h{i}"), "d"))
        .collect();
    for _ in 0..10 {
        let answer = upgrade_answer(connect_from("127.0.0.1", proxy.client));
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        assert!(answer.contains("too many connections"), "{answer:?}");
    }
    // Another address is unaffected.
    let mut alice = client_from(&proxy, "127.0.0.2", "alice", "d");
    let mut bob = client_from(&proxy, "127.0.0.2", "bob", "d");
    exchange(&mut alice, &mut bob, "other-address");
    let refused = proxy.metric_sum(&["hermod_admission_refused_total", "address_connections"]);
    assert!(refused.unwrap_or(0.0) >= 10.0, "{refused:?}");
    // Closing one frees a place for that address.
    drop(held);
    let start = Instant::now();
    loop {
        let url = proxy.ws_url("again", "d");
        match Client::handshake(&url, connect_from("127.0.0.1", proxy.client)) {
            Ok(_) => break,
            Err(e) if start.elapsed() < TIMEOUT => {
                assert!(e.contains("503"), "{e}");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("never admitted again: {e}"),
        }
    }
}

#[test]
fn per_address_connect_rate_is_limited_with_503_and_other_addresses_are_not() {
    let proxy = Proxy::start_open(&["--max-connects-per-ip-per-sec", "5"]);
    // Many connects at once from one address: past the burst, 503s, never a reset.
    // A plain GET of the endpoint: the connections admitted get a 426 and are closed too.
    let plain = "GET /ws HTTP/1.1\r\nHost: h\r\n\r\n";
    let answers: Vec<String> = (0..60)
        .map(|_| answer_to(connect_from("127.0.0.3", proxy.client), plain))
        .collect();
    let too_fast = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503 ") && a.contains("too fast"))
        .count();
    assert!(too_fast >= 1, "{answers:?}");
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 ")),
        "{answers:?}"
    );
    let mut alice = client_from(&proxy, "127.0.0.4", "alice", "d");
    let mut bob = client_from(&proxy, "127.0.0.4", "bob", "d");
    exchange(&mut alice, &mut bob, "other-address");
    let refused = proxy.metric_sum(&["hermod_admission_refused_total", "address_rate"]);
    assert_eq!(refused, Some(too_fast as f64));
}

#[test]
fn loopback_is_exempt_from_the_default_address_limits() {
    let proxy = Proxy::start_open(&[]);
    // Well past the defaults (256 concurrent, 50 per second), all from 127.0.0.1.
    let clients: Vec<TcpStream> = (0..300).map(|_| common::tcp(proxy.client)).collect();
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    exchange(&mut alice, &mut bob, "loopback");
    drop(clients);
    let refused = proxy.metric_sum(&["hermod_admission_refused_total"]);
    assert_eq!(refused, Some(0.0));
}

#[test]
fn the_sessions_of_one_user_are_capped_with_429() {
    let proxy = Proxy::start_jwt(&["--max-sessions-per-user", "3"]);
    let mut alice: Vec<Client> = (0..3)
        .map(|i| proxy.connect_device("alice", &format!("d{i}")))
        .collect();
    assert_eq!(
        handshake_status(&proxy.ws_url("alice", "d3"), proxy.client),
        Err("429".to_owned())
    );
    // Another user is unaffected, and alice's sessions still work.
    let mut bob = proxy.connect("bob");
    let id = bob.send_to("alice", "to-alice", json!("hi"));
    for c in &mut alice {
        assert_eq!(id_of(&c.recv_op("msg")), id);
    }
    let refused = proxy.metric_sum(&["hermod_admission_refused_total", "user_sessions"]);
    assert_eq!(refused, Some(1.0));
    // A session that ends gives its place back.
    alice.pop().expect("a session").close();
    let start = Instant::now();
    while handshake_status(&proxy.ws_url("alice", "d4"), proxy.client).is_err() {
        assert!(start.elapsed() < TIMEOUT, "the place never came back");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn healthz_answers_every_probe_while_idle_admin_connections_are_held() {
    let proxy = Proxy::start_open(&[]);
    // 100 idle admin connections: half send nothing, half half a request head.
    let idle: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = common::tcp(proxy.admin);
            if i % 2 == 1 {
                s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                    .expect("write");
            }
            s
        })
        .collect();
    let ok = (0..60)
        .filter(|_| http_get(proxy.admin, "/healthz").0 == 200)
        .count();
    assert_eq!(ok, 60);
    // The client port is unaffected too.
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    exchange(&mut alice, &mut bob, "admin-flood");
    drop(idle);
}
