//! The measurements themselves, against test servers that misbehave on purpose: a stall must show
//! in the open-loop latency (coordinated-omission correction) and not in the closed loop; drops,
//! duplicates and reorders must be counted exactly.

mod common;

use common::run_loadgen;

/// A 3 s echo run over 4 connections against a fresh server that stalls for one second
/// mid-run; `pacing` says how messages are paced.
fn against_a_stall(pacing: &[&str], name: &str) -> serde_json::Value {
    let addr = common::start_stalling_echo_server();
    let url = format!("ws://{addr}/echo");
    let mut args = vec!["echo", "--url", &url, "--connections", "4"];
    args.extend_from_slice(pacing);
    args.extend(["--duration", "3", "--warmup", "0"]);
    run_loadgen(&args, name)
}

#[test]
fn a_one_second_stall_shows_in_open_loop_but_not_in_closed_loop() {
    // Open loop: a third of the messages are due during the stall and wait for it.
    let open = against_a_stall(&["--rate", "400"], "stall-open");
    assert_eq!(open["lost"], 0, "{open}");
    let p99 = open["latency_us"]["p99"].as_u64().unwrap();
    assert!(
        p99 >= 300_000,
        "open-loop p99 {p99} us hides the stall: {open}"
    );

    // The same when the loop reads replies only at its send ticks: replies keep their arrival
    // time, and a stalled reply arrives late.
    let ticks = against_a_stall(&["--rate", "400", "--read-at-ticks"], "stall-ticks");
    assert_eq!(ticks["lost"], 0, "{ticks}");
    let p99 = ticks["latency_us"]["p99"].as_u64().unwrap();
    assert!(
        p99 >= 300_000,
        "open-loop p99 {p99} us (reading at ticks) hides the stall: {ticks}"
    );
    let p50 = ticks["latency_us"]["p50"].as_u64().unwrap();
    assert!(
        p50 < 300_000,
        "most replies were not caught by the stall: {ticks}"
    );

    // Closed loop, one in flight per connection: only the 4 messages caught by the stall wait
    // (the max shows the stall happened), the thousands of others do not.
    let closed = against_a_stall(&["--closed-loop", "--in-flight", "1"], "stall-closed");
    let received = closed["received"].as_u64().unwrap();
    assert!(received >= 1000, "too few round trips for a p99: {closed}");
    let p99 = closed["latency_us"]["p99"].as_u64().unwrap();
    assert!(p99 < 300_000, "closed-loop p99 {p99} us: {closed}");
    let max = closed["latency_us"]["max"].as_u64().unwrap();
    assert!(max >= 500_000, "the stall did not happen: {closed}");
}

#[test]
fn drops_duplicates_and_reorders_are_counted_exactly() {
    let addr = common::start_echo_server();
    // Connection i goes to the i-th URL (round-robin): one fault per connection.
    let urls = [
        format!("ws://{addr}/drop/10"),
        format!("ws://{addr}/dup/7"),
        format!("ws://{addr}/swap/100"),
    ];
    // 3,000 messages in one second over 3 connections: exactly 1,000 per connection.
    let r = run_loadgen(
        &[
            "echo",
            "--url",
            &urls[0],
            "--url",
            &urls[1],
            "--url",
            &urls[2],
            "--connections",
            "3",
            "--rate",
            "3000",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--drain",
            "1",
        ],
        "faults",
    );
    assert_eq!(r["sent"], 3000, "{r}");
    // Every 10th of 1,000 dropped.
    assert_eq!(r["lost"], 100, "{r}");
    // k % 7 == 6 for k < 1000: 6, 13, ..., 999.
    assert_eq!(
        r["duplicated"],
        (0..1000).filter(|k| k % 7 == 6).count(),
        "{r}"
    );
    // One swap per 100 messages.
    assert_eq!(r["reordered"], 10, "{r}");
    assert_eq!(r["received"], 2900, "{r}");
}
