//! Real `hermod-broker` processes for the broker-tier tests: built once per test binary, started
//! on an ephemeral loopback port against a test `redis-server`, killed on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use hermod_core::testkit::RedisServer;

use super::{Proxy, TIMEOUT};

/// Builds `hermod-broker` once per test binary and returns its path.
pub fn broker_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        hermod_core::testkit::workspace_binary(
            env!("CARGO_MANIFEST_DIR"),
            "hermod-broker",
            "hermod-broker",
        )
    })
    .clone()
}

/// The link secret the broker-tier tests give brokers and gateways (`--link-secret`).
pub const LINK_SECRET: &str = "test-link-secret-0123456789";

/// A running `hermod-broker`, killed on drop.
pub struct Broker {
    /// The child; killed (SIGKILL) and reaped on drop unless it already exited.
    child: Child,
    /// Its link listener, from its `listening link=...` line.
    pub addr: SocketAddr,
    /// Its node id.
    pub node: String,
    /// Its stderr lines, kept for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    /// Set once reaped.
    exited: bool,
}

impl Broker {
    /// Starts broker `node` on `redis` with these extra flags and waits for its link address.
    pub fn start(redis: &RedisServer, node: &str, extra: &[&str]) -> Broker {
        let mut child = Command::new(broker_binary())
            .args(["--listen", "127.0.0.1:0", "--redis", &redis.url()])
            .args(["--node-id", node])
            .args(extra)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hermod-broker");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening link=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.parse::<SocketAddr>().ok());
                }
                sink.lock().expect("log").push(line);
            }
        });
        let Ok(Some(addr)) = rx.recv_timeout(TIMEOUT) else {
            panic!(
                "hermod-broker {node} did not print its link address; log:\n{}",
                log.lock().expect("log").join("\n")
            )
        };
        Broker {
            child,
            addr,
            node: node.to_owned(),
            log,
            exited: false,
        }
    }

    /// Its name in the registry (and in the gateway's placement with `--registry`).
    pub fn member(&self) -> String {
        format!("{}@{}", self.node, self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
    }

    /// SIGTERM (the broker drains and exits); see [`Broker::wait_exit`].
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Its exit code, if it exits within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = true;
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `check` holds, panicking with `what` and the gateway's log after `limit`.
pub fn wait_for(proxy: &Proxy, limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {limit:?}; gateway log:\n{}",
            proxy.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The gauge `name{broker="..."}` for `broker`, if the gateway shows that broker.
pub fn broker_gauge(proxy: &Proxy, name: &str, broker: &str) -> Option<f64> {
    let (_, body) = proxy.admin_get("/metrics");
    let prefix = format!("{name}{{broker=\"{broker}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}
