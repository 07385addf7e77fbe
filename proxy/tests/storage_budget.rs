//! The in-memory engine's storage budget (issue 11, item 4), against a real `hermod-proxy`: one
//! authenticated user sends 4,000 messages of about 60 KB to made-up user names (unbounded, the
//! store grew 252 MiB and kept it). With `--memory-budget` and `--memory-per-user` the writes past
//! them answer `unavailable`, the process's memory stays bounded, a well-behaved user's unacked
//! inbox is intact and delivered, and the bytes come back once the made-up inboxes expire.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Proxy, TIMEOUT};
use serde_json::{json, Value};

const BUDGET: u64 = 24 << 20;
const PER_USER: u64 = 8 << 20;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS line")
}

/// How the attack's sends were answered.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    unavailable: usize,
    other: usize,
}

/// Sends `n` messages of `size` bytes of data from `c` to made-up users, 64 in flight at a time,
/// and counts the answers (every one must come).
fn flood(c: &mut Client, tag: &str, n: usize, size: usize) -> Tally {
    let data = "x".repeat(size);
    let mut tally = Tally::default();
    let mut next = 0;
    while next < n {
        let window = (n - next).min(64);
        for i in next..next + window {
            c.send_json(&json!({"op":"send","to":format!("ghost-{tag}-{i}"),"cid":format!("{tag}{i}"),"data":data}));
        }
        for _ in 0..window {
            let v: Value = c.recv();
            match (v["op"].as_str(), v["code"].as_str()) {
                (Some("sent"), _) => tally.sent += 1,
                (Some("error"), Some("unavailable")) => {
                    let text = v["message"].as_str().unwrap_or_default();
                    assert!(text.starts_with("storage full: "), "{v}");
                    tally.unavailable += 1;
                }
                (Some("error"), _) => tally.other += 1,
                _ => panic!("unexpected answer {v}"),
            }
        }
        next += window;
    }
    tally
}

fn metric(proxy: &Proxy, parts: &[&str]) -> f64 {
    proxy.metric_sum(parts).unwrap_or(f64::NAN)
}

#[test]
fn flooding_made_up_inboxes_is_bounded_and_nothing_unacked_is_lost() {
    let budget = BUDGET.to_string();
    let per_user = PER_USER.to_string();
    // The per-session rate limits (on by default: 8 MiB/s) would refuse this flood before the
    // store does; what is tested here is what the store holds, so they are off.
    let proxy = Proxy::start_open(&[
        "--session-rate",
        "0",
        "--memory-budget",
        &budget,
        "--memory-per-user",
        &per_user,
        "--inbox-max-age",
        "20s",
        "--dedupe-window",
        "20s",
    ]);
    assert_eq!(
        metric(&proxy, &["hermod_store_budget_bytes"]),
        BUDGET as f64
    );

    // The well-behaved user: alice leaves bob 20 messages while bob is away.
    let mut alice = proxy.connect("alice");
    let ids: Vec<String> = (0..20)
        .map(|i| {
            alice.send_to(
                "bob",
                &format!("a{i}"),
                json!({"n": i, "pad": "y".repeat(1000)}),
            )
        })
        .collect();
    let rss_before = rss_kib(proxy.pid());

    // The attack: 4,000 messages of 60 KB to made-up names from one user...
    let mut mallory = proxy.connect("mallory");
    let t = flood(&mut mallory, "m", 4000, 60_000);
    assert!(t.unavailable > 3000, "{t:?}");
    let stored_by_one = t.sent as u64 * 60_000;
    assert!(stored_by_one <= PER_USER, "{t:?}");
    assert!(
        metric(&proxy, &["hermod_store_refused_total", "sender_quota"]) >= t.unavailable as f64
    );
    // ...alice is not affected by it...
    alice.send_to("bob", "a-during", json!("after the first flood"));
    // ...and more users together stop at the total budget.
    let mut refused_budget = 0;
    for tag in ["n", "o", "p", "q"] {
        let mut c = proxy.connect(&format!("mallory-{tag}"));
        refused_budget += flood(&mut c, tag, 200, 60_000).unavailable;
    }
    assert!(refused_budget > 0);
    assert!(metric(&proxy, &["hermod_store_refused_total", "budget"]) >= 1.0);
    let held = metric(&proxy, &["hermod_store_bytes"]);
    assert!(
        held <= BUDGET as f64 && held > (BUDGET / 2) as f64,
        "{held}"
    );
    let grown = rss_kib(proxy.pid()).saturating_sub(rss_before);
    // Unbounded, these 4,800 messages held 280 MiB; bounded, the store holds 24 MiB.
    assert!(grown < 96 * 1024, "RSS grew {grown} KiB");

    // Nothing bob has not acked was evicted: all 21 are delivered, in order.
    let mut bob = proxy.connect_device("bob", "phone");
    let got = bob.recv_msgs(21);
    let got_ids: Vec<&str> = got.iter().map(|m| m["id"].as_str().unwrap_or("")).collect();
    assert_eq!(
        &got_ids[..20],
        ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(got[20]["data"], "after the first flood");
    let last = got_ids[20].to_owned();
    bob.ack(&last);

    // Once the made-up inboxes (and the dedupe entries) expire, the sweep gives the bytes back
    // and the flooder may write again.
    let deadline = Instant::now() + Duration::from_secs(20) + 3 * TIMEOUT;
    loop {
        let held = metric(&proxy, &["hermod_store_bytes"]);
        if held < (1 << 20) as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "store still holds {held} bytes");
        thread::sleep(Duration::from_millis(500));
    }
    let again = flood(&mut mallory, "r", 10, 60_000);
    assert_eq!(again.sent, 10, "{again:?}");
    alice.send_to("bob", "a-after", json!("after the sweep"));
    assert_eq!(bob.recv_op("msg")["data"], "after the sweep");
}
