//! Runs one process's share of a scenario: spreads its connections over worker threads, lets each
//! open its share and prepare (join rooms), agrees on one t0 (chosen here, or by the parent of a
//! `--procs` run), prints progress, and merges the threads' outcomes.

use std::io;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::cli::CommonArgs;
use crate::conn::ws_config;
use crate::fleet::{ConnectPlan, Fleet};
use crate::outcome::Outcome;
use crate::progress::{self, Progress, Snapshot, ThreadProgress};
use crate::sys::{self, Clock};
use crate::target::Auth;

/// Interval of the progress line.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Time between choosing t0 and t0, for every worker to hear of it.
pub const START_DELAY: Duration = Duration::from_millis(100);

/// What each worker thread is told once every worker is ready.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// The common start of the run.
    pub clock: Clock,
    /// Open loop: this thread's share of the rate (proportional to its senders).
    pub rate: Option<f64>,
}

/// How a process learns its start and reports its progress: on its own, or through its parent.
pub trait Coordinator: Sync {
    /// Every thread is ready with `senders` open senders in total: returns t0 and this
    /// process's rate.
    fn start(&self, senders: u64) -> anyhow::Result<(Clock, Option<f64>)>;
    /// Called about once a second while the run lasts.
    fn progress(&self, elapsed_s: f64, now: &Snapshot, before: &Snapshot, interval_s: f64);
}

/// A process that is the whole run.
pub struct Alone {
    /// The total rate (open loop).
    pub rate: Option<f64>,
}

impl Coordinator for Alone {
    fn start(&self, _senders: u64) -> anyhow::Result<(Clock, Option<f64>)> {
        Ok((Clock::starting_in(START_DELAY), self.rate))
    }

    fn progress(&self, elapsed_s: f64, now: &Snapshot, before: &Snapshot, interval_s: f64) {
        eprintln!("{}", progress::line(elapsed_s, now, before, interval_s));
    }
}

/// The global connection indexes of this process: every `count`-th from `index`.
pub fn process_indices(common: &CommonArgs) -> Vec<u32> {
    let count = u32::from(common.worker_count.unwrap_or(1)).max(1);
    let index = u32::from(common.worker_index.unwrap_or(0));
    (index..common.connections)
        .step_by(count as usize)
        .collect()
}

/// The connect plan of one worker thread.
pub fn connect_plan(common: &CommonArgs, max_message: usize, auth: Auth) -> ConnectPlan {
    let threads = u32::from(common.threads).max(1);
    ConnectPlan {
        targets: common.url.clone(),
        concurrency: common.concurrency.div_ceil(threads) as usize,
        timeout: Duration::from_secs_f64(common.connect_timeout),
        config: ws_config(max_message),
        auth,
        sources: common
            .source_ips
            .as_ref()
            .map(|s| s.0.clone())
            .unwrap_or_default(),
    }
}

