//! Webhooks end to end: a real `hermod-proxy` with `--webhook-url`, real WebSocket clients, and
//! a real HTTP receiver no one here wrote (Python's `http.server`, `python/webhook_receiver.py`)
//! that checks every signature with Python's `hmac`, can refuse the first batches with 500 or
//! hang, and records what it accepted.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{http_get, Proxy, TIMEOUT};
use serde_json::{json, Value};

const HOOK_SECRET: &str = "webhook-test-secret-0123456789abcdef";

/// The Python receiver, killed on drop.
struct Receiver {
    child: Child,
    addr: SocketAddr,
}

impl Receiver {
    /// `fail_first` signed batches answered 500, then 200; `hang`: no POST is ever answered.
    fn start(fail_first: u32, hang: bool) -> Receiver {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/webhook_receiver.py"
        );
        let mode = if hang { "hang" } else { "ok" };
        let mut child = Command::new("python3")
            .args([script, HOOK_SECRET, &fail_first.to_string(), mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3 (install Python 3)");
        let stdout = child.stdout.take().expect("the receiver's stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the receiver prints its port");
        let port: u16 = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the receiver said {line:?}"));
        Receiver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// What it recorded: `accepted` (parsed bodies), `refused` (500s), `bad` (signature
    /// refused), `posts`.
    fn state(&self) -> Value {
        let (status, body) = http_get(self.addr, "/state");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("the receiver's state is JSON")
    }

    /// Every accepted event, batch after batch, once `pred` holds (bounded by `limit`).
    fn events_when(&self, limit: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let state = self.state();
            assert_eq!(
                state["bad"], 0,
                "a POST failed the signature check: {state}"
            );
            let events: Vec<Value> = state["accepted"]
                .as_array()
                .expect("accepted")
                .iter()
                .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
                .collect();
            if pred(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "not there in {limit:?}: {state}");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hook_flags(url: &str, extra: &[&str]) -> Proxy {
    let mut args = vec!["--webhook-url", url, "--webhook-secret", HOOK_SECRET];
    args.extend_from_slice(extra);
    Proxy::start_jwt(&args)
}

/// A session's life: connect, join (once joined), leave, close.
fn session_life(proxy: &Proxy, user: &str, room: &str) {
    let mut c = proxy.connect(user);
    c.send_json(&json!({"op":"join","room":room}));
    c.recv_op("joined");
    c.send_json(&json!({"op":"leave","room":room}));
    c.recv_op("left");
    c.close();
}

/// The events of `user`, as (type, room) pairs.
fn of_user(events: &[Value], user: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["user"] == user)
        .map(|e| {
            let kind = e["type"].as_str().unwrap_or("?").to_owned();
            (kind, e["room"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

fn life(room: &str) -> Vec<(String, String)> {
    ["connect", "join", "leave", "disconnect"]
        .iter()
        .map(|t| {
            let r = if t.contains("join") || t.contains("leave") {
                room
            } else {
                ""
            };
            ((*t).to_owned(), r.to_owned())
        })
        .collect()
}

#[test]
fn a_session_life_arrives_signed_and_in_order() {
    let receiver = Receiver::start(0, false);
    let proxy = hook_flags(&receiver.url(), &[]);
    session_life(&proxy, "alice", "lobby");
    let events = receiver.events_when(TIMEOUT, |e| of_user(e, "alice").len() >= 4);
    assert_eq!(of_user(&events, "alice"), life("lobby"), "{events:?}");
    let alice: Vec<&Value> = events.iter().filter(|e| e["user"] == "alice").collect();
    for e in &alice {
        assert_eq!(e["device"], "default", "{e}");
        assert_eq!(e["session"], alice[0]["session"], "one session: {e}");
        assert!(e["ts"].as_u64().is_some_and(|ts| ts > 1_700_000_000), "{e}");
    }
    assert!(
        alice[3]["code"].as_u64().is_some(),
        "a close code: {}",
        alice[3]
    );
    let sent = || proxy.metric_sum(&["hermod_webhook_events_sent_total"]);
    let deadline = Instant::now() + TIMEOUT;
    while sent() < Some(4.0) {
        assert!(Instant::now() < deadline, "events_sent: {:?}", sent());
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        proxy.metric_sum(&["hermod_webhook_events_dropped_total"]),
        Some(0.0)
    );
}

/// With `--webhook-events publish`: every stored publish, with the id its `sent` named and its
/// data as sent; nothing else.
#[test]
fn publishes_arrive_with_their_id_and_data() {
    let receiver = Receiver::start(0, false);
    let proxy = hook_flags(&receiver.url(), &["--webhook-events", "publish"]);
    let mut alice = proxy.connect("alice");
    alice.send_json(&json!({"op":"join","room":"news"}));
    alice.recv_op("joined");
    let mut ids = Vec::new();
    for i in 0..3 {
        let data = json!({"n": i, "text": "héllo \"world\""});
        alice.send_json(&json!({"op":"publish","room":"news","cid":format!("p{i}"),"data":data}));
        loop {
            let v = alice.recv();
            if v["op"] == "sent" {
                ids.push(v["id"].clone());
                break;
            }
        }
    }
    let events = receiver.events_when(TIMEOUT, |e| e.len() >= 3);
    assert_eq!(events.len(), 3, "{events:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["type"], "publish", "{e}");
        assert_eq!(
            (&e["user"], &e["room"]),
            (&json!("alice"), &json!("news")),
            "{e}"
        );
        assert_eq!(e["id"], ids[i], "{e}");
        assert_eq!(e["data"], json!({"n": i, "text": "héllo \"world\""}), "{e}");
    }
    alice.close();
}

/// The receiver answers 500 to the first three batches: they are retried with backoff, and once
/// it answers 200 every event is there, in order, none lost.
#[test]
fn a_failing_receiver_gets_retries_and_loses_nothing() {
    let receiver = Receiver::start(3, false);
    let proxy = hook_flags(&receiver.url(), &["--webhook-batch", "4"]);
    let users = ["u0", "u1", "u2", "u3", "u4", "u5"];
    for user in users {
        session_life(&proxy, user, &format!("room-{user}"));
    }
    let total = users.len() * 4;
    // 0.5 + 1 + 2 s of backoff at most, then the rest in batches of 4.
    let events = receiver.events_when(Duration::from_secs(20), |e| {
        users.iter().all(|u| of_user(e, u).len() >= 4)
    });
    let state = receiver.state();
    assert_eq!(state["refused"], 3, "{state}");
    // At-least-once and in order: by seq, every event from 1 to the last, none missing, and
    // the batches were accepted in seq order.
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let by_seq: BTreeMap<u64, &Value> = events
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap_or(0), e))
        .collect();
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=total as u64).collect::<Vec<_>>()
    );
    for user in users {
        assert_eq!(
            of_user(&events, user),
            life(&format!("room-{user}")),
            "{user}"
        );
    }
    assert!(proxy.metric_sum(&["hermod_webhook_post_failures_total"]) >= Some(3.0));
    assert!(proxy.metric_sum(&["hermod_webhook_posts_total"]) >= Some(4.0));
}

/// Round trips of `send` -> `sent` while a churn of sessions keeps the webhook queue busy; the
/// slowest one.
fn slowest_round_trip(proxy: &Proxy, rounds: usize) -> Duration {
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    let mut slowest = Duration::ZERO;
    for i in 0..rounds {
        // Two more events (connect, disconnect) for the webhook thread to carry.
        proxy.connect(&format!("churn-{i}")).close();
        let start = Instant::now();
        alice.send_to("bob", &format!("c{i}"), json!(i));
        slowest = slowest.max(start.elapsed());
        let msg = bob.recv_op("msg");
        assert_eq!(msg["data"], i, "{msg}");
    }
    slowest
}

/// A receiver that never answers, and one whose port is closed: messages flow as fast as
/// ever. Were a worker to wait on a POST, a round trip would take the 5 s POST timeout.
#[test]
fn a_hanging_or_dead_receiver_does_not_slow_delivery() {
    let hanging = Receiver::start(0, true);
    let flags = ["--webhook-timeout", "5s", "--webhook-queue", "2"];
    let proxy = hook_flags(&hanging.url(), &flags);
    let slowest = slowest_round_trip(&proxy, 40);
    assert!(
        slowest < Duration::from_secs(1),
        "hanging receiver: {slowest:?}"
    );
    assert!(
        hanging.state()["posts"].as_u64() >= Some(1),
        "a POST was made"
    );
    assert_eq!(
        proxy.metric_sum(&["hermod_webhook_events_sent_total"]),
        Some(0.0)
    );

    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    let proxy = hook_flags(&dead, &[]);
    let slowest = slowest_round_trip(&proxy, 40);
    assert!(
        slowest < Duration::from_secs(1),
        "dead receiver: {slowest:?}"
    );
    assert!(proxy.metric_sum(&["hermod_webhook_post_failures_total"]) >= Some(1.0));
}

/// With the receiver down and a queue of 4, the events past it are dropped and counted, and
/// the gauge shows what waits (the queue and the one-event batch being retried).
#[test]
fn a_full_queue_drops_and_counts() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    let proxy = hook_flags(&dead, &["--webhook-queue", "4", "--webhook-batch", "1"]);
    for i in 0..20 {
        proxy.connect(&format!("user-{i}")).close();
    }
    // 40 events: at most 5 are held (one batch, four queued); the disconnect of the last session
    // may still be on its way.
    let dropped = || proxy.metric_sum(&["hermod_webhook_events_dropped_total"]);
    let queued = || proxy.metric_sum(&["hermod_webhook_queue_events"]);
    let deadline = Instant::now() + TIMEOUT;
    while dropped() < Some(35.0) || queued() != Some(5.0) {
        assert!(
            Instant::now() < deadline,
            "dropped {:?}, queued {:?}",
            dropped(),
            queued()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        proxy.metric_sum(&["hermod_webhook_events_sent_total"]),
        Some(0.0)
    );
}
