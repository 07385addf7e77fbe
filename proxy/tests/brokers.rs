//! The broker tier end to end: real `hermod-broker` processes on one `redis-server`, a real
//! `hermod-proxy` linked to them with `--brokers` or `--registry`, and blocking WebSocket
//! clients. A conversation's users are placed on one broker (the gateway's own placement
//! function picks the names): live delivery between users homed on different brokers is the
//! brokers' cross-broker fan-out, tested with it.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::broker::{broker_binary, broker_gauge, wait_for, Broker, LINK_SECRET};
use common::{Client, Ending, Proxy, TIMEOUT};
use hermod_core::testkit::RedisServer;
use hermod_proxy::brokers::placement;
use serde_json::{json, Value};
use tungstenite::Message;

/// Broker `node` on `redis`, with a drain timeout short enough for the SIGTERM test.
fn start_broker(redis: &RedisServer, node: &str) -> Broker {
    Broker::start(
        redis,
        node,
        &["--drain-timeout", "5s", "--link-secret", LINK_SECRET],
    )
}

/// A gateway with `--auth none` and these extra flags, ready (a broker link up).
fn gateway(extra: &[&str]) -> Proxy {
    let mut args = vec!["--auth", "none", "--link-secret", LINK_SECRET];
    args.extend_from_slice(extra);
    let proxy = Proxy::spawn(&args, false);
    proxy.wait_ready(TIMEOUT);
    proxy
}

/// `count` user names that the gateway places on `broker` among `brokers` (placement names).
fn users_on(broker: &str, brokers: &[String], prefix: &str, count: usize) -> Vec<String> {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .filter(|u| {
            let names = brokers.iter().map(|b| (b.as_str(), b.as_str()));
            placement::pick(u, names) == Some(broker)
        })
        .take(count)
        .collect()
}

fn json_of(m: &Message) -> Value {
    match m {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("JSON frame"),
        other => panic!("unexpected message {other:?}"),
    }
}

#[test]
fn direct_and_room_messages_through_two_brokers() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let b1 = start_broker(&redis, "b1");
    let b2 = start_broker(&redis, "b2");
    let names = [b1.addr.to_string(), b2.addr.to_string()];
    let list = names.join(",");
    let proxy = gateway(&["--brokers", &list]);
    wait_for(&proxy, TIMEOUT, "both links up", || {
        proxy.metric_sum(&["hermod_broker_links_up"]) == Some(2.0)
    });
    for (broker, tag) in [(&names[0], "x"), (&names[1], "y")] {
        let users = users_on(broker, &names, tag, 2);
        let (a, b) = (&users[0], &users[1]);
        let mut alice = proxy.connect(a);
        let mut bob = proxy.connect(b);
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(alice.send_to(b, &format!("d{i}"), json!(i)));
        }
        let got: Vec<String> = bob.recv_msgs(5).iter().map(common::id_of).collect();
        assert_eq!(got, ids, "direct messages in order via {broker}");
        for c in [&mut alice, &mut bob] {
            c.send_json(&json!({"op":"join","room":"lobby"}));
            assert_eq!(c.recv_op("joined")["room"], "lobby");
        }
        bob.send_json(&json!({"op":"publish","room":"lobby","cid":"p1","data":"hi"}));
        let mut bob_frames = vec![bob.recv(), bob.recv()];
        bob_frames.sort_by_key(|f| f["op"].as_str().unwrap_or_default().to_owned());
        assert_eq!(bob_frames[0]["op"], "msg", "{bob_frames:?}");
        assert_eq!(bob_frames[1]["op"], "sent", "{bob_frames:?}");
        let msg = alice.recv_op("msg");
        assert_eq!(
            (msg["room"].as_str(), msg["data"].as_str()),
            (Some("lobby"), Some("hi"))
        );
        assert_eq!(msg["id"], bob_frames[1]["id"]);
        wait_for(
            &proxy,
            TIMEOUT,
            "the sessions counted on their broker",
            || {
                broker_gauge(&proxy, "hermod_broker_link_sessions", broker)
                    .is_some_and(|n| n >= 2.0)
            },
        );
    }
    drop((b1, b2));
}

