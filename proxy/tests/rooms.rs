//! Rooms end to end (docs/protocol.md): join, publish, leave, and `since` recovery.

mod common;

use common::{engine_tests, Engine};

use std::time::Duration;

use common::{id_of, Client, Proxy};
use serde_json::{json, Value};

/// Joins `room` (optionally `since`) and returns the `joined` answer.
fn join(c: &mut Client, room: &str, since: Option<&str>) -> Value {
    let mut frame = json!({"op":"join","room":room});
    if let Some(s) = since {
        frame["since"] = json!(s);
    }
    c.send_json(&frame);
    let joined = c.recv_op("joined");
    assert_eq!(joined["room"], room, "{joined}");
    assert!(joined["recovered"].is_boolean(), "{joined}");
    joined
}

/// Publishes and returns the id from `sent`, plus the other frames that arrived before it.
fn publish(c: &mut Client, room: &str, cid: &str, data: Value) -> (String, Vec<Value>) {
    c.send_json(&json!({"op":"publish","room":room,"cid":cid,"data":data}));
    let mut others = Vec::new();
    loop {
        let v = c.recv();
        if v["op"] == "sent" && v["cid"] == cid {
            return (id_of(&v), others);
        }
        others.push(v);
    }
}

/// Publishes as a member: returns the id once both `sent` and the sender's own copy arrived.
fn publish_joined(c: &mut Client, room: &str, cid: &str, data: Value) -> String {
    let (id, mut seen) = publish(c, room, cid, data.clone());
    if !seen
        .iter()
        .any(|m| m["op"] == "msg" && m["id"] == id.as_str())
    {
        seen.push(c.recv_op("msg"));
    }
    let own = seen
        .iter()
        .find(|m| m["op"] == "msg" && m["id"] == id.as_str())
        .unwrap_or_else(|| panic!("the joined sender did not get its own message: {seen:?}"));
    assert_eq!(own["room"], room, "{own}");
    assert_eq!(own["data"], data, "{own}");
    id
}

/// Reads room messages until the one with `marker` id; returns the ids before it.
fn ids_until(c: &mut Client, marker: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let m = c.recv_op("msg");
        let id = id_of(&m);
        if id == marker {
            return ids;
        }
        ids.push(id);
    }
}

fn join_publish_leave(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    join(&mut alice, "lobby", None);
    join(&mut bob, "lobby", None);

    let id = publish_joined(&mut alice, "lobby", "p1", json!({"hello": "room"}));
    let m = bob.recv_op("msg");
    assert_eq!(id_of(&m), id);
    assert_eq!(m["from"], "alice", "{m}");
    assert_eq!(m["room"], "lobby", "{m}");
    assert_eq!(m["data"], json!({"hello": "room"}), "{m}");
    assert!(m["ts"].is_u64(), "{m}");
    assert!(m.get("to").is_none(), "room message with a `to`: {m}");

    // A publisher need not be a member; members get it, the publisher only its `sent`.
    let mut carol = proxy.connect("carol");
    let (id3, before) = publish(&mut carol, "lobby", "p-out", json!("from outside"));
    assert!(before.is_empty(), "non-member got {before:?}");
    for member in [&mut alice, &mut bob] {
        assert_eq!(id_of(&member.recv_op("msg")), id3);
    }

    bob.send_json(&json!({"op":"leave","room":"lobby"}));
    let left = bob.recv_op("left");
    assert_eq!(left["room"], "lobby");

    let _ = publish_joined(&mut alice, "lobby", "p2", json!("after leave"));
    // Alice has her own copy, so the fan-out happened; bob's round trip and a quiet spell show
    // nothing reached him.
    let stray = bob.barrier("bob-barrier");
    assert!(stray.is_empty(), "delivered after leave: {stray:?}");
    bob.expect_silence(Duration::from_millis(300));
    carol.expect_silence(Duration::from_millis(100));
}

fn since_replays_the_rest_in_order_with_recovered_true(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut alice = proxy.connect("alice");
    join(&mut alice, "hist", None);
    let ids: Vec<String> = (0..5)
        .map(|i| publish_joined(&mut alice, "hist", &format!("h{i}"), json!(i)))
        .collect();

    let mut carol = proxy.connect("carol");
    let joined = join(&mut carol, "hist", Some(&ids[1]));
    assert_eq!(joined["recovered"], true, "{joined}");
    let replay: Vec<Value> = carol.recv_msgs(3);
    for (m, (i, want)) in replay.iter().zip(ids.iter().enumerate().skip(2)) {
        assert_eq!(&id_of(m), want, "replay out of order: {m}");
        assert_eq!(m["data"], json!(i), "{m}");
        assert_eq!(m["room"], "hist", "{m}");
    }
    // Then live ones.
    let live = publish_joined(&mut alice, "hist", "live", json!("live"));
    assert_eq!(id_of(&carol.recv_op("msg")), live);

    // `since` the newest message: nothing to replay, recovered.
    let mut dave = proxy.connect("dave");
    let joined = join(&mut dave, "hist", Some(&live));
    assert_eq!(joined["recovered"], true, "{joined}");
    let next = publish_joined(&mut alice, "hist", "next", json!("n"));
    assert_eq!(
        id_of(&dave.recv_op("msg")),
        next,
        "nothing before the live one"
    );
}

fn since_older_than_history_is_not_recovered(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &["--room-max-len", "5"]);
    let mut alice = proxy.connect("alice");
    let ids: Vec<String> = (0..8)
        .map(|i| publish(&mut alice, "short", &format!("s{i}"), json!(i)).0)
        .collect();

    let mut carol = proxy.connect("carol");
    let joined = join(&mut carol, "short", Some(&ids[0]));
    assert_eq!(joined["recovered"], false, "history holds 5 of 8: {joined}");
    let marker = publish(&mut alice, "short", "marker", json!("m")).0;
    let got = ids_until(&mut carol, &marker);
    // Whatever was replayed is still in the room's order and from the retained tail.
    let mut expected = ids[3..].iter();
    for id in &got {
        assert!(
            expected.any(|e| e == id),
            "replayed {id} out of order or not retained; got {got:?}, ids {ids:?}"
        );
    }

    // `since` the oldest retained message: everything after it is there.
    let mut dave = proxy.connect("dave");
    let joined = join(&mut dave, "short", Some(&ids[4]));
    assert_eq!(joined["recovered"], true, "{joined}");
    let mut want = ids[5..].to_vec();
    want.push(marker);
    let got: Vec<String> = dave.recv_msgs(want.len()).iter().map(id_of).collect();
    assert_eq!(got, want);
}

fn since_from_another_process_is_not_recovered(engine: Engine) {
    let old_id = {
        let first = Proxy::start_jwt_on(engine, &[]);
        let mut alice = first.connect("alice");
        let _ = publish(&mut alice, "epochs", "e0", json!(0));
        publish(&mut alice, "epochs", "e1", json!(1)).0
    };
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut alice = proxy.connect("alice");
    for i in 0..3 {
        let _ = publish(&mut alice, "epochs", &format!("n{i}"), json!(i));
    }
    let mut carol = proxy.connect("carol");
    let joined = join(&mut carol, "epochs", Some(&old_id));
    assert_eq!(
        joined["recovered"], false,
        "an id from a previous process (its history is gone) must not count as covered: {joined}"
    );
    let marker = publish(&mut alice, "epochs", "marker", json!("m")).0;
    let _ = ids_until(&mut carol, &marker);
}

engine_tests!(
    join_publish_leave,
    since_replays_the_rest_in_order_with_recovered_true,
    since_older_than_history_is_not_recovered,
    since_from_another_process_is_not_recovered,
);
