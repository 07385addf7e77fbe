//! The Redis engine against real redis-servers: persistence across a Redis restart, Redis down
//! and back, dedupe across a broker restart, replica durability, rollback detection, and the
//! exact frames.
#![allow(clippy::unwrap_used)] // scenarios shared by both engines are not `#[test]`s

mod common;

use std::time::{Duration, Instant};

use common::*;
use hermod_broker::{Channel, Durability, Engine, Limits, RedisEngineConfig};
use hermod_core::bus::Event;
use hermod_core::ids::{Cid, MsgId};
use hermod_core::protocol::{encode_direct_msg, encode_room_msg, ErrorCode};
use hermod_core::testkit::RedisServer;

fn config(server: &RedisServer) -> RedisEngineConfig {
    RedisEngineConfig::new(client_config(server), Limits::default())
}

fn harness(args: &[&str]) -> Harness {
    let server = RedisServer::start(args).unwrap();
    let config = config(&server);
    Harness::on_redis(server, config)
}

/// The frame bytes of every message delivered to `s`.
fn frames(out: &[hermod_core::bus::Delivery], s: hermod_core::bus::SessionKey) -> Vec<Vec<u8>> {
    out.iter()
        .filter(|d| d.session == s)
        .filter_map(|d| match &d.event {
            Event::Message { frame, .. } => Some(frame.to_vec()),
            _ => None,
        })
        .collect()
}

#[test]
fn frames_are_exactly_the_protocol_encoding_live_and_replayed() {
    let mut h = harness(&[]);
    let (alice, bob) = (key(1), key(2));
    h.attach(alice, "alice", "d");
    h.attach(bob, "bob", "d");
    h.join(bob, "lobby", None);
    let json = r#"{"text":"h\u00e9 \"quoted\"","n":[1,2.5,null]}"#;
    let out = h.send(alice, "c1", "bob", json);
    let id = sent_id(&out);
    let direct = encode_direct_msg(&id, &name("alice"), &name("bob"), &data(json), h.now);
    assert_eq!(frames(&out, bob), [direct.as_bytes().to_vec()]);
    let out = h.publish(alice, "c2", "lobby", json);
    let rid = sent_id(&out);
    let room = encode_room_msg(&rid, &name("alice"), &name("lobby"), &data(json), h.now);
    assert_eq!(frames(&out, bob), [room.as_bytes().to_vec()]);
    // replayed from the stream: rebuilt byte for byte
    h.detach(bob);
    let bob2 = key(3);
    assert_eq!(
        frames(&h.attach(bob2, "bob", "d"), bob2),
        [direct.as_bytes().to_vec()]
    );
    let before = MsgId::new(format!("{}.0-1", rid.as_str().split('.').next().unwrap()));
    let out = h.join(bob2, "lobby", Some(&before));
    assert!(joined(&out, bob2));
    assert_eq!(frames(&out, bob2), [room.as_bytes().to_vec()]);
}

#[test]
fn appendonly_redis_restart_keeps_inboxes_cursors_and_rooms() {
    let mut h = harness(&["--appendonly", "yes", "--appendfsync", "always"]);
    let alice = key(1);
    h.attach(alice, "alice", "d");
    let ids: Vec<MsgId> = (0..3)
        .map(|i| sent_id(&h.send(alice, &format!("c{i}"), "bob", &i.to_string())))
        .collect();
    let rooms: Vec<MsgId> = (0..3)
        .map(|i| sent_id(&h.publish(alice, &format!("p{i}"), "r", &i.to_string())))
        .collect();
    let bob = key(2);
    h.attach(bob, "bob", "d");
    h.ack(bob, &ids[0]);
    let before = h.broker.engine().stats().reconnects;
    h.server().restart().unwrap();
    h.wait_reconnected(before);
    let bob2 = key(3);
    assert_eq!(datas(&h.attach(bob2, "bob", "d"), bob2), ["1", "2"]);
    let out = h.join(bob2, "r", Some(&rooms[0]));
    assert!(joined(&out, bob2));
    assert_eq!(datas(&out, bob2), ["1", "2"]);
    // the same cid after the restart is still a duplicate
    assert_eq!(sent_id(&h.send(alice, "c2", "bob", "2")), ids[2]);
}

