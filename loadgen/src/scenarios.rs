//! Each scenario's glue: options to connect plan, preparation, script and report; and the choice
//! between running alone, as the parent of `--procs` workers, or as one of those workers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::chat::{self, ChatScript, ChatSetup, DrainCounters, Layout, Names};
use crate::churn;
use crate::cli::{AuthMode, CommonArgs, ConnectArgs, LoadArgs, Scenario};
use crate::driver::{Driver, Pacing, Timing};
use crate::echo::EchoScript;
use crate::outcome::Outcome;
use crate::procs::{self, ChildSide};
use crate::reconnect::Sessions;
use crate::report::{is_valid, Percentiles, Report};
use crate::run::{self, connect_plan, Alone, Coordinator};
use crate::schedule::{ClosedLoop, Nanos, OpenLoop};
use crate::target::Auth;
use crate::wire::Rooms;

/// Options that parse but do not fit together: exit code 2, like clap's errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadOptions(pub String);

/// Seconds to nanoseconds.
fn nanos(secs: f64) -> Nanos {
    (secs * 1e9) as Nanos
}

/// Runs the scenario; `None` when this process is a `--procs` worker (its result went to the
/// parent).
pub fn run(scenario: &Scenario) -> anyhow::Result<Option<Report>> {
    let common = scenario.common();
    let rooms = room_layout(scenario)?;
    let auth = auth(scenario)?;
    let rate = offered_rate(scenario);
    let outcome = if common.worker_index.is_some() {
        let child = ChildSide::new();
        let outcome = run_local(scenario, &child, rooms, auth)?;
        child.send_result(&outcome)?;
        return Ok(None);
    } else if common.procs > 1 {
        procs::run_parent(common.procs, rate, rand::random())?
    } else {
        run_local(scenario, &Alone { rate }, rooms, auth)?
    };
    Ok(Some(build_report(scenario, rooms, outcome)))
}

/// The open-loop rate, if any.
fn offered_rate(scenario: &Scenario) -> Option<f64> {
    match scenario {
        Scenario::Echo(a) => load_rate(a),
        Scenario::Direct(a) => load_rate(&a.load),
        Scenario::Room(a) => load_rate(&a.load),
        Scenario::Connect(a) => a.churn.then_some(a.rate).flatten(),
    }
}

/// The rate of a message scenario (`None` in closed loop).
fn load_rate(a: &LoadArgs) -> Option<f64> {
    if a.closed_loop {
        None
    } else {
        a.rate
    }
}

/// The room layout of a `room` run, checked against the number of users.
fn room_layout(scenario: &Scenario) -> Result<Option<Rooms>, BadOptions> {
    let Scenario::Room(a) = scenario else {
        return Ok(None);
    };
    let users = a.load.common.connections;
    let members = a.members.unwrap_or(users / a.rooms);
    if members == 0 || u64::from(members) * u64::from(a.rooms) != u64::from(users) {
        return Err(BadOptions(format!(
            "--connections ({users}) must equal --rooms ({}) x --members ({members})",
            a.rooms
        )));
    }
    if a.publishers > members {
        return Err(BadOptions(format!(
            "--publishers ({}) must not exceed --members ({members})",
            a.publishers
        )));
    }
    Ok(Some(Rooms {
        rooms: a.rooms,
        members,
        publishers: a.publishers,
    }))
}

/// How connections authenticate.
fn auth(scenario: &Scenario) -> Result<Auth, BadOptions> {
    let common = scenario.common();
    if matches!(scenario, Scenario::Echo(_) | Scenario::Connect(_)) && common.auth.is_none() {
        return Ok(Auth::Plain);
    }
    let prefix = common.user_prefix.clone();
    let device = "lg".to_string();
    match (common.auth, &common.jwt_secret) {
        (Some(AuthMode::None), _) => Ok(Auth::Query { prefix, device }),
        (Some(AuthMode::Jwt) | None, Some(secret)) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // Rooms no namespace names need a grant: a `room` run's tokens grant its rooms.
            let room_grants = match scenario {
                Scenario::Room(a) => vec![format!("{}*", a.room_prefix)],
                _ => Vec::new(),
            };
            Ok(Auth::Jwt {
                room_grants,
                secret: secret.clone(),
                prefix,
                device,
                exp_unix: now + 24 * 3600,
            })
        }
        _ => Err(BadOptions(
            "--jwt-secret is required unless --auth none".to_string(),
        )),
    }
}

