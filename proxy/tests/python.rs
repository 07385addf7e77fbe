//! Interop with the Python `websockets` client (`tests/python/ws_check.py`), which also mints its
//! own tokens with Python's standard library. Missing `python3` or `websockets` is a failure,
//! never a skip: the CI script installs `websockets` first.

mod common;

use common::{engine_tests, Engine};

use std::process::Command;

use common::{Proxy, SECRET};

fn python_websockets_client_welcome_send_receive_ack(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/ws_check.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(proxy.client.to_string())
        .arg(SECRET)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (install Python 3): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(3),
        "python3 lacks the `websockets` package (pip install websockets): {stdout}"
    );
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "ws_check.py failed ({:?}):\n{stdout}\n{stderr}\nproxy log:\n{}",
        out.status,
        proxy.log()
    );
}

engine_tests!(python_websockets_client_welcome_send_receive_ack,);
