//! Direct messages end to end (docs/protocol.md, "Guarantees"): offline delivery in order, acks, dedupe by
//! `cid`, several devices per user.

mod common;

use common::{engine_tests, Engine};

use common::{id_of, Proxy};
use serde_json::json;

fn offline_user_gets_messages_on_connect_in_order(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut alice = proxy.connect("alice");
    let ids: Vec<String> = (0..5)
        .map(|i| alice.send_to("bob", &format!("c{i}"), json!({"n": i})))
        .collect();

    let mut bob = proxy.connect("bob");
    let msgs = bob.recv_msgs(5);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(id_of(m), ids[i], "message {i} out of order: {m}");
        assert_eq!(m["from"], "alice", "{m}");
        assert_eq!(m["to"], "bob", "{m}");
        assert_eq!(m["data"], json!({"n": i}), "{m}");
        assert!(m["ts"].is_u64(), "ts must be unix milliseconds: {m}");
        assert!(m.get("room").is_none(), "direct message with a room: {m}");
    }

    // Live messages follow the replayed ones.
    let live = alice.send_to("bob", "live", json!("now"));
    let m = bob.recv_op("msg");
    assert_eq!(id_of(&m), live);
    assert_eq!(m["data"], "now");
}

fn ack_then_reconnect_delivers_only_unacked(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut alice = proxy.connect("alice");
    let ids: Vec<String> = (0..5)
        .map(|i| alice.send_to("bob", &format!("c{i}"), json!(i)))
        .collect();

    let mut bob = proxy.connect("bob");
    let got: Vec<String> = bob.recv_msgs(5).iter().map(id_of).collect();
    assert_eq!(got, ids);
    // Ack the first three (cumulative), then make sure the ack has been taken before leaving:
    // acks have no answer, so a round trip after it is the client's only barrier.
    bob.ack(&ids[2]);
    let stray = bob.barrier("barrier-1");
    assert!(stray.is_empty(), "unexpected frames: {stray:?}");
    bob.close();

    let mut bob = proxy.connect("bob");
    let again: Vec<String> = bob.recv_msgs(2).iter().map(id_of).collect();
    assert_eq!(
        again,
        ids[3..].to_vec(),
        "only the unacked messages, in order"
    );
    // Nothing else is pending: the next frame is a new live message.
    let marker = alice.send_to("bob", "marker", json!("m"));
    assert_eq!(id_of(&bob.recv_op("msg")), marker);
}

fn repeated_cid_is_stored_once_with_the_same_id(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut alice = proxy.connect("alice");
    let first = alice.send_to("bob", "dup-1", json!("once"));
    let second = alice.send_to("bob", "dup-1", json!("once"));
    assert_eq!(
        first, second,
        "a retried cid must be answered with the same id"
    );
    // A retry from a new connection (the usual case: the client lost its socket) too.
    alice.close();
    let mut alice = proxy.connect("alice");
    let third = alice.send_to("bob", "dup-1", json!("once"));
    assert_eq!(
        first, third,
        "retry after reconnect must be answered with the same id"
    );
    let other = alice.send_to("bob", "dup-2", json!("next"));
    assert_ne!(first, other);

    let mut bob = proxy.connect("bob");
    let m1 = bob.recv_op("msg");
    assert_eq!(id_of(&m1), first);
    assert_eq!(m1["data"], "once");
    let m2 = bob.recv_op("msg");
    assert_eq!(id_of(&m2), other, "the duplicate was delivered twice: {m2}");
}

fn every_device_of_a_user_gets_every_message(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut phone = proxy.connect_device("bob", "phone");
    let mut laptop = proxy.connect_device("bob", "laptop");
    let mut alice = proxy.connect("alice");
    let ids: Vec<String> = (0..3)
        .map(|i| alice.send_to("bob", &format!("c{i}"), json!(i)))
        .collect();
    for dev in [&mut phone, &mut laptop] {
        let got: Vec<String> = dev.recv_msgs(3).iter().map(id_of).collect();
        assert_eq!(got, ids);
    }
    // Each device has its own cursor: the phone acks everything, the laptop acks nothing.
    phone.ack(&ids[2]);
    let stray = phone.barrier("phone-barrier");
    assert!(stray.is_empty(), "{stray:?}");
    phone.close();
    laptop.close();

    let mut tablet = proxy.connect_device("bob", "tablet");
    let got: Vec<String> = tablet.recv_msgs(3).iter().map(id_of).collect();
    assert_eq!(got, ids, "a new device gets the whole inbox");

    let mut laptop = proxy.connect_device("bob", "laptop");
    let got: Vec<String> = laptop.recv_msgs(3).iter().map(id_of).collect();
    assert_eq!(got, ids, "the laptop's cursor is its own");

    let mut phone = proxy.connect_device("bob", "phone");
    let marker = alice.send_to("bob", "marker", json!("m"));
    let m = phone.recv_op("msg");
    assert_eq!(
        id_of(&m),
        marker,
        "the phone acked everything: only the new one"
    );
}

engine_tests!(
    offline_user_gets_messages_on_connect_in_order,
    ack_then_reconnect_delivers_only_unacked,
    repeated_cid_is_stored_once_with_the_same_id,
    every_device_of_a_user_gets_every_message,
);
