//! Link authentication (issue 11, item 1) against the real `hermod-broker` binary and a real
//! redis-server: an unauthenticated socket cannot ATTACH, SEND or ACK (the attack that
//! replayed bob's private message, sent as bob and acked bob's phone), a wrong secret is
//! refused, `redis-cli` works with `AUTH hermod <secret>`, a silent unauthenticated socket is
//! closed at the deadline, and a non-loopback listener without a secret does not start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermod_core::bus::Event;
use hermod_core::link::LinkPush;
use hermod_core::resp::Value;
use hermod_core::testkit::RedisServer;

use process::{BrokerProc, Link, WAIT};

const SECRET: &str = "link-auth-test-secret-0123456789";

fn ok(v: &Value) -> bool {
    v.as_str() == Some("OK")
}

fn is_error(v: &Value, prefix: &str) -> bool {
    v.error_message().is_some_and(|e| e.starts_with(prefix))
}

/// `/metrics` of the broker's admin listener.
fn metrics(broker: &BrokerProc) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(broker.admin.unwrap()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Writes `bytes` on a fresh socket and reads everything until the broker closes it.
fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

fn start(redis: &RedisServer) -> BrokerProc {
    let args = ["--link-secret", SECRET, "--admin-listen", "127.0.0.1:0"];
    BrokerProc::start(&redis.url(), &args)
}

/// The gateway's view: alice sends bob a private message; bob's phone is not attached.
fn private_message_for_bob(gateway: &mut Link) -> String {
    assert!(ok(&gateway.command(&["ATTACH", "0-1-1", "alice", "d1"])));
    let sent = gateway.command(&["SEND", "0-1-1", "c1", "bob", "{\"secret\":\"for bob\"}"]);
    assert!(ok(&sent));
    match gateway.next_push() {
        LinkPush::Event {
            event: Event::Sent { id, .. },
            ..
        } => id.as_str().to_owned(),
        other => panic!("expected sent, got {other:?}"),
    }
}

#[test]
fn an_unauthenticated_socket_cannot_attach_send_or_ack() {
    let redis = RedisServer::start(&[]).unwrap();
    let broker = start(&redis);
    let mut gateway = broker.ready_link_with(SECRET);
    let id = private_message_for_bob(&mut gateway);

    // 1. Replay bob's inbox: HELLO 3 (no AUTH) then ATTACH as bob.
    let mut attacker = Link::connect(broker.link);
    assert!(is_error(&attacker.command(&["HELLO", "3"]), "NOAUTH"));
    let attach = attacker.command(&["ATTACH", "9-9-9", "bob", "x"]);
    assert!(is_error(&attach, "NOAUTH"), "{attach:?}");
    assert!(attacker.wait_closed(WAIT), "closed after a refused command");
    // 2. SEND as bob, 3. ACK as bob's phone: each refused and closed, nothing stored.
    let attacks: [&[&str]; 2] = [
        &["SEND", "9-9-9", "c9", "alice", "{\"from\":\"not bob\"}"],
        &["ACK", "9-9-9", &id],
    ];
    for attack in attacks {
        let mut attacker = Link::connect(broker.link);
        assert!(is_error(&attacker.command(attack), "NOAUTH"));
        assert!(attacker.wait_closed(WAIT));
    }
    // Pipelined behind a PING, in one write: still nothing past the gate.
    let mut wire = process::encode(&["PING"]);
    wire.extend_from_slice(&process::encode(&["ATTACH", "9-9-9", "bob", "phone"]));
    wire.extend_from_slice(&process::encode(&["ACK", "9-9-9", &id]));
    let answer = raw_exchange(broker.link, &wire);
    assert_eq!(answer, "+PONG\r\n-NOAUTH Authentication required.\r\n");

    // Bob's real phone, through the real gateway link, still gets the message (never acked),
    // and alice got nothing "from bob".
    assert!(ok(&gateway.command(&["ATTACH", "1-2-3", "bob", "phone"])));
    match gateway.next_push() {
        LinkPush::Message { id: got, frame, .. } => {
            assert_eq!(got.as_str(), id);
            assert!(std::str::from_utf8(&frame).unwrap().contains("for bob"));
        }
        other => panic!("expected bob's message, got {other:?}"),
    }
    let m = metrics(&broker);
    let refused = "hermod_broker_link_auth_refusals_total{reason=\"not_authenticated\"}";
    assert!(counter(&m, refused) >= 4.0, "{m}");

    // A socket that never authenticates is closed at the deadline (5 s), even if it pings.
    let mut idle = Link::connect(broker.link);
    assert_eq!(idle.command(&["PING"]).as_str(), Some("PONG"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while idle.read_some() {
        assert!(Instant::now() < deadline, "not closed at the auth deadline");
        // The gateway keeps its link alive, as a real one does (PING every second).
        assert_eq!(gateway.command(&["PING"]).as_str(), Some("PONG"));
    }
    let m = metrics(&broker);
    assert!(
        counter(
            &m,
            "hermod_broker_link_auth_refusals_total{reason=\"deadline\"}"
        ) >= 1.0
    );
    // The gateway link is unaffected.
    assert_eq!(gateway.command(&["PING"]).as_str(), Some("PONG"));
}

#[test]
fn a_wrong_secret_is_refused_and_closed() {
    let redis = RedisServer::start(&[]).unwrap();
    let broker = start(&redis);
    for hello in [
        vec![
            "HELLO",
            "3",
            "AUTH",
            "hermod",
            "link-auth-test-secret-0123456788",
        ],
        vec!["HELLO", "3", "AUTH", "default", SECRET],
        vec!["AUTH", "hermod", "nope"],
        vec!["AUTH", SECRET],
    ] {
        let mut link = Link::connect(broker.link);
        let reply = link.command(&hello);
        assert!(is_error(&reply, "WRONGPASS"), "{hello:?}: {reply:?}");
        assert!(link.wait_closed(WAIT));
    }
    let m = metrics(&broker);
    let series = "hermod_broker_link_auth_refusals_total{reason=\"wrong_secret\"}";
    assert_eq!(counter(&m, series), 4.0, "{m}");
    // The right one works, by HELLO or by AUTH.
    let mut link = broker.ready_link_with(SECRET);
    assert!(ok(&link.command(&["ATTACH", "0-1-1", "alice", "d1"])));
    let mut link = Link::connect(broker.link);
    assert!(ok(&link.command(&["AUTH", "hermod", SECRET])));
    assert!(link.info().contains("node_id:"));
}

#[test]
fn redis_cli_with_auth_hermod_works() {
    let redis = RedisServer::start(&[]).unwrap();
    let broker = start(&redis);
    let port = broker.link.port().to_string();
    let run = |script: &str| {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let authed = run(&format!("AUTH hermod {SECRET}\nPING\nINFO\n"));
    assert!(authed.starts_with("OK\nPONG\n"), "{authed}");
    assert!(authed.contains("node_id:"), "{authed}");
    let anonymous = run("INFO\n");
    assert!(anonymous.contains("NOAUTH"), "{anonymous}");
}

#[test]
fn a_non_loopback_listener_without_a_secret_does_not_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_hermod-broker"))
        .args(["--listen", "0.0.0.0:0", "--redis", "redis://127.0.0.1:1"])
        .env_remove("HERMOD_LINK_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--link-secret"), "{stderr}");
    // With a secret (from the environment) it would start; a short one is refused, unshown.
    let out = Command::new(env!("CARGO_BIN_EXE_hermod-broker"))
        .args(["--listen", "0.0.0.0:0", "--redis", "redis://127.0.0.1:1"])
        .env("HERMOD_LINK_SECRET", "hunter2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HERMOD_LINK_SECRET") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

#[test]
fn an_authenticated_link_is_held_to_command_sized_frames() {
    let redis = RedisServer::start(&[]).unwrap();
    let broker = start(&redis);
    let mut good = broker.ready_link_with(SECRET);
    assert!(ok(&good.command(&["ATTACH", "0-1-1", "alice", "d1"])));
    let auth = process::encode(&["AUTH", "hermod", SECRET]);
    for frame in [&b"*9\r\n"[..], b"*2\r\n*1\r\n", b"*5\r\n$999999999\r\n"] {
        let mut wire = auth.to_vec();
        wire.extend_from_slice(frame);
        let answer = raw_exchange(broker.link, &wire);
        assert!(answer.starts_with("+OK\r\n-ERR Protocol error"), "{answer}");
    }
    let m = metrics(&broker);
    let series = "hermod_broker_link_limit_closes_total{reason=\"frame\"}";
    assert_eq!(counter(&m, series), 3.0, "{m}");
    assert_eq!(good.command(&["PING"]).as_str(), Some("PONG"));
}

#[test]
fn strangers_holding_connections_cannot_keep_a_gateway_out() {
    let redis = RedisServer::start(&[]).unwrap();
    let broker = start(&redis);
    // 64 connections that never authenticate (the most allowed at once)...
    let mut idle: Vec<Link> = (0..64).map(|_| Link::connect(broker.link)).collect();
    for link in &mut idle {
        assert_eq!(link.command(&["PING"]).as_str(), Some("PONG"));
    }
    // ...do not keep the gateway out: its link evicts the oldest of them.
    let mut gateway = broker.ready_link_with(SECRET);
    assert!(ok(&gateway.command(&["ATTACH", "0-1-1", "alice", "d1"])));
    assert!(idle[0].wait_closed(WAIT), "the oldest is evicted");
    let m = metrics(&broker);
    let series = "hermod_broker_link_auth_refusals_total{reason=\"evicted\"}";
    assert_eq!(counter(&m, series), 1.0, "{m}");
    assert_eq!(idle[1].command(&["PING"]).as_str(), Some("PONG"));
}
