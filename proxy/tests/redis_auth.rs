//! Passwords for Redis and for Sentinel, against real processes on ephemeral loopback ports: a
//! master with `requirepass`, and one sentinel with a `requirepass` of its own that monitors the
//! master (`sentinel auth-pass`). `hermod-proxy --sentinel ... --redis-password M
//! --sentinel-password S` becomes ready and carries a direct message; a wrong password keeps
//! `/readyz` at 503 with a log line that says why, and no password ever reaches the log.

mod common;

use std::time::{Duration, Instant};

use common::{Proxy, TIMEOUT};
use hermod_core::testkit::RedisServer;
use serde_json::json;

/// The master's `requirepass`.
const MASTER_PW: &str = "master-pw-5d1c";
/// The sentinel's `requirepass`.
const SENTINEL_PW: &str = "sentinel-pw-9b2e";
/// A password that is neither.
const WRONG_PW: &str = "wrong-pw-7f3a";
/// The master's name in the sentinel's config.
const NAME: &str = "authm";

/// A master with [`MASTER_PW`] and one sentinel with [`SENTINEL_PW`] that monitors it.
struct Topology {
    /// Dropped after the sentinel (fields drop in order): the sentinel goes first.
    sentinel: RedisServer,
    /// The master.
    master: RedisServer,
}

impl Topology {
    fn start() -> Topology {
        let master = RedisServer::start(&["--requirepass", MASTER_PW]).expect("start master");
        let extra = format!("requirepass {SENTINEL_PW}\nsentinel auth-pass {NAME} {MASTER_PW}\n");
        let sentinel = RedisServer::start_sentinel_with(NAME, master.port(), 1, &extra)
            .expect("start sentinel");
        Topology { sentinel, master }
    }

    /// The proxy's flags for this topology with these passwords.
    fn flags(&self, master_pw: &str, sentinel_pw: &str) -> Vec<String> {
        [
            "--auth",
            "none",
            "--sentinel",
            &self.sentinel.addr(),
            "--sentinel-master",
            NAME,
            "--redis-password",
            master_pw,
            "--sentinel-password",
            sentinel_pw,
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

fn spawn(flags: &[String]) -> Proxy {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Proxy::spawn(&flags, false)
}

/// No password appears in the proxy's log.
fn assert_no_password(proxy: &Proxy) {
    let log = proxy.log();
    for pw in [MASTER_PW, SENTINEL_PW, WRONG_PW] {
        assert!(!log.contains(pw), "the log shows a password:\n{log}");
    }
}

/// Waits for a log line containing `needle`; meanwhile `/readyz` must stay 503.
fn wait_not_ready_because(proxy: &Proxy, needle: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert_eq!(
            proxy.admin_get("/readyz").0,
            503,
            "ready with a wrong password"
        );
        if proxy.log().contains(needle) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with `{needle}` within {TIMEOUT:?}; log:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still not ready a little later (the client keeps retrying), and no panic.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(proxy.admin_get("/readyz").0, 503);
    let log = proxy.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_no_password(proxy);
}

#[test]
fn passwords_through_sentinel_serve_messages() {
    let topology = Topology::start();
    let proxy = spawn(&topology.flags(MASTER_PW, SENTINEL_PW));
    proxy.wait_ready(TIMEOUT);
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect("bob");
    let id = alice.send_to("bob", "c1", json!({"hello": "bob"}));
    let msgs = bob.recv_msgs(1);
    assert_eq!(msgs[0]["id"], id.as_str());
    assert_eq!(msgs[0]["from"], "alice");
    assert_eq!(msgs[0]["data"], json!({"hello": "bob"}));
    assert_no_password(&proxy);
    // The master really refuses clients without the password.
    let dbsize = topology.master.command(&["DBSIZE"]).expect("DBSIZE");
    assert!(
        dbsize.error_message().is_some(),
        "the master let us in: {dbsize:?}"
    );
}

#[test]
fn a_wrong_master_password_is_not_ready_and_says_why() {
    let topology = Topology::start();
    let proxy = spawn(&topology.flags(WRONG_PW, SENTINEL_PW));
    wait_not_ready_because(&proxy, "AUTH refused: WRONGPASS");
}

#[test]
fn a_wrong_sentinel_password_is_not_ready_and_says_why() {
    let topology = Topology::start();
    let proxy = spawn(&topology.flags(MASTER_PW, WRONG_PW));
    wait_not_ready_because(&proxy, "HELLO: WRONGPASS");
}

#[test]
fn a_password_beside_a_redis_url() {
    let topology = Topology::start();
    let url = topology.master.url();
    let proxy = Proxy::spawn(
        &[
            "--auth",
            "none",
            "--redis",
            &url,
            "--redis-password",
            MASTER_PW,
        ],
        false,
    );
    proxy.wait_ready(TIMEOUT);
    let mut alice = proxy.connect("alice");
    alice.send_to("alice", "c1", json!(1));
    assert_eq!(alice.recv_msgs(1)[0]["data"], json!(1));
    assert_no_password(&proxy);
}
