//! The `hermod-broker` process: settings errors, the registry entry, admin endpoints, draining.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use hermod_core::link::LinkPush;
use hermod_core::resp::Value;
use hermod_core::testkit::RedisServer;

use process::{BrokerProc, WAIT};

fn registry(redis: &RedisServer) -> Vec<String> {
    let v = redis
        .command(&["ZRANGE", "hermod:brokers", "0", "-1"])
        .unwrap();
    v.as_array()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn bad_settings_exit_2_with_one_line() {
    let bin = env!("CARGO_BIN_EXE_hermod-broker");
    let out = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: --redis: required"), "{err}");

    let out = Command::new(bin)
        .args(["--redis", "redis://127.0.0.1:1", "--registry-ttl", "soon"])
        .env("HERMOD_NODE_ID", "ok")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: --registry-ttl: "));

    let out = Command::new(bin).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    let out = Command::new(bin).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--drain-timeout") && help.contains("HERMOD_REGISTRY_TTL"),
        "{help}"
    );
}

#[test]
fn registry_admin_and_drain_after_the_gateway_detaches() {
    let redis = RedisServer::start(&[]).unwrap();
    let mut broker = BrokerProc::start(
        &redis.url(),
        &[
            "--node-id",
            "b1",
            "--registry-ttl",
            "1s",
            "--admin-listen",
            "127.0.0.1:0",
            "--drain-timeout",
            "60s",
        ],
    );
    let entry = format!("b1@{}", broker.link);
    wait_until("the registry entry", || registry(&redis).contains(&entry));
    let score = redis
        .command(&["ZSCORE", "hermod:brokers", &entry])
        .unwrap();
    assert!(
        score.as_str().is_some() || matches!(score, Value::Double(_)),
        "{score:?}"
    );

    let admin = broker.admin.unwrap();
    assert!(http_get(admin, "/healthz").starts_with("HTTP/1.1 200 "));
    // 100 idle admin connections do not starve a probe (the admin server is the proxy's).
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(admin).unwrap())
        .collect();
    for _ in 0..20 {
        assert!(http_get(admin, "/healthz").starts_with("HTTP/1.1 200 "));
    }
    drop(idle);
    wait_until("/readyz 200", || {
        http_get(admin, "/readyz").starts_with("HTTP/1.1 200 ")
    });

    let mut link = broker.ready_link();
    assert_eq!(
        link.command(&["ATTACH", "0-1-1", "alice", "d1"]).as_str(),
        Some("OK")
    );
    let metrics = http_get(admin, "/metrics");
    assert!(
        metrics.contains("\nhermod_broker_sessions 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nhermod_broker_links 1\n"), "{metrics}");
    // Valid Prometheus text whose families are all in the one metric table; the engine's
    // figures carry the same names as in the proxy.
    let body = metrics.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let families = hermod_core::metrics::check(body).unwrap_or_else(|e| panic!("{e}:\n{body}"));
    assert!(
        families.contains(&"hermod_redis_round_trips_total"),
        "{body}"
    );
    assert!(metrics.contains("\nhermod_redis_up 1\n"), "{metrics}");
    // The process's own figures, as the proxy exports them.
    for family in [
        "hermod_process_resident_memory_bytes",
        "hermod_process_open_fds",
    ] {
        assert!(families.contains(&family), "{family}: {body}");
    }

    broker.signal("TERM");
    assert!(matches!(link.next_push(), LinkPush::Draining));
    let refused = link.command(&["ATTACH", "0-2-1", "bob", "d1"]);
    assert!(
        refused.error_message().unwrap().starts_with("DRAINING"),
        "{refused:?}"
    );
    wait_until("the registry entry to go", || {
        !registry(&redis).contains(&entry)
    });
    assert!(http_get(admin, "/readyz").starts_with("HTTP/1.1 503 "));
    // Still serving the attached session until the gateway moves it.
    assert_eq!(link.command(&["PING"]).as_str(), Some("PONG"));
    assert!(broker.wait_exit(Duration::from_millis(300)).is_none());

    assert_eq!(link.command(&["DETACH", "0-1-1"]).as_str(), Some("OK"));
    let status = broker.wait_exit(WAIT).expect("exits once drained");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn drain_timeout_ends_a_drain_the_gateway_ignores() {
    let redis = RedisServer::start(&[]).unwrap();
    let mut broker = BrokerProc::start(&redis.url(), &["--drain-timeout", "1s"]);
    let mut link = broker.ready_link();
    assert_eq!(
        link.command(&["ATTACH", "0-1-1", "alice", "d1"]).as_str(),
        Some("OK")
    );
    broker.signal("TERM");
    assert!(matches!(link.next_push(), LinkPush::Draining));
    // Keep the link alive with pings (no detach) until the process goes.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = broker.wait_exit(Duration::from_millis(200)) {
            break status;
        }
        assert!(Instant::now() < deadline, "drain timeout not honoured");
        let _ = link.read_some();
    };
    assert_eq!(status.code(), Some(0));
}
