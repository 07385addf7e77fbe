//! Interop with a real browser: headless Chromium's own `WebSocket`, driven over the Chrome
//! DevTools Protocol by `tests/browser/browser_check.py` (which mints its own tokens with
//! Python's standard library). It checks welcome, a direct message sent, received and acked, a
//! room, and close code 1009 for a message over `--max-message-size`.
//!
//! Missing `chromium`, `python3` or the `websockets` package is a failure, never a skip: the CI
//! script installs them first.

mod common;

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{engine_tests, Engine, Proxy, SECRET};

/// The proxy's message limit for this test: small, so the oversized frame is cheap.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Watchdog for the whole script (it bounds itself to 25 s; this only catches a hang).
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);

/// Reads all of a child's pipe on a thread, so the child never blocks on a full pipe.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// Waits for `child` up to `limit`, killing it past that; `None` when it had to be killed.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on browser_check.py") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `tests/browser/browser_check.py` against `proxy` and asserts it printed `ok`; the
/// failure message carries the script's output and the proxy's log.
fn run_browser_check(proxy: &Proxy) {
    let script = format!(
        "{}/tests/browser/browser_check.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = Command::new("python3")
        .arg(&script)
        .args([
            &proxy.client.to_string(),
            SECRET,
            &MAX_MESSAGE_BYTES.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 (install Python 3): {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, SCRIPT_LIMIT);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("browser_check.py hung past {SCRIPT_LIMIT:?}:\n{stdout}\n{stderr}")
    });
    assert!(
        status.code() != Some(3),
        "browser_check.py cannot run (apt-get install chromium; pip install websockets): {stdout}"
    );
    assert!(
        status.success() && stdout.trim_end().ends_with("ok"),
        "browser_check.py failed ({status:?}):\n{stdout}\n{stderr}\nproxy log:\n{}",
        proxy.log()
    );
}

fn chromium_websocket_welcome_direct_room_and_1009(engine: Engine) {
    let limit = MAX_MESSAGE_BYTES.to_string();
    let proxy = Proxy::start_jwt_on(engine, &["--max-message-size", &limit]);
    run_browser_check(&proxy);
}

engine_tests!(chromium_websocket_welcome_direct_room_and_1009,);
