//! The Redis engine's operational promises (issue 3, "What must be shown"), against real
//! `redis-server` processes on ephemeral loopback ports:
//! - a restart (here: a crash, SIGKILL) of `hermod-proxy` loses nothing: unacked inbox messages,
//!   room history and `since` positions, and dedupe, all survive in Redis;
//! - Redis stopped entirely: `unavailable` within the timeout, `/readyz` 503; Redis back: service
//!   resumes without restarting the proxy, and no client was disconnected;
//! - Redis alive but not answering (`CLIENT PAUSE`): `unavailable` after `--redis-timeout`;
//! - a proxy started while Redis is down starts not ready and becomes ready when Redis comes up.

mod common;

use std::time::{Duration, Instant};

use common::{id_of, Client, Proxy, TIMEOUT};
use hermod_core::testkit::{free_port, RedisServer};
use serde_json::{json, Value};

/// AOF with `appendfsync always`: the tests kill Redis with SIGKILL and restart it from its AOF,
/// so every acknowledged write must be on disk (with `everysec` the last second may be lost:
/// Redis's documented trade-off, not what these tests are about).
const AOF_ALWAYS: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

fn redis(args: &[&str]) -> RedisServer {
    RedisServer::start(args).expect("start redis-server")
}

/// Sends `frame` and returns the first answer carrying its `cid` (`sent` or `error`), with the
/// other frames that came before it.
fn request(c: &mut Client, frame: &Value) -> (Value, Vec<Value>) {
    c.send_json(frame);
    let mut others = Vec::new();
    loop {
        let v = c.recv();
        if v["cid"] == frame["cid"] && (v["op"] == "sent" || v["op"] == "error") {
            return (v, others);
        }
        others.push(v);
    }
}

fn send_frame(to: &str, cid: &str) -> Value {
    json!({"op":"send","to":to,"cid":cid,"data":{"cid":cid}})
}

/// Joins `room` (optionally `since`); returns `recovered`.
fn join(c: &mut Client, room: &str, since: Option<&str>) -> bool {
    let mut frame = json!({"op":"join","room":room});
    if let Some(s) = since {
        frame["since"] = json!(s);
    }
    c.send_json(&frame);
    let joined = c.recv_op("joined");
    joined["recovered"]
        .as_bool()
        .unwrap_or_else(|| panic!("joined without recovered: {joined}"))
}

/// Polls `/readyz` until it answers `want`; returns how long that took.
fn wait_readyz(proxy: &Proxy, want: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = proxy.admin_get("/readyz").0;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "/readyz still {got}, not {want}, after {limit:?}; log:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_crashed_proxy_loses_nothing() {
    let server = redis(AOF_ALWAYS);
    let url = server.url();
    let flags = ["--redis", url.as_str()];

    let (inbox, room, first_id) = {
        let proxy = Proxy::start_jwt(&flags);
        proxy.wait_ready(TIMEOUT);
        let mut alice = proxy.connect("alice");
        let inbox: Vec<String> = (0..6)
            .map(|i| alice.send_to("bob", &format!("d{i}"), json!(i)))
            .collect();
        // Bob reads everything but acks only the first two.
        let mut bob = proxy.connect("bob");
        let got: Vec<String> = bob.recv_msgs(6).iter().map(id_of).collect();
        assert_eq!(got, inbox);
        bob.ack(&inbox[1]);
        assert!(bob.barrier("ack-barrier").is_empty());

        let room: Vec<String> = (0..4)
            .map(|i| {
                let frame = json!({"op":"publish","room":"keep","cid":format!("r{i}"),"data":i});
                let (answer, _) = request(&mut alice, &frame);
                assert_eq!(answer["op"], "sent", "{answer}");
                id_of(&answer)
            })
            .collect();
        (inbox[2..].to_vec(), room, inbox[0].clone())
        // The proxy is SIGKILLed here (Proxy's drop): no graceful anything.
    };

    let proxy = Proxy::start_jwt(&flags);
    proxy.wait_ready(TIMEOUT);
    let mut bob = proxy.connect("bob");
    let got: Vec<String> = bob.recv_msgs(inbox.len()).iter().map(id_of).collect();
    assert_eq!(
        got, inbox,
        "the unacked inbox messages, in order, after the restart"
    );

    let mut carol = proxy.connect("carol");
    assert!(
        join(&mut carol, "keep", Some(&room[0])),
        "a `since` from before the restart is still covered"
    );
    let replay: Vec<String> = carol.recv_msgs(3).iter().map(id_of).collect();
    assert_eq!(replay, room[1..].to_vec(), "room history after the restart");

    // Dedupe survives too: the retried cid gets the id of the first time.
    let mut alice = proxy.connect("alice");
    let (answer, _) = request(&mut alice, &send_frame("bob", "d0"));
    assert_eq!(answer["op"], "sent", "{answer}");
    assert_eq!(id_of(&answer), first_id, "dedupe across a proxy restart");
    // Not stored twice: before the next new message bob may see d0 again (the Redis engine
    // re-delivers a duplicate's stored entry, since a first attempt whose answer was lost may
    // never have been fanned out; at-least-once, same id), but never under another id.
    let fresh = alice.send_to("bob", "fresh", json!("new"));
    loop {
        let id = id_of(&bob.recv_op("msg"));
        if id == fresh {
            break;
        }
        assert_eq!(id, first_id, "only d0's own id may come again");
    }
}

