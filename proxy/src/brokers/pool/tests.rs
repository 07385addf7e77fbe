//! The broker pool's placement and re-homing, without sockets.

#![allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin

use std::time::{Duration, Instant};

use bytes::Bytes;
use hermod_core::bus::{Event, Request, SessionKey};
use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::protocol::encode_room_msg;
use serde_json::value::RawValue;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

fn n(s: &str) -> Name {
    Name::parse("name", s).unwrap()
}

fn key(slot: u32) -> SessionKey {
    SessionKey {
        worker: 0,
        slot,
        generation: 1,
    }
}

fn attach(slot: u32, user: &str) -> Request {
    Request::Attach {
        session: key(slot),
        user: n(user),
        device: n("d"),
    }
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

/// Everything queued, as (link, request debug text) for commands and (session, event) for
/// deliveries; the probe sessions' commands (room presence, `presence.rs`) are left out.
type Drained = (Vec<(LinkId, String)>, Vec<(SessionKey, Event)>);

fn drain(hub: &mut BrokerPool) -> Drained {
    let mut commands = Vec::new();
    let mut deliveries = Vec::new();
    while let Some(out) = hub.poll_out() {
        match out {
            Out::Command { request, .. } if request.session().worker == PROBE_WORKER => {}
            Out::Command { link, request } => commands.push((link, format!("{request:?}"))),
            Out::Deliver(d) => deliveries.push((d.session, d.event)),
        }
    }
    (commands, deliveries)
}

#[test]
fn room_presence_is_asked_of_every_link_through_its_probe_and_merged() {
    let now = Instant::now();
    let mut hub = BrokerPool::new(Duration::from_secs(5));
    let (a, b) = two_links(&mut hub, now);
    let probes: Vec<(LinkId, String)> = std::iter::from_fn(|| hub.poll_out())
        .filter_map(|out| match out {
            Out::Command { link, request } => Some((link, format!("{request:?}"))),
            Out::Deliver(_) => None,
        })
        .collect();
    assert_eq!(probes.len(), 2, "{probes:?}");
    assert!(
        probes.iter().all(|(_, r)| r.contains("\"presence\"")),
        "{probes:?}"
    );
    hub.on_request(attach(1, "alice"), now);
    drain(&mut hub);
    let cid = Cid::parse("q").expect("a cid");
    let ask = Request::Presence {
        session: key(1),
        cid: cid.clone(),
        room: n("hall"),
        limit: 10,
    };
    hub.on_request(ask, now);
    let mut asked = Vec::new();
    while let Some(Out::Command { link, request }) = hub.poll_out() {
        if let Request::Presence { session, cid, .. } = request {
            asked.push((link, session, cid));
        }
    }
    assert_eq!(asked.len(), 2);
    for (link, session, gather) in asked {
        assert_eq!(session.worker, PROBE_WORKER);
        let member = if link == a { "x" } else { "y" };
        let event = Event::Presence(Box::new(hermod_core::bus::Presence {
            cid: gather,
            room: n("hall"),
            count: 1,
            members: vec![(n(member), n("d"))],
        }));
        hub.on_event(link, session, event);
    }
    let (_, delivered) = drain(&mut hub);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].0, key(1));
    assert!(
        matches!(&delivered[0].1, Event::Presence(p) if p.cid == cid && p.count == 2 && p.members.len() == 2),
        "{delivered:?}"
    );
    let _ = b;
}

fn two_links(hub: &mut BrokerPool, now: Instant) -> (LinkId, LinkId) {
    let a = hub.add_link("a@127.0.0.1:1".into());
    let b = hub.add_link("b@127.0.0.1:2".into());
    hub.link_up(a, now);
    hub.link_up(b, now);
    (a, b)
}

#[test]
fn sessions_of_a_user_share_a_broker_and_users_spread() {
    let now = Instant::now();
    let mut hub = BrokerPool::new(TIMEOUT);
    let (a, b) = two_links(&mut hub, now);
    for i in 0..40 {
        hub.on_request(attach(i, &format!("user{}", i / 2)), now);
    }
    for i in (0..40).step_by(2) {
        assert_eq!(hub.home_of(key(i)), hub.home_of(key(i + 1)));
    }
    assert!(hub.sessions_on(a) > 0 && hub.sessions_on(b) > 0);
    assert_eq!(hub.sessions_on(a) + hub.sessions_on(b), 40);
    let (commands, _) = drain(&mut hub);
    assert_eq!(commands.len(), 40);
    assert!(commands.iter().all(|(_, c)| c.starts_with("Attach")));
}

