//! The events stream end to end (`--events-stream`, docs/api.md "Redis stream"): a real
//! `hermod-proxy` on the Redis engine with its own real `redis-server`, real WebSocket clients,
//! and a backend played by `redis-cli` (a client no one here wrote) reading the stream with a
//! consumer group: `XGROUP CREATE`, `XREADGROUP`, `XACK`, `XPENDING`.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Engine, Proxy, TIMEOUT};
use hermod_core::testkit::SentinelSet;
use serde_json::{json, Value};

const KEY: &str = "hermod:events";

/// `redis-cli -p PORT --json ARGS...` (RESP3, JSON output); its answer parsed.
fn cli(port: u16, args: &[&str]) -> Value {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli (install redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}: {text}"))
}

/// The proxy's Redis port.
fn redis_port(proxy: &mut Proxy) -> u16 {
    proxy.redis().expect("the Redis engine").port()
}

/// One stream entry: its id and its fields as a JSON object.
fn entry(v: &Value) -> (String, Value) {
    let id = v[0].as_str().expect("an entry id").to_owned();
    let mut fields = serde_json::Map::new();
    let flat = v[1].as_array().expect("entry fields");
    for pair in flat.chunks(2) {
        let (Some(k), Some(val)) = (pair[0].as_str(), pair.get(1)) else {
            panic!("bad entry {v}");
        };
        fields.insert(k.to_owned(), val.clone());
    }
    (id, Value::Object(fields))
}

/// Every entry of the stream, in order (`XRANGE KEY - +`).
fn stream(port: u16) -> Vec<Value> {
    match cli(port, &["XRANGE", KEY, "-", "+"]) {
        Value::Array(entries) => entries.iter().map(|e| entry(e).1).collect(),
        other => panic!("XRANGE answered {other}"),
    }
}

