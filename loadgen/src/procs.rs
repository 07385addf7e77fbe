//! `--procs N`: the parent re-executes this binary N times with hidden `--worker-index i
//! --worker-count N --run-id R` options; each child opens every N-th connection (staying under
//! the per-process open-files cap) and talks to the parent over its stdin/stdout, one line each:
//!
//! ```text
//! child  -> parent   ready SENDERS                      connected and prepared
//! parent -> child    start T0_NS RATE|-                 the shared t0 and the child's rate
//! child  -> parent   progress SENT RECEIVED ERRORS P99 CONNECTED FAILED    about once a second
//! child  -> parent   result {JSON}                      its Outcome (histograms V2 + base64)
//! ```
//!
//! The parent picks t0 on the monotonic clock all processes share, prints the merged progress
//! line, and merges the results into one outcome.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::outcome::Outcome;
use crate::progress::{self, Snapshot};
use crate::run::{Coordinator, PROGRESS_EVERY, START_DELAY};
use crate::sys::Clock;

/// A worker process's side of the protocol.
pub struct ChildSide {
    /// Serializes writes to stdout between the progress and the main thread.
    out: Mutex<io::Stdout>,
}

impl ChildSide {
    /// The child side over this process's stdin/stdout.
    pub fn new() -> Self {
        ChildSide {
            out: Mutex::new(io::stdout()),
        }
    }

    /// Sends one line to the parent.
    fn send(&self, line: &str) -> io::Result<()> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| io::Error::other("stdout lock"))?;
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Sends the final result.
    pub fn send_result(&self, outcome: &Outcome) -> anyhow::Result<()> {
        let wire = outcome.to_wire()?;
        self.send(&format!("result {wire}"))?;
        Ok(())
    }
}

impl Default for ChildSide {
    fn default() -> Self {
        ChildSide::new()
    }
}

/// Parses `start T0_NS RATE|-`.
fn parse_start(line: &str) -> Option<(Clock, Option<f64>)> {
    let mut it = line.split_whitespace();
    (it.next()? == "start").then_some(())?;
    let t0: u64 = it.next()?.parse().ok()?;
    let rate = match it.next()? {
        "-" => None,
        r => Some(r.parse().ok()?),
    };
    Some((Clock::at(t0), rate))
}

impl Coordinator for ChildSide {
    fn start(&self, senders: u64) -> anyhow::Result<(Clock, Option<f64>)> {
        self.send(&format!("ready {senders}"))?;
        let mut line = String::new();
        io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the start from the parent")?;
        parse_start(&line).ok_or_else(|| anyhow!("bad start line from the parent: {line:?}"))
    }

    fn progress(&self, _elapsed_s: f64, s: &Snapshot, _before: &Snapshot, _interval_s: f64) {
        let _ = self.send(&format!(
            "progress {} {} {} {} {} {}",
            s.sent, s.received, s.errors, s.p99_us, s.connected, s.failures
        ));
    }
}

/// Parses a `progress` line's numbers.
fn parse_progress(rest: &str) -> Option<Snapshot> {
    let v: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [sent, received, errors, p99_us, connected, failures] = v.as_slice() else {
        return None;
    };
    Some(Snapshot {
        connected: *connected,
        failures: *failures,
        sent: *sent,
        received: *received,
        errors: *errors,
        p99_us: *p99_us,
    })
}

