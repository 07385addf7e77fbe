//! Failover under load (issue 3): a master, two replicas and three sentinels
//! (`down-after-milliseconds 1000`, `failover-timeout 5000`, `min-replicas-to-write 1`), a proxy
//! with `--sentinel ... --durability replica`, and clients in a ring sending direct messages at a
//! steady rate, retrying the same `cid` on `unavailable`. The master is SIGKILLed mid-run.
//!
//! Asserted: no client was disconnected; every send got an answer (`sent`, possibly late, or
//! `unavailable`) within [`ANSWER_DEADLINE`], never silence; every message that got `sent` is
//! delivered to its recipient, exactly once after dedupe by id, and a retried `cid` never
//! produced two messages. Printed: the blackout (longest gap between two `sent` answers), and the
//! counts.
//!
//! Two replicas, not one: after the promotion the new master needs a replica of its own, both
//! for `min-replicas-to-write 1` and for `WAIT 1`; Sentinel re-points the surviving replica at it.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Proxy, TIMEOUT};
use hermod_core::testkit::SentinelSet;
use serde_json::{json, Value};
use tungstenite::Message;

/// Clients in the ring; client i sends to client i+1.
const CLIENTS: usize = 20;
/// Sends per second per client: 200/s in all.
const RATE_PER_CLIENT: u32 = 10;
/// Steady load before the master is killed.
const BEFORE_KILL: Duration = Duration::from_secs(5);
/// Load after the kill.
const AFTER_KILL: Duration = Duration::from_secs(15);
/// A send (or retry) without any answer for this long is "silence": a failure. The proxy's own
/// bound is `--request-timeout` (5 s); the rest is slack for a loaded machine.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);
/// Pause before retrying a `cid` answered `unavailable`.
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// How long the recipients may take to see every confirmed message once sending stopped.
const DRAIN: Duration = Duration::from_secs(15);

/// What one client saw.
#[derive(Default)]
struct Report {
    /// Confirmed sends: (cid, id, when the `sent` arrived, latency from the first attempt).
    sent: Vec<(String, String, Instant, Duration)>,
    /// `unavailable` answers (each followed by a retry of the same cid).
    unavailable: usize,
    /// Other error answers (none expected).
    errors: Vec<Value>,
    /// Sends whose answer never came within the deadline.
    silent: Vec<String>,
    /// Messages received: (id, from, cid).
    received: Vec<(String, String, String)>,
    /// How the connection ended, if it did during the run.
    ended: Option<String>,
}

/// State the client threads share.
struct Shared {
    /// Ids confirmed to each recipient, for the drain check.
    expected: Vec<Mutex<HashSet<String>>>,
    /// Senders still sending or waiting for an answer.
    sending: AtomicUsize,
    /// Set when the run is over (or failed): readers stop.
    stop: AtomicBool,
}

/// One in-flight send.
struct Pending {
    cid: String,
    /// First attempt: latency is measured from here.
    first: Instant,
    /// Last attempt: the answer deadline runs from here.
    last: Instant,
    /// When to retry after an `unavailable` (None while waiting for an answer).
    retry_at: Option<Instant>,
}

