//! The `hermod-broker` binary over its link protocol, against a real redis-server: direct and
//! room messages between sessions of one link, `redis-cli`, silent links.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;

use std::process::Command;
use std::time::Duration;

use hermod_core::bus::Event;
use hermod_core::link::LinkPush;
use hermod_core::resp::Value;
use hermod_core::testkit::RedisServer;

use process::{BrokerProc, Link};

fn ok(v: &Value) -> bool {
    v.as_str() == Some("OK")
}

/// Takes pushes until one matching `want` (skipping none: every push must be expected).
fn sent_id(link: &mut Link, sid: &str, cid: &str) -> String {
    match link.next_push() {
        LinkPush::Event {
            sid: s,
            event: Event::Sent { cid: c, id },
        } if s.to_string() == sid && c.as_str() == cid => id.as_str().to_owned(),
        other => panic!("expected sent for {sid}/{cid}, got {other:?}"),
    }
}

#[test]
fn direct_and_room_messages_between_two_sessions_of_one_link() {
    let redis = RedisServer::start(&[]).unwrap();
    let broker = BrokerProc::start(&redis.url(), &["--node-id", "t1"]);
    let mut link = broker.ready_link();
    assert!(ok(&link.command(&["ATTACH", "0-1-1", "alice", "d1"])));
    assert!(ok(&link.command(&["ATTACH", "1-7-3", "bob", "d1"])));

    // Direct: alice -> bob.
    assert!(ok(&link.command(&[
        "SEND",
        "0-1-1",
        "c1",
        "bob",
        "{\"n\":1}"
    ])));
    let mut got_sent = None;
    let mut got_msg = None;
    for _ in 0..2 {
        match link.next_push() {
            LinkPush::Event {
                sid,
                event: Event::Sent { cid, id },
            } => {
                assert_eq!((sid.to_string().as_str(), cid.as_str()), ("0-1-1", "c1"));
                got_sent = Some(id);
            }
            LinkPush::Message { id, frame, sids } => {
                assert_eq!(
                    sids.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    ["1-7-3"]
                );
                let text = std::str::from_utf8(&frame).unwrap();
                assert!(
                    text.contains("\"from\":\"alice\"") && text.contains("{\"n\":1}"),
                    "{text}"
                );
                got_msg = Some(id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got_sent, got_msg);
    let first_id = got_sent.map(|id| id.as_str().to_owned());

    // Room: both join; one publish is one `msg` push naming both sids.
    for sid in ["0-1-1", "1-7-3"] {
        assert!(ok(&link.command(&["JOIN", sid, "lobby"])));
        match link.next_push() {
            LinkPush::Event {
                event: Event::Joined { room, .. },
                ..
            } => assert_eq!(room.as_str(), "lobby"),
            other => panic!("expected joined, got {other:?}"),
        }
    }
    assert!(ok(
        &link.command(&["PUBLISH", "1-7-3", "c2", "lobby", "[1,2]"])
    ));
    let mut pushes = vec![link.next_push(), link.next_push()];
    pushes.sort_by_key(|p| matches!(p, LinkPush::Message { .. }));
    assert!(
        matches!(
            &pushes[0],
            LinkPush::Event {
                event: Event::Sent { .. },
                ..
            }
        ),
        "{pushes:?}"
    );
    let LinkPush::Message { sids, frame, .. } = &pushes[1] else {
        panic!("{pushes:?}")
    };
    let mut sids: Vec<String> = sids.iter().map(ToString::to_string).collect();
    sids.sort();
    assert_eq!(sids, ["0-1-1", "1-7-3"]);
    assert!(std::str::from_utf8(frame)
        .unwrap()
        .contains("\"room\":\"lobby\""));

    // A retried cid: the same id comes back (dedupe); the stored message is delivered again
    // (at-least-once: the first attempt may have been stored without being delivered).
    assert!(ok(&link.command(&[
        "SEND",
        "0-1-1",
        "c1",
        "bob",
        "{\"n\":1}"
    ])));
    let again = sent_id(&mut link, "0-1-1", "c1");
    assert_eq!(Some(again.as_str()), first_id.as_deref());
    match link.next_push() {
        LinkPush::Message { id, .. } => assert_eq!(id.as_str(), again),
        other => panic!("expected the message again, got {other:?}"),
    }
    assert!(ok(&link.command(&["ACK", "1-7-3", &again])));
    assert!(ok(&link.command(&["LEAVE", "0-1-1", "lobby"])));
    let left = link.next_push();
    assert!(
        matches!(
            left,
            LinkPush::Event {
                event: Event::Left { .. },
                ..
            }
        ),
        "{left:?}"
    );

    // Errors: unknown sid, malformed data; the link stays usable.
    assert!(link
        .command(&["SEND", "9-9-9", "c3", "bob", "1"])
        .is_error());
    assert!(link
        .command(&["SEND", "0-1-1", "c3", "bob", "{nope"])
        .is_error());
    assert!(ok(&link.command(&["DETACH", "0-1-1"])));
    assert!(link.info().contains("sessions:1"));
}

#[test]
fn redis_cli_talks_to_a_broker() {
    let redis = RedisServer::start(&[]).unwrap();
    let broker = BrokerProc::start(&redis.url(), &["--node-id", "cli-node"]);
    let port = broker.link.port().to_string();
    let run = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&["PING"]).trim(), "PONG");
    let info = run(&["INFO"]);
    assert!(info.contains("node_id:cli-node"), "{info}");
    let hello = run(&["-3", "HELLO", "3"]);
    assert!(hello.contains("hermod-broker"), "{hello}");
    assert!(run(&["NOPE"]).contains("unknown command"));
}

#[test]
fn a_silent_link_is_dropped_and_its_sessions_detached() {
    let redis = RedisServer::start(&[]).unwrap();
    let broker = BrokerProc::start(&redis.url(), &["--link-timeout", "1s"]);
    let mut quiet = broker.ready_link();
    assert!(ok(&quiet.command(&["ATTACH", "0-1-1", "alice", "d1"])));
    assert!(
        quiet.wait_closed(Duration::from_secs(30)),
        "silent link not closed"
    );

    let mut other = process::Link::connect(broker.link);
    let info = other.info();
    assert!(
        info.contains("sessions:0") && info.contains("links:1"),
        "{info}"
    );
}

#[test]
fn garbage_closes_only_its_own_link() {
    let redis = RedisServer::start(&[]).unwrap();
    let broker = BrokerProc::start(&redis.url(), &[]);
    let mut good = broker.ready_link();
    // Answered with a protocol error, then closed.
    let mut bad = std::net::TcpStream::connect(broker.link).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::io::Write::write_all(&mut bad, b"?garbage\r\n").unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut bad, &mut answer);
    assert!(answer.starts_with("-ERR Protocol error"), "{answer}");
    assert!(good.command(&["PING"]).as_str() == Some("PONG"));
}