#[test]
fn redis_down_answers_unavailable_in_time_and_service_resumes() {
    let mut h = harness(&[]);
    let alice = key(1);
    h.attach(alice, "alice", "d");
    sent_id(&h.send(alice, "c0", "bob", "0"));
    h.server().kill();
    for i in 1..4 {
        let started = Instant::now();
        let out = h.send(alice, &format!("c{i}"), "bob", "1");
        let code = errors(&out, alice);
        assert_eq!(
            code,
            [(Some(cid(&format!("c{i}"))), ErrorCode::Unavailable)]
        );
        // within the command timeout (2 s), with slack for a loaded machine
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert!(!h.broker.engine().is_ready());
    h.server().restart().unwrap();
    h.wait_ready();
    let id = sent_id(&h.send(alice, "c9", "bob", "9"));
    assert!(!id.as_str().is_empty());
    let bob = key(2);
    // the server had no persistence: only what was stored after the restart is there
    assert_eq!(datas(&h.attach(bob, "bob", "d"), bob), ["9"]);
}

#[test]
fn attach_during_an_outage_stays_attached_and_gets_the_backlog_later() {
    let mut h = harness(&["--appendonly", "yes", "--appendfsync", "always"]);
    let alice = key(1);
    h.attach(alice, "alice", "d");
    sent_id(&h.send(alice, "c1", "bob", "1"));
    h.server().kill();
    let bob = key(2);
    let out = h.attach(bob, "bob", "d");
    assert_eq!(errors(&out, bob), [(None, ErrorCode::Unavailable)]);
    assert!(h.broker.is_attached(bob));
    let before = h.broker.engine().stats().reconnects;
    h.server().restart().unwrap();
    h.wait_reconnected(before);
    assert_eq!(datas(&h.sweep(), bob), ["1"]);
    assert_eq!(datas(&h.send(alice, "c2", "bob", "2"), bob), ["2"]);
}

#[test]
fn dedupe_holds_across_a_broker_restart() {
    let mut h = harness(&[]);
    let alice = key(1);
    h.attach(alice, "alice", "d");
    let first = sent_id(&h.send(alice, "retry-me", "bob", "1"));
    let config = config(h.server());
    h.restart_broker(config);
    h.attach(alice, "alice", "d");
    assert_eq!(sent_id(&h.send(alice, "retry-me", "bob", "1")), first);
    let bob = key(2);
    assert_eq!(datas(&h.attach(bob, "bob", "d"), bob), ["1"]);
}

#[test]
fn replica_durability_needs_a_replica() {
    let master = RedisServer::start(&[]).unwrap();
    let port = master.port().to_string();
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &port]).unwrap();
    // Online is not enough: after a full sync the master streams to the replica (and WAIT can
    // count it) only once the replica acked, which it does once a second. Write after it came
    // online, and wait for an ack of that write.
    let replication = |field: &str| {
        let info = master.command(&["INFO", "replication"]).unwrap();
        let text = info.as_str().unwrap_or_default().to_owned();
        text.split(['\n', '\r', ','])
            .find_map(|f| f.strip_prefix(field).map(str::to_owned))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while replication("state=").as_deref() != Some("online") {
        assert!(Instant::now() < deadline, "replica never came online");
        std::thread::sleep(Duration::from_millis(50));
    }
    master.command(&["SET", "warm-up", "1"]).unwrap();
    let offset = |field: &str| replication(field).and_then(|v| v.parse::<u64>().ok());
    let written = offset("master_repl_offset:");
    while offset("offset=") < written {
        assert!(Instant::now() < deadline, "replica never acked");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut config = config(&master);
    config.durability = Durability::Replica;
    config.wait_timeout = Duration::from_millis(500);
    let mut h = Harness::on_redis(master, config.clone());
    let alice = key(1);
    h.attach(alice, "alice", "d");
    let first = sent_id(&h.send(alice, "c1", "bob", "1"));
    // a batch of sends in one turn shares one WAIT
    for i in 2..20 {
        sent_id(&h.send(alice, &format!("c{i}"), "bob", "1"));
    }
    drop(replica);
    let out = h.send(alice, "c20", "bob", "1");
    assert_eq!(
        errors(&out, alice),
        [(Some(cid("c20")), ErrorCode::Unavailable)]
    );
    // the retry is deduplicated: stored once, still not confirmed without a replica
    let out = h.send(alice, "c20", "bob", "1");
    assert_eq!(
        errors(&out, alice),
        [(Some(cid("c20")), ErrorCode::Unavailable)]
    );
    assert_eq!(
        h.broker
            .engine()
            .message_count(&Channel::Inbox(name("bob"))),
        20
    );
    // leader durability on the same data: the earlier id is a duplicate, answered at once
    config.durability = Durability::Leader;
    h.restart_broker(config);
    h.attach(alice, "alice", "d");
    assert_eq!(sent_id(&h.send(alice, "c1", "bob", "1")), first);
}

#[test]
fn a_stream_rolled_back_gets_a_new_epoch_and_since_is_not_recovered() {
    let mut h = harness(&[]);
    let a = key(1);
    h.attach(a, "alice", "d");
    let m1 = sent_id(&h.publish(a, "p1", "r", "1"));
    let m2 = sent_id(&h.publish(a, "p2", "r", "2"));
    // what a failover to a lagging replica does: m2 is gone, the stream's top is m1 again
    let sid = |id: &MsgId| id.as_str().split_once('.').unwrap().1.to_owned();
    h.redis(&["XDEL", "{r:r}:s", &sid(&m2)]);
    h.redis(&["XSETID", "{r:r}:s", &sid(&m1)]);
    let before = h.broker.engine().stats().reconnects;
    h.redis(&["CLIENT", "KILL", "TYPE", "normal"]);
    h.wait_reconnected(before);
    let b = key(2);
    h.attach(b, "bob", "d");
    let out = h.join(b, "r", Some(&m1));
    assert!(
        !joined(&out, b),
        "positions from before the rollback are not trusted"
    );
    assert_eq!(datas(&out, b), ["1"]);
    let m3 = sent_id(&h.publish(a, "p3", "r", "3"));
    let epoch = |id: &MsgId| id.as_str().split_once('.').unwrap().0.to_owned();
    assert_ne!(epoch(&m3), epoch(&m1));
    h.leave(b, "r");
    let out = h.join(b, "r", Some(&m3));
    assert!(joined(&out, b));
}

#[test]
fn embedded_runner_drives_the_redis_engine_and_reports_readiness() {
    use hermod_broker::embedded::{self, Sink};
    use hermod_broker::{Broker, RedisEngine};
    use hermod_core::bus::Request;

    let mut server = RedisServer::start(&[]).unwrap();
    let config = config(&server);
    let limits = config.limits.clone();
    let broker = Broker::new(RedisEngine::new(config, Instant::now()), limits);
    let (tx, rx) = crossbeam_channel::unbounded();
    let sink: Sink = Box::new(move |d| tx.send(d).map_err(|e| e.into_inner()));
    let running = embedded::spawn(broker, 64, vec![sink]).unwrap();
    let wait_until = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_until("ready", &|| running.is_ready());
    let requests = running.sender();
    let put = |r: Request| requests.send_timeout(r, Duration::from_secs(10)).unwrap();
    let (alice, bob) = (key(1), key(2));
    for (s, u) in [(alice, "alice"), (bob, "bob")] {
        put(Request::Attach {
            session: s,
            user: name(u),
            device: name("d"),
        });
    }
    put(Request::Send {
        session: alice,
        cid: cid("c1"),
        to: name("bob"),
        data: data("1"),
    });
    let mut got = Vec::new();
    while got.len() < 2 {
        let d = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        got.push((d.session, matches!(d.event, Event::Sent { .. })));
    }
    assert!(
        got.contains(&(alice, true)) && got.contains(&(bob, false)),
        "{got:?}"
    );
    assert!(running.stats().round_trips > 0);
    server.kill();
    wait_until("not ready once redis is gone", &|| !running.is_ready());
    running.shutdown();
}

#[test]
fn appends_of_one_turn_go_out_batched_in_order_with_dedupe() {
    use hermod_core::bus::Request;
    let mut h = harness(&[]);
    let (alice, bob) = (key(1), key(2));
    h.attach(alice, "alice", "d");
    h.attach(bob, "bob", "d");
    h.join(bob, "r", None);
    let before = h.broker.engine().stats().round_trips;
    // 150 sends to bob (over several full batches), c7 repeated inside the turn, and room
    // publishes in between: all submitted before the engine's I/O runs.
    let mut out = Vec::new();
    let mut cids = Vec::new();
    for i in 0..150 {
        let c = if i == 100 {
            "c7".to_owned()
        } else {
            format!("c{i}")
        };
        cids.push(c.clone());
        let req = Request::Send {
            session: alice,
            cid: cid(&c),
            to: name("bob"),
            data: data(&i.to_string()),
        };
        h.broker.handle(req, h.now, &mut out);
        if i % 50 == 0 {
            let req = Request::Publish {
                session: alice,
                cid: cid(&format!("p{i}")),
                room: name("r"),
                data: data(&i.to_string()),
            };
            h.broker.handle(req, h.now, &mut out);
        }
    }
    h.settle(&mut out);
    let trips = h.broker.engine().stats().round_trips - before;
    assert!(trips <= 6, "{trips} commands for 153 appends in one turn");
    let sent: Vec<(Cid, MsgId)> = out
        .iter()
        .filter(|d| d.session == alice)
        .filter_map(|d| match &d.event {
            Event::Sent { cid, id } => Some((cid.clone(), id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 153);
    let direct: Vec<&(Cid, MsgId)> = sent
        .iter()
        .filter(|(c, _)| c.as_str().starts_with('c'))
        .collect();
    assert_eq!(direct.len(), 150);
    let id_of = |c: &str| {
        direct
            .iter()
            .find(|(x, _)| x.as_str() == c)
            .map(|(_, id)| id.clone())
            .unwrap()
    };
    // the repeated cid is stored once, under the first id
    assert!(direct
        .iter()
        .filter(|(c, _)| c.as_str() == "c7")
        .all(|(_, id)| *id == id_of("c7")));
    // bob got every message live in order (the duplicate again, under the same id)
    let live: Vec<MsgId> = msgs(&out, bob)
        .into_iter()
        .filter(|(_, v)| v["to"] == "bob")
        .map(|(id, _)| id)
        .collect();
    let expected: Vec<MsgId> = cids.iter().map(|c| id_of(c)).collect();
    assert_eq!(live, expected);
    let rooms: Vec<String> = msgs(&out, bob)
        .into_iter()
        .filter(|(_, v)| v["room"] == "r")
        .map(|(_, v)| v["data"].to_string())
        .collect();
    assert_eq!(rooms, ["0", "50", "100"]);
    // stored once each, in order
    let bob2 = key(3);
    let replay = datas(&h.attach(bob2, "bob", "other"), bob2);
    let want: Vec<String> = (0..150)
        .filter(|&i| i != 100)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(replay, want);
}

#[test]
fn length_retention_is_exact_for_readers_while_the_stream_holds_slack() {
    // a limit of 64 lets a stream hold up to 4 entries more between two cuts
    let limits = Limits {
        inbox_max_len: 64,
        room_max_len: 64,
        ..Limits::default()
    };
    let mut h = Harness::of_with(Kind::Redis, limits, 0);
    let a = key(1);
    h.attach(a, "alice", "d");
    let mut room = Vec::new();
    let mut slot = 10;
    let mut session = || {
        slot += 1;
        key(slot)
    };
    for n in 1..=80usize {
        sent_id(&h.send(a, &format!("c{n}"), "bob", &n.to_string()));
        room.push(sent_id(&h.publish(
            a,
            &format!("p{n}"),
            "r",
            &n.to_string(),
        )));
        let held = h
            .broker
            .engine()
            .message_count(&Channel::Inbox(name("bob")));
        assert!(held >= n.min(64) && held <= 68, "{held} entries after {n}");
        let s = session();
        let got = datas(&h.attach(s, "bob", &format!("d{n}")), s);
        let want: Vec<String> = (n.saturating_sub(64) + 1..=n)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(got, want, "inbox after {n}");
        h.detach(s);
        if n < 66 {
            continue;
        }
        // room[n - 65] (message n - 64) is the newest one dropped: covered; the one before not
        for (at, covered) in [(n - 66, false), (n - 65, true)] {
            let s = session();
            h.attach(s, "carol", "d");
            let out = h.join(s, "r", Some(&room[at]));
            assert_eq!(
                joined(&out, s),
                covered,
                "since message {} after {n}",
                at + 1
            );
            let want: Vec<String> = (n - 63..=n).map(|i| i.to_string()).collect();
            assert_eq!(datas(&out, s), want);
            h.detach(s);
        }
    }
}

#[test]
fn appends_publish_only_when_configured_to() {
    let publishes = |h: &mut Harness| {
        let info = h.redis(&["INFO", "commandstats"]);
        let text = info.as_str().unwrap_or_default().to_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let mut h = harness(&[]);
    let alice = key(1);
    h.attach(alice, "alice", "d");
    sent_id(&h.send(alice, "c1", "bob", "1"));
    assert_eq!(publishes(&mut h), 0, "a lone broker publishes nothing");
    let mut config = config(h.server());
    config.publish = true;
    h.restart_broker(config);
    h.attach(alice, "alice", "d");
    sent_id(&h.send(alice, "c2", "bob", "2"));
    sent_id(&h.publish(alice, "c3", "r", "3"));
    assert_eq!(publishes(&mut h), 2);
}

#[test]
fn a_broken_channel_fails_alone_in_a_batch() {
    use hermod_core::bus::Request;
    let mut h = harness(&[]);
    let alice = key(1);
    h.attach(alice, "alice", "d");
    // carol's stream key holds a string: her messages cannot be stored
    h.redis(&["SET", "{u:carol}:s", "not a stream"]);
    let mut out = Vec::new();
    for (c, to) in [("c1", "bob"), ("c2", "carol"), ("c3", "bob")] {
        let req = Request::Send {
            session: alice,
            cid: cid(c),
            to: name(to),
            data: data("1"),
        };
        h.broker.handle(req, h.now, &mut out);
    }
    h.settle(&mut out);
    assert_eq!(
        errors(&out, alice),
        [(Some(cid("c2")), ErrorCode::Unavailable)]
    );
    let sent = out
        .iter()
        .filter(|d| matches!(d.event, Event::Sent { .. }))
        .count();
    assert_eq!(sent, 2);
    assert_eq!(
        h.broker
            .engine()
            .message_count(&Channel::Inbox(name("bob"))),
        2
    );
}
