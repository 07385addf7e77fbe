//! The Redis ACL that docs/operations.md recommends ("Securing the registry") against a real
//! redis-server 7: Hermod's user runs the broker (it registers itself in `hermod:brokers`),
//! another application's user can neither write the registry nor replace Hermod's function
//! library, and an operator's read-only user can read the registry but not write it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;

use std::process::Command;
use std::time::{Duration, Instant};

use hermod_core::testkit::RedisServer;

use process::BrokerProc;

/// The `user` lines of the documented ACL, as redis-server command-line arguments.
const ACL: &[&[&str]] = &[
    &["default", "off"],
    &[
        "hermod",
        "on",
        ">hermod-redis-password",
        "~*",
        "&*",
        "+@all",
    ],
    &[
        "app",
        "on",
        ">app-password",
        "resetkeys",
        "~app:*",
        "resetchannels",
        "&app:*",
        "+@all",
        "-@admin",
        "-@dangerous",
        "-function",
    ],
    &[
        "ops",
        "on",
        ">ops-password",
        "%R~hermod:brokers",
        "+ping",
        "+zrange",
        "+zscore",
    ],
];

fn cli(port: u16, user: &str, pass: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["--user", user, "--pass", pass, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn only_hermods_user_can_write_the_registry() {
    let mut args = Vec::new();
    for user in ACL {
        args.push("--user");
        args.extend_from_slice(user);
    }
    let redis = RedisServer::start(&args).unwrap();
    let port = redis.port();
    let url = format!("redis://hermod:hermod-redis-password@127.0.0.1:{port}");
    let broker = BrokerProc::start(&url, &["--node-id", "acl-b1", "--registry-ttl", "1s"]);
    let _link = broker.ready_link();

    // The broker, as `hermod`, registered itself; `ops` can read that.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let members = cli(
            port,
            "ops",
            "ops-password",
            &["ZRANGE", "hermod:brokers", "0", "-1"],
        );
        if members.contains("acl-b1@") {
            break;
        }
        assert!(Instant::now() < deadline, "never registered: {members}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Another application cannot register a broker, by command, script or function...
    let evil = [
        "ZADD",
        "hermod:brokers",
        "99999999999999",
        "evil@6.6.6.6:7070",
    ];
    assert!(cli(port, "app", "app-password", &evil).starts_with("NOPERM"));
    let script = "return redis.call('ZADD','hermod:brokers',1,'evil@6.6.6.6:7070')";
    let eval = cli(port, "app", "app-password", &["EVAL", script, "0"]);
    assert!(eval.contains("can't access"), "{eval}");
    let library = "#!lua name=hermod\nredis.register_function('x', function() return 1 end)";
    let load = cli(
        port,
        "app",
        "app-password",
        &["FUNCTION", "LOAD", "REPLACE", library],
    );
    assert!(load.starts_with("NOPERM"), "{load}");
    // ...but works with its own keys; `ops` cannot write; nobody gets in without a password.
    assert_eq!(
        cli(port, "app", "app-password", &["SET", "app:k", "1"]).trim(),
        "OK"
    );
    assert!(cli(port, "ops", "ops-password", &evil).starts_with("NOPERM"));
    let anonymous = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "ZADD", "hermod:brokers", "1", "x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&anonymous.stdout).starts_with("NOAUTH"));
    let members = cli(
        port,
        "ops",
        "ops-password",
        &["ZRANGE", "hermod:brokers", "0", "-1"],
    );
    assert!(!members.contains("evil"), "{members}");
}
