//! Presence and disconnects end to end: who is in a room (client `presence` op and
//! `GET /api/presence`), which devices a user is online from (`GET /api/online`), and
//! `POST /api/disconnect` with and without a ban, on both engines and through the broker tier.

mod common;

use std::time::{Duration, Instant};

use common::broker::{Broker, LINK_SECRET};
use common::{api_call, engine_tests, Client, Engine, Proxy, TIMEOUT};
use hermod_core::testkit::RedisServer;
use hermod_proxy::brokers::placement;
use serde_json::{json, Value};

const KEY: &str = "test-api-key-0123456789";

fn api(proxy: &Proxy, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let addr = proxy.api.expect("an API listener");
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    api_call(addr, method, path, Some(KEY), &body)
}

fn join(c: &mut Client, room: &str) {
    c.send_json(&json!({"op":"join","room":room}));
    assert_eq!(c.recv_op("joined")["room"], room);
}

/// The (user, device) pairs of a presence answer, sorted.
fn members(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["user"].as_str().expect("user").to_owned(),
                m["device"].as_str().expect("device").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(u, d)| ((*u).to_owned(), (*d).to_owned()))
        .collect()
}

/// Polls `GET path` until `check` holds (a leave or a close reaches the broker a moment after
/// the client sees it).
fn eventually(proxy: &Proxy, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, v) = api(proxy, "GET", path, &Value::Null);
        assert_eq!(status, 200, "{path}: {v}");
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} never satisfied: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn presence_follows_joins_leaves_and_closes(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &["--api-listen", "127.0.0.1:0", "--api-key", KEY]);
    let mut alice = proxy.connect_device("alice", "phone");
    let mut bob = proxy.connect_device("bob", "laptop");
    join(&mut alice, "hall");
    join(&mut bob, "hall");
    let all = eventually(&proxy, "/api/presence?room=hall", |v| v["count"] == 2);
    assert_eq!(
        members(&all),
        pairs(&[("alice", "phone"), ("bob", "laptop")])
    );

    alice.send_json(&json!({"op":"presence","room":"hall"}));
    let seen = alice.recv_op("presence");
    assert_eq!(
        (seen["room"].as_str(), seen["count"].as_u64()),
        (Some("hall"), Some(2))
    );
    assert_eq!(members(&seen), members(&all));

    let (_, counted) = api(
        &proxy,
        "GET",
        "/api/presence?room=hall&limit=0",
        &Value::Null,
    );
    assert_eq!(
        (counted["count"].as_u64(), members(&counted)),
        (Some(2), vec![])
    );

    bob.send_json(&json!({"op":"leave","room":"hall"}));
    bob.recv_op("left");
    let after = eventually(&proxy, "/api/presence?room=hall", |v| v["count"] == 1);
    assert_eq!(members(&after), pairs(&[("alice", "phone")]));
    alice.close();
    eventually(&proxy, "/api/presence?room=hall", |v| v["count"] == 0);
}

fn online_and_disconnect_with_a_ban(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &["--api-listen", "127.0.0.1:0", "--api-key", KEY]);
    let mut phone = proxy.connect_device("bob", "phone");
    let mut laptop = proxy.connect_device("bob", "laptop");
    let online = eventually(&proxy, "/api/online?user=bob", |v| {
        v["devices"].as_array().is_some_and(|d| d.len() == 2)
    });
    assert_eq!(online, json!({"user":"bob","devices":["laptop","phone"]}));
    let (_, nobody) = api(&proxy, "GET", "/api/online?user=carol", &Value::Null);
    assert_eq!(nobody, json!({"user":"carol","devices":[]}));

    // One device, with a reason.
    let body = json!({"user":"bob","device":"phone","reason":"token revoked"});
    let (status, answer) = api(&proxy, "POST", "/api/disconnect", &body);
    assert_eq!((status, answer), (200, json!({"disconnected":1})));
    assert_eq!(phone.recv_op("disconnect")["reason"], "token revoked");
    assert_eq!(phone.expect_close(), (4002, "disconnected".to_owned()));
    eventually(&proxy, "/api/online?user=bob", |v| {
        v["devices"] == json!(["laptop"])
    });

    // Every device, and new sessions refused for two seconds; nothing sent meanwhile is lost.
    let body = json!({"user":"bob","reason":"cool down","ban_seconds":2});
    let (status, answer) = api(&proxy, "POST", "/api/disconnect", &body);
    assert_eq!((status, answer), (200, json!({"disconnected":1})));
    assert_eq!(laptop.recv_op("disconnect")["reason"], "cool down");
    assert_eq!(laptop.expect_close().0, 4002);
    let banned_at = Instant::now();
    let (status, sent) = api(
        &proxy,
        "POST",
        "/api/send",
        &json!({"to":"bob","data":"later"}),
    );
    assert_eq!(status, 200, "{sent}");
    let mut again = proxy.connect_device("bob", "laptop");
    assert_eq!(again.recv_op("disconnect")["reason"], "cool down");
    assert_eq!(again.expect_close().0, 4002);
    std::thread::sleep(Duration::from_secs(2).saturating_sub(banned_at.elapsed()));
    let mut back = proxy.connect_device("bob", "laptop");
    let msg = back.recv_op("msg");
    assert_eq!(msg["id"], sent["ids"]["bob"], "{msg}");

    let bad = json!({"user":"bob","ban_seconds":86401});
    assert_eq!(api(&proxy, "POST", "/api/disconnect", &bad).0, 400);
}