#[test]
fn redis_stopped_means_unavailable_and_not_ready_then_service_resumes() {
    let mut server = redis(AOF_ALWAYS);
    let url = server.url();
    let proxy = Proxy::start_jwt(&["--redis", &url, "--redis-timeout", "2"]);
    proxy.wait_ready(TIMEOUT);
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    let before = alice.send_to("bob", "before", json!("before"));
    assert_eq!(id_of(&bob.recv_op("msg")), before);
    let up = proxy.metric_sum(&["hermod_redis_up"]);
    assert_eq!(up, Some(1.0), "hermod_redis_up while Redis runs");
    let trips = proxy.metric_sum(&["hermod_redis_round_trips_total"]);
    assert!(trips.is_some_and(|t| t >= 1.0), "round trips: {trips:?}");

    server.kill();
    let mut unavailable = None;
    let mut took = Duration::ZERO;
    for attempt in 0..3 {
        let started = Instant::now();
        let (answer, _) = request(&mut alice, &send_frame("bob", &format!("down-{attempt}")));
        took = started.elapsed();
        if answer["op"] == "error" {
            unavailable = Some(answer);
            break;
        }
        // Redis may not have noticed yet (the kernel closes the socket as the process dies).
        std::thread::sleep(Duration::from_millis(200));
    }
    let answer = unavailable.expect("a send while Redis is down must be answered unavailable");
    assert_eq!(answer["code"], "unavailable", "{answer}");
    // Generous (a loaded 2-core machine): the point is "an answer, bounded", not a latency.
    assert!(
        took <= Duration::from_secs(7),
        "unavailable took {took:?} with --redis-timeout 2"
    );
    let not_ready = wait_readyz(&proxy, 503, TIMEOUT);
    assert_eq!(proxy.metric_sum(&["hermod_redis_up"]), Some(0.0));
    eprintln!("while down: unavailable after {took:?}, /readyz 503 after {not_ready:?}");

    server.restart().expect("restart redis-server");
    let back = wait_readyz(&proxy, 200, Duration::from_secs(30));
    eprintln!("Redis restarted: /readyz 200 after {back:?}");
    let mut resumed = None;
    for attempt in 0..20 {
        let (answer, _) = request(&mut alice, &send_frame("bob", "after"));
        if answer["op"] == "sent" {
            resumed = Some(id_of(&answer));
            break;
        }
        assert_eq!(answer["code"], "unavailable", "attempt {attempt}: {answer}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let after = resumed.expect("service resumed after Redis came back");
    let m = bob.recv_op("msg");
    assert_eq!(
        id_of(&m),
        after,
        "bob (never disconnected) gets the new message live"
    );

    // Nothing acknowledged was lost: a new device of bob's gets the whole inbox.
    let mut tablet = proxy.connect_device("bob", "tablet");
    let all: Vec<String> = tablet.recv_msgs(2).iter().map(id_of).collect();
    assert_eq!(all, vec![before, after]);
}

#[test]
fn a_paused_redis_means_unavailable_within_the_timeout() {
    let server = redis(&[]);
    let url = server.url();
    let proxy = Proxy::start_jwt(&["--redis", &url, "--redis-timeout", "1"]);
    proxy.wait_ready(TIMEOUT);
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    let before = alice.send_to("bob", "before", json!(1));
    assert_eq!(id_of(&bob.recv_op("msg")), before);

    // CLIENT PAUSE: the connections stay open but no command is answered for 3 s, the case only
    // a timeout catches.
    server
        .command(&["CLIENT", "PAUSE", "3000", "ALL"])
        .expect("CLIENT PAUSE");
    let started = Instant::now();
    let (answer, _) = request(&mut alice, &send_frame("bob", "frozen"));
    let took = started.elapsed();
    assert_eq!(answer["code"], "unavailable", "{answer}");
    eprintln!("paused Redis: unavailable after {took:?} with --redis-timeout 1");
    assert!(
        took <= Duration::from_secs(6),
        "unavailable took {took:?} with --redis-timeout 1"
    );

    // After the pause: the retry is answered, with whatever id the store gave (the frozen attempt may
    // have been applied after all: then dedupe answers its id).
    wait_readyz(&proxy, 200, Duration::from_secs(30));
    let mut id = None;
    for _ in 0..20 {
        let (answer, _) = request(&mut alice, &send_frame("bob", "frozen"));
        if answer["op"] == "sent" {
            id = Some(id_of(&answer));
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let id = id.expect("service resumed after the pause");
    loop {
        if id_of(&bob.recv_op("msg")) == id {
            break;
        }
    }
}

#[test]
fn started_while_redis_is_down_it_becomes_ready_when_redis_comes_up() {
    let port = free_port().expect("free port");
    let url = format!("redis://127.0.0.1:{port}/0");
    let proxy = Proxy::start_jwt(&["--redis", &url, "--redis-timeout", "1"]);
    assert_eq!(proxy.admin_get("/readyz").0, 503, "ready without Redis");
    assert_eq!(proxy.admin_get("/healthz").0, 200);
    let mut alice = proxy.connect("alice");
    let (answer, _) = request(&mut alice, &send_frame("bob", "early"));
    assert_eq!(answer["code"], "unavailable", "{answer}");

    let _server = RedisServer::start_on(port, &[]).expect("redis-server on the chosen port");
    let took = wait_readyz(&proxy, 200, Duration::from_secs(30));
    eprintln!("ready {took:?} after Redis started");
    let mut bob = proxy.connect("bob");
    let (answer, _) = request(&mut alice, &send_frame("bob", "late"));
    assert_eq!(answer["op"], "sent", "{answer}; log:\n{}", proxy.log());
    assert_eq!(bob.recv_op("msg")["id"], answer["id"]);
}