#[test]
fn no_broker_waits_then_attaches_with_its_requests() {
    let t0 = Instant::now();
    let mut hub = BrokerPool::new(TIMEOUT);
    let a = hub.add_link("a".into());
    hub.on_request(attach(1, "alice"), t0);
    hub.on_request(
        Request::Join {
            session: key(1),
            room: n("lobby"),
            since: None,
        },
        t0,
    );
    hub.on_request(
        Request::Send {
            session: key(1),
            cid: Cid::parse("c1").unwrap(),
            to: n("bob"),
            data: raw("1"),
        },
        t0,
    );
    hub.on_request(
        Request::Leave {
            session: key(1),
            room: n("other"),
        },
        t0,
    );
    let (commands, deliveries) = drain(&mut hub);
    assert!(commands.is_empty());
    assert!(matches!(&deliveries[..], [(_, Event::Left { .. })]));
    assert_eq!(hub.stats().unplaced, 1);

    hub.link_up(a, t0 + Duration::from_secs(1));
    let (commands, _) = drain(&mut hub);
    let text: Vec<&str> = commands.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(text.len(), 3, "{text:#?}");
    assert!(text[0].starts_with("Attach"));
    assert!(text[1].starts_with("Join") && text[1].contains("lobby"));
    assert!(text[2].starts_with("Send") && text[2].contains("c1"));
    assert_eq!(hub.stats().unplaced, 0);
}

/// The scenario the hub exists for: a broker dies, its sessions move with their rooms (from
/// the last id seen) and in-flight requests; the other broker's sessions stay put.
#[test]
fn a_dead_broker_s_sessions_move_with_rooms_and_in_flight() {
    let t0 = Instant::now();
    let mut hub = BrokerPool::new(TIMEOUT);
    let (a, b) = two_links(&mut hub, t0);
    for i in 0..20 {
        hub.on_request(attach(i, &format!("u{i}")), t0);
    }
    let victim = (0..20).find(|i| hub.home_of(key(*i)) == Some(a)).unwrap();
    let bystander = (0..20).find(|i| hub.home_of(key(*i)) == Some(b)).unwrap();
    let s = key(victim);
    hub.on_request(
        Request::Join {
            session: s,
            room: n("lobby"),
            since: None,
        },
        t0,
    );
    for cid in ["p1", "p2"] {
        hub.on_request(
            Request::Publish {
                session: s,
                cid: Cid::parse(cid).unwrap(),
                room: n("lobby"),
                data: raw("\"x\""),
            },
            t0,
        );
    }
    // The broker answers the join and p1, and delivers p1's message.
    hub.on_event(
        hub.home_of(s).unwrap_or(LinkId(u32::MAX)),
        s,
        Event::Joined {
            room: n("lobby"),
            recovered: true,
        },
    );
    hub.on_event(
        hub.home_of(s).unwrap_or(LinkId(u32::MAX)),
        s,
        Event::Sent {
            cid: Cid::parse("p1").unwrap(),
            id: MsgId::new("1-5"),
        },
    );
    let frame = encode_room_msg(&MsgId::new("1-5"), &n("u"), &n("lobby"), &raw("\"x\""), 1);
    hub.on_message(
        hub.home_of(s).unwrap(),
        &MsgId::new("1-5"),
        &Bytes::from(frame),
        &[s, key(999)],
    );
    let (_, deliveries) = drain(&mut hub);
    assert_eq!(
        deliveries.len(),
        3,
        "joined, sent, msg (unknown sid skipped)"
    );

    let on_a = hub.sessions_on(a);
    hub.link_down(a, t0 + Duration::from_secs(1));
    let (commands, _) = drain(&mut hub);
    let mine: Vec<&str> = commands
        .iter()
        .filter(|(_, c)| c.contains(&format!("session: {s:?},")))
        .map(|(_, c)| c.as_str())
        .collect();
    assert!(
        commands.iter().all(|(l, _)| *l == b),
        "nothing goes to the dead link"
    );
    assert_eq!(mine.len(), 3, "{mine:#?}");
    assert!(mine[0].starts_with("Attach"));
    assert!(mine[1].starts_with("Join") && mine[1].contains("Some(\"1-5\")"));
    assert!(mine[2].starts_with("Publish") && mine[2].contains("p2"));
    assert_eq!(hub.home_of(key(bystander)), Some(b));
    assert_eq!(hub.sessions_on(b), 20);
    assert_eq!(hub.stats().rehomed as usize, on_a);

    // The re-join's `joined` is not the client's business.
    hub.on_event(
        hub.home_of(s).unwrap_or(LinkId(u32::MAX)),
        s,
        Event::Joined {
            room: n("lobby"),
            recovered: true,
        },
    );
    assert!(drain(&mut hub).1.is_empty());
}