engine_tests!(
    presence_follows_joins_leaves_and_closes,
    online_and_disconnect_with_a_ban
);

/// Through a broker tier: a user's sessions are all on the user's broker, and the API's
/// request about that user is placed there too, from any gateway; a room's presence is
/// gathered from every broker.
#[test]
fn presence_online_and_disconnect_work_through_the_broker_tier() {
    let redis = RedisServer::start(&[]).expect("start redis-server");
    let b1 = Broker::start(&redis, "b1", &["--link-secret", LINK_SECRET]);
    let b2 = Broker::start(&redis, "b2", &["--link-secret", LINK_SECRET]);
    let brokers = format!("{},{}", b1.addr, b2.addr);
    let flags = [
        "--auth",
        "none",
        "--link-secret",
        LINK_SECRET,
        "--brokers",
        &brokers,
    ];
    let api_flags = ["--api-listen", "127.0.0.1:0", "--api-key", KEY];
    let with_api: Vec<&str> = flags.iter().chain(&api_flags).copied().collect();
    let gw1 = Proxy::spawn(&with_api, false);
    let gw2 = Proxy::spawn(&flags, false);
    gw1.wait_ready(TIMEOUT);
    gw2.wait_ready(TIMEOUT);
    // Users on each broker (by the gateway's own placement), connected through the other gateway.
    let names = [b1.addr.to_string(), b2.addr.to_string()];
    let on = |broker: &str| {
        (0..200)
            .map(|i| format!("user{i}"))
            .find(|u| {
                placement::pick(u, names.iter().map(|n| (n.as_str(), n.as_str()))) == Some(broker)
            })
            .expect("a user on each broker")
    };
    for broker in &names {
        let user = on(broker);
        let mut c = gw2.connect_device(&user, "tab");
        let (status, online) = api(
            &gw1,
            "GET",
            &format!("/api/online?user={user}"),
            &Value::Null,
        );
        assert_eq!(status, 200, "{online}");
        assert_eq!(
            online["devices"],
            json!(["tab"]),
            "{user} on {broker}: {online}"
        );
        let body = json!({"user": user});
        let (status, answer) = api(&gw1, "POST", "/api/disconnect", &body);
        assert_eq!((status, answer), (200, json!({"disconnected":1})));
        assert_eq!(
            c.recv_op("disconnect")["reason"],
            "disconnected by the server"
        );
        assert_eq!(c.expect_close().0, 4002);
    }
    // Room presence gathers every broker's members: one user on each broker, one of them
    // through each gateway.
    let (u1, u2) = (on(&names[0]), on(&names[1]));
    let mut m1 = gw1.connect_device(&u1, "a");
    let mut m2 = gw2.connect_device(&u2, "b");
    join(&mut m1, "hall");
    join(&mut m2, "hall");
    let all = eventually(&gw1, "/api/presence?room=hall", |v| v["count"] == 2);
    let mut want = vec![(u1.clone(), "a".to_owned()), (u2.clone(), "b".to_owned())];
    want.sort();
    assert_eq!(members(&all), want);
    m2.send_json(&json!({"op":"presence","room":"hall"}));
    let seen = m2.recv_op("presence");
    assert_eq!((seen["count"].as_u64(), members(&seen)), (Some(2), want));
    drop(m1);
    eventually(&gw1, "/api/presence?room=hall", |v| v["count"] == 1);

    // A gateway SIGKILLed: its link closes, its broker detaches its sessions, and the user is
    // no longer online (within the broker's --link-timeout, 5 s, even for a link gone silent;
    // here the kernel closes the sockets, so at once).
    let user = on(&names[0]);
    let path = format!("/api/online?user={user}");
    let _tab = gw2.connect_device(&user, "tab");
    eventually(&gw1, &path, |v| v["devices"] == json!(["tab"]));
    let killed = Instant::now();
    drop(gw2);
    eventually(&gw1, &path, |v| v["devices"] == json!([]));
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
}
