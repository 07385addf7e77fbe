//! The server API end to end: a real `hermod-proxy` with `--api-listen` and `--api-key`, on
//! both engines and through the broker tier, called over plain HTTP/1.1 sockets, with real
//! WebSocket clients receiving what a backend writes.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use common::broker::{Broker, LINK_SECRET};
use common::{api_call, engine_tests, read_response, tcp, Client, Engine, Proxy, TIMEOUT};
use hermod_core::testkit::RedisServer;
use serde_json::{json, Value};

const KEY: &str = "test-api-key-0123456789";

fn api_flags() -> Vec<&'static str> {
    vec!["--api-listen", "127.0.0.1:0", "--api-key", KEY]
}

fn with_api(engine: Engine) -> Proxy {
    Proxy::start_jwt_on(engine, &api_flags())
}

fn call(proxy: &Proxy, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let addr = proxy.api.expect("the proxy reported its API listener");
    api_call(addr, method, path, Some(KEY), &body.to_string())
}

/// The next message whose id this client has not seen. An engine may deliver a retried
/// write's message again (the Redis engine does: the first attempt may have been stored
/// without anyone delivering it), always with the first id; clients dedupe by id.
fn next_new(c: &mut Client, seen: &mut HashSet<String>) -> Value {
    loop {
        let msg = c.recv_op("msg");
        if seen.insert(msg["id"].as_str().expect("an id").to_owned()) {
            return msg;
        }
    }
}

/// Nothing new arrived: every frame before a barrier is a message already seen.
fn nothing_new(c: &mut Client, seen: &HashSet<String>, cid: &str) {
    for v in c.barrier(cid) {
        assert_eq!(v["op"], "msg", "{v}");
        assert!(
            seen.contains(v["id"].as_str().expect("an id")),
            "a new message: {v}"
        );
    }
}

fn joined(proxy: &Proxy, user: &str, room: &str) -> Client {
    let mut c = proxy.connect(user);
    c.send_json(&json!({"op":"join","room":room}));
    assert_eq!(c.recv_op("joined")["room"], room);
    c
}

/// A backend publishes to a room and sends to users: every member gets the message once,
/// marked as the server's; a retried call with the same idempotency key stores nothing twice.
fn a_backend_publishes_and_sends_exactly_once(engine: Engine) {
    let proxy = with_api(engine);
    let mut bob = joined(&proxy, "bob", "news");
    let (mut bob_seen, mut carol_seen) = (HashSet::new(), HashSet::new());
    let body = json!({"room":"news","data":{"headline":"hi"},"idempotency_key":"k-1"});
    let (status, first) = call(&proxy, "POST", "/api/publish", &body);
    assert_eq!(status, 200, "{first}");
    let (status, again) = call(&proxy, "POST", "/api/publish", &body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        first["id"], again["id"],
        "a retry is answered with the first id"
    );
    let msg = next_new(&mut bob, &mut bob_seen);
    assert_eq!(msg["room"], "news");
    assert_eq!(msg["server"], true, "{msg}");
    assert!(msg.get("from").is_none(), "from the server itself: {msg}");
    assert_eq!(msg["data"], json!({"headline":"hi"}));
    assert_eq!(msg["id"], first["id"]);

    // In alice's name, to two users, one of them offline: the inbox keeps it.
    let body = json!({"to":["bob","carol"],"from":"alice","data":"ping","idempotency_key":"k-2"});
    let (status, sent) = call(&proxy, "POST", "/api/send", &body);
    assert_eq!(status, 200, "{sent}");
    let (_, resent) = call(&proxy, "POST", "/api/send", &body);
    assert_eq!(sent, resent);
    let direct = next_new(&mut bob, &mut bob_seen);
    assert_eq!(direct["from"], "alice", "{direct}");
    assert_eq!(direct["server"], true);
    assert_eq!(direct["to"], "bob");
    assert_eq!(direct["id"], sent["ids"]["bob"]);
    let mut carol = proxy.connect("carol");
    let backlog = next_new(&mut carol, &mut carol_seen);
    assert_eq!(backlog["id"], sent["ids"]["carol"]);
    assert_eq!(backlog["data"], "ping");

    // Broadcast: one message to several rooms.
    carol.send_json(&json!({"op":"join","room":"sport"}));
    carol.recv_op("joined");
    let body = json!({"rooms":["news","sport"],"data":1});
    let (status, ids) = call(&proxy, "POST", "/api/broadcast", &body);
    assert_eq!(status, 200, "{ids}");
    assert_eq!(next_new(&mut bob, &mut bob_seen)["id"], ids["ids"]["news"]);
    assert_eq!(
        next_new(&mut carol, &mut carol_seen)["id"],
        ids["ids"]["sport"]
    );

    // Nothing new arrived: the retries stored nothing.
    nothing_new(&mut bob, &bob_seen, "b1");
    nothing_new(&mut carol, &carol_seen, "c1");
}

