//! Interop with the Python `websockets` client (`tests/python/ws_check.py`), which also mints its
//! own tokens with Python's standard library, and the server API judged by Python's
//! `http.client` and schemathesis (`tests/python/api_check.py`). Missing `python3` or `websockets` is a failure,
//! never a skip: the CI script installs `websockets` first.

mod common;

use common::{engine_tests, python, Engine, Proxy, SECRET};

fn python_websockets_client_welcome_send_receive_ack(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let addr = proxy.client.to_string();
    python::run_check("ws_check.py", &[&addr, SECRET], &proxy);
}

/// `tests/python/grants_check.py`: room grants refused and honoured, `expiring` then
/// `refresh`, and the 4001 close at expiry with the inbox kept for the reconnect.
fn python_websockets_client_room_grants_refresh_and_expiry(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let addr = proxy.client.to_string();
    python::run_check("grants_check.py", &[&addr, SECRET], &proxy);
}

/// `tests/python/api_check.py`: the server API called with Python's `http.client`, and
/// schemathesis run against docs/openapi.yaml.
fn server_api_judged_by_http_client_and_schemathesis(engine: Engine) {
    let key = "py-api-key-0123456789";
    let flags = ["--api-listen", "127.0.0.1:0", "--api-key", key];
    let proxy = Proxy::start_jwt_on(engine, &flags);
    let api = proxy.api.expect("an API listener").to_string();
    let ws = proxy.client.to_string();
    let spec = format!("{}/../docs/openapi.yaml", env!("CARGO_MANIFEST_DIR"));
    python::run_check("api_check.py", &[&api, &ws, key, SECRET, &spec], &proxy);
}

engine_tests!(
    python_websockets_client_welcome_send_receive_ack,
    python_websockets_client_room_grants_refresh_and_expiry,
    server_api_judged_by_http_client_and_schemathesis,
);
