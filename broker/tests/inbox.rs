//! Direct messages: inboxes, cursors, dedupe, retention (docs/protocol.md).
#![allow(clippy::unwrap_used)] // scenarios shared by both engines are not `#[test]`s

mod common;

use std::time::Duration;

use common::*;
use hermod_broker::{Channel, Limits};
use hermod_core::bus::Event;
use hermod_core::ids::MsgId;
use hermod_core::protocol::ErrorCode;

fn offline_user_gets_messages_on_attach_in_order(kind: Kind) {
    let mut h = Harness::of(kind);
    let alice = key(1);
    h.attach(alice, "alice", "default");
    for i in 0..5 {
        let out = h.send(alice, &format!("c{i}"), "bob", &i.to_string());
        sent_id(&out);
        assert!(msgs(&out, key(2)).is_empty());
    }
    let bob = key(2);
    let out = h.attach(bob, "bob", "default");
    assert_eq!(datas(&out, bob), ["0", "1", "2", "3", "4"]);
    // then live ones
    let out = h.send(alice, "c5", "bob", "5");
    assert_eq!(datas(&out, bob), ["5"]);
}

fn frame_carries_the_spec_fields(kind: Kind) {
    let mut h = Harness::of(kind);
    let alice = key(1);
    let bob = key(2);
    h.attach(alice, "alice", "default");
    h.attach(bob, "bob", "default");
    let out = h.send(alice, "c1", "bob", r#"{"x":[1,2]}"#);
    let id = sent_id(&out);
    let m = msgs(&out, bob);
    assert_eq!(m.len(), 1);
    let v = &m[0].1;
    assert_eq!(v["op"], "msg");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["from"], "alice");
    assert_eq!(v["to"], "bob");
    assert_eq!(v["data"], serde_json::json!({"x": [1, 2]}));
    assert_eq!(v["ts"], h.now);
    // the sender only gets `sent`
    assert!(msgs(&out, alice).is_empty());
}

fn ack_then_reattach_delivers_only_unacked(kind: Kind) {
    let mut h = Harness::of(kind);
    let alice = key(1);
    h.attach(alice, "alice", "default");
    let ids: Vec<MsgId> = (0..4)
        .map(|i| sent_id(&h.send(alice, &format!("c{i}"), "bob", &i.to_string())))
        .collect();
    let bob = key(2);
    assert_eq!(datas(&h.attach(bob, "bob", "phone"), bob).len(), 4);
    assert!(h.ack(bob, &ids[1]).is_empty());
    h.detach(bob);
    let bob2 = key(3);
    assert_eq!(datas(&h.attach(bob2, "bob", "phone"), bob2), ["2", "3"]);
    // the cursor never moves backwards
    h.ack(bob2, &ids[3]);
    h.ack(bob2, &ids[0]);
    h.detach(bob2);
    assert!(datas(&h.attach(key(4), "bob", "phone"), key(4)).is_empty());
}

#[test]
fn ack_beyond_newest_clamps_and_later_messages_still_arrive() {
    let mut h = Harness::new();
    let alice = key(1);
    h.attach(alice, "alice", "default");
    sent_id(&h.send(alice, "c1", "bob", "1"));
    // an id issued later, in another channel: beyond bob's newest
    let later = sent_id(&h.publish(alice, "c2", "room", "2"));
    let bob = key(2);
    h.attach(bob, "bob", "default");
    assert!(h.ack(bob, &later).is_empty());
    h.detach(bob);
    sent_id(&h.send(alice, "c3", "bob", "3"));
    assert_eq!(datas(&h.attach(key(3), "bob", "default"), key(3)), ["3"]);
}

fn unparsable_or_foreign_ack_is_bad_request(kind: Kind) {
    let mut h = Harness::of(kind);
    let bob = key(2);
    h.attach(bob, "bob", "default");
    for bad in ["nonsense", "00001234-x", "00009999-1", "00001234-"] {
        let out = h.ack(bob, &MsgId::parse(bad).unwrap());
        assert_eq!(errors(&out, bob), [(None, ErrorCode::BadRequest)], "{bad}");
    }
}

fn repeated_cid_is_stored_once_with_the_same_id(kind: Kind) {
    let mut h = Harness::of(kind);
    let alice = key(1);
    let bob = key(2);
    h.attach(alice, "alice", "default");
    h.attach(bob, "bob", "default");
    let first = h.send(alice, "same", "bob", "1");
    let again = h.send(alice, "same", "bob", "1");
    assert_eq!(sent_id(&first), sent_id(&again));
    assert_eq!(datas(&first, bob), ["1"]);
    match kind {
        Kind::Memory => assert!(datas(&again, bob).is_empty()),
        // The Redis engine delivers a duplicate again, under the same id (at-least-once): the
        // first attempt may have been applied without its answer, and then nobody delivered it.
        Kind::Redis => assert_eq!(msgs(&again, bob)[0].0, sent_id(&first)),
    }
    assert_eq!(
        h.broker
            .engine()
            .message_count(&Channel::Inbox(name("bob"))),
        1
    );
    // The memory engine has one dedupe space per user, sends and publishes alike; the Redis
    // engine one per user and destination (keys under the channel's hash tag): a retry goes to
    // the same destination, so both store a retried message once.
    let published = sent_id(&h.publish(alice, "same", "r", "1"));
    match kind {
        Kind::Memory => assert_eq!(published, sent_id(&first)),
        Kind::Redis => assert_eq!(sent_id(&h.publish(alice, "same", "r", "1")), published),
    }
    // another user may use the same cid: stored again (ids are unique per channel only, so
    // the Redis engine's may coincide with the first one's, in another inbox)
    let other = sent_id(&h.send(bob, "same", "alice", "1"));
    if kind == Kind::Memory {
        assert_ne!(other, sent_id(&first));
    }
    let alices = Channel::Inbox(name("alice"));
    assert_eq!(h.broker.engine().message_count(&alices), 1);
}

