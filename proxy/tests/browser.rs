//! Interop with a real browser: headless Chromium's own `WebSocket`, driven over the Chrome
//! DevTools Protocol by `tests/browser/browser_check.py` (which mints its own tokens with
//! Python's standard library). It checks welcome, a direct message sent, received and acked, a
//! room, and close code 1009 for a message over `--max-message-size`.
//!
//! Missing `chromium`, `python3` or the `websockets` package is a failure, never a skip: the CI
//! script installs them first.

mod common;

use common::{engine_tests, python, Engine, Proxy, SECRET};

/// The proxy's message limit for this test: small, so the oversized frame is cheap.
const MAX_MESSAGE_BYTES: usize = 4096;

fn chromium_websocket_welcome_direct_room_and_1009(engine: Engine) {
    let limit = MAX_MESSAGE_BYTES.to_string();
    let proxy = Proxy::start_jwt_on(engine, &["--max-message-size", &limit]);
    let client = proxy.client.to_string();
    let args = [client.as_str(), SECRET, &limit];
    python::run_script("browser/browser_check.py", &args, &proxy);
}

engine_tests!(chromium_websocket_welcome_direct_room_and_1009,);
