//! `connect --churn`: open-loop connection cycles. Cycle `i` is due at `t0 + i / rate`; it
//! connects, upgrades, sends one text frame, waits for the first data frame back (the echo, or
//! Hermod's `welcome`) and closes. Latency runs from the cycle's due time to that frame, so a
//! slow accept queue shows as latency, as wrk2 would; connect times are recorded separately.
//! At most `--connections` cycles (split over threads and processes) run at once: a due cycle
//! without a free slot is counted as an error and not started (the achieved rate shows it).

use std::io;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use tungstenite::Message;

use crate::audit::AuditSummary;
use crate::cli::ConnectArgs;
use crate::conn::{self, Conn, Step};
use crate::fleet::ConnectPlan;
use crate::outcome::Outcome;
use crate::progress::ThreadProgress;
use crate::report::{new_histogram, record_ns};
use crate::run::{self, connect_plan, Coordinator, Start};
use crate::schedule::{Nanos, OpenLoop};
use crate::sys::{self, Timer};
use crate::target::Auth;

/// The timer's token; cycle tokens are pool slots.
const TIMER: Token = Token(usize::MAX);
/// The one frame each cycle sends: harmless on Hermod's `/ws`, echoed by echo endpoints.
const PROBE: &str = r#"{"op":"ack","id":"0"}"#;

/// One cycle in progress.
struct Cycle {
    /// The connection.
    conn: Conn,
    /// Its due time.
    due: Nanos,
    /// Due inside the measured window.
    measured: bool,
}

/// One thread's churn.
struct Churn<'a> {
    /// The thread's poll.
    poll: Poll,
    /// Wakes the loop at the next due cycle.
    timer: Timer,
    /// Pool slot -> cycle in progress.
    slots: Vec<Option<Cycle>>,
    /// Free pool slots.
    free: Vec<usize>,
    /// Pool slot -> global connection index (`{i}`, source address).
    pool: Vec<u32>,
    /// Cycle schedule.
    schedule: OpenLoop,
    /// Connect plan.
    plan: &'a ConnectPlan,
    /// Connect plus handshake times of measured cycles.
    connect: Histogram<u64>,
    /// Due time to first frame back, measured cycles.
    latency: Histogram<u64>,
    /// Measured cycles started and completed.
    audit: AuditSummary,
    /// Failed cycles and cycles that found no free slot.
    errors: u64,
    /// Cycles started, warmup included.
    started: u64,
    /// Cycles whose handshake completed.
    opened: u64,
    /// Cycles completed, warmup included.
    completed: u64,
}

/// Runs `connect --churn` in this process.
pub fn run_churn(
    a: &ConnectArgs,
    coordinator: &dyn Coordinator,
    auth: Auth,
) -> anyhow::Result<Outcome> {
    let plan = connect_plan(&a.common, 0, auth);
    let warmup = (a.warmup * 1e9) as Nanos;
    let end = warmup + (a.duration * 1e9) as Nanos;
    let drain_until = end + (a.common.connect_timeout * 1e9) as Nanos;
    run::run_process(
        &a.common,
        (&plan, false),
        coordinator,
        |_fleet, mine| Ok((mine.to_vec(), 1)),
        |pool, start, slot| churn_thread(&plan, pool, start, (warmup, end, drain_until), slot),
    )
}

/// One thread's churn loop.
fn churn_thread(
    plan: &ConnectPlan,
    pool: Vec<u32>,
    start: Start,
    (warmup, end, drain_until): (Nanos, Nanos, Nanos),
    progress: &ThreadProgress,
) -> io::Result<Outcome> {
    let mut timer = Timer::new()?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut timer, TIMER, Interest::READABLE)?;
    let rate = start.rate.unwrap_or(1.0);
    let mut churn = Churn {
        poll,
        timer,
        slots: (0..pool.len()).map(|_| None).collect(),
        free: (0..pool.len()).rev().collect(),
        pool,
        schedule: OpenLoop::new(rate, 1, warmup, end),
        plan,
        connect: new_histogram(),
        latency: new_histogram(),
        audit: AuditSummary::default(),
        errors: 0,
        started: 0,
        opened: 0,
        completed: 0,
    };
    sys::tighten_timer_slack();
    start.clock.wait_start();
    let mut events = Events::with_capacity(1024);
    loop {
        let now = start.clock.now();
        churn.release(now);
        churn.expire(now);
        let busy = churn.free.len() < churn.slots.len();
        if now >= end && (!busy || now >= drain_until) {
            break;
        }
        progress.set_counts(churn.started, churn.completed, churn.errors);
        progress.set_p99(churn.latency.value_at_quantile(0.99));
        let mut timeout = Duration::from_millis(100);
        if let Some(due) = churn.schedule.next_due() {
            if due <= now {
                continue;
            }
            churn.timer.arm(Duration::from_nanos(due - now))?;
            timeout = timeout.min(Duration::from_nanos(due - now) + Duration::from_millis(1));
        }
        match churn.poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        let now = start.clock.now();
        for event in events.iter() {
            if event.token() != TIMER {
                churn.on_event(event.token().0, now);
            }
        }
    }
    Ok(churn.outcome())
}