/// What one user's thread saw.
#[derive(Debug, Default)]
struct Seen {
    user: String,
    /// `sent` ids of its own sends, in order.
    sent: Vec<String>,
    /// Ids of messages it received (duplicates counted apart).
    received: HashSet<String>,
    duplicates: usize,
    errors: Vec<Value>,
    /// The longest time between two consecutive `sent` answers.
    longest_gap: Duration,
    /// How the connection ended, if it did.
    ended: Option<String>,
}

impl Seen {
    /// Records one frame; acks direct messages (so that re-homes replay little).
    fn take(&mut self, frame: &Value, client: &mut Client, last_sent: &mut Option<Instant>) {
        match frame["op"].as_str() {
            Some("sent") => {
                let at = Instant::now();
                if let Some(prev) = *last_sent {
                    self.longest_gap = self.longest_gap.max(at - prev);
                }
                *last_sent = Some(at);
                self.sent.push(common::id_of(frame));
            }
            Some("msg") => {
                let id = common::id_of(frame);
                if !self.received.insert(id.clone()) {
                    self.duplicates += 1;
                }
                if frame.get("to").is_some() {
                    client.ack(&id);
                }
            }
            _ => self.errors.push(frame.clone()),
        }
    }
}

/// Where a conversation's messages go.
#[derive(Debug, Clone)]
enum To {
    /// Direct messages to the peer.
    User(String),
    /// Room messages to a room both joined.
    Room(String),
}

/// Sends to `to` every `every` until `stop_at`, reading everything in between; then reads
/// until quiet. Acks what it receives, so re-homes replay little.
fn converse(mut client: Client, user: String, to: To, every: Duration, stop_at: Instant) -> Seen {
    let mut seen = Seen {
        user,
        ..Seen::default()
    };
    let mut next = Instant::now();
    let mut n = 0u64;
    let mut last_sent: Option<Instant> = None;
    let mut quiet_since = None::<Instant>;
    loop {
        let now = Instant::now();
        if now < stop_at && now >= next {
            let cid = format!("{}-{n}", seen.user);
            client.send_json(&match &to {
                To::User(peer) => json!({"op":"send","to":peer,"cid":cid,"data":n}),
                To::Room(room) => json!({"op":"publish","room":room,"cid":cid,"data":n}),
            });
            n += 1;
            next += every;
        }
        if now >= stop_at {
            let quiet = *quiet_since.get_or_insert(now);
            if now.duration_since(quiet) > Duration::from_secs(3) || now > stop_at + TIMEOUT {
                return seen;
            }
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(2));
        let frame = match client.next(wait) {
            None => continue,
            Some(Err(end)) => {
                seen.ended = Some(match end {
                    Ending::Close(code, reason) => format!("close {code} {reason}"),
                    other => format!("{other:?}"),
                });
                return seen;
            }
            Some(Ok(m)) => json_of(&m),
        };
        if Instant::now() >= stop_at {
            quiet_since = None;
        }
        seen.take(&frame, &mut client, &mut last_sent);
    }
}