/// Runs this process's share of the scenario.
fn run_local(
    scenario: &Scenario,
    coordinator: &dyn Coordinator,
    rooms: Option<Rooms>,
    auth: Auth,
) -> anyhow::Result<Outcome> {
    let common = scenario.common();
    match scenario {
        Scenario::Echo(a) => run_echo(a, coordinator, auth),
        Scenario::Direct(a) => {
            let layout = Layout::Direct {
                pattern: a.pattern,
                users: common.connections,
            };
            run_chat(&a.load, layout, "lgroom", coordinator, auth)
        }
        Scenario::Room(a) => {
            let rooms = rooms.ok_or_else(|| BadOptions("no room layout".into()))?;
            run_chat(
                &a.load,
                Layout::Room(rooms),
                &a.room_prefix,
                coordinator,
                auth,
            )
        }
        Scenario::Connect(a) if a.churn => churn::run_churn(a, coordinator, auth),
        Scenario::Connect(a) => run_hold(a, coordinator, auth),
    }
}

/// The timing and pacing of a message scenario for one thread.
fn pacing(a: &LoadArgs, start: run::Start, senders: usize) -> (Timing, Pacing) {
    let warmup = nanos(a.warmup);
    let end = warmup + nanos(a.duration);
    let timing = Timing {
        clock: start.clock,
        end,
        drain_until: end + nanos(a.drain),
        tick: a.tick_us * 1_000,
        read_at_ticks: a.read_at_ticks,
    };
    let pacing = match start.rate {
        Some(r) if !a.closed_loop => Pacing::Open(OpenLoop::new(r, senders, warmup, end)),
        _ => Pacing::Closed(ClosedLoop::new(a.in_flight.unwrap_or(1), warmup, end)),
    };
    (timing, pacing)
}

/// Runs the `echo` scenario in this process.
fn run_echo(a: &LoadArgs, coordinator: &dyn Coordinator, auth: Auth) -> anyhow::Result<Outcome> {
    let size = a.size as usize;
    if a.closed_loop && a.common.worker_index.is_none() {
        let k = a.in_flight.unwrap_or(1);
        eprintln!("hermod-loadgen: closed loop, in-flight depth {k} per connection");
    }
    let plan = connect_plan(&a.common, size, auth);
    run::run_process(
        &a.common,
        (&plan, true),
        coordinator,
        |fleet, _| {
            let (poll, open) = fleet.into_open()?;
            let n = open.len() as u64;
            Ok(((poll, open), n))
        },
        |(poll, open), start, slot| {
            let (indexes, conns): (Vec<u32>, Vec<_>) = open.into_iter().unzip();
            let (timing, pacing) = pacing(a, start, conns.len());
            let senders = (0..conns.len()).collect();
            let sessions = Sessions::new(&indexes, None);
            let script = EchoScript::new(indexes, size);
            let paced = (pacing, timing);
            Driver::new(poll, conns, senders, paced, script, sessions, slot)?.run()
        },
    )
}

/// Runs `direct` or `room` in this process.
fn run_chat(
    a: &LoadArgs,
    layout: Layout,
    room_prefix: &str,
    coordinator: &dyn Coordinator,
    auth: Auth,
) -> anyhow::Result<Outcome> {
    let common: &CommonArgs = &a.common;
    let names = Names {
        user_prefix: common.user_prefix.clone(),
        room_prefix: room_prefix.to_string(),
    };
    let warmup = nanos(a.warmup);
    let setup = ChatSetup {
        layout: layout.clone(),
        names: names.clone(),
        run: common.run_id.unwrap_or_else(rand::random),
        size: a.size as usize,
        window: (warmup, warmup + nanos(a.duration)),
    };
    let drain = Arc::new(DrainCounters {
        exact: common.worker_count.unwrap_or(1) <= 1,
        ..DrainCounters::default()
    });
    let plan = connect_plan(common, a.size as usize, auth);
    let timeout = Duration::from_secs_f64(common.connect_timeout);
    run::run_process(
        common,
        (&plan, true),
        coordinator,
        |fleet, _| {
            let (mut poll, open) = fleet.into_open()?;
            let (users, mut conns): (Vec<u32>, Vec<_>) = open.into_iter().unzip();
            let unjoined = chat::prepare(&mut poll, &mut conns, &users, &layout, &names, timeout)?;
            if unjoined > 0 {
                eprintln!("hermod-loadgen: {unjoined} room joins not confirmed");
            }
            let senders: Vec<usize> = match &layout {
                Layout::Room(r) => (0..users.len())
                    .filter(|&k| r.is_publisher(users[k]))
                    .collect(),
                Layout::Direct { .. } => (0..users.len()).collect(),
            };
            let n = senders.len() as u64;
            Ok(((poll, users, conns, senders), n))
        },
        |(poll, users, conns, senders), start, slot| {
            let (timing, pacing) = pacing(a, start, senders.len());
            let redial = (!a.no_reconnect).then(|| plan.clone());
            let sessions = Sessions::new(&users, redial);
            let script = ChatScript::new(setup.clone(), users, Arc::clone(&drain));
            let paced = (pacing, timing);
            Driver::new(poll, conns, senders, paced, script, sessions, slot)?.run()
        },
    )
}