impl Churn<'_> {
    /// Starts every cycle now due, if a slot is free.
    fn release(&mut self, now: Nanos) {
        for i in self.schedule.poll_due(now) {
            let measured = self.schedule.is_measured(i);
            let Some(s) = self.free.pop() else {
                self.errors += 1;
                continue;
            };
            let (url, addr, source) = self.plan.endpoint(self.pool[s]);
            let registry = self.poll.registry();
            match Conn::start(
                self.pool[s],
                (addr, source),
                url,
                self.plan.config,
                registry,
                Token(s),
            ) {
                Ok(conn) => {
                    self.started += 1;
                    self.audit.sent += u64::from(measured);
                    self.audit.expected += u64::from(measured);
                    let due = self.schedule.due(i);
                    self.slots[s] = Some(Cycle {
                        conn,
                        due,
                        measured,
                    });
                }
                Err(_) => {
                    self.errors += 1;
                    self.free.push(s);
                }
            }
        }
    }

    /// Advances cycle `s` after a readiness event.
    fn on_event(&mut self, s: usize, now: Nanos) {
        let Some(cycle) = self.slots.get_mut(s).and_then(Option::as_mut) else {
            return;
        };
        cycle.conn.on_event();
        if cycle.conn.is_pending() {
            match cycle.conn.advance() {
                Step::Pending => return,
                Step::Failed(_) => return self.finish(s, false, now),
                Step::Opened => {
                    self.opened += 1;
                    if cycle.measured {
                        let took = cycle.conn.started.elapsed().as_nanos() as u64;
                        record_ns(&mut self.connect, took);
                    }
                    let ws = cycle.conn.ws();
                    let sent = ws.is_some_and(|ws| {
                        ws.write(Message::Text(PROBE.into())).is_ok() && conn::flush(ws).is_ok()
                    });
                    if !sent {
                        return self.finish(s, false, now);
                    }
                }
            }
        }
        self.read(s, now);
    }

    /// Reads an open cycle; the first data frame completes it.
    fn read(&mut self, s: usize, now: Nanos) {
        let Some(ws) = self
            .slots
            .get_mut(s)
            .and_then(Option::as_mut)
            .and_then(|c| c.conn.ws())
        else {
            return;
        };
        loop {
            match ws.read() {
                Ok(Message::Text(_) | Message::Binary(_)) => return self.finish(s, true, now),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = conn::flush(ws);
                    return;
                }
                Err(_) => return self.finish(s, false, now),
            }
        }
    }

    /// Ends cycle `s` (closing politely when it completed) and frees its slot.
    fn finish(&mut self, s: usize, ok: bool, now: Nanos) {
        let Some(mut cycle) = self.slots.get_mut(s).and_then(Option::take) else {
            return;
        };
        if ok {
            self.completed += 1;
            if cycle.measured {
                self.audit.received += 1;
                record_ns(&mut self.latency, now.saturating_sub(cycle.due));
            }
            if let Some(ws) = cycle.conn.ws() {
                conn::close_politely(ws);
            }
        } else {
            self.errors += 1;
        }
        self.free.push(s);
    }

    /// Fails the cycles that have taken longer than the connect timeout.
    fn expire(&mut self, now: Nanos) {
        let limit = self.plan.timeout.as_nanos() as Nanos;
        for s in 0..self.slots.len() {
            let late = self.slots[s]
                .as_ref()
                .is_some_and(|c| now.saturating_sub(c.due) > limit);
            if late {
                self.finish(s, false, now);
            }
        }
    }

    /// The thread's figures.
    fn outcome(self) -> Outcome {
        Outcome {
            audit: self.audit,
            errors: self.errors,
            connected: self.opened,
            on_time: self.audit.sent,
            sent_all: self.started,
            received_all: self.completed,
            latency: self.latency,
            connect: self.connect,
            ..Outcome::default()
        }
    }
}
