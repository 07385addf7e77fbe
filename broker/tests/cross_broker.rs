//! Cross-broker live fan-out: two brokers on the Redis engine (with `publish`) share one
//! redis-server; sessions attached to one receive live, in order and exactly once, what the
//! other stores, and catch up on what was stored while their broker's subscription was down.
//!
//! Both brokers are driven by hand from the test thread, each on its own mio Poll, so the test
//! decides which broker runs when (e.g. one broker stores while the other is not yet back from
//! a Redis restart).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hermod_broker::redis::ClientId;
use hermod_broker::{Broker, Engine, Limits, RedisEngine, RedisEngineConfig};
use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::redis::{ClientConfig, RedisSockets, Target};
use hermod_core::testkit::RedisServer;
use serde_json::value::RawValue;

/// Longest wait for anything (a loaded 2-core machine can be slow).
const PATIENCE: Duration = Duration::from_secs(20);

/// One broker on its own Poll, with everything it delivered so far.
struct Node {
    broker: Broker<RedisEngine>,
    poll: mio::Poll,
    events: mio::Events,
    /// The engine's Redis sockets.
    sockets: RedisSockets,
    /// Deliveries so far, in order.
    out: Vec<Delivery>,
}

impl Node {
    fn start(server: &RedisServer) -> Node {
        Node::start_with(server, |_| {})
    }

    /// A node whose client settings `adjust` changes.
    fn start_with(server: &RedisServer, adjust: impl FnOnce(&mut ClientConfig)) -> Node {
        let mut client = ClientConfig::new(Target::Direct {
            addr: server.addr(),
        });
        client.command_timeout = Duration::from_secs(2);
        client.connect_timeout = Duration::from_secs(1);
        client.backoff_min = Duration::from_millis(20);
        client.backoff_max = Duration::from_millis(200);
        adjust(&mut client);
        let limits = Limits::default();
        let mut config = RedisEngineConfig::new(client, limits.clone());
        config.publish = true;
        let poll = mio::Poll::new().unwrap();
        let broker = Broker::new(RedisEngine::new(config, Instant::now()), limits);
        let mut node = Node {
            broker,
            poll,
            events: mio::Events::with_capacity(256),
            sockets: RedisSockets::new(1),
            out: Vec::new(),
        };
        node.drive_until("ready", |n| n.broker.engine().is_ready());
        node
    }

    /// One short loop turn.
    fn turn(&mut self) {
        let engine = self.broker.engine_mut();
        let registry = self.poll.registry();
        engine.flush();
        self.sockets.run(engine.core(), registry, Instant::now());
        self.poll
            .poll(&mut self.events, Some(Duration::from_millis(2)))
            .unwrap();
        let now = Instant::now();
        for event in self.events.iter() {
            self.sockets
                .handle_event(engine.core(), self.poll.registry(), event, now);
        }
        engine.handle_tick(now);
        engine.flush();
        self.sockets.run(engine.core(), self.poll.registry(), now);
        self.broker.poll_completions(&mut self.out);
    }

