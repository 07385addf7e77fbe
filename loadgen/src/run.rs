//! Runs a scenario: spreads the connections over worker threads, lets each open its share, starts
//! them all at one t0, prints a progress line every second, and merges their results into the
//! report.

use std::io;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use hdrhistogram::Histogram;

use crate::audit::AuditSummary;
use crate::cli::{CommonArgs, ConnectArgs, EchoArgs};
use crate::conn::ws_config;
use crate::echo::{EchoOutcome, EchoWorker, Pacing, Timing};
use crate::fleet::{ConnectPlan, Fleet};
use crate::progress::{self, Progress, Snapshot, ThreadProgress};
use crate::report::{is_valid, new_histogram, Percentiles, Report};
use crate::schedule::{ClosedLoop, Nanos, OpenLoop};
use crate::sys;

/// Interval of the progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the main thread tells each worker once every worker has connected.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// The common start of the run.
    pub t0: Instant,
    /// Open loop: this worker's share of the rate (proportional to its open connections).
    pub rate: Option<f64>,
}

/// A worker's connect-phase figures.
struct ConnectStats {
    /// Connect plus handshake times.
    connect_us: Histogram<u64>,
    /// Failed attempts.
    failures: u64,
}

/// Everything the workers measured, merged, plus the run's own timing.
struct Merged<R> {
    /// Connect times of every worker.
    connect_us: Histogram<u64>,
    /// Failed attempts of every worker.
    failures: u64,
    /// Each worker's scenario result.
    results: Vec<R>,
    /// Process CPU seconds at t0, to charge only the run phase per message.
    cpu_at_t0: f64,
}

/// Seconds to nanoseconds.
fn nanos(secs: f64) -> Nanos {
    (secs * 1e9) as Nanos
}

/// The connect plan of one worker.
fn connect_plan(common: &CommonArgs, max_message: usize) -> ConnectPlan {
    let threads = u32::from(common.threads).max(1);
    ConnectPlan {
        targets: common.url.clone(),
        concurrency: common.concurrency.div_ceil(threads) as usize,
        timeout: Duration::from_secs_f64(common.connect_timeout),
        config: ws_config(max_message),
    }
}

/// Runs `body` on every worker once all have connected; `rate` is split by open connections.
fn run_workers<R, F>(
    common: &CommonArgs,
    max_message: usize,
    rate: Option<f64>,
    body: F,
) -> anyhow::Result<Merged<R>>
where
    R: Send,
    F: Fn(Fleet, Start, &ThreadProgress) -> io::Result<R> + Sync,
{
    let threads = usize::from(common.threads).max(1);
    let plan = connect_plan(common, max_message);
    let progress = Progress::new(threads);
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Option<u64>)>();
    let started = Instant::now();
    thread::scope(|scope| {
        let mut handles = Vec::new();
        let mut starts = Vec::new();
        for k in 0..threads {
            let (start_tx, start_rx) = mpsc::channel::<Start>();
            starts.push(start_tx);
            let indices: Vec<u32> = (k as u32..common.connections).step_by(threads).collect();
            let (ready_tx, plan, progress, body) = (ready_tx.clone(), &plan, &progress, &body);
            handles
                .push(scope.spawn(move || {
                    worker(k, &indices, plan, progress, body, &ready_tx, &start_rx)
                }));
        }
        drop(ready_tx);
        let open = wait_connected(&ready_rx, threads, &progress, started);
        let total_open: u64 = open.iter().sum();
        eprintln!(
            "hermod-loadgen: {total_open} of {} connections open after {:.2}s",
            common.connections,
            started.elapsed().as_secs_f64()
        );
        let cpu_at_t0 = sys::cpu_seconds();
        let t0 = Instant::now();
        for (k, tx) in starts.iter().enumerate() {
            let share = match total_open {
                0 => 0.0,
                n => open[k] as f64 / n as f64,
            };
            let _ = tx.send(Start {
                t0,
                rate: rate.map(|r| r * share),
            });
        }
        print_progress_until_done(&handles, &progress, t0);
        merge(handles, cpu_at_t0)
    })
}

/// One worker thread: connect its share, report, wait for the start, run the scenario.
fn worker<R, F>(
    k: usize,
    indices: &[u32],
    plan: &ConnectPlan,
    progress: &Progress,
    body: &F,
    ready_tx: &mpsc::Sender<(usize, Option<u64>)>,
    start_rx: &mpsc::Receiver<Start>,
) -> io::Result<(ConnectStats, R)>
where
    F: Fn(Fleet, Start, &ThreadProgress) -> io::Result<R>,
{
    let slot = progress
        .slot(k)
        .ok_or_else(|| io::Error::other("no progress slot"))?;
    let fleet = match Fleet::connect(plan, indices, slot) {
        Ok(f) => f,
        Err(e) => {
            let _ = ready_tx.send((k, None));
            return Err(e);
        }
    };
    let _ = ready_tx.send((k, Some(fleet.open_count())));
    let start = start_rx.recv().map_err(|_| io::Error::other("no start"))?;
    let stats = ConnectStats {
        connect_us: fleet.connect_us.clone(),
        failures: fleet.failures,
    };
    Ok((stats, body(fleet, start, slot)?))
}