/// SIGKILL of a broker while every user sends at a steady rate: nobody is disconnected, every
/// `sent` message is delivered, and the longest pause between `sent` answers is printed.
#[test]
fn sigkill_of_a_broker_disconnects_nobody_and_loses_nothing() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let mut b1 = start_broker(&redis, "k1");
    let b2 = start_broker(&redis, "k2");
    let names = [b1.addr.to_string(), b2.addr.to_string()];
    let proxy = gateway(&["--brokers", &names.join(",")]);
    wait_for(&proxy, TIMEOUT, "both links up", || {
        proxy.metric_sum(&["hermod_broker_links_up"]) == Some(2.0)
    });
    // Two conversations on each broker: one direct, one in a room.
    let mut pairs = Vec::new();
    for (broker, tag) in [(&names[0], "ka"), (&names[1], "kb")] {
        let users = users_on(broker, &names, tag, 4);
        pairs.push((users[0].clone(), users[1].clone(), None));
        pairs.push((
            users[2].clone(),
            users[3].clone(),
            Some(format!("room-{tag}")),
        ));
    }
    let every = Duration::from_millis(40);
    // Everyone connected and joined before anyone sends.
    let mut ready = Vec::new();
    for (a, b, room) in &pairs {
        for (me, peer) in [(a, b), (b, a)] {
            let mut client = proxy.connect(me);
            let to = match room {
                Some(room) => {
                    client.send_json(&json!({"op":"join","room":room}));
                    client.recv_op("joined");
                    To::Room(room.clone())
                }
                None => To::User(peer.clone()),
            };
            ready.push((client, me.clone(), to));
        }
    }
    let start = Instant::now();
    let stop_at = start + Duration::from_secs(4);
    let threads: Vec<_> = ready
        .into_iter()
        .map(|(client, me, to)| thread::spawn(move || converse(client, me, to, every, stop_at)))
        .collect();
    thread::sleep(Duration::from_millis(1500));
    let killed_at = Instant::now();
    b1.sigkill();
    wait_for(&proxy, TIMEOUT, "the dead link noticed", || {
        proxy.metric_sum(&["hermod_broker_links_up"]) == Some(1.0)
    });
    let noticed = killed_at.elapsed();
    let seen: Vec<Seen> = threads
        .into_iter()
        .map(|t| t.join().expect("user thread"))
        .collect();
    let by_user: HashMap<&str, &Seen> = seen.iter().map(|s| (s.user.as_str(), s)).collect();
    let mut sent_total = 0;
    for (a, b, _) in &pairs {
        for (from, to) in [(a, b), (b, a)] {
            let (from, to) = (by_user[from.as_str()], by_user[to.as_str()]);
            assert_eq!(from.ended, None, "{} was disconnected", from.user);
            let missing: Vec<&String> = from
                .sent
                .iter()
                .filter(|id| !to.received.contains(*id))
                .collect();
            let echoed: Vec<bool> = missing
                .iter()
                .map(|id| from.received.contains(*id))
                .collect();
            assert!(
                missing.is_empty(),
                "{} -> {}: {} of {} sent messages never delivered: {missing:?} (sender got its \
                 own copy: {echoed:?}; position in its sends: {:?}; killed after {:?})\n\
                 gateway log:\n{}",
                from.user,
                to.user,
                missing.len(),
                from.sent.len(),
                missing
                    .iter()
                    .map(|id| from.sent.iter().position(|s| s == *id))
                    .collect::<Vec<_>>(),
                killed_at.duration_since(start),
                proxy.log()
            );
            assert!(
                from.sent.len() >= 50,
                "{}: only {} sent",
                from.user,
                from.sent.len()
            );
            sent_total += from.sent.len();
        }
    }
    let gap = seen.iter().map(|s| s.longest_gap).max().unwrap_or_default();
    let errors: usize = seen.iter().map(|s| s.errors.len()).sum();
    let duplicates: usize = seen.iter().map(|s| s.duplicates).sum();
    eprintln!(
        "broker SIGKILL: {sent_total} messages sent and all delivered, {} users, none \
         disconnected; link loss noticed in {noticed:?}; longest gap between `sent` answers \
         {gap:?} (steady {every:?}); {errors} errors, {duplicates} duplicate deliveries; \
         re-homed sessions: {:?}",
        seen.len(),
        proxy.metric_sum(&["hermod_sessions_rehomed_total"]),
    );
    assert_eq!(
        errors,
        0,
        "{:?}",
        seen.iter().flat_map(|s| &s.errors).collect::<Vec<_>>()
    );
    assert!(
        proxy
            .metric_sum(&["hermod_sessions_rehomed_total"])
            .unwrap_or(0.0)
            >= 4.0,
        "the killed broker's sessions were re-homed"
    );
    drop(b2);
}