/// A child process, killed on drop unless it exited.
struct Worker {
    /// The process.
    child: Child,
    /// Its stdin, for the start line.
    stdin: Option<ChildStdin>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs the whole run as `procs` worker processes and merges their outcomes.
pub fn run_parent(procs: u16, rate: Option<f64>, run_id: u32) -> anyhow::Result<Outcome> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let (tx, rx) = mpsc::channel::<(usize, Option<String>)>();
    let mut workers = Vec::new();
    for i in 0..usize::from(procs) {
        let mut child = Command::new(&exe)
            .args(&args)
            .args(["--worker-index", &i.to_string()])
            .args(["--worker-count", &procs.to_string()])
            .args(["--run-id", &run_id.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting worker process {i}"))?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let stdin = child.stdin.take();
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((i, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((i, None));
        });
        workers.push(Worker { child, stdin });
    }
    drop(tx);
    let senders = wait_ready(&rx, workers.len())?;
    let total: u64 = senders.iter().sum();
    let clock = Clock::starting_in(START_DELAY);
    for (i, w) in workers.iter_mut().enumerate() {
        let share = match total {
            0 => 1.0 / f64::from(procs),
            n => senders[i] as f64 / n as f64,
        };
        let rate = rate.map_or_else(|| "-".to_string(), |r| format!("{}", r * share));
        let line = format!("start {} {rate}\n", clock.t0_ns());
        let stdin = w.stdin.as_mut().context("worker stdin")?;
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| format!("starting worker {i}"))?;
    }
    let outcome = collect(&rx, workers.len())?;
    for w in &mut workers {
        let _ = w.child.wait();
    }
    Ok(outcome)
}

/// Waits for every child's `ready`; returns their sender counts.
fn wait_ready(rx: &mpsc::Receiver<(usize, Option<String>)>, n: usize) -> anyhow::Result<Vec<u64>> {
    let mut senders = vec![None; n];
    while senders.iter().any(Option::is_none) {
        let (i, line) = rx.recv().context("worker processes vanished")?;
        let Some(line) = line else {
            bail!("worker process {i} exited before it was ready");
        };
        if let Some(rest) = line.strip_prefix("ready ") {
            senders[i] = Some(rest.trim().parse().context("bad ready line")?);
        }
    }
    Ok(senders.into_iter().map(|s| s.unwrap_or(0)).collect())
}

/// Prints merged progress and gathers every child's result.
fn collect(rx: &mpsc::Receiver<(usize, Option<String>)>, n: usize) -> anyhow::Result<Outcome> {
    let mut latest = vec![Snapshot::default(); n];
    let mut results: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    let mut before = Snapshot::default();
    let started = std::time::Instant::now();
    let mut last = started;
    while results.iter().any(Option::is_none) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((i, Some(line))) => {
                if let Some(rest) = line.strip_prefix("progress ") {
                    if let Some(s) = parse_progress(rest) {
                        latest[i] = s;
                    }
                } else if let Some(rest) = line.strip_prefix("result ") {
                    results[i] = Some(Outcome::from_wire(rest)?);
                }
            }
            Ok((i, None)) if results[i].is_none() => {
                bail!("worker process {i} exited without a result")
            }
            Ok((_, None)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("worker processes vanished"),
        }
        if last.elapsed() >= PROGRESS_EVERY {
            let now = sum(&latest);
            let interval = last.elapsed().as_secs_f64();
            let elapsed = started.elapsed().as_secs_f64();
            eprintln!("{}", progress::line(elapsed, &now, &before, interval));
            before = now;
            last = std::time::Instant::now();
        }
    }
    let mut merged = Outcome::default();
    for r in results.into_iter().flatten() {
        merged.merge(&r)?;
    }
    Ok(merged)
}

/// The sum of the children's snapshots (p99: the worst).
fn sum(all: &[Snapshot]) -> Snapshot {
    let mut s = Snapshot::default();
    for t in all {
        s.connected += t.connected;
        s.failures += t.failures;
        s.sent += t.sent;
        s.received += t.received;
        s.errors += t.errors;
        s.p99_us = s.p99_us.max(t.p99_us);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_parse() {
        let (clock, rate) = parse_start("start 123456 2500.5\n").unwrap();
        assert_eq!(clock.t0_ns(), 123_456);
        assert_eq!(rate, Some(2500.5));
        assert_eq!(parse_start("start 1 -").unwrap().1, None);
        assert!(parse_start("stop 1 -").is_none());
        assert!(parse_start("start x -").is_none());
        let s = parse_progress("10 9 1 250 4 0").unwrap();
        assert_eq!((s.sent, s.received, s.errors, s.p99_us), (10, 9, 1, 250));
        assert!(parse_progress("1 2 3").is_none());
        let total = sum(&[s, s]);
        assert_eq!((total.sent, total.p99_us, total.connected), (20, 250, 8));
    }
}
