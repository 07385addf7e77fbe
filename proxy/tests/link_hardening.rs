//! Issue 11, items 2 and 3, with a real `hermod-broker` (with `--link-secret`), a real gateway
//! linked to it and WebSocket clients conversing through them:
//! - before authenticating, a raw socket on the broker's link port sending 64 MiB frames (one
//!   huge array, nested arrays, one huge bulk) cannot make the broker buffer or build anything;
//! - a second "broker" the gateway links to (a fake one, here a thread) cannot push messages to
//!   sessions placed on the real one.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use common::broker::{wait_for, Broker, LINK_SECRET};
use common::{Proxy, TIMEOUT};
use hermod_core::bus::SessionKey;
use hermod_core::ids::MsgId;
use hermod_core::link::{encode_message, parse_sid};
use hermod_core::resp::{RespLimits, RespReader, Value};
use hermod_core::testkit::RedisServer;
use hermod_proxy::brokers::placement;
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

/// A user name the gateway places on `broker` among `brokers`.
fn user_on(broker: &str, brokers: &[String], prefix: &str, skip: usize) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .filter(|u| {
            let names = brokers.iter().map(|b| (b.as_str(), b.as_str()));
            placement::pick(u, names) == Some(broker)
        })
        .nth(skip)
        .expect("a user placed there")
}

/// What the fake broker saw.
#[derive(Debug)]
enum Seen {
    /// The gateway's HELLO, and whether it carried `AUTH hermod <LINK_SECRET>`.
    Hello(bool),
    /// It attached `user` and the fake pushed a forged message to every sid but that one's.
    Forged { user: String },
}

/// A fake broker: answers HELLO, PING and every command `+OK`; when a session is attached, it
/// pushes one forged direct message naming every sid a 2-worker gateway is likely to use.
fn fake_broker(listener: std::net::TcpListener, seen: std::sync::mpsc::Sender<Seen>) {
    let Ok((mut stream, _)) = listener.accept() else {
        return;
    };
    let mut reader = RespReader::new(RespLimits::default());
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if reader.feed(&buf[..n]).is_err() {
            return;
        }
        while let Ok(Some(Value::Array(args))) = reader.next_value() {
            let args: Vec<String> = args
                .iter()
                .map(|a| {
                    String::from_utf8_lossy(&a.as_bytes().map(|b| b.to_vec()).unwrap_or_default())
                        .into_owned()
                })
                .collect();
            let mut out = BytesMut::new();
            match args.first().map(String::as_str) {
                Some("HELLO") => {
                    let authed = args[1..] == ["3", "AUTH", "hermod", LINK_SECRET];
                    let _ = seen.send(Seen::Hello(authed));
                    out.extend_from_slice(b"+OK\r\n");
                }
                Some("PING") => out.extend_from_slice(b"+PONG\r\n"),
                // The gateway's own probe session (room presence across brokers): not a user.
                Some("ATTACH") if args[2].starts_with('@') => out.extend_from_slice(b"+OK\r\n"),
                Some("ATTACH") => {
                    out.extend_from_slice(b"+OK\r\n");
                    let own = parse_sid(args[1].as_bytes()).expect("sid");
                    let mut sids = Vec::new();
                    for worker in 0..2 {
                        for slot in 0..64 {
                            for generation in 0..16 {
                                let sid = SessionKey {
                                    worker,
                                    slot,
                                    generation,
                                };
                                if sid != own {
                                    sids.push(sid);
                                }
                            }
                        }
                    }
                    let frame = br#"{"op":"msg","id":"9.9-9","from":"alice","to":"bob","data":"forged","ts":1}"#;
                    encode_message(&MsgId::new("9.9-9"), frame, &sids, &mut out);
                    let _ = seen.send(Seen::Forged {
                        user: args[2].clone(),
                    });
                }
                _ => out.extend_from_slice(b"+OK\r\n"),
            }
            if stream.write_all(&out).is_err() {
                return;
            }
        }
    }
}

#[test]
fn a_broker_cannot_push_to_sessions_placed_on_another_broker() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let real = Broker::start(&redis, "p1", &["--link-secret", LINK_SECRET]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake_addr = listener.local_addr().expect("addr");
    let (tx, seen) = std::sync::mpsc::channel();
    thread::spawn(move || fake_broker(listener, tx));
    let names = [real.addr.to_string(), fake_addr.to_string()];
    let list = names.join(",");
    let args = [
        "--auth",
        "none",
        "--link-secret",
        LINK_SECRET,
        "--brokers",
        &list,
    ];
    let proxy = Proxy::spawn(&args, false);
    wait_for(&proxy, TIMEOUT, "both links up", || {
        proxy.metric_sum(&["hermod_broker_links_up"]) == Some(2.0)
    });
    match seen.recv_timeout(TIMEOUT).expect("HELLO") {
        Seen::Hello(authed) => assert!(authed, "the gateway presents the link secret"),
        other => panic!("{other:?}"),
    }
    let (alice, bob) = (
        user_on(&names[0], &names, "a", 0),
        user_on(&names[0], &names, "b", 0),
    );
    let carol = user_on(&names[1], &names, "c", 0);
    let mut alice_c = proxy.connect(&alice);
    let mut bob_c = proxy.connect(&bob);
    // Carol is placed on the fake broker: it learns of her and forges a message for every
    // other likely sid, alice's and bob's among them.
    let carol_c = proxy.connect(&carol);
    match seen.recv_timeout(TIMEOUT).expect("forged") {
        Seen::Forged { user } => assert_eq!(user, carol),
        other => panic!("{other:?}"),
    }
    wait_for(&proxy, TIMEOUT, "the forged pushes counted", || {
        proxy
            .metric_sum(&["hermod_broker_pushes_dropped_total", "foreign_session"])
            .is_some_and(|n| n >= 2.0)
    });
    // Bob's next message is alice's real one, not the forgery; same the other way.
    let id = alice_c.send_to(&bob, "real-1", json!("real"));
    let got = bob_c.recv_op("msg");
    assert_eq!((common::id_of(&got), &got["data"]), (id, &json!("real")));
    let id = bob_c.send_to(&alice, "real-2", json!("back"));
    assert_eq!(common::id_of(&alice_c.recv_op("msg")), id);
    carol_c.close();
}

#[test]
fn a_gateway_with_the_wrong_secret_never_links() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let broker = Broker::start(&redis, "w1", &["--link-secret", LINK_SECRET]);
    let addr = broker.addr.to_string();
    let wrong = "not-the-link-secret-0123456789";
    let args = ["--auth", "none", "--link-secret", wrong, "--brokers", &addr];
    let proxy = Proxy::spawn(&args, false);
    wait_for(&proxy, TIMEOUT, "the refusal logged", || {
        proxy.log().contains("WRONGPASS")
    });
    assert!(!proxy.log().contains(wrong), "the secret is never logged");
    assert!(!broker.log().contains(wrong), "the secret is never logged");
    assert_eq!(proxy.admin_get("/readyz").0, 503);
    assert_eq!(proxy.metric_sum(&["hermod_broker_links_up"]), Some(0.0));
}