/// With `--registry`: a broker started mid-run is linked and given sessions within 5 s; one that
/// is stopped (SIGTERM: it drains and leaves the registry) is dropped, its sessions moved.
#[test]
fn registry_adds_and_drops_brokers() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let b1 = start_broker(&redis, "r1");
    let proxy = gateway(&["--redis", &redis.url(), "--registry"]);
    let m1 = b1.member();
    wait_for(&proxy, TIMEOUT, "r1 linked", || {
        broker_gauge(&proxy, "hermod_broker_link_up", &m1) == Some(1.0)
    });

    let mut b2 = start_broker(&redis, "r2");
    let m2 = b2.member();
    let started = Instant::now();
    wait_for(
        &proxy,
        Duration::from_secs(5),
        "r2 discovered and linked",
        || broker_gauge(&proxy, "hermod_broker_link_up", &m2) == Some(1.0),
    );
    let discovered = started.elapsed();
    // New sessions now land on r2 too: two users the gateway places there talk through it.
    let both = [m1.clone(), m2.clone()];
    let users = users_on(&m2, &both, "reg", 2);
    let mut a = proxy.connect(&users[0]);
    let mut b = proxy.connect(&users[1]);
    let first = a.send_to(&users[1], "r-1", json!("via r2"));
    assert_eq!(common::id_of(&b.recv_op("msg")), first);
    b.ack(&first);
    wait_for(&proxy, TIMEOUT, "2 sessions on r2", || {
        broker_gauge(&proxy, "hermod_broker_link_sessions", &m2).is_some_and(|n| n >= 2.0)
    });
    eprintln!("registry: r2 discovered and linked {discovered:?} after it started");

    // Stopped: r2 drains, the gateway moves its sessions to r1, r2 leaves the registry and exits.
    b2.sigterm();
    wait_for(&proxy, Duration::from_secs(5), "r2 dropped", || {
        broker_gauge(&proxy, "hermod_broker_link_up", &m2).is_none()
    });
    let code = b2.wait_exit(TIMEOUT);
    assert_eq!(
        code,
        Some(0),
        "r2 did not drain cleanly; its log:\n{}",
        b2.log()
    );
    // The moved sessions still work, on r1, without reconnecting. (The re-attach replays the
    // inbox from the device's cursor: at-least-once, so `first` may come again if its ack was
    // not stored yet.)
    let id = send_past_replays(&mut b, &users[0], "r-2", &first);
    assert_eq!(common::id_of(&a.recv_op("msg")), id);
    wait_for(&proxy, TIMEOUT, "the moved sessions on r1", || {
        broker_gauge(&proxy, "hermod_broker_link_sessions", &m1).is_some_and(|n| n >= 2.0)
    });
    assert!(
        proxy
            .metric_sum(&["hermod_sessions_rehomed_total"])
            .unwrap_or(0.0)
            >= 2.0
    );
}

/// `send`s and returns the `sent` id, skipping replays of the message `replayed` (the only
/// other frame allowed before it).
fn send_past_replays(client: &mut Client, to: &str, cid: &str, replayed: &str) -> String {
    client.send_json(&json!({"op":"send","to":to,"cid":cid,"data":"x"}));
    loop {
        let frame = client.recv();
        match frame["op"].as_str() {
            Some("sent") if frame["cid"] == cid => return common::id_of(&frame),
            Some("msg") if frame["id"] == replayed => continue,
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

/// Without any broker the gateway listens but is not ready, and clients stay connected; once a
/// broker is there, their sessions are attached and work.
#[test]
fn sessions_wait_for_a_broker() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let port = hermod_core::testkit::free_port().expect("free port");
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "--auth",
        "none",
        "--link-secret",
        LINK_SECRET,
        "--brokers",
        &addr,
    ];
    let proxy = Proxy::spawn(&args, false);
    assert_eq!(proxy.admin_get("/readyz").0, 503);
    let mut a = proxy.connect("waiter-a");
    let mut b = proxy.connect("waiter-b");
    // A broker appears at the listed address.
    let broker = Command::new(broker_binary())
        .args([
            "--listen",
            &addr,
            "--redis",
            &redis.url(),
            "--node-id",
            "late",
            "--link-secret",
            LINK_SECRET,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hermod-broker");
    let mut broker = KillOnDrop(broker);
    proxy.wait_ready(TIMEOUT);
    let id = a.send_to("waiter-b", "w-1", json!(1));
    assert_eq!(common::id_of(&b.recv_op("msg")), id);
    let _ = broker.0.kill();
}

/// Kills a child on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