/// Runs `connect` (hold) in this process: open, hold idle, close.
fn run_hold(a: &ConnectArgs, coordinator: &dyn Coordinator, auth: Auth) -> anyhow::Result<Outcome> {
    let plan = connect_plan(&a.common, 0, auth);
    let hold = Duration::from_secs_f64(a.hold);
    run::run_process(
        &a.common,
        (&plan, true),
        coordinator,
        |fleet, _| Ok((fleet, 0)),
        |mut fleet, start, _slot| {
            start.clock.wait_start();
            fleet.hold(std::time::Instant::now() + hold)?;
            let held = fleet.open_count();
            let errors = fleet.dropped;
            fleet.close_all();
            Ok(Outcome {
                held,
                errors,
                ..Outcome::default()
            })
        },
    )
}

/// The report of a finished run.
fn build_report(scenario: &Scenario, rooms: Option<Rooms>, o: Outcome) -> Report {
    let common = scenario.common();
    let connections = u64::from(common.connections);
    let rate = offered_rate(scenario);
    let (name, load) = match scenario {
        Scenario::Echo(a) => ("echo", Some(a)),
        Scenario::Direct(a) => ("direct", Some(&a.load)),
        Scenario::Room(a) => ("room", Some(&a.load)),
        Scenario::Connect(_) => ("connect", None),
    };
    let (duration, warmup) = match (scenario, load) {
        (_, Some(l)) => (l.duration, l.warmup),
        (Scenario::Connect(c), None) if c.churn => (c.duration, c.warmup),
        (Scenario::Connect(c), None) => (c.hold, 0.0),
        _ => (0.0, 0.0),
    };
    let audit = o.audit.with_lost();
    let achieved_rate = o.on_time as f64 / duration.max(1e-9);
    let messages = o.sent_all;
    let hold = matches!(scenario, Scenario::Connect(c) if !c.churn);
    let valid = if hold {
        o.errors == 0 && o.held == connections
    } else {
        is_valid(rate, achieved_rate)
    };
    let mode = match (scenario, load) {
        (Scenario::Connect(c), _) if c.churn => "churn",
        (Scenario::Connect(_), _) => "hold",
        (_, Some(l)) if l.closed_loop => "closed",
        _ => "open",
    };
    let mut report = Report {
        mode,
        connections,
        connected: o.connected,
        held: o.held,
        in_flight: load
            .filter(|l| l.closed_loop)
            .map(|l| l.in_flight.unwrap_or(1)),
        size: load.map(|l| u64::from(l.size)),
        duration_s: duration,
        warmup_s: warmup,
        target_rate: rate,
        achieved_rate,
        received_rate: audit.received as f64 / duration.max(1e-9),
        valid,
        errors: o.errors,
        connect_failures: o.connect_failures,
        latency_us: Percentiles::of(&o.latency),
        send_lag_us: Percentiles::of(&o.send_lag),
        connect_us: Percentiles::of(&o.connect),
        cpu_seconds: o.cpu_seconds,
        reconnects: o.reconnects,
        closed_by_code: o.closed_by_code,
        cpu_us_per_message: (messages > 0).then(|| o.cpu_run_seconds * 1e6 / messages as f64),
        ..Report::empty(name)
    };
    if let Some(r) = rooms {
        report.rooms = Some((r.rooms, r.members, r.publishers));
    }
    report.set_audit(&audit);
    report.latency_histogram = Some(o.latency);
    report
}