/// Runs one process's share: each thread opens its connections (when `preconnect`), then
/// `prepare` gets the fleet and the thread's connection indexes and returns the prepared state
/// and its number of senders; `body` runs from t0. Returns the merged outcome of every thread,
/// CPU included.
pub fn run_process<P, Prep, Body>(
    common: &CommonArgs,
    (plan, preconnect): (&ConnectPlan, bool),
    coordinator: &dyn Coordinator,
    prepare: Prep,
    body: Body,
) -> anyhow::Result<Outcome>
where
    P: Send,
    Prep: Fn(Fleet, &[u32]) -> io::Result<(P, u64)> + Sync,
    Body: Fn(P, Start, &ThreadProgress) -> io::Result<Outcome> + Sync,
{
    let threads = usize::from(common.threads).max(1);
    let indices = process_indices(common);
    let progress = Progress::new(threads);
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Option<u64>)>();
    let started = Instant::now();
    let (outcome, cpu_at_t0) = thread::scope(|scope| -> anyhow::Result<(Outcome, f64)> {
        let mut handles = Vec::new();
        let mut starts = Vec::new();
        for k in 0..threads {
            let (start_tx, start_rx) = mpsc::channel::<Start>();
            starts.push(start_tx);
            let mine: Vec<u32> = indices.iter().copied().skip(k).step_by(threads).collect();
            let (ready_tx, progress, prepare, body) =
                (ready_tx.clone(), &progress, &prepare, &body);
            handles.push(scope.spawn(move || -> io::Result<Outcome> {
                let slot = progress
                    .slot(k)
                    .ok_or_else(|| io::Error::other("no progress slot"))?;
                let open: &[u32] = if preconnect { &mine } else { &[] };
                let prepared = Fleet::connect(plan, open, slot).and_then(|fleet| {
                    let connect = (fleet.connect_us.clone(), fleet.failures);
                    prepare(fleet, &mine).map(|(p, senders)| (p, senders, connect))
                });
                let (p, senders, (connect, failures)) = match prepared {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = ready_tx.send((k, None));
                        return Err(e);
                    }
                };
                let _ = ready_tx.send((k, Some(senders)));
                let start = start_rx.recv().map_err(|_| io::Error::other("no start"))?;
                let mut outcome = body(p, start, slot)?;
                outcome.connected += connect.len();
                outcome.connect_failures += failures;
                outcome.errors += failures;
                outcome
                    .connect
                    .add(&connect)
                    .map_err(|e| io::Error::other(format!("{e:?}")))?;
                Ok(outcome)
            }));
        }
        drop(ready_tx);
        let senders = wait_ready(&ready_rx, threads, &progress, started);
        let total: u64 = senders.iter().sum();
        let (clock, rate) = coordinator.start(total)?;
        let cpu_at_t0 = sys::cpu_seconds();
        for (k, tx) in starts.iter().enumerate() {
            let share = match total {
                0 => 1.0 / threads as f64,
                n => senders[k] as f64 / n as f64,
            };
            let _ = tx.send(Start {
                clock,
                rate: rate.map(|r| r * share),
            });
        }
        clock.wait_start();
        watch(&handles, &progress, coordinator);
        let mut merged = Outcome::default();
        for h in handles {
            let o = h
                .join()
                .map_err(|_| anyhow!("a worker thread panicked"))?
                .map_err(|e| anyhow!("worker failed: {e}"))?;
            merged.merge(&o)?;
        }
        Ok((merged, cpu_at_t0))
    })?;
    let cpu = sys::cpu_seconds();
    Ok(Outcome {
        cpu_seconds: cpu,
        cpu_run_seconds: cpu - cpu_at_t0,
        ..outcome
    })
}

/// Waits for every thread to be connected and prepared, printing connect progress; returns
/// each thread's number of senders.
fn wait_ready(
    ready: &mpsc::Receiver<(usize, Option<u64>)>,
    threads: usize,
    progress: &Progress,
    started: Instant,
) -> Vec<u64> {
    let mut senders = vec![0u64; threads];
    let mut reported = 0;
    while reported < threads {
        match ready.recv_timeout(PROGRESS_EVERY) {
            Ok((k, count)) => {
                senders[k] = count.unwrap_or(0);
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
    let s = progress.snapshot();
    eprintln!(
        "hermod-loadgen: {} connections open ({} failed) after {:.2}s",
        s.connected,
        s.failures,
        started.elapsed().as_secs_f64()
    );
    senders
}

/// Reports progress about once a second until every thread has finished.
fn watch<T>(
    handles: &[thread::ScopedJoinHandle<'_, T>],
    progress: &Progress,
    coordinator: &dyn Coordinator,
) {
    let t0 = Instant::now();
    let mut before = Snapshot::default();
    let mut last = t0;
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(20));
        if last.elapsed() >= PROGRESS_EVERY {
            let now = progress.snapshot();
            let interval = last.elapsed().as_secs_f64();
            coordinator.progress(t0.elapsed().as_secs_f64(), &now, &before, interval);
            before = now;
            last = Instant::now();
        }
    }
}