/// No key, a wrong key, malformed and oversized bodies, unknown calls: clear JSON errors,
/// counted, and the connection or the next call unharmed.
fn bad_requests_get_clear_errors(engine: Engine) {
    let proxy = with_api(engine);
    let api = proxy.api.expect("an API listener");
    let publish = json!({"room":"r","data":1}).to_string();
    let (status, body) = api_call(api, "POST", "/api/publish", None, &publish);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let wrong = "test-api-key-0123456780";
    let (status, _) = api_call(api, "POST", "/api/publish", Some(wrong), &publish);
    assert_eq!(status, 401);
    let cases: [(&str, &str, String, u16, &str); 6] = [
        ("POST", "/api/publish", "{".to_owned(), 400, "bad_request"),
        (
            "POST",
            "/api/publish",
            r#"{"room":"a b","data":1}"#.to_owned(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/send",
            r#"{"to":"@x","data":1}"#.to_owned(),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/publish",
            String::new(),
            405,
            "method_not_allowed",
        ),
        ("GET", "/api/nothing", String::new(), 404, "not_found"),
        (
            "POST",
            "/api/publish",
            format!(r#"{{"room":"r","data":"{}"}}"#, "x".repeat(70_000)),
            413,
            "too_large",
        ),
    ];
    for (method, path, body, want, code) in cases {
        let (status, answer) = api_call(api, method, path, Some(KEY), &body);
        assert_eq!(status, want, "{method} {path}: {answer}");
        assert_eq!(answer["error"], code, "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A body past the limit is refused before it is read.
    let mut s = tcp(api);
    write!(
        s,
        "POST /api/publish HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 99999999\r\n\r\n"
    )
    .expect("test step");
    assert_eq!(read_response(&mut s, "huge body").0, 413);
    assert_eq!(
        proxy.metric_sum(&["hermod_api_unauthorized_total"]),
        Some(2.0)
    );
    assert!(
        proxy
            .metric_sum(&["hermod_api_refused_total"])
            .expect("test step")
            >= 7.0
    );
    let (status, info) = call(&proxy, "GET", "/api/info", &json!(null));
    assert_eq!(status, 200, "{info}");
}

/// `GET /api/history` pages through a room's history as `join` with `since` sees it.
fn a_backend_reads_room_history(engine: Engine) {
    let proxy = with_api(engine);
    let mut alice = joined(&proxy, "alice", "log");
    alice.send_json(&json!({"op":"publish","room":"log","cid":"c0","data":"from alice"}));
    let first = alice.recv_op("sent")["id"].clone();
    let mut ids = vec![first];
    for i in 1..4 {
        let (status, id) = call(
            &proxy,
            "POST",
            "/api/publish",
            &json!({"room":"log","data":i}),
        );
        assert_eq!(status, 200, "{id}");
        ids.push(id["id"].clone());
    }
    let api = proxy.api.expect("an API listener");
    let get = |query: &str| api_call(api, "GET", &format!("/api/history?{query}"), Some(KEY), "");
    let (status, all) = get("room=log");
    assert_eq!(status, 200, "{all}");
    let got: Vec<&Value> = all["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(got, ids.iter().collect::<Vec<_>>());
    assert_eq!(all["messages"][0]["from"], "alice");
    assert_eq!(all["messages"][1]["server"], true);
    assert_eq!(
        (all["recovered"].clone(), all["more"].clone()),
        (json!(true), json!(false))
    );
    let since = ids[1].as_str().expect("an id");
    let (status, page) = get(&format!("room=log&since={since}&limit=1"));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["messages"][0]["id"], ids[2]);
    assert_eq!(page["more"], true);
    let (status, empty) = get("room=nobody-here");
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["messages"], json!([]));
    let (status, bad) = get("room=log&limit=0");
    assert_eq!((status, bad["error"].as_str()), (400, Some("bad_request")));
}

engine_tests!(
    a_backend_publishes_and_sends_exactly_once,
    bad_requests_get_clear_errors,
    a_backend_reads_room_history
);

/// Pipelined requests on one kept-alive connection are answered in order.
#[test]
fn pipelined_calls_are_answered_in_order() {
    let proxy = with_api(Engine::Memory);
    let mut bob = joined(&proxy, "bob", "r");
    let mut s = tcp(proxy.api.expect("an API listener"));
    let mut batch = String::new();
    for i in 0..5 {
        let body = json!({"room":"r","data":i}).to_string();
        batch.push_str(&format!(
            "POST /api/publish HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    batch.push_str(&format!(
        "GET /api/info HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    ));
    s.write_all(batch.as_bytes()).expect("test step");
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, body) = read_response(&mut s, "pipelined publish");
        assert_eq!(status, 200, "{body}");
        let id: Value = serde_json::from_str(&body).expect("test step");
        let msg = bob.recv_op("msg");
        assert_eq!(msg["data"], i);
        assert_eq!(msg["id"], id["id"]);
        ids.push(id);
    }
    let (status, info) = read_response(&mut s, "pipelined info");
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&info).expect("test step");
    assert_eq!(info["storage"], "memory");
    assert_eq!(info["api"]["sender_sessions"], 1);
}

/// Without a key the API is off; with `--api-listen` but no key the proxy refuses to start.
#[test]
fn the_api_needs_a_key() {
    let proxy = Proxy::start_jwt(&[]);
    assert_eq!(proxy.api, None, "{}", proxy.log());
    // The ready line reaches the kept log a moment after the harness parsed it.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !proxy.log().contains("listening") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(proxy.log().contains(" api=off "), "{}", proxy.log());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hermod-proxy"))
        .args(["--api-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .output()
        .expect("test step");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api_key") || err.contains("api-key"), "{err}");
    let short = std::process::Command::new(env!("CARGO_BIN_EXE_hermod-proxy"))
        .args(["--api-key", "short", "--listen", "127.0.0.1:0"])
        .output()
        .expect("test step");
    assert_eq!(short.status.code(), Some(2));
}

/// Through the broker tier: the API's writes go over the broker links like a client's, and
/// reach users placed on any broker.
#[test]
fn the_api_works_through_the_broker_tier() {
    let redis = RedisServer::start(&[]).expect("start redis-server");
    let b1 = Broker::start(&redis, "b1", &["--link-secret", LINK_SECRET]);
    let b2 = Broker::start(&redis, "b2", &["--link-secret", LINK_SECRET]);
    let brokers = format!("{},{}", b1.addr, b2.addr);
    let mut args = vec![
        "--auth",
        "none",
        "--link-secret",
        LINK_SECRET,
        "--brokers",
        &brokers,
    ];
    args.extend(api_flags());
    let proxy = Proxy::spawn(&args, false);
    proxy.wait_ready(TIMEOUT);
    let mut clients: Vec<Client> = (0..4)
        .map(|i| joined(&proxy, &format!("u{i}"), "hall"))
        .collect();
    let body = json!({"room":"hall","data":"all","idempotency_key":"tier-1"});
    let (status, published) = call(&proxy, "POST", "/api/publish", &body);
    assert_eq!(status, 200, "{published}; log:\n{}", proxy.log());
    let mut seen: Vec<HashSet<String>> = vec![HashSet::new(); clients.len()];
    for (c, seen) in clients.iter_mut().zip(&mut seen) {
        assert_eq!(next_new(c, seen)["id"], published["id"]);
    }
    let users: Vec<String> = (0..4).map(|i| format!("u{i}")).collect();
    let (status, sent) = call(
        &proxy,
        "POST",
        "/api/send",
        &json!({"to":users,"data":"dm"}),
    );
    assert_eq!(status, 200, "{sent}");
    for (i, (c, seen)) in clients.iter_mut().zip(&mut seen).enumerate() {
        let msg = next_new(c, seen);
        assert_eq!(msg["id"], sent["ids"][format!("u{i}")], "{msg}");
        assert_eq!(msg["server"], true);
    }
    let (_, again) = call(&proxy, "POST", "/api/publish", &body);
    assert_eq!(again["id"], published["id"]);
    let api = proxy.api.expect("an API listener");
    let (status, history) = api_call(api, "GET", "/api/history?room=hall", Some(KEY), "");
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"][0]["id"], published["id"], "{history}");
    let (status, info) = call(&proxy, "GET", "/api/info", &json!(null));
    assert_eq!(status, 200);
    assert_eq!(info["brokers"]["up"], 2, "{info}");
    std::thread::sleep(Duration::from_millis(200));
    for (i, (c, seen)) in clients.iter_mut().zip(&seen).enumerate() {
        nothing_new(c, seen, &format!("end{i}"));
    }
}