#[test]
fn dedupe_expires_after_the_window() {
    let limits = Limits {
        dedupe_window: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut h = Harness::with_limits(limits, 7);
    let alice = key(1);
    h.attach(alice, "alice", "default");
    let first = sent_id(&h.send(alice, "c", "bob", "1"));
    h.now += 9_999;
    assert_eq!(sent_id(&h.send(alice, "c", "bob", "1")), first);
    h.now += 1;
    h.broker.sweep(h.now);
    assert_eq!(h.broker.engine().dedupe_len(), 0);
    assert_ne!(sent_id(&h.send(alice, "c", "bob", "1")), first);
    assert_eq!(
        h.broker
            .engine()
            .message_count(&Channel::Inbox(name("bob"))),
        2
    );
}

fn two_devices_each_get_every_message_with_independent_cursors(kind: Kind) {
    let mut h = Harness::of(kind);
    let alice = key(1);
    let (phone, laptop) = (key(2), key(3));
    h.attach(alice, "alice", "default");
    h.attach(phone, "bob", "phone");
    h.attach(laptop, "bob", "laptop");
    let mut ids = Vec::new();
    for i in 0..3 {
        let out = h.send(alice, &format!("c{i}"), "bob", &i.to_string());
        ids.push(sent_id(&out));
        assert_eq!(datas(&out, phone), [i.to_string()]);
        assert_eq!(datas(&out, laptop), [i.to_string()]);
    }
    h.ack(phone, &ids[2]);
    h.ack(laptop, &ids[0]);
    h.detach(phone);
    h.detach(laptop);
    assert!(datas(&h.attach(key(4), "bob", "phone"), key(4)).is_empty());
    assert_eq!(
        datas(&h.attach(key(5), "bob", "laptop"), key(5)),
        ["1", "2"]
    );
    // a device never seen before gets everything retained
    assert_eq!(datas(&h.attach(key(6), "bob", "tablet"), key(6)).len(), 3);
}

fn detached_session_gets_nothing_and_unknown_sessions_are_refused(kind: Kind) {
    let mut h = Harness::of(kind);
    let alice = key(1);
    let bob = key(2);
    h.attach(alice, "alice", "default");
    h.attach(bob, "bob", "default");
    h.detach(bob);
    assert!(h
        .send(alice, "c1", "bob", "1")
        .iter()
        .all(|d| d.session == alice));
    let stranger = key(9);
    let out = h.send(stranger, "c1", "bob", "1");
    assert_eq!(
        errors(&out, stranger),
        [(Some(cid("c1")), ErrorCode::BadRequest)]
    );
    assert!(h.ack(stranger, &MsgId::parse("x").unwrap()).is_empty());
    assert!(h.join(stranger, "r", None).is_empty());
    assert_eq!(
        h.broker
            .engine()
            .message_count(&Channel::Inbox(name("bob"))),
        1
    );
}

fn retention_trims_by_length_and_by_age(kind: Kind) {
    let limits = Limits {
        inbox_max_len: 3,
        inbox_max_age: Duration::from_secs(60),
        ..Limits::default()
    };
    let mut h = Harness::of_with(kind, limits, 1);
    let alice = key(1);
    h.attach(alice, "alice", "default");
    for i in 0..5 {
        h.send(alice, &format!("c{i}"), "bob", &i.to_string());
        h.now += 1_000;
    }
    assert_eq!(
        datas(&h.attach(key(2), "bob", "d"), key(2)),
        ["2", "3", "4"]
    );
    h.detach(key(2));
    // c2 was stored at t0+2s, c4 at t0+4s: at t0+63.5s only c4 is younger than 60 s
    h.now += 63_500 - 5_000;
    h.sweep();
    assert_eq!(datas(&h.attach(key(3), "bob", "d"), key(3)), ["4"]);
    h.detach(key(3));
    h.now += 10_000;
    h.sweep();
    assert_eq!(
        h.broker
            .engine()
            .message_count(&Channel::Inbox(name("bob"))),
        0
    );
}

#[test]
fn sweep_drops_empty_unused_channels_only() {
    let limits = Limits {
        inbox_max_age: Duration::from_secs(1),
        room_max_age: Duration::from_secs(1),
        ..Limits::default()
    };
    let mut h = Harness::with_limits(limits, 1);
    let alice = key(1);
    h.attach(alice, "alice", "default");
    h.send(alice, "c1", "bob", "1");
    h.send(alice, "c2", "carol", "1");
    h.publish(alice, "c3", "lobby", "1");
    h.join(alice, "kept", None);
    h.attach(key(2), "carol", "d");
    assert_eq!(h.broker.engine().channel_count(), 4);
    h.now += 2_000;
    h.broker.sweep(h.now);
    // carol is attached and alice is in `kept`; bob's inbox and lobby are gone
    assert_eq!(h.broker.engine().channel_count(), 2);
    assert!(matches!(
        h.send(alice, "c4", "carol", "2")[..],
        [_, ref d] if matches!(d.event, Event::Message { .. })
    ));
}

on_both_engines!(
    offline_user_gets_messages_on_attach_in_order,
    frame_carries_the_spec_fields,
    ack_then_reattach_delivers_only_unacked,
    unparsable_or_foreign_ack_is_bad_request,
    repeated_cid_is_stored_once_with_the_same_id,
    two_devices_each_get_every_message_with_independent_cursors,
    detached_session_gets_nothing_and_unknown_sessions_are_refused,
    retention_trims_by_length_and_by_age,
);
