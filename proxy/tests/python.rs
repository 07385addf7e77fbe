//! Interop with the Python `websockets` client (`tests/python/ws_check.py`), which also mints its
//! own tokens with Python's standard library. Missing `python3` or `websockets` is a failure,
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

engine_tests!(
    python_websockets_client_welcome_send_receive_ack,
    python_websockets_client_room_grants_refresh_and_expiry,
);