#[test]
fn draining_detaches_from_the_old_broker_after_the_move() {
    let t0 = Instant::now();
    let mut hub = BrokerPool::new(TIMEOUT);
    let (a, b) = two_links(&mut hub, t0);
    for i in 0..10 {
        hub.on_request(attach(i, &format!("u{i}")), t0);
    }
    let on_a = hub.sessions_on(a);
    drain(&mut hub);
    hub.draining(a, t0);
    assert_eq!(hub.state(a), Some(LinkState::Draining));
    let (commands, _) = drain(&mut hub);
    let attaches = commands
        .iter()
        .filter(|(l, c)| *l == b && c.starts_with("Attach"))
        .count();
    let detaches = commands
        .iter()
        .filter(|(l, c)| *l == a && c.starts_with("Detach"))
        .count();
    assert_eq!((attaches, detaches), (on_a, on_a));
    assert_eq!(hub.sessions_on(a), 0);
    // New sessions avoid the draining broker.
    hub.on_request(attach(50, "newcomer"), t0);
    assert_eq!(hub.home_of(key(50)), Some(b));
}

#[test]
fn the_last_broker_draining_keeps_its_sessions_until_another_comes() {
    let t0 = Instant::now();
    let mut hub = BrokerPool::new(TIMEOUT);
    let a = hub.add_link("a".into());
    hub.link_up(a, t0);
    hub.on_request(attach(1, "alice"), t0);
    drain(&mut hub);
    hub.draining(a, t0);
    assert_eq!(hub.home_of(key(1)), Some(a));
    assert!(drain(&mut hub).0.is_empty());
    let b = hub.add_link("b".into());
    hub.link_up(b, t0);
    assert_eq!(hub.home_of(key(1)), Some(b));
    let (commands, _) = drain(&mut hub);
    let text: Vec<_> = commands.iter().map(|(l, c)| (*l, &c[..6])).collect();
    assert_eq!(text, vec![(b, "Attach"), (a, "Detach")]);
}

#[test]
fn overflow_detaches_and_silences_until_the_worker_detaches() {
    let t0 = Instant::now();
    let mut hub = BrokerPool::new(TIMEOUT);
    let a = hub.add_link("a".into());
    hub.link_up(a, t0);
    hub.on_request(attach(1, "alice"), t0);
    drain(&mut hub);
    assert!(!hub.is_overflowed(key(1)));
    hub.overflowed(key(1));
    assert!(hub.is_overflowed(key(1)));
    let (commands, _) = drain(&mut hub);
    assert_eq!(commands.len(), 1);
    assert!(commands[0].1.starts_with("Detach"));
    hub.on_event(
        hub.home_of(key(1)).unwrap_or(LinkId(u32::MAX)),
        key(1),
        Event::Left { room: n("r") },
    );
    hub.on_request(
        Request::Ack {
            session: key(1),
            id: MsgId::new("1"),
        },
        t0,
    );
    assert!(drain(&mut hub).0.is_empty());
    // The worker's Detach ends it without a second DETACH to the broker.
    hub.on_request(Request::Detach { session: key(1) }, t0);
    let (commands, deliveries) = drain(&mut hub);
    assert!(commands.is_empty() && deliveries.is_empty());
    assert_eq!(hub.stats().sessions, 0);
    assert_eq!(hub.sessions_on(a), 0);
    assert!(!hub.is_overflowed(key(1)));
}

