//! The Python interop scripts (`tests/python/*.py`, `tests/browser/*.py`), run with `python3`
//! under a watchdog. A missing dependency (`python3`, the `websockets` package, Chromium) is a
//! failure, never a skip: the CI script installs them first.

#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Proxy;

/// Watchdog for one script (each bounds itself well below this; it only catches a hang).
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);

/// Runs `tests/python/{script}` with `args`; see [`run_script`].
pub fn run_check(script: &str, args: &[&str], proxy: &Proxy) {
    run_script(&format!("python/{script}"), args, proxy);
}

/// Runs `tests/{path}` with `args` and asserts that it succeeded and ended with `ok`; the
/// failure message carries its output and `proxy`'s log. The scripts exit with 3 when a
/// dependency is missing, and say which.
pub fn run_script(path: &str, args: &[&str], proxy: &Proxy) {
    let script = format!("{}/tests/{path}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(&script)
        .args(args)
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
    let status =
        status.unwrap_or_else(|| panic!("{path} hung past {SCRIPT_LIMIT:?}:\n{stdout}\n{stderr}"));
    assert!(
        status.code() != Some(3),
        "{path} cannot run, a dependency is missing: {stdout}"
    );
    assert!(
        status.success() && stdout.trim_end().ends_with("ok"),
        "{path} failed ({status:?}):\n{stdout}\n{stderr}\nproxy log:\n{}",
        proxy.log()
    );
}

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
        if let Some(status) = child.try_wait().expect("try_wait on a check script") {
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
