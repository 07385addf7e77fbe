//! Against the real `hermod-proxy`: a `direct` run loses nothing, also when the proxy closes
//! slow consumers (the loadgen reconnects them), and 25,000 connections are held from one
//! machine with `--procs` (over two proxies: one process holds at most ~19.9k).

mod common;

use std::sync::{Mutex, MutexGuard};

use common::run_loadgen;

/// These runs each load the machine (the 25,000-connection one saturates both cores for
/// seconds): one at a time, so a run's timing-sensitive part (the slow-consumer bursts, the
/// answers a sender must still get) does not depend on what else the test binary is doing.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn direct_through_hermod_loses_nothing() {
    let _serial = exclusive();
    let bin = common::proxy_binary();
    let secret = "loadgen-test-secret-0123456789abcdef";
    let proxy = common::start_proxy(&bin, &["--jwt-secret", secret]);
    let url = format!("ws://{}/ws", proxy.addr);
    // The second run reads replies at its send ticks instead of waking for each one.
    for (pattern, wake) in [("pairs", "--tick-us=100"), ("random", "--read-at-ticks")] {
        let r = run_loadgen(
            &[
                "direct",
                wake,
                "--url",
                &url,
                "--jwt-secret",
                secret,
                "--connections",
                "20",
                "--rate",
                "1000",
                "--duration",
                "1",
                "--warmup",
                "0.3",
                "--pattern",
                pattern,
            ],
            &format!("direct-{pattern}"),
        );
        assert_eq!(r["scenario"], "direct");
        assert_eq!(r["connected"], 20, "{r}");
        assert!(r["sent"].as_u64().unwrap() >= 900, "{r}");
        assert_eq!(r["expected"], r["sent"], "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["duplicated"], 0, "{r}");
        assert_eq!(r["reordered"], 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }
    // A room: every publish reaches all 5 members.
    let r = run_loadgen(
        &[
            "room",
            "--url",
            &url,
            "--jwt-secret",
            secret,
            "--connections",
            "10",
            "--rooms",
            "2",
            "--publishers",
            "2",
            "--rate",
            "200",
            "--duration",
            "1",
            "--warmup",
            "0.2",
        ],
        "room",
    );
    assert_eq!(
        r["expected"].as_u64(),
        r["sent"].as_u64().map(|s| s * 5),
        "{r}"
    );
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
}

#[test]
fn direct_reconnects_slow_consumers_and_loses_nothing() {
    let _serial = exclusive();
    // A 300-byte outbound bound: a burst of two or three deliveries in one proxy tick closes
    // a receiver 1008 although it reads normally. The loadgen reopens the session and Hermod
    // replays the inbox, so nothing is lost after the drain.
    let bin = common::proxy_binary();
    let secret = "loadgen-test-secret-0123456789abcdef";
    let proxy = common::start_proxy(
        &bin,
        &["--jwt-secret", secret, "--max-outbound-bytes", "300"],
    );
    let url = format!("ws://{}/ws", proxy.addr);
    // On a starved machine every session, senders included, can be closed before any `sent`
    // answer gets through: such a run confirms nothing and proves nothing (lost is 0 by
    // definition), so it is run again, at most three times. No run may lose a message.
    for attempt in 1..=3 {
        let r = run_loadgen(
            &[
                "direct",
                "--url",
                &url,
                "--jwt-secret",
                secret,
                "--connections",
                "20",
                "--rate",
                "2000",
                "--duration",
                "1",
                "--warmup",
                "0.3",
                "--drain",
                "15",
                "--pattern",
                "random",
                // Sends go out in 40 ms bursts (~4 messages per receiver at once), so the
                // 300-byte outbound bound is passed whatever the machine's speed.
                "--tick-us",
                "40000",
            ],
            &format!("direct-reconnect-{attempt}"),
        );
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["held"], 20, "{r}");
        assert!(r["reconnects"].as_u64().unwrap() > 0, "{r}");
        assert!(r["closed_by_code"]["1008"].as_u64().unwrap() > 0, "{r}");
        if r["expected"].as_u64().unwrap() > 0 {
            return;
        }
        eprintln!("attempt {attempt}: no send was confirmed, running again: {r}");
    }
    panic!("no run had a confirmed send to audit");
}

#[test]
fn holds_25000_connections_with_two_worker_processes() {
    let _serial = exclusive();
    let bin = common::proxy_binary();
    let args = ["--auth", "none", "--echo-path", "/echo"];
    let a = common::start_proxy(&bin, &args);
    let b = common::start_proxy(&bin, &args);
    let (ua, ub) = (
        format!("ws://{}/echo", a.addr),
        format!("ws://{}/echo", b.addr),
    );
    let started = std::time::Instant::now();
    let r = run_loadgen(
        &[
            "connect",
            "--url",
            &ua,
            "--url",
            &ub,
            "--connections",
            "25000",
            "--procs",
            "2",
            "--source-ips",
            "127.0.0.1-127.0.0.4",
            "--hold",
            "1",
            "--concurrency",
            "1000",
            "--connect-timeout",
            "30",
        ],
        "25k",
    );
    eprintln!(
        "25,000 connections: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(r["connected"], 25000, "{r}");
    assert_eq!(r["held"], 25000, "{r}");
    assert_eq!(r["connect_failures"], 0, "{r}");
    assert_eq!(r["valid"], true, "{r}");
}
