//! Issue 11, item 2: before authenticating, a socket on a broker's link port cannot make the
//! broker buffer or build anything big. A real `hermod-broker` (with `--link-secret`), a real
//! gateway linked to it, two WebSocket clients conversing through them, and a raw socket as the
//! attacker sending 64 MiB frames (one huge array, nested arrays, one huge bulk).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::broker::{wait_for, Broker, LINK_SECRET};
use common::{Proxy, TIMEOUT};
use hermod_core::testkit::RedisServer;
use serde_json::json;

/// The broker's resident set, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

const FRAME: usize = 64 << 20;

/// Sends `header`, then `unit` repeated up to 64 MiB, until the broker closes the socket;
/// returns how many bytes the kernel took before that.
fn flood(addr: SocketAddr, header: &[u8], unit: &[u8]) -> usize {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut chunk = Vec::with_capacity(64 << 10);
    while chunk.len() + unit.len() <= 64 << 10 {
        chunk.extend_from_slice(unit);
    }
    let mut written = 0;
    if s.write_all(header).is_err() {
        return written;
    }
    written += header.len();
    while written < FRAME {
        match s.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n,
        }
    }
    written
}

#[test]
fn frames_of_64_mib_from_an_unauthenticated_socket_are_refused_early() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let broker = Broker::start(&redis, "h1", &["--link-secret", LINK_SECRET]);
    let addr = broker.addr.to_string();
    let args = [
        "--auth",
        "none",
        "--link-secret",
        LINK_SECRET,
        "--brokers",
        &addr,
    ];
    let proxy = Proxy::spawn(&args, false);
    proxy.wait_ready(TIMEOUT);
    wait_for(&proxy, TIMEOUT, "the link up", || {
        proxy.metric_sum(&["hermod_broker_links_up"]) == Some(1.0)
    });
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    // Warm up, then measure.
    let id = alice.send_to("bob", "w0", json!("warm"));
    assert_eq!(common::id_of(&bob.recv_op("msg")), id);
    bob.ack(&id);
    thread::sleep(Duration::from_millis(300));
    let before = rss_kib(broker.pid());

    let target = broker.addr;
    let attacker = thread::spawn(move || {
        let n = FRAME / 3;
        [
            // One array of 64 Mi/3 nulls.
            flood(target, format!("*{n}\r\n").as_bytes(), b"_\r\n"),
            // Arrays nested 16 Mi deep.
            flood(target, b"*1\r\n", b"*1\r\n"),
            // One 64 MiB bulk.
            flood(
                target,
                format!("*2\r\n$4\r\nPING\r\n${FRAME}\r\n").as_bytes(),
                b"x",
            ),
        ]
    });
    // The conversation goes on meanwhile: everything sent arrives, every request answered.
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(alice.send_to("bob", &format!("c{i}"), json!(i)));
    }
    let got: Vec<String> = bob.recv_msgs(20).iter().map(common::id_of).collect();
    assert_eq!(got, ids);
    let written = attacker.join().expect("attacker");
    for w in written {
        assert!(w < 16 << 20, "the broker read {w} bytes before closing");
    }
    let after = rss_kib(broker.pid());
    let grown = after.saturating_sub(before);
    assert!(
        grown < 1024,
        "broker RSS grew {grown} KiB ({before} -> {after})"
    );
    // And after the attack.
    let id = alice.send_to("bob", "after", json!("still here"));
    assert_eq!(common::id_of(&bob.recv_op("msg")), id);
    assert_eq!(proxy.metric_sum(&["hermod_broker_links_up"]), Some(1.0));
}
