//! The command line of the real binary: help and version, one-line configuration errors with exit
//! code 2 before anything binds, bind failures, the `token` subcommand, settings from a config
//! file and the environment, and the generated-secret notice with a token that works.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_hermod-proxy");
const TIMEOUT: Duration = Duration::from_secs(20);
/// A secret long enough for the gateway (32 bytes or more).
const CLI_SECRET: &str = "cli-test-secret-0123456789abcdef";

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run hermod-proxy")
}

/// Runs the binary, expects exit 2 and exactly one stderr line starting with `prefix`.
fn config_error(args: &[&str], env: &[(&str, &str)], prefix: &str) {
    let out = run(args, env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with(prefix), "{args:?}: {err}");
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn help_and_version_exit_zero() {
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--admin-listen") && help.contains("HERMOD_ADMIN_LISTEN"),
        "{help}"
    );
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hermod-proxy "));
}

#[test]
fn bad_configuration_is_one_line_and_exit_2() {
    config_error(&["--workers", "0"], &[], "error: --workers: ");
    config_error(
        &["--brokers", "h:0"],
        &[],
        "error: --brokers: `h:0` is not HOST:PORT",
    );
    config_error(
        &["--registry"],
        &[],
        "error: --registry: needs --redis or --sentinel",
    );
    config_error(&["--redis", "http://x"], &[], "error: --redis: ");
    config_error(
        &[
            "--redis",
            "redis://127.0.0.1:1",
            "--sentinel",
            "127.0.0.1:2",
        ],
        &[],
        "error: --sentinel: cannot be combined with --redis",
    );
    config_error(
        &["--sentinel", "127.0.0.1:2"],
        &[],
        "error: --sentinel-master: required with --sentinel",
    );
    config_error(
        &["--redis", "redis://127.0.0.1:1", "--durability", "all"],
        &[],
        "error: --durability: ",
    );
    config_error(
        &[],
        &[("HERMOD_AUTH", "basic")],
        "error: --auth (from HERMOD_AUTH): ",
    );
    config_error(
        &["--config", "/nonexistent/h.toml"],
        &[],
        "error: --config: ",
    );
    config_error(
        &["token", "--user", "a b", "--jwt-secret", CLI_SECRET],
        &[],
        "error: --user: ",
    );
    config_error(&["token", "--user", "alice"], &[], "error: --jwt-secret: ");
    config_error(
        &["--webhook-url", "http://127.0.0.1:9/hook"],
        &[],
        "error: --webhook-secret: required with --webhook-url",
    );
    config_error(
        &["--webhook-url", "http://127.0.0.1:9/hook"],
        &[("HERMOD_WEBHOOK_SECRET", "short")],
        "error: --webhook-secret (from HERMOD_WEBHOOK_SECRET): must be 32 to 1024 bytes",
    );

    let dir = std::env::temp_dir().join(format!("hermod-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nregistri = \"x\"\n").expect("write");
    let path = file.to_string_lossy().into_owned();
    config_error(&["--config", &path], &[], "error: --config (from ");
    config_error(&[], &[("HERMOD_CONFIG", &path)], "error: --config (from ");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_port_in_use_fails_with_one_line_and_exit_1() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            &addr,
            "--auth",
            "none",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!("error: --admin-listen {addr}: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn token_prints_a_verifiable_token() {
    let out = run(
        &["token", "--user", "alice", "--ttl", "120"],
        &[("HERMOD_JWT_SECRET", CLI_SECRET)],
    );
    assert_eq!(out.status.code(), Some(0));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let claims =
        hermod_core::jwt::verify(CLI_SECRET.as_bytes(), &token, now_unix()).expect("valid token");
    assert_eq!(claims.sub, "alice");
    assert!(claims.exp >= now_unix() + 100 && claims.exp <= now_unix() + 130);
    assert!(hermod_core::jwt::verify(b"other", &token, now_unix()).is_err());
}

/// A running proxy, killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running { child, lines }
    }

    /// Stderr lines up to and including the ready line.
    fn until_ready(&self) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(TIMEOUT) {
            let ready = line.contains(" listening client=");
            seen.push(line);
            if ready {
                return seen;
            }
        }
        panic!("no ready line; stderr so far:\n{}", seen.join("\n"));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn generated_secret_is_announced_with_a_working_token() {
    let proxy = Running::start(&["--listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0"], &[]);
    let lines = proxy.until_ready();
    let all = lines.join("\n");
    assert!(all.contains("RANDOM secret"), "{all}");
    let url = lines
        .iter()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("ws://")))
        .unwrap_or_else(|| panic!("no ws:// url in:\n{all}"))
        .to_owned();
    let ready = lines.last().expect("ready line");
    let client: SocketAddr = field(ready, "client=").parse().expect("client addr");
    assert!(
        url.starts_with(&format!("ws://{client}/ws?token=")),
        "{url}"
    );

    let stream = TcpStream::connect(client).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("upgrade with demo token");
    let welcome = ws.read().expect("welcome").into_text().expect("text");
    let welcome: serde_json::Value = serde_json::from_str(&welcome).expect("json");
    assert_eq!(welcome["op"], "welcome");
    assert_eq!(welcome["user"], "demo");
}

#[test]
fn settings_come_from_file_and_env_and_admin_answers() {
    let dir = std::env::temp_dir().join(format!("hermod-cli-ok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("ok.toml");
    let toml = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 3\n\
                echo_path = \"/from-file\"\nidle_timeout = 30\n";
    std::fs::write(&file, toml).expect("write");
    let path = file.to_string_lossy().into_owned();
    let proxy = Running::start(
        &["--config", &path, "--workers", "1"],
        &[("HERMOD_AUTH", "none"), ("HERMOD_ECHO_PATH", "/from-env")],
    );
    let lines = proxy.until_ready();
    let ready = lines.last().expect("ready line");
    assert!(ready.contains(" workers=1 "), "flag beats file: {ready}");
    assert!(ready.contains(" auth=none"), "env: {ready}");
    assert!(ready.contains(" echo=/from-env"), "env beats file: {ready}");
    assert!(!lines.iter().any(|l| l.contains("RANDOM secret")));

    let admin = field(ready, "admin=");
    assert!(http_get(admin, "/healthz").ends_with("\r\n\r\nok\n"));
    assert!(http_get(admin, "/readyz").starts_with("HTTP/1.1 200 "));
    let metrics = http_get(admin, "/metrics");
    assert!(metrics.contains("\nhermod_process_open_fds "), "{metrics}");
    assert!(
        metrics.contains("\nhermod_build_info{version="),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
