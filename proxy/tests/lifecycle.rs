//! Process lifecycle and operations: SIGTERM closes clients with 1012 and exits promptly; the
//! admin endpoints; keepalive and the idle timeout; the `--echo-path` endpoint.

mod common;

use common::{engine_tests, Engine};

use std::time::Duration;

use common::{id_of, Client, Ending, Proxy, TIMEOUT};
use serde_json::json;
use tungstenite::Message;

fn sigterm_closes_clients_with_1012_and_exits_zero(engine: Engine) {
    let mut proxy = Proxy::start_jwt_on(engine, &[]);
    let mut alice = proxy.connect("alice");
    let mut bob = proxy.connect_device("bob", "phone");
    let _ = alice.send_to("bob", "before", json!(1));
    assert_eq!(bob.recv_op("msg")["data"], 1);

    proxy.sigterm();
    for c in [&mut alice, &mut bob] {
        let (code, _) = c.expect_close();
        assert_eq!(code, 1012, "shutdown close code; log:\n{}", proxy.log());
    }
    let status = proxy.wait_exit(TIMEOUT).unwrap_or_else(|| {
        panic!(
            "still running {TIMEOUT:?} after SIGTERM; log:\n{}",
            proxy.log()
        )
    });
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        proxy.log()
    );
}

fn admin_endpoints(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let _a = proxy.connect("alice");
    let _b = proxy.connect("bob");
    assert_eq!(proxy.admin_get("/healthz").0, 200);
    assert_eq!(proxy.admin_get("/readyz").0, 200);
    let (status, body) = proxy.admin_get("/metrics");
    assert_eq!(status, 200);
    let names: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split([' ', '{']).next())
        .collect();
    assert!(!names.is_empty(), "no metrics:\n{body}");
    for name in &names {
        assert!(
            name.starts_with("hermod_"),
            "metric {name} lacks the prefix"
        );
    }
    assert!(
        body.lines().any(|l| l.starts_with("# TYPE hermod_")),
        "no `# TYPE` lines (Prometheus text format):\n{body}"
    );
    // Valid Prometheus text (HELP and TYPE once per family, samples after them), and every
    // family listed in the one metric table, hence in docs/operations.md.
    let families = hermod_core::metrics::check(&body).unwrap_or_else(|e| panic!("{e}:\n{body}"));
    assert!(families.contains(&"hermod_connections_open"), "{body}");
    if matches!(engine, Engine::Redis) {
        assert!(families.contains(&"hermod_redis_up"), "{body}");
    }
    assert_eq!(proxy.admin_get("/nope").0, 404);
}

fn quiet_but_responsive_clients_stay_and_silent_ones_are_closed(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &["--idle-timeout", "3", "--ping-interval", "1"]);
    let mut live = proxy.connect("live");
    let mut silent = proxy.connect("silent");
    // `live` keeps reading (tungstenite answers pings while reading); `silent` does nothing.
    if let Some(got) = live.next(Duration::from_secs(4)) {
        panic!("a responsive idle client got {got:?}");
    }
    let ending = silent.read_to_end().1;
    assert!(
        !matches!(ending, Ending::Close(1012, _)),
        "idle close: {ending:?}"
    );
    let mut other = proxy.connect("other");
    let id = other.send_to("live", "still-there", json!("yes"));
    assert_eq!(id_of(&live.recv_op("msg")), id);
}

fn echo_path_echoes_text_and_binary_without_a_token(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &["--echo-path", "/echo"]);
    let url = format!("ws://{}/echo", proxy.client);
    let mut c = Client::handshake(&url, common::tcp(proxy.client)).expect("echo handshake");
    for msg in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("x".repeat(60_000)),
    ] {
        c.ws.send(msg.clone()).expect("send");
        match c.next(TIMEOUT) {
            Some(Ok(got)) => assert_eq!(got, msg),
            other => panic!("echo answered {other:?}"),
        }
    }
    c.ws.send(Message::text("y".repeat(70_000)))
        .expect("send big");
    assert_eq!(c.expect_close().0, 1009, "echo has the same limits");
}

engine_tests!(
    sigterm_closes_clients_with_1012_and_exits_zero,
    admin_endpoints,
    quiet_but_responsive_clients_stay_and_silent_ones_are_closed,
    echo_path_echoes_text_and_binary_without_a_token,
);
