//! Test peers for the integration tests, all on ephemeral 127.0.0.1 ports: a blocking echo
//! server (one thread per connection, tungstenite `accept`) with optional faults chosen by the
//! request path, and a launcher for the real `hermod-proxy` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::handshake::server::{Request, Response};
use tungstenite::Message;

/// What the echo server does to a connection's messages, chosen by its request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Echo everything (any path not below).
    None,
    /// `/drop/N`: message k (0-based, per connection) with `k % N == N - 1` is not echoed.
    Drop(u64),
    /// `/dup/N`: message k with `k % N == N - 1` is echoed twice.
    Dup(u64),
    /// `/swap/N`: message k with `k % N == N / 2` is held and echoed after message k + 1.
    Swap(u64),
}

/// Parses the fault from a request path.
fn fault_of(path: &str) -> Fault {
    let mut parts = path.trim_start_matches('/').split('/');
    let kind = parts.next().unwrap_or("");
    let n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    match (kind, n) {
        ("drop", n) if n > 0 => Fault::Drop(n),
        ("dup", n) if n > 0 => Fault::Dup(n),
        ("swap", n) if n > 1 => Fault::Swap(n),
        _ => Fault::None,
    }
}

/// Starts the echo server in the background and returns its address.
pub fn start_echo_server() -> SocketAddr {
    start_server(None)
}

/// Starts an echo server that, one second after the first message it receives (on any
/// connection), stops answering for one second; messages arriving meanwhile wait.
pub fn start_stalling_echo_server() -> SocketAddr {
    start_server(Some(Arc::new(Mutex::new(None))))
}

/// The echo server; `stall` holds the time of the first message when stalling is on.
fn start_server(stall: Option<Arc<Mutex<Option<Instant>>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            let stall = stall.clone();
            thread::spawn(move || serve(stream, stall));
        }
    });
    addr
}

/// Serves one connection.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback signature
fn serve(stream: std::net::TcpStream, stall: Option<Arc<Mutex<Option<Instant>>>>) {
    let mut fault = Fault::None;
    let callback = |req: &Request, resp: Response| {
        fault = fault_of(req.uri().path());
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(stream, callback) else {
        return;
    };
    let mut k = 0u64;
    let mut held: Option<Message> = None;
    while let Ok(msg) = ws.read() {
        if !matches!(msg, Message::Binary(_) | Message::Text(_)) {
            continue;
        }
        if let Some(stall) = &stall {
            let first = *stall.lock().expect("lock").get_or_insert_with(Instant::now);
            let (from, to) = (
                first + Duration::from_secs(1),
                first + Duration::from_secs(2),
            );
            let now = Instant::now();
            if now >= from && now < to {
                thread::sleep(to - now);
            }
        }
        let mut out = vec![];
        match fault {
            Fault::Drop(n) if k % n == n - 1 => {}
            Fault::Dup(n) if k % n == n - 1 => out.extend([msg.clone(), msg]),
            Fault::Swap(n) if k % n == n / 2 => held = Some(msg),
            _ => {
                out.push(msg);
                out.extend(held.take());
            }
        }
        k += 1;
        for m in out {
            if ws.send(m).is_err() {
                return;
            }
        }
    }
}

/// A running `hermod-proxy`, killed on drop.
pub struct Proxy {
    /// The child process.
    child: Child,
    /// Its client listener, from its `listening client=...` line.
    pub addr: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds `hermod-proxy` with the cargo running these tests and returns its path.
pub fn proxy_binary() -> PathBuf {
    hermod_core::testkit::workspace_binary(
        env!("CARGO_MANIFEST_DIR"),
        "hermod-proxy",
        "hermod-proxy",
    )
}

/// Starts `hermod-proxy` on ephemeral ports with `args` and waits for its listening line.
pub fn start_proxy(bin: &PathBuf, args: &[&str]) -> Proxy {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start hermod-proxy");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("client=").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("hermod-proxy did not report its address");
    Proxy {
        child,
        addr: addr.parse().expect("proxy address"),
    }
}

/// Runs `hermod-loadgen` with `args` plus `--json`, asserts exit code 0, and returns the report.
pub fn run_loadgen(args: &[&str], name: &str) -> serde_json::Value {
    let json =
        std::env::temp_dir().join(format!("hermod-loadgen-{}-{name}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_hermod-loadgen"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run hermod-loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let text = std::fs::read_to_string(&json).expect("report written");
    let _ = std::fs::remove_file(&json);
    serde_json::from_str(&text).expect("valid JSON")
}