fn run_client(
    me: usize,
    mut c: Client,
    shared: &Shared,
    start: Instant,
    stop_sending: Instant,
) -> Report {
    let to = format!("u{}", (me + 1) % CLIENTS);
    let interval = Duration::from_secs(1) / RATE_PER_CLIENT;
    let mut report = Report::default();
    let mut next_due = start + interval.mul_f64(me as f64 / CLIENTS as f64);
    let mut seq = 0usize;
    let mut pending: Option<Pending> = None;
    let mut done_sending = false;
    let mut drain_until = None;
    loop {
        let now = Instant::now();
        if !done_sending && pending.is_none() && now >= stop_sending {
            done_sending = true;
            shared.sending.fetch_sub(1, Ordering::AcqRel);
        }
        if done_sending && drain_until.is_none() && shared.sending.load(Ordering::Acquire) == 0 {
            drain_until = Some(now + DRAIN);
        }
        if shared.stop.load(Ordering::Acquire) || drain_until.is_some_and(|d| now >= d) {
            break;
        }
        if drain_until.is_some() {
            let want = shared.expected[me].lock().expect("lock").clone();
            let got: HashSet<&String> = report.received.iter().map(|r| &r.0).collect();
            if want.iter().all(|id| got.contains(id)) {
                break;
            }
        }
        // Send: a new cid when due, or the retry of an unavailable one.
        if pending.is_none() && !done_sending && now >= next_due && now < stop_sending {
            let cid = format!("u{me}-{seq}");
            seq += 1;
            next_due += interval;
            send(&mut c, &to, &cid);
            pending = Some(Pending {
                cid,
                first: now,
                last: now,
                retry_at: None,
            });
        }
        if let Some(p) = pending.as_mut() {
            if p.retry_at.is_some_and(|t| now >= t) {
                p.retry_at = None;
                p.last = now;
                send(&mut c, &to, &p.cid);
            } else if p.retry_at.is_none() && now.duration_since(p.last) > ANSWER_DEADLINE {
                report.silent.push(p.cid.clone());
                shared.stop.store(true, Ordering::Release);
                break;
            }
        }
        let wait = if done_sending || pending.is_some() {
            Duration::from_millis(20)
        } else {
            next_due
                .saturating_duration_since(now)
                .clamp(Duration::from_millis(1), Duration::from_millis(20))
        };
        match c.next(wait) {
            None => {}
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                on_frame(me, v, &mut pending, &mut report, shared);
            }
            Some(Ok(other)) => panic!("client {me}: unexpected {other:?}"),
            Some(Err(end)) => {
                report.ended = Some(format!("{end:?}"));
                shared.stop.store(true, Ordering::Release);
                break;
            }
        }
    }
    if !done_sending {
        shared.sending.fetch_sub(1, Ordering::AcqRel);
    }
    report
}

fn send(c: &mut Client, to: &str, cid: &str) {
    c.send_json(&json!({"op":"send","to":to,"cid":cid,"data":{"cid":cid}}));
}

fn on_frame(
    me: usize,
    v: Value,
    pending: &mut Option<Pending>,
    report: &mut Report,
    shared: &Shared,
) {
    let now = Instant::now();
    let op = v["op"].as_str().unwrap_or_default();
    let ours = pending.as_ref().is_some_and(|p| v["cid"] == p.cid.as_str());
    match op {
        "msg" => {
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            let from = v["from"].as_str().unwrap_or_default().to_owned();
            let cid = v["data"]["cid"].as_str().unwrap_or_default().to_owned();
            report.received.push((id, from, cid));
        }
        "sent" if ours => {
            if let Some(p) = pending.take() {
                let id = v["id"].as_str().unwrap_or_default().to_owned();
                let recipient = (me + 1) % CLIENTS;
                shared.expected[recipient]
                    .lock()
                    .expect("lock")
                    .insert(id.clone());
                report
                    .sent
                    .push((p.cid, id, now, now.duration_since(p.first)));
            }
        }
        "error" if ours && v["code"] == "unavailable" => {
            report.unavailable += 1;
            if let Some(p) = pending.as_mut() {
                p.retry_at = Some(now + RETRY_AFTER);
            }
        }
        _ => report.errors.push(v),
    }
}

/// The longest gap between consecutive `sent` answers (all clients), and where it started.
fn blackout(reports: &[Report], start: Instant) -> (Duration, Duration) {
    let mut times: Vec<Instant> = reports
        .iter()
        .flat_map(|r| r.sent.iter().map(|s| s.2))
        .collect();
    times.sort();
    times
        .windows(2)
        .map(|w| (w[1].duration_since(w[0]), w[0].duration_since(start)))
        .max()
        .unwrap_or_default()
}