    fn drive_until(&mut self, what: &str, mut done: impl FnMut(&Node) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
            self.turn();
        }
    }

    /// Drives until nothing is in flight.
    fn settle(&mut self) {
        self.drive_until("settled", |n| n.broker.engine().in_flight() == 0);
    }

    fn req(&mut self, req: Request) {
        self.broker.handle(req, unix_ms(), &mut self.out);
        self.settle();
    }

    fn attach(&mut self, session: SessionKey, user: &str) {
        self.req(Request::Attach {
            session,
            user: name(user),
            device: name("d"),
        });
    }

    fn join(&mut self, session: SessionKey, room: &str) {
        self.req(Request::Join {
            session,
            room: name(room),
            since: None,
        });
        assert!(
            self.out
                .iter()
                .any(|d| d.session == session && matches!(d.event, Event::Joined { .. })),
            "not joined: {:?}",
            self.out
        );
    }

    /// Sends without waiting: the `sent` id is collected with [`Node::sent`].
    fn send(&mut self, session: SessionKey, cid: &str, to: &str, data: &str) {
        let req = Request::Send {
            session,
            cid: Cid::parse(cid).unwrap(),
            to: name(to),
            data: RawValue::from_string(data.to_owned()).unwrap(),
        };
        self.broker.handle(req, unix_ms(), &mut self.out);
    }

    fn publish(&mut self, session: SessionKey, cid: &str, room: &str, data: &str) {
        let req = Request::Publish {
            session,
            cid: Cid::parse(cid).unwrap(),
            room: name(room),
            data: RawValue::from_string(data.to_owned()).unwrap(),
        };
        self.broker.handle(req, unix_ms(), &mut self.out);
    }

    /// The ids answered `sent` to `session`, in order.
    fn sent(&self, session: SessionKey) -> Vec<MsgId> {
        self.out
            .iter()
            .filter(|d| d.session == session)
            .filter_map(|d| match &d.event {
                Event::Sent { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// The ids answered `sent` to `session` for cids starting with `prefix`, in order.
    fn sent_for(&self, session: SessionKey, prefix: &str) -> Vec<MsgId> {
        self.out
            .iter()
            .filter(|d| d.session == session)
            .filter_map(|d| match &d.event {
                Event::Sent { cid, id } if cid.as_str().starts_with(prefix) => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// The ids of the messages delivered to `session`, in order.
    fn received(&self, session: SessionKey) -> Vec<MsgId> {
        self.out
            .iter()
            .filter(|d| d.session == session)
            .filter_map(|d| match &d.event {
                Event::Message { id, frame } => {
                    let v: serde_json::Value = serde_json::from_slice(frame).unwrap();
                    assert_eq!(v["id"].as_str(), Some(id.as_str()));
                    Some(id.clone())
                }
                _ => None,
            })
            .collect()
    }

    fn errors(&self) -> Vec<&Delivery> {
        self.out
            .iter()
            .filter(|d| matches!(d.event, Event::Error { .. } | Event::Overflow))
            .collect()
    }
}

/// Drives both nodes until `done`, then a little longer (to let duplicates show).
fn drive_both(a: &mut Node, b: &mut Node, what: &str, mut done: impl FnMut(&Node, &Node) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done(a, b) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}; errors: {:?} {:?}",
            a.errors(),
            b.errors()
        );
        a.turn();
        b.turn();
    }
    let quiet = Instant::now() + Duration::from_millis(300);
    while Instant::now() < quiet {
        a.turn();
        b.turn();
    }
}

fn name(s: &str) -> Name {
    Name::parse("name", s).unwrap()
}

fn key(slot: u32) -> SessionKey {
    SessionKey {
        worker: 0,
        slot,
        generation: 1,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .try_into()
        .unwrap()
}

/// Whether `ids` are strictly increasing in storage order (one epoch).
fn increasing(ids: &[MsgId]) -> bool {
    let parsed: Vec<ClientId> = ids.iter().map(|i| ClientId::parse(i).unwrap()).collect();
    parsed
        .windows(2)
        .all(|w| (w[0].epoch, w[0].stream) < (w[1].epoch, w[1].stream))
}

#[test]
fn a_user_on_broker_b_gets_what_broker_a_stores_in_order_once() {
    let server = RedisServer::start(&[]).unwrap();
    let mut a = Node::start(&server);
    let mut b = Node::start(&server);
    let (alice, carol, bob) = (key(1), key(2), key(3));
    a.attach(alice, "alice");
    b.attach(carol, "carol");
    b.attach(bob, "bob");
    // Interleaved writers on both brokers to bob's inbox.
    for i in 0..20 {
        a.send(alice, &format!("a{i}"), "bob", &i.to_string());
        b.send(carol, &format!("c{i}"), "bob", &i.to_string());
        a.turn();
        b.turn();
    }
    drive_both(&mut a, &mut b, "40 messages to bob", |a, b| {
        a.sent(alice).len() == 20 && b.sent(carol).len() == 20 && b.received(bob).len() >= 40
    });
    let got = b.received(bob);
    let sent: HashSet<MsgId> = a.sent(alice).into_iter().chain(b.sent(carol)).collect();
    assert_eq!(got.len(), 40, "exactly once: {got:?}");
    assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), sent);
    assert!(increasing(&got), "in storage order: {got:?}");
    // A second device of bob on broker A gets the same, live, from now on.
    let bob2 = key(4);
    a.attach(bob2, "bob");
    assert_eq!(a.received(bob2), got, "attach replays the unacked inbox");
    b.send(carol, "late", "bob", "\"late\"");
    drive_both(
        &mut a,
        &mut b,
        "the late message on both devices",
        |a, b| a.received(bob2).len() == 41 && b.received(bob).len() == 41,
    );
    assert_eq!(a.received(bob2), b.received(bob));
    assert!(a.errors().is_empty() && b.errors().is_empty());
}

#[test]
fn room_members_split_across_brokers_get_each_publish_once() {
    let server = RedisServer::start(&[]).unwrap();
    let mut a = Node::start(&server);
    let mut b = Node::start(&server);
    let on_a = [key(1), key(2)];
    let on_b = [key(3), key(4)];
    for (i, s) in on_a.iter().enumerate() {
        a.attach(*s, &format!("ma{i}"));
        a.join(*s, "lobby");
    }
    for (i, s) in on_b.iter().enumerate() {
        b.attach(*s, &format!("mb{i}"));
        b.join(*s, "lobby");
    }
    for i in 0..15 {
        a.publish(on_a[i % 2], &format!("pa{i}"), "lobby", &i.to_string());
        b.publish(on_b[i % 2], &format!("pb{i}"), "lobby", &i.to_string());
        a.turn();
        b.turn();
    }
    let everyone = |a: &Node, b: &Node| {
        on_a.iter().all(|s| a.received(*s).len() >= 30)
            && on_b.iter().all(|s| b.received(*s).len() >= 30)
    };
    drive_both(&mut a, &mut b, "30 publishes to 4 members", everyone);
    let published: HashSet<MsgId> = on_a
        .iter()
        .flat_map(|s| a.sent(*s))
        .chain(on_b.iter().flat_map(|s| b.sent(*s)))
        .collect();
    assert_eq!(published.len(), 30);
    let reference = a.received(on_a[0]);
    assert!(increasing(&reference), "in storage order: {reference:?}");
    assert_eq!(reference.iter().cloned().collect::<HashSet<_>>(), published);
    for s in on_a {
        assert_eq!(a.received(s), reference, "member {s} on A");
    }
    for s in on_b {
        assert_eq!(b.received(s), reference, "member {s} on B");
    }
    assert!(a.errors().is_empty() && b.errors().is_empty());
}

#[test]
fn catch_up_after_a_redis_restart() {
    let mut server =
        RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]).unwrap();
    let mut a = Node::start(&server);
    let mut b = Node::start(&server);
    let (alice, bob, early, late) = (key(1), key(2), key(3), key(4));
    a.attach(alice, "alice");
    // Room history from before anyone on B joined: never to be delivered.
    for i in 0..3 {
        a.publish(alice, &format!("old-h{i}"), "hall", &i.to_string());
        a.publish(alice, &format!("old-d{i}"), "den", &i.to_string());
    }
    a.settle();
    b.attach(bob, "bob");
    b.attach(early, "early");
    b.join(early, "hall");
    b.attach(late, "late");
    b.join(late, "den");
    // bob and `early` have a last id before the outage; `late` (in a quiet room) has none and
    // catches up from the room's tip when B subscribed.
    a.send(alice, "s0", "bob", "0");
    a.publish(alice, "h0", "hall", "0");
    drive_both(&mut a, &mut b, "the first messages", |_, b| {
        b.received(bob).len() == 1 && b.received(early).len() == 1
    });
    assert!(b.received(late).is_empty());

    // Redis restarts; only A is driven until it is back and has stored more: B's subscription
    // is down all that time, so it hears nothing of them.
    server.kill();
    server.restart().unwrap();
    a.drive_until("A reconnected", |n| {
        n.broker.engine().stats().reconnects > 0 && n.broker.engine().is_ready()
    });
    for i in 1..4 {
        let before = a.sent(alice).len();
        a.send(alice, &format!("s{i}"), "bob", &i.to_string());
        a.publish(alice, &format!("h{i}"), "hall", &i.to_string());
        a.publish(alice, &format!("d{i}"), "den", &i.to_string());
        a.drive_until("stored", |n| n.sent(alice).len() == before + 3);
    }
    assert!(b.received(bob).len() == 1, "B has not heard of them");
    // B notices, reconnects, subscribes again and catches up; then live again.
    b.drive_until("B caught up", |n| {
        n.received(bob).len() == 4 && n.received(early).len() == 4 && n.received(late).len() == 3
    });
    a.send(alice, "s9", "bob", "9");
    a.publish(alice, "h9", "hall", "9");
    a.publish(alice, "d9", "den", "9");
    drive_both(&mut a, &mut b, "live after the catch-up", |_, b| {
        b.received(bob).len() == 5 && b.received(early).len() == 5 && b.received(late).len() == 4
    });
    assert_eq!(
        b.received(bob),
        a.sent_for(alice, "s"),
        "bob: every direct message once"
    );
    assert_eq!(
        b.received(early),
        a.sent_for(alice, "h"),
        "early: every room message once"
    );
    assert_eq!(
        b.received(late),
        a.sent_for(alice, "d"),
        "late: the same, nothing older"
    );
    assert!(a.errors().is_empty(), "{:?}", a.errors());
    assert!(b.errors().is_empty(), "{:?}", b.errors());
}

#[test]
fn subscriptions_refused_by_a_full_lane_are_retried() {
    let server = RedisServer::start(&[]).unwrap();
    let mut a = Node::start(&server);
    // At most 3 commands in flight per lane: most of 30 SUBSCRIBEs in one turn are refused.
    let mut b = Node::start_with(&server, |c| c.max_in_flight = 3);
    let (alice, bob) = (key(1), key(2));
    a.attach(alice, "alice");
    b.attach(bob, "bob");
    for i in 0..30 {
        let req = Request::Join {
            session: bob,
            room: name(&format!("r{i}")),
            since: None,
        };
        b.broker.handle(req, unix_ms(), &mut b.out);
    }
    b.drive_until("30 rooms joined", |n| {
        n.out
            .iter()
            .filter(|d| matches!(d.event, Event::Joined { .. }))
            .count()
            == 30
    });
    for i in 0..30 {
        a.publish(alice, &format!("p{i}"), &format!("r{i}"), &i.to_string());
    }
    drive_both(&mut a, &mut b, "a message in each room", |_, b| {
        b.received(bob).len() >= 30
    });
    assert_eq!(b.received(bob).len(), 30);
    assert!(b.errors().is_empty(), "{:?}", b.errors());
}