/// Waits for every worker's connect phase, printing progress; returns open connections per worker.
fn wait_connected(
    ready: &mpsc::Receiver<(usize, Option<u64>)>,
    threads: usize,
    progress: &Progress,
    started: Instant,
) -> Vec<u64> {
    let mut open = vec![0u64; threads];
    let mut reported = 0;
    while reported < threads {
        match ready.recv_timeout(PROGRESS_EVERY) {
            Ok((k, count)) => {
                open[k] = count.unwrap_or(0);
                reported += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let s = progress.snapshot();
                eprintln!(
                    "[{:6.1}s] connecting: {} open, {} failed",
                    started.elapsed().as_secs_f64(),
                    s.connected,
                    s.failures
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    open
}

/// Prints the progress line every second until every worker has finished.
fn print_progress_until_done<T>(
    handles: &[thread::ScopedJoinHandle<'_, T>],
    progress: &Progress,
    t0: Instant,
) {
    let mut before = Snapshot::default();
    let mut last = t0;
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(20));
        if last.elapsed() >= PROGRESS_EVERY {
            let now = progress.snapshot();
            let interval = last.elapsed().as_secs_f64();
            eprintln!(
                "{}",
                progress::line(t0.elapsed().as_secs_f64(), &now, &before, interval)
            );
            before = now;
            last = Instant::now();
        }
    }
}

/// Joins the workers and merges their connect figures.
fn merge<R>(
    handles: Vec<thread::ScopedJoinHandle<'_, io::Result<(ConnectStats, R)>>>,
    cpu_at_t0: f64,
) -> anyhow::Result<Merged<R>> {
    let mut merged = Merged {
        connect_us: new_histogram(),
        failures: 0,
        results: Vec::new(),
        cpu_at_t0,
    };
    for h in handles {
        let (stats, r) = h
            .join()
            .map_err(|_| anyhow!("a worker thread panicked"))?
            .context("worker failed")?;
        merged
            .connect_us
            .add(&stats.connect_us)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        merged.failures += stats.failures;
        merged.results.push(r);
    }
    Ok(merged)
}

/// Runs the `echo` scenario.
pub fn run_echo(args: &EchoArgs) -> anyhow::Result<Report> {
    let size = args.size as usize;
    let warmup = nanos(args.warmup);
    let end = warmup + nanos(args.duration);
    let drain_until = end + nanos(args.drain);
    let rate = if args.closed_loop { None } else { args.rate };
    let in_flight = args.in_flight.unwrap_or(1);
    if args.closed_loop {
        eprintln!(
            "hermod-loadgen: closed loop, in-flight depth {in_flight} per connection ({} in total)",
            u64::from(in_flight) * u64::from(args.common.connections)
        );
    }
    let merged = run_workers(&args.common, size, rate, |fleet, start, slot| {
        let (poll, open) = fleet.into_open()?;
        let timing = Timing {
            t0: start.t0,
            end,
            drain_until,
            tick: args.tick_us * 1_000,
        };
        let pacing = match start.rate {
            Some(r) => Pacing::Open(OpenLoop::new(r, open.len(), warmup, end)),
            None => Pacing::Closed(ClosedLoop::new(in_flight, warmup, end)),
        };
        EchoWorker::new(poll, open, pacing, timing, size, slot)?.run()
    })?;
    echo_report(args, rate, merged)
}

/// Builds the echo report from the merged worker outcomes.
fn echo_report(
    args: &EchoArgs,
    rate: Option<f64>,
    merged: Merged<EchoOutcome>,
) -> anyhow::Result<Report> {
    let mut audit = AuditSummary::default();
    let mut latency = new_histogram();
    let mut send_lag = new_histogram();
    let (mut errors, mut sent_all, mut held) = (merged.failures, 0, 0);
    for r in &merged.results {
        audit.merge(&r.audit);
        latency
            .add(&r.latency)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        send_lag
            .add(&r.send_lag)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        errors += r.errors;
        sent_all += r.sent_all;
        held += r.held;
    }
    let cpu_seconds = sys::cpu_seconds();
    let achieved_rate = audit.sent as f64 / args.duration;
    let mut report = Report {
        scenario: "echo",
        mode: if args.closed_loop { "closed" } else { "open" },
        connections: u64::from(args.common.connections),
        connected: merged.connect_us.len(),
        held,
        in_flight: args.closed_loop.then_some(args.in_flight.unwrap_or(1)),
        size: Some(u64::from(args.size)),
        duration_s: args.duration,
        warmup_s: args.warmup,
        target_rate: rate,
        achieved_rate,
        received_rate: audit.received as f64 / args.duration,
        valid: is_valid(rate, achieved_rate),
        errors,
        connect_failures: merged.failures,
        latency_us: Percentiles::of(&latency),
        send_lag_us: Percentiles::of(&send_lag),
        connect_us: Percentiles::of(&merged.connect_us),
        cpu_seconds,
        cpu_us_per_message: (sent_all > 0)
            .then(|| (cpu_seconds - merged.cpu_at_t0) * 1e6 / sent_all as f64),
        ..Report::empty("echo")
    };
    report.set_audit(&audit);
    Ok(report)
}

/// Runs the `connect` scenario: open, hold idle, close.
pub fn run_connect(args: &ConnectArgs) -> anyhow::Result<Report> {
    let hold = Duration::from_secs_f64(args.hold);
    let merged = run_workers(&args.common, 0, None, |mut fleet, start, _slot| {
        fleet.hold(start.t0 + hold)?;
        let held = fleet.open_count();
        let dropped = fleet.dropped;
        fleet.close_all();
        Ok((held, dropped))
    })?;
    let held: u64 = merged.results.iter().map(|r| r.0).sum();
    let dropped: u64 = merged.results.iter().map(|r| r.1).sum();
    let connections = u64::from(args.common.connections);
    let errors = merged.failures + dropped;
    Ok(Report {
        mode: "hold",
        connections,
        connected: merged.connect_us.len(),
        held,
        duration_s: args.hold,
        valid: errors == 0 && held == connections,
        errors,
        connect_failures: merged.failures,
        connect_us: Percentiles::of(&merged.connect_us),
        cpu_seconds: sys::cpu_seconds(),
        ..Report::empty("connect")
    })
}