/// The entries of `stream` once `pred` holds (bounded by `limit`).
fn stream_when(port: u16, limit: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let entries = stream(port);
        if pred(&entries) {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "not there in {limit:?}: {entries:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The (type, room) of `user`'s entries.
fn of_user(entries: &[Value], user: &str) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| e["user"] == user)
        .map(|e| {
            let kind = e["type"].as_str().unwrap_or("?").to_owned();
            (kind, e["room"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

fn seq(e: &Value) -> u64 {
    e["seq"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {e}"))
}

/// The next frame of `op`, skipping others.
fn until_op(client: &mut Client, op: &str) -> Value {
    loop {
        let v = client.recv();
        if v["op"] == op {
            return v;
        }
    }
}

fn metric(proxy: &Proxy, name: &str) -> f64 {
    proxy.metric_sum(&[name]).unwrap_or(-1.0)
}

/// A session's life is in the stream in order, with every field; a consumer group gets every
/// entry once, and after XACK nothing is pending.
#[test]
fn a_session_life_is_in_the_stream_and_a_consumer_group_reads_it() {
    let events = "connect,disconnect,join,leave,publish";
    let flags = ["--events-stream", KEY, "--webhook-events", events];
    let mut proxy = Proxy::start_open_on(Engine::Redis, &flags);
    let port = redis_port(&mut proxy);
    // The backend's group, made before the stream exists (MKSTREAM), from its start (0).
    assert_eq!(
        cli(port, &["XGROUP", "CREATE", KEY, "backend", "0", "MKSTREAM"]),
        json!("OK")
    );

    let mut alice = proxy.connect("alice");
    alice.send_json(&json!({"op":"join","room":"lobby"}));
    alice.recv_op("joined");
    let data = json!({"text": "héllo \"world\" with spaces"});
    alice.send_json(&json!({"op":"publish","room":"lobby","cid":"p1","data":data}));
    // Her own `msg` may come before or after `sent`.
    let sent = until_op(&mut alice, "sent");
    alice.send_json(&json!({"op":"leave","room":"lobby"}));
    until_op(&mut alice, "left");
    alice.close();

    let life = [
        ("connect", ""),
        ("join", "lobby"),
        ("publish", "lobby"),
        ("leave", "lobby"),
        ("disconnect", ""),
    ]
    .map(|(t, r)| (t.to_owned(), r.to_owned()));
    let entries = stream_when(port, TIMEOUT, |e| of_user(e, "alice").len() >= 5);
    assert_eq!(of_user(&entries, "alice"), life, "{entries:?}");
    assert_eq!(entries.len(), 5, "{entries:?}");
    let seqs: Vec<u64> = entries.iter().map(seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    for e in &entries {
        assert_eq!(e["device"], "default", "{e}");
        assert_eq!(e["session"], entries[0]["session"], "one session: {e}");
        let ts: u64 = e["ts"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
        assert!(ts > 1_700_000_000, "{e}");
    }
    assert_eq!(entries[2]["id"], sent["id"], "{:?}", entries[2]);
    let stored: Value = serde_json::from_str(entries[2]["data"].as_str().expect("data"))
        .expect("data is the JSON the client sent");
    assert_eq!(stored, data);
    assert!(entries[4]["code"].as_str().is_some(), "{:?}", entries[4]);

    // The backend: read as consumer `worker-1`, get all five, acknowledge them.
    let read = cli(
        port,
        &[
            "XREADGROUP",
            "GROUP",
            "backend",
            "worker-1",
            "COUNT",
            "100",
            "STREAMS",
            KEY,
            ">",
        ],
    );
    let got: Vec<(String, Value)> = read[KEY]
        .as_array()
        .unwrap_or_else(|| panic!("XREADGROUP answered {read}"))
        .iter()
        .map(entry)
        .collect();
    assert_eq!(
        got.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        entries
    );
    let pending = cli(port, &["XPENDING", KEY, "backend"]);
    assert_eq!(pending[0], 5, "{pending}");
    let mut ack = vec!["XACK", KEY, "backend"];
    ack.extend(got.iter().map(|(id, _)| id.as_str()));
    assert_eq!(cli(port, &ack), json!(5));
    assert_eq!(cli(port, &["XPENDING", KEY, "backend"])[0], 0);
    // Nothing new for the group until the next event.
    let again = [
        "XREADGROUP",
        "GROUP",
        "backend",
        "worker-1",
        "COUNT",
        "100",
        "STREAMS",
        KEY,
        ">",
    ];
    assert_eq!(cli(port, &again), Value::Null);
    proxy.connect("bob").close();
    stream_when(port, TIMEOUT, |e| of_user(e, "bob").len() == 2);
    let next = cli(port, &again);
    let bob: Vec<Value> = next[KEY]
        .as_array()
        .unwrap_or_else(|| panic!("XREADGROUP answered {next}"))
        .iter()
        .map(|e| entry(e).1)
        .collect();
    assert_eq!(of_user(&bob, "bob").len(), 2, "{bob:?}");
    assert_eq!(bob.iter().map(seq).collect::<Vec<_>>(), [6, 7]);
    assert!(metric(&proxy, "hermod_events_stream_appended_total") >= 7.0);
    assert_eq!(metric(&proxy, "hermod_events_stream_dropped_total"), 0.0);
}

/// The slowest `send` -> `sent` of `rounds`, each after a session's connect and close (two
/// more events for the stream).
fn slowest_round_trip(proxy: &Proxy, rounds: usize) -> Duration {
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    let mut slowest = Duration::ZERO;
    for i in 0..rounds {
        proxy.connect(&format!("churn-{i}")).close();
        let start = Instant::now();
        alice.send_to("bob", &format!("c{i}"), json!(i));
        slowest = slowest.max(start.elapsed());
        let msg = bob.recv_op("msg");
        assert_eq!(msg["data"], i, "{msg}");
    }
    alice.close();
    bob.close();
    slowest
}

/// The key holds a string, so every XADD fails (WRONGTYPE) while the engine works: the batch
/// is retried with backoff, the queue of 4 fills and the rest is dropped and counted, and
/// clients exchange messages as usual. Once the key is deleted the held events go in, then
/// new ones, numbered on.
#[test]
fn a_failing_stream_drops_and_counts_while_messages_flow_then_recovers() {
    let flags = ["--events-stream", KEY, "--events-stream-queue", "4"];
    let mut proxy = Proxy::start_open_on(Engine::Redis, &flags);
    let port = redis_port(&mut proxy);
    assert_eq!(cli(port, &["SET", KEY, "not a stream"]), json!("OK"));

    let slowest = slowest_round_trip(&proxy, 30);
    assert!(slowest < Duration::from_secs(1), "slowest {slowest:?}");
    // 64 events: one batch held, four queued, the rest dropped.
    let deadline = Instant::now() + TIMEOUT;
    while metric(&proxy, "hermod_events_stream_dropped_total") < 30.0
        || metric(&proxy, "hermod_events_stream_failures_total") < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "dropped {}, failures {}",
            metric(&proxy, "hermod_events_stream_dropped_total"),
            metric(&proxy, "hermod_events_stream_failures_total")
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&proxy, "hermod_events_stream_appended_total"), 0.0);
    let queued = metric(&proxy, "hermod_events_stream_queue_events");
    assert!((1.0..=104.0).contains(&queued), "queued {queued}");
    // The log line reaches the kept log a moment after the counters move.
    while !proxy.log().contains("WRONGTYPE") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(proxy.log().contains("WRONGTYPE"), "{}", proxy.log());

    // Fixed: what was held is appended at the next retry (the backoff is at most 30 s).
    assert_eq!(cli(port, &["DEL", KEY]), json!(1));
    let entries = stream_when(port, Duration::from_secs(40), |e| !e.is_empty());
    let held = entries.len();
    let seqs: Vec<u64> = entries.iter().map(seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert_eq!(seqs.first(), Some(&1), "{seqs:?}");
    // And new events flow again, at once, numbered after the held ones.
    proxy.connect("after").close();
    let entries = stream_when(port, Duration::from_secs(40), |e| {
        of_user(e, "after").len() == 2
    });
    let after: Vec<u64> = entries
        .iter()
        .filter(|e| e["user"] == "after")
        .map(seq)
        .collect();
    assert!(
        after[0] > seqs[seqs.len() - 1] && after[1] == after[0] + 1,
        "{after:?}"
    );
    assert!(entries.len() >= held + 2);
    let deadline = Instant::now() + TIMEOUT;
    while metric(&proxy, "hermod_events_stream_queue_events") != 0.0 {
        assert!(Instant::now() < deadline, "the queue empties");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Through Sentinel the stream is in the master's Redis, and after a failover (the master
/// SIGKILLed) the events go to the new master.
#[test]
fn through_sentinel_the_stream_follows_a_failover() {
    let mut set = SentinelSet::start("ev", 1, 3).expect("start master, replica, sentinels");
    set.wait_ready(Duration::from_secs(30))
        .expect("sentinels know the replica and each other");
    let sentinels = set.sentinel_addrs().join(",");
    let flags = [
        "--sentinel",
        sentinels.as_str(),
        "--sentinel-master",
        "ev",
        "--events-stream",
        KEY,
    ];
    let proxy = Proxy::start_open(&flags);
    proxy.wait_ready(TIMEOUT);
    let port = set.master.port();
    proxy.connect("before").close();
    stream_when(port, TIMEOUT, |e| of_user(e, "before").len() == 2);

    set.kill_master();
    let old = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(40);
    let new = loop {
        match set.current_master() {
            Some(m) if m != old => break m,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no failover");
        thread::sleep(Duration::from_millis(100));
    };
    let new_port: u16 = new
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port");
    // Sessions come and go while the engine follows; the last one's events get there.
    proxy.wait_ready(Duration::from_secs(40));
    proxy.connect("after").close();
    let entries = stream_when(new_port, Duration::from_secs(40), |e| {
        of_user(e, "after").len() == 2
    });
    let after: Vec<u64> = entries
        .iter()
        .filter(|e| e["user"] == "after")
        .map(seq)
        .collect();
    assert_eq!(after, [3, 4], "{entries:?}");
}

/// `--events-stream` without the Redis engine: exit 2, one line naming the setting.
#[test]
fn the_events_stream_needs_the_redis_engine() {
    let out = Command::new(env!("CARGO_BIN_EXE_hermod-proxy"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--auth", "none", "--events-stream", KEY])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run hermod-proxy");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("events-stream") || line.contains("events_stream"),
        "{line}"
    );
    assert!(line.contains("--redis"), "{line}");
}