#[test]
fn sigkill_of_the_master_under_load_loses_no_acknowledged_message() {
    let t0 = Instant::now();
    let mut set = SentinelSet::start("m", 2, 3).expect("start master, replicas, sentinels");
    set.wait_ready(Duration::from_secs(30))
        .expect("sentinels know the replicas and each other");
    // As deploy/ ships: a master without a replica in sync refuses writes.
    for node in std::iter::once(&set.master).chain(&set.replicas) {
        for (key, value) in [
            ("min-replicas-to-write", "1"),
            ("min-replicas-max-lag", "10"),
        ] {
            node.command(&["CONFIG", "SET", key, value])
                .expect("CONFIG SET");
        }
    }
    let sentinels = set.sentinel_addrs().join(",");
    let master_name = set.name().to_owned();
    let proxy = Proxy::start_open(&[
        "--sentinel",
        &sentinels,
        "--sentinel-master",
        &master_name,
        "--durability",
        "replica",
        "--redis-timeout",
        "2",
    ]);
    proxy.wait_ready(TIMEOUT);
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|i| proxy.connect(&format!("u{i}")))
        .collect();
    let setup = t0.elapsed();

    let shared = Arc::new(Shared {
        expected: (0..CLIENTS).map(|_| Mutex::new(HashSet::new())).collect(),
        sending: AtomicUsize::new(CLIENTS),
        stop: AtomicBool::new(false),
    });
    let start = Instant::now();
    let stop_sending = start + BEFORE_KILL + AFTER_KILL;
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || run_client(i, c, &shared, start, stop_sending))
        })
        .collect();

    std::thread::sleep(BEFORE_KILL);
    let old = set.master.addr();
    let killed_at = start.elapsed();
    set.kill_master();
    let new_master = wait_new_master(&set, &old, Duration::from_secs(30));
    let switched = start.elapsed();
    let reports: Vec<Report> = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();

    let failovers = proxy.metric_sum(&["hermod_redis_failovers_total"]);
    let (gap, gap_at) = blackout(&reports, start);
    let confirmed: usize = reports.iter().map(|r| r.sent.len()).sum();
    let unavailable: usize = reports.iter().map(|r| r.unavailable).sum();
    let late = reports
        .iter()
        .flat_map(|r| &r.sent)
        .filter(|s| s.3 > Duration::from_secs(1))
        .count();
    let received: usize = reports.iter().map(|r| r.received.len()).sum();
    eprintln!(
        "failover: setup {setup:?}; master {old} SIGKILLed at {killed_at:?}, sentinels named \
         {new_master:?} by {switched:?}; blackout (longest gap between `sent`s) {gap:?} starting \
         at {gap_at:?}; sends confirmed {confirmed}, of which later than 1 s {late}; \
         `unavailable` answers (each retried) {unavailable}; messages received {received}; \
         hermod_redis_failovers_total {failovers:?}; total {:?}",
        t0.elapsed()
    );

    assert!(
        new_master.is_some(),
        "the sentinels never promoted a replica"
    );
    check(&reports, &proxy);
    assert!(
        failovers.is_some_and(|f| f >= 1.0),
        "hermod_redis_failovers_total after a failover: {failovers:?}"
    );
}

/// Waits until the sentinels name a master other than `old`; returns it.
fn wait_new_master(set: &SentinelSet, old: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match set.current_master() {
            Some(m) if m != old => return Some(m),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    None
}

/// The assertions on what the clients saw.
fn check(reports: &[Report], proxy: &Proxy) {
    for (i, r) in reports.iter().enumerate() {
        assert!(
            r.ended.is_none(),
            "client u{i} was disconnected: {:?}; log:\n{}",
            r.ended,
            proxy.log()
        );
        assert!(
            r.silent.is_empty(),
            "client u{i}: no answer for {:?}",
            r.silent
        );
        assert!(
            r.errors.is_empty(),
            "client u{i}: unexpected frames {:?}",
            r.errors
        );
        assert!(!r.sent.is_empty(), "client u{i} never got a `sent`");
    }
    for (i, r) in reports.iter().enumerate() {
        let recipient = &reports[(i + 1) % CLIENTS];
        let from = format!("u{i}");
        // Every id the recipient got from this sender, by cid: a retried cid must not have
        // produced two messages (dedupe), and each id counts once (dedupe by id on the client).
        let mut by_cid: HashMap<&str, HashSet<&str>> = HashMap::new();
        for (id, f, cid) in &recipient.received {
            if *f == from {
                by_cid.entry(cid.as_str()).or_default().insert(id.as_str());
            }
        }
        for (cid, ids) in &by_cid {
            assert_eq!(
                ids.len(),
                1,
                "cid {cid} of {from} stored as several messages: {ids:?}"
            );
        }
        for (cid, id, _, _) in &r.sent {
            let got = by_cid.get(cid.as_str());
            assert!(
                got.is_some_and(|ids| ids.contains(id.as_str())),
                "{from}'s {cid} got `sent` {id} but u{} received {got:?}",
                (i + 1) % CLIENTS
            );
        }
    }
}
