//! Runs the real `hermod-loadgen` binary against a test echo server on 127.0.0.1.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// A fresh path for a JSON report.
fn json_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hermod-loadgen-{}-{name}.json", std::process::id()))
}

/// Runs the loadgen with `args` and returns its exit code and parsed JSON report.
fn run(args: &[&str], name: &str) -> (i32, serde_json::Value) {
    let json = json_path(name);
    let out = Command::new(env!("CARGO_BIN_EXE_hermod-loadgen"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run hermod-loadgen");
    let code = out.status.code().unwrap_or(-1);
    assert_eq!(code, 0, "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&json).expect("report written");
    let _ = std::fs::remove_file(&json);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("latency us") || stdout.contains("connect us"),
        "{stdout}"
    );
    (code, serde_json::from_str(&text).expect("valid JSON"))
}

#[test]
fn open_loop_echo_run_receives_everything() {
    let addr = common::start_echo_server();
    let url = format!("ws://{addr}/echo");
    let (_, r) = run(
        &[
            "echo",
            "--url",
            &url,
            "--connections",
            "8",
            "--rate",
            "2000",
            "--duration",
            "1.5",
            "--warmup",
            "0.5",
            "--size",
            "64",
        ],
        "open",
    );
    assert_eq!(r["scenario"], "echo");
    assert_eq!(r["connected"], 8);
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 1000, "{r}");
    assert_eq!(r["received"], r["sent"]);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicated"], 0);
    assert_eq!(r["errors"], 0);
    assert_eq!(r["target_rate"], 2000.0);
    assert!(r["latency_us"]["p50"].as_u64().unwrap() > 0);
    assert!(r["latency_us"]["max"].as_u64() >= r["latency_us"]["p99"].as_u64());
    assert!(r["cpu_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn closed_loop_echo_run_keeps_its_window() {
    let addr = common::start_echo_server();
    let url = format!("ws://{addr}/echo?client={{i}}");
    let (_, r) = run(
        &[
            "echo",
            "--url",
            &url,
            "--connections",
            "4",
            "--closed-loop",
            "--in-flight",
            "4",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--size",
            "100",
        ],
        "closed",
    );
    assert_eq!(r["mode"], "closed");
    assert_eq!(r["in_flight"], 4);
    assert_eq!(r["target_rate"], serde_json::Value::Null);
    assert_eq!(r["valid"], true);
    assert!(r["sent"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["lost"], 0);
    assert_eq!(r["received"], r["sent"]);
}

#[test]
fn connect_holds_200_connections() {
    let addr = common::start_echo_server();
    let url = format!("ws://{addr}/echo");
    let (_, r) = run(
        &[
            "connect",
            "--url",
            &url,
            "--connections",
            "200",
            "--hold",
            "0.5",
            "--threads",
            "2",
        ],
        "connect",
    );
    assert_eq!(r["scenario"], "connect");
    assert_eq!(r["connected"], 200);
    assert_eq!(r["held"], 200);
    assert_eq!(r["connect_failures"], 0);
    assert_eq!(r["valid"], true);
    assert_eq!(r["connect_us"]["count"], 200);
}

#[test]
fn refused_connections_are_reported_not_fatal() {
    // Bind then drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/echo");
    let (_, r) = run(
        &[
            "connect",
            "--url",
            &url,
            "--connections",
            "3",
            "--hold",
            "0",
        ],
        "refused",
    );
    assert_eq!(r["connect_failures"], 3);
    assert_eq!(r["valid"], false);
}

#[test]
fn bad_options_exit_2() {
    for args in [
        vec!["echo", "--url", "ws://127.0.0.1:1/"],
        vec!["echo", "--url", "http://127.0.0.1:1/", "--rate", "10"],
        vec![
            "echo",
            "--url",
            "ws://127.0.0.1:1/",
            "--rate",
            "10",
            "--size",
            "4",
        ],
        vec!["nonsense"],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_hermod-loadgen"))
            .args(&args)
            .output()
            .unwrap()
            .status;
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}
