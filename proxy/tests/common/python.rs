//! The Python interop scripts (`tests/python/*.py`), run with `python3`. Missing `python3` or
//! `websockets` is a failure, never a skip: the CI script installs `websockets` first.

#![allow(dead_code)]

use std::process::Command;

use super::Proxy;

/// Runs `tests/python/{script}` with `args` and asserts that it succeeded and ended with `ok`;
/// the failure message carries `proxy`'s log. The scripts exit with 3 when `websockets` is
/// missing.
pub fn run_check(script: &str, args: &[&str], proxy: &Proxy) {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(path)
        .args(args)
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
        "{script} failed ({:?}):\n{stdout}\n{stderr}\nproxy log:\n{}",
        out.status,
        proxy.log()
    );
}
