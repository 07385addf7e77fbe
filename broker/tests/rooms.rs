//! Rooms: join, publish, leave, `since` and `recovered` (docs/protocol.md).
#![allow(clippy::unwrap_used)] // scenarios shared by both engines are not `#[test]`s

mod common;

use std::time::Duration;

use common::*;
use hermod_broker::Limits;
use hermod_core::bus::Event;
use hermod_core::ids::MsgId;
use hermod_core::protocol::ErrorCode;

fn join_publish_leave(kind: Kind) {
    let mut h = Harness::of(kind);
    let (a, b, c) = (key(1), key(2), key(3));
    h.attach(a, "alice", "default");
    h.attach(b, "bob", "default");
    h.attach(c, "carol", "default");
    assert!(joined(&h.join(a, "lobby", None), a));
    assert!(joined(&h.join(b, "lobby", None), b));
    // the sender too, when joined; carol is not a member but may publish
    let out = h.publish(a, "p1", "lobby", "1");
    sent_id(&out);
    assert_eq!(datas(&out, a), ["1"]);
    assert_eq!(datas(&out, b), ["1"]);
    let out = h.publish(c, "p2", "lobby", "2");
    assert_eq!(datas(&out, a), ["2"]);
    assert!(datas(&out, c).is_empty());
    let m = msgs(&out, b);
    assert_eq!(m[0].1["room"], "lobby");
    assert_eq!(m[0].1["from"], "carol");
    assert!(m[0].1.get("to").is_none());

    let out = h.leave(b, "lobby");
    assert!(
        matches!(&out[..], [d] if matches!(&d.event, Event::Left { room } if room.as_str() == "lobby"))
    );
    assert!(datas(&h.publish(a, "p3", "lobby", "3"), b).is_empty());
    assert_eq!(
        errors(&h.leave(b, "lobby"), b),
        [(None, ErrorCode::NotJoined)]
    );
}

fn join_twice_is_idempotent(kind: Kind) {
    let mut h = Harness::of(kind);
    let a = key(1);
    h.attach(a, "alice", "default");
    assert!(joined(&h.join(a, "r", None), a));
    assert!(joined(&h.join(a, "r", None), a));
    assert_eq!(datas(&h.publish(a, "p", "r", "1"), a), ["1"]);
    h.leave(a, "r");
    assert!(datas(&h.publish(a, "p2", "r", "2"), a).is_empty());
}

fn since_replays_after_the_position_and_recovers(kind: Kind) {
    let mut h = Harness::of(kind);
    let a = key(1);
    h.attach(a, "alice", "default");
    let ids: Vec<MsgId> = (0..4)
        .map(|i| sent_id(&h.publish(a, &format!("p{i}"), "r", &i.to_string())))
        .collect();
    let b = key(2);
    h.attach(b, "bob", "default");
    let out = h.join(b, "r", Some(&ids[1]));
    assert!(joined(&out, b));
    assert_eq!(datas(&out, b), ["2", "3"]);
    // Joined comes first
    assert!(matches!(out[0].event, Event::Joined { .. }));
    // since the newest: recovered, nothing to replay, then live
    let c = key(3);
    h.attach(c, "carol", "default");
    let out = h.join(c, "r", Some(&ids[3]));
    assert!(joined(&out, c));
    assert!(datas(&out, c).is_empty());
    assert_eq!(datas(&h.publish(a, "p9", "r", "9"), c), ["9"]);
}

fn since_before_trimmed_history_is_not_recovered(kind: Kind) {
    let limits = Limits {
        room_max_len: 2,
        ..Limits::default()
    };
    let mut h = Harness::of_with(kind, limits, 5);
    let a = key(1);
    h.attach(a, "alice", "default");
    let ids: Vec<MsgId> = (0..5)
        .map(|i| sent_id(&h.publish(a, &format!("p{i}"), "r", &i.to_string())))
        .collect();
    // kept: 3, 4. The id just before the oldest kept is ids[2]: still covered.
    let out = h.join(a, "r", Some(&ids[2]));
    assert!(joined(&out, a));
    assert_eq!(datas(&out, a), ["3", "4"]);
    let b = key(2);
    h.attach(b, "bob", "default");
    let out = h.join(b, "r", Some(&ids[1]));
    assert!(!joined(&out, b));
    assert_eq!(datas(&out, b), ["3", "4"]);
}

fn since_trimmed_by_age_is_not_recovered(kind: Kind) {
    let limits = Limits {
        room_max_age: Duration::from_secs(5),
        ..Limits::default()
    };
    let mut h = Harness::of_with(kind, limits, 5);
    let a = key(1);
    h.attach(a, "alice", "default");
    let old = sent_id(&h.publish(a, "p0", "r", "0"));
    h.now += 10_000;
    h.publish(a, "p1", "r", "1");
    h.sweep();
    let b = key(2);
    h.attach(b, "bob", "default");
    let before = MsgId::new(format!("{:08x}-0", 5));
    let out = h.join(b, "r", Some(&before));
    assert!(!joined(&out, b));
    assert_eq!(datas(&out, b), ["1"]);
    h.leave(b, "r");
    let out = h.join(b, "r", Some(&old));
    assert!(joined(&out, b), "old is the id just before the oldest kept");
}

fn foreign_or_unparsable_since_is_not_recovered(kind: Kind) {
    let mut h = Harness::of(kind);
    let a = key(1);
    h.attach(a, "alice", "default");
    let id = sent_id(&h.publish(a, "p0", "r", "0"));
    // the same id from a previous process (another epoch; for Redis, another engine's format)
    let mut previous = Harness::with_limits(Limits::default(), 0xdead);
    previous.attach(a, "alice", "default");
    let foreign = sent_id(&previous.publish(a, "p0", "r", "0"));
    assert_ne!(foreign, id);
    for since in [foreign, MsgId::parse("junk").unwrap()] {
        let out = h.join(a, "r", Some(&since));
        assert!(!joined(&out, a), "{since:?}");
        assert_eq!(datas(&out, a), ["0"]);
    }
}

fn detach_leaves_every_room(kind: Kind) {
    let mut h = Harness::of(kind);
    let (a, b) = (key(1), key(2));
    h.attach(a, "alice", "default");
    h.attach(b, "bob", "default");
    h.join(b, "r1", None);
    h.join(b, "r2", None);
    h.detach(b);
    assert!(h.publish(a, "p1", "r1", "1").iter().all(|d| d.session == a));
    assert!(h.publish(a, "p2", "r2", "1").iter().all(|d| d.session == a));
}

fn room_membership_per_session_is_capped(kind: Kind) {
    let mut h = Harness::of(kind);
    let a = key(1);
    h.attach(a, "alice", "default");
    for i in 0..hermod_broker::MAX_ROOMS_PER_SESSION {
        assert!(joined(&h.join(a, &format!("r{i}"), None), a));
    }
    assert_eq!(
        errors(&h.join(a, "one-more", None), a),
        [(None, ErrorCode::Forbidden)]
    );
    // rejoining a room it is in still works
    assert!(joined(&h.join(a, "r0", None), a));
}

on_both_engines!(
    join_publish_leave,
    join_twice_is_idempotent,
    since_replays_after_the_position_and_recovers,
    since_before_trimmed_history_is_not_recovered,
    since_trimmed_by_age_is_not_recovered,
    foreign_or_unparsable_since_is_not_recovered,
    detach_leaves_every_room,
    room_membership_per_session_is_capped,
);