#[test]
fn unknown_sessions_and_refusals_answer_unavailable() {
    let t0 = Instant::now();
    let mut hub = BrokerPool::new(TIMEOUT);
    let a = hub.add_link("a".into());
    hub.link_up(a, t0);
    let send = |slot| Request::Send {
        session: key(slot),
        cid: Cid::parse("c").unwrap(),
        to: n("bob"),
        data: raw("1"),
    };
    hub.on_request(send(7), t0);
    hub.on_request(attach(1, "alice"), t0);
    hub.on_request(send(1), t0);
    hub.command_failed(key(1), &Cid::parse("c").unwrap(), "ERR nope");
    let (_, deliveries) = drain(&mut hub);
    let codes: Vec<_> = deliveries
        .iter()
        .map(|(k, e)| match e {
            Event::Error { code, .. } => (k.slot, *code),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        vec![(7, ErrorCode::Unavailable), (1, ErrorCode::Unavailable)]
    );
    // The refused send is no longer in flight: a re-home does not re-send it.
    hub.link_down(a, t0);
    let b = hub.add_link("b".into());
    hub.link_up(b, t0);
    let (commands, _) = drain(&mut hub);
    assert_eq!(commands.len(), 1, "{commands:?}");
}

#[test]
fn removed_link_moves_its_sessions() {
    let t0 = Instant::now();
    let mut hub = BrokerPool::new(TIMEOUT);
    let (a, b) = two_links(&mut hub, t0);
    for i in 0..10 {
        hub.on_request(attach(i, &format!("u{i}")), t0);
    }
    hub.remove_link(a, t0);
    assert_eq!(hub.state(a), None);
    assert_eq!(hub.sessions_on(b), 10);
    assert_eq!(hub.links_up(), 1);
}

/// When several sessions move at once, every ATTACH/JOIN goes before any re-sent request, so a
/// re-sent publish finds its room-mates joined on the new broker.
#[test]
fn moves_rebuild_everyone_before_re_sending() {
    let t0 = Instant::now();
    let mut hub = BrokerPool::new(TIMEOUT);
    let a = hub.add_link("a".into());
    hub.link_up(a, t0);
    for slot in 0..3 {
        hub.on_request(attach(slot, &format!("u{slot}")), t0);
        hub.on_request(
            Request::Join {
                session: key(slot),
                room: n("room"),
                since: None,
            },
            t0,
        );
        hub.on_request(
            Request::Publish {
                session: key(slot),
                cid: Cid::parse(&format!("c{slot}")).unwrap(),
                room: n("room"),
                data: raw("1"),
            },
            t0,
        );
    }
    drain(&mut hub);
    let b = hub.add_link("b".into());
    hub.link_up(b, t0);
    hub.link_down(a, t0);
    let (commands, _) = drain(&mut hub);
    let kinds: Vec<&str> = commands.iter().map(|(_, c)| &c[..4]).collect();
    assert_eq!(
        kinds,
        ["Atta", "Join", "Atta", "Join", "Atta", "Join", "Publ", "Publ", "Publ"]
    );
}

#[test]
fn a_push_for_a_session_placed_elsewhere_is_dropped_and_counted() {
    let t0 = Instant::now();
    let mut hub = BrokerPool::new(TIMEOUT);
    let a = hub.add_link("a".into());
    let b = hub.add_link("b".into());
    hub.link_up(a, t0);
    hub.link_up(b, t0);
    for i in 0..20 {
        hub.on_request(attach(i, &format!("user{i}")), t0);
    }
    drain(&mut hub);
    let bob = (0..20).find(|i| hub.home_of(key(*i)) == Some(a)).unwrap();
    let other = (0..20).find(|i| hub.home_of(key(*i)) == Some(b)).unwrap();
    let (bob, other) = (key(bob), key(other));
    let sent = || Event::Sent {
        cid: Cid::parse("c1").unwrap(),
        id: MsgId::new("1-1"),
    };
    // Broker b (or whoever can reach the gateway as b) speaks for bob: dropped.
    hub.on_event(b, bob, sent());
    let frame = Bytes::from_static(b"{\"type\":\"msg\",\"id\":\"1-1\"}");
    hub.on_message(b, &MsgId::new("1-1"), &frame, &[bob, other]);
    let (_, deliveries) = drain(&mut hub);
    assert_eq!(deliveries.len(), 1, "only b's own session gets b's message");
    assert_eq!(deliveries[0].0, other);
    assert_eq!(hub.foreign_pushes(), 2);
    // From its own broker, bob gets it.
    hub.on_event(a, bob, sent());
    hub.on_message(a, &MsgId::new("1-1"), &frame, &[bob]);
    let (_, deliveries) = drain(&mut hub);
    assert_eq!(deliveries.len(), 2);
    assert!(deliveries.iter().all(|d| d.0 == bob));
    assert_eq!(hub.foreign_pushes(), 2);
}
