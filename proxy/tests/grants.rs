//! Room permissions, the direct-message policy and token lifetime, end to end: a real
//! `hermod-proxy` (memory and Redis engines, and linked to a real `hermod-broker`) with a
//! `--config` file of namespaces, and blocking WebSocket clients holding tokens minted with
//! grants. The Python `websockets` client's run of the same is `python.rs`.

mod common;

use std::time::Duration;

use common::broker::{wait_for, Broker, LINK_SECRET};
use common::{engine_tests, mint_claims, now_unix, Client, Engine, Proxy, SECRET, TIMEOUT};
use hermod_core::jwt::Claims;
use hermod_core::testkit::RedisServer;
use serde_json::{json, Value};

/// The namespaces of the tests: open channels (members post), announcements (nobody posts),
/// grant-only team rooms, and a server-only namespace; other rooms need a grant.
const NAMESPACES: &str = r#"
[[namespace]]
prefix = "public."
join = "any"
publish = "members"

[[namespace]]
prefix = "public.announce."
join = "any"
publish = "server"

[[namespace]]
prefix = "team."
join = "grant"
publish = "grant"

[[namespace]]
prefix = "ops."
join = "server"
publish = "server"
"#;

/// Writes [`NAMESPACES`] to a file of this test process and returns its path.
fn namespaces_file(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("hermod-grants-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("namespaces.toml");
    std::fs::write(&path, NAMESPACES).expect("write config");
    path.to_string_lossy().into_owned()
}

/// A token for `user` expiring at `exp` with these grants.
fn token(user: &str, exp: u64, rooms: &[&str], publish: &[&str]) -> String {
    let own = |v: &[&str]| v.iter().map(|p| p.to_string()).collect();
    let claims = Claims {
        rooms: own(rooms),
        publish: own(publish),
        ..Claims::new(user, exp)
    };
    mint_claims(SECRET, &claims)
}

fn hour() -> u64 {
    now_unix() + 3600
}

fn join(c: &mut Client, room: &str, since: Option<&str>) -> Value {
    match since {
        Some(since) => c.send_json(&json!({"op":"join","room":room,"since":since})),
        None => c.send_json(&json!({"op":"join","room":room})),
    }
    c.recv()
}

fn publish(c: &mut Client, room: &str, cid: &str) -> Value {
    c.send_json(&json!({"op":"publish","room":room,"cid":cid,"data":cid}));
    c.recv()
}

fn assert_forbidden(v: &Value, cid: Option<&str>, what: &str) {
    assert_eq!(v["op"], "error", "{v}");
    assert_eq!(v["code"], "forbidden", "{v}");
    assert_eq!(v["cid"].as_str(), cid, "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains(what)),
        "{v}"
    );
}

/// Joining (live and with history), publishing: refused without a grant, with the same answer
/// whether the room exists or not; allowed with one; each namespace's policy holds.
fn rooms_follow_grants_and_namespaces(proxy: &Proxy) {
    let mut alice = proxy.connect_token(
        &token("alice", hour(), &["team.1", "*"], &["team.1"]),
        "alice",
        "d",
    );
    let mut bob = proxy.connect_token(&token("bob", hour(), &[], &[]), "bob", "d");
    // Granted: alice joins and publishes; the room now has history.
    assert_eq!(join(&mut alice, "team.1", None)["op"], "joined");
    assert_eq!(publish(&mut alice, "team.1", "a1")["op"], "sent");
    assert_eq!(alice.recv_op("msg")["room"], "team.1");
    // Not granted: the same answer for a room with history and for one that never existed.
    let live = join(&mut bob, "team.1", None);
    assert_forbidden(&live, None, "not allowed to join room `team.1`");
    let history = join(&mut bob, "team.1", Some("0-0"));
    assert_eq!(history, live, "history is refused like live");
    let nowhere = join(&mut bob, "team.999", None);
    assert_eq!(
        nowhere["message"]
            .as_str()
            .map(|m| m.replace("team.999", "team.1")),
        live["message"].as_str().map(str::to_owned),
        "an existing room answers like a missing one"
    );
    assert_forbidden(&publish(&mut bob, "team.1", "b1"), Some("b1"), "`team.1`");
    assert_forbidden(&publish(&mut alice, "team.2", "a2"), Some("a2"), "`team.2`");
    assert_forbidden(&join(&mut bob, "misc", None), None, "`misc`");
    // public.: anyone joins; only members publish.
    assert_forbidden(
        &publish(&mut bob, "public.lobby", "b2"),
        Some("b2"),
        "lobby",
    );
    assert_eq!(join(&mut bob, "public.lobby", Some("0-0"))["op"], "joined");
    assert_eq!(publish(&mut bob, "public.lobby", "b3")["op"], "sent");
    assert_eq!(bob.recv_op("msg")["room"], "public.lobby");
    // public.announce.: readable by all, written by nobody (not even a `*` grant); ops.: closed.
    assert_eq!(join(&mut bob, "public.announce.news", None)["op"], "joined");
    assert_eq!(
        join(&mut alice, "public.announce.news", None)["op"],
        "joined"
    );
    assert_forbidden(
        &publish(&mut alice, "public.announce.news", "a3"),
        Some("a3"),
        "news",
    );
    assert_forbidden(&join(&mut alice, "ops.x", None), None, "`ops.x`");
    // alice's `*` join grant opens unnamed rooms; nothing leaked to bob meanwhile.
    assert_eq!(join(&mut alice, "misc", None)["op"], "joined");
    bob.expect_silence(Duration::from_millis(200));
    assert!(proxy.metric_sum(&["hermod_forbidden_total"]).unwrap_or(0.0) >= 9.0);
}

fn rooms_need_grants_per_namespace(engine: Engine) {
    let config = namespaces_file(&format!("{engine:?}"));
    let proxy = Proxy::start_jwt_on(engine, &["--config", &config]);
    rooms_follow_grants_and_namespaces(&proxy);
}

/// `--auth none` (development only) allows every room, whatever the namespaces say.
fn auth_none_allows_everything(engine: Engine) {
    let config = namespaces_file(&format!("open-{engine:?}"));
    let proxy = Proxy::start_open_on(engine, &["--config", &config]);
    let mut dev = proxy.connect("dev");
    for room in ["ops.x", "team.1", "misc"] {
        assert_eq!(join(&mut dev, room, None)["op"], "joined");
        assert_eq!(publish(&mut dev, room, room)["op"], "sent");
        assert_eq!(dev.recv_op("msg")["room"], room);
    }
}

/// A 4-second token is warned halfway (`expiring`), refreshed over the open connection, and the
/// session carries on past the first token's expiry with nothing lost; a bad refresh before
/// that leaves the old token standing.
fn expiring_token_is_refreshed_and_the_session_continues(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let exp = now_unix() + 4;
    let mut alice = proxy.connect_token(&token("alice", exp, &["r.*"], &["r.*"]), "alice", "d");
    let mut bob = proxy.connect_token(&token("bob", hour(), &[], &[]), "bob", "d");
    let expiring = alice.recv_op("expiring");
    assert_eq!(expiring["exp"], exp, "{expiring}");
    let mallory = token("mallory", hour(), &["*"], &["*"]);
    alice.send_json(&json!({"op":"refresh","token":mallory}));
    assert_forbidden(&alice.recv(), None, "another user");
    let new_exp = hour();
    let fresh = token("alice", new_exp, &["r.*"], &[]);
    alice.send_json(&json!({"op":"refresh","token":fresh}));
    assert_eq!(alice.recv_op("refreshed")["exp"], new_exp);
    // Past the first token's expiry: still open, messages flow, the new grants apply.
    std::thread::sleep(
        Duration::from_secs(exp + 1).saturating_sub(Duration::from_secs(now_unix())),
    );
    let id = bob.send_to("alice", "b1", json!("after the first expiry"));
    let msg = alice.recv_op("msg");
    assert_eq!(msg["id"], id.as_str());
    assert_eq!(join(&mut alice, "r.1", None)["op"], "joined");
    assert_forbidden(&publish(&mut alice, "r.1", "a1"), Some("a1"), "`r.1`");
}

/// A session that does not refresh is closed 4001 at expiry; what was sent to it before and
/// after waits in its inbox, and comes once it reconnects with a new token.
fn expired_session_is_closed_4001_and_resumes_after_reconnecting(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let exp = now_unix() + 3;
    let mut alice = proxy.connect_token(&token("alice", exp, &[], &[]), "alice", "phone");
    let mut bob = proxy.connect_token(&token("bob", hour(), &[], &[]), "bob", "d");
    let before = bob.send_to("alice", "b1", json!("before expiry"));
    assert_eq!(alice.recv_op("msg")["id"], before.as_str());
    assert_eq!(alice.recv_op("expiring")["exp"], exp);
    assert_eq!(alice.expect_close(), (4001, "token expired".to_owned()));
    let after = bob.send_to("alice", "b2", json!("while closed"));
    let mut alice = proxy.connect_token(&token("alice", hour(), &[], &[]), "alice", "phone");
    let got: Vec<Value> = alice.recv_msgs(2);
    assert_eq!(
        common::id_of(&got[0]),
        before,
        "the unacked message is replayed"
    );
    assert_eq!(common::id_of(&got[1]), after);
    assert_eq!(
        proxy.metric_sum(&["hermod_token_expired_closes_total"]),
        Some(1.0)
    );
}

engine_tests!(
    rooms_need_grants_per_namespace,
    auth_none_allows_everything,
    expiring_token_is_refreshed_and_the_session_continues,
    expired_session_is_closed_4001_and_resumes_after_reconnecting,
);

/// The check is at the gateway: the same answers when the rooms live on a `hermod-broker`.
#[test]
fn permissions_hold_through_the_broker_tier() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let broker = Broker::start(&redis, "b1", &["--link-secret", LINK_SECRET]);
    let config = namespaces_file("tier");
    let addr = broker.addr.to_string();
    let args = [
        "--jwt-secret",
        SECRET,
        "--link-secret",
        LINK_SECRET,
        "--brokers",
        &addr,
        "--config",
        &config,
    ];
    let proxy = Proxy::spawn(&args, true);
    wait_for(&proxy, TIMEOUT, "the broker link up", || {
        proxy.metric_sum(&["hermod_broker_links_up"]) == Some(1.0)
    });
    rooms_follow_grants_and_namespaces(&proxy);
}
