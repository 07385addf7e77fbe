//! The buffer budget across gateway links (`--link-buffer-budget`) against the real
//! `hermod-broker` binary and a real redis-server: authenticated links that stream half-sent
//! commands make the broker buffer their input; the link whose growth would take the total past
//! the budget while it holds more than its share is cut, and the links within their share (the
//! well-behaved gateway, and the ones that were admitted while the total was under the budget)
//! are not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;

use std::io::{Read, Write};

use hermod_core::link::MAX_FRAME_LEN;
use hermod_core::testkit::RedisServer;

use process::{BrokerProc, Link, WAIT};

const SECRET: &str = "link-budget-test-secret-0123456789";
/// The smallest budget the broker takes: one largest command and its reply.
const BUDGET: usize = 2 * MAX_FRAME_LEN;
/// What each streaming link sends of its one command (never finished).
const STREAMED: usize = 50 << 20;

fn counter(broker: &BrokerProc, series: &str) -> f64 {
    let mut s = std::net::TcpStream::connect(broker.admin.unwrap()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The head of a `SEND` whose data is a 60 MiB bulk string (under the frame limit), of which
/// the caller then sends only part.
fn unfinished_send() -> Vec<u8> {
    let mut head = b"*5\r\n$4\r\nSEND\r\n$5\r\n0-1-2\r\n$2\r\nc1\r\n$3\r\nbob\r\n".to_vec();
    head.extend_from_slice(format!("${}\r\n", 60 << 20).as_bytes());
    head
}

#[test]
fn the_link_that_would_take_the_total_past_the_budget_is_cut_and_the_others_are_not() {
    let redis = RedisServer::start(&[]).unwrap();
    let args = [
        "--link-secret",
        SECRET,
        "--admin-listen",
        "127.0.0.1:0",
        "--link-buffer-budget",
        &BUDGET.to_string(),
    ];
    let broker = BrokerProc::start(&redis.url(), &args);
    let mut gateway = broker.ready_link_with(SECRET);
    assert_eq!(
        gateway
            .command(&["ATTACH", "0-1-1", "alice", "d1"])
            .as_str(),
        Some("OK")
    );

    // Three more authenticated links each stream 50 MiB of one command: the first two fit
    // under the budget together (100 of 128 MiB), the third would take it past.
    let payload = vec![b'x'; STREAMED];
    let mut streams: Vec<Link> = (0..3).map(|_| broker.ready_link_with(SECRET)).collect();
    let mut written = Vec::new();
    for link in &mut streams {
        let mut wire = unfinished_send();
        wire.extend_from_slice(&payload);
        written.push(link.write_until_closed(&wire));
    }
    let last = streams.last_mut().unwrap();
    assert!(last.wait_closed(WAIT), "the third streaming link is cut");
    let series = "hermod_broker_link_limit_closes_total{reason=\"input_budget\"}";
    assert_eq!(counter(&broker, series), 1.0);

    // The first two were within the budget when they grew: still open, and the broker still
    // holds their input (they are cut only by their own growth past the budget).
    for (i, link) in streams.iter_mut().take(2).enumerate() {
        assert_eq!(written[i], unfinished_send().len() + STREAMED, "link {i}");
        assert!(
            !link.wait_closed(std::time::Duration::from_millis(300)),
            "link {i}"
        );
    }
    // The gateway within its share is served as before.
    assert_eq!(gateway.command(&["PING"]).as_str(), Some("PONG"));
    let sent = gateway.command(&["SEND", "0-1-1", "c2", "bob", "{\"n\":1}"]);
    assert_eq!(sent.as_str(), Some("OK"), "{sent:?}");
}
