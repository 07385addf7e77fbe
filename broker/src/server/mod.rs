//! The `hermod-broker` process: the broker runner (the same one the proxy embeds) behind a TCP
//! link listener that gateways connect to.
//!
//! Threads: `hermod-broker` (the runner: [`Broker`] + Redis engine, see `embedded.rs`),
//! `hermod-links` (the gateway links, `crate::gateways`), `hermod-registry` (the registry
//! heartbeat, `registry.rs`), `hermod-admin` (optional), and the main thread, which waits for
//! signals.
//!
//! Startup order: signal handlers; the link listener (and admin listener) bound (a failure is
//! one line, exit 1; exit 2 for an address that cannot be used at all); the runner; the link
//! thread; the registry; then the ready line on stderr, always printed:
//! `hermod-broker VERSION listening link=IP:PORT admin=IP:PORT|off node=ID advertise=ADDR
//! storage=redis|sentinel` (tests parse it).
//!
//! Draining (first SIGTERM/SIGINT): the link thread stops accepting links and ATTACHes
//! (`-DRAINING`) and pushes `draining` to every link; the registry entry is removed; once every
//! session is detached by its gateway (or `--drain-timeout` passed) the link thread ends, the
//! runner finishes what its engine has in flight (bounded) and stops, and the process exits 0.
//! A second signal exits at once.

pub mod config;
mod registry;
pub mod settings;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};
use hermod_core::admin_http::{self, AdminState};
use hermod_core::bus::Delivery;
use hermod_core::reactor::listener::{bind_listener, DEFAULT_BACKLOG};
use hermod_core::redis::Target;
use hermod_core::startup::{bind_admin, resource, spawn_signal_thread, termination_signals};
use mio::net::TcpListener;
use mio::{Poll, Waker};

use crate::embedded::{self, EmbeddedBroker, Flush, Sink};
use crate::{Broker, RedisEngine, RedisEngineConfig};

pub use crate::gateways::MAX_SESSIONS;
use crate::gateways::{Control, GatewayLinks, GatewaySessions, REQUEST_QUEUE, WAKE};
use crate::metrics::Metrics;
pub use hermod_core::link::REGISTRY_KEY;
use settings::Settings;

/// Deliveries the link thread's queue holds; a full one marks the session overflowed.
const DELIVERY_QUEUE: usize = 65_536;
/// How long stopping waits for the engine's in-flight operations after draining.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// Why the broker could not start (one line each; `exit_code` says 1 or 2).
pub use hermod_core::startup::StartError;

/// The runner, shared by the main thread (which takes it out to stop it) and the readiness
/// checks of the link, registry and admin threads.
type SharedRunner = Arc<Mutex<Option<EmbeddedBroker>>>;

/// A gateway link that has not presented the link secret by then is closed.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the broker until drained; returns the process exit code.
pub fn run(settings: Settings) -> Result<u8, StartError> {
    let signals = termination_signals()?;
    let (listener, link_addr, admin) = bind(&settings)?;

    let poll = Poll::new().map_err(resource("the link poll"))?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(resource("a waker"))?);
    let (sink, flush, deliveries) = delivery_channel(Arc::clone(&waker));
    let runner = start_runner(&settings, sink, flush)?;
    let requests = runner.sender();
    let runner: SharedRunner = Arc::new(Mutex::new(Some(runner)));
    let engine_ready = ready_fn(&runner);
    let metrics = Arc::new(Metrics::default());
    let control = Arc::new(Control {
        draining: AtomicBool::new(false),
        waker,
    });
    let links = GatewayLinks {
        poll,
        listener,
        sessions: GatewaySessions::new(
            settings.node_id.clone(),
            Arc::clone(&engine_ready),
            Arc::clone(&metrics),
        )
        .with_secret(settings.link_secret.clone()),
        requests,
        deliveries,
        control: Arc::clone(&control),
        metrics: Arc::clone(&metrics),
        link_timeout: settings.link_timeout,
        drain_timeout: settings.drain_timeout,
        auth_timeout: AUTH_TIMEOUT,
        buffer_budget: settings.link_buffer_budget,
    }
    .spawn()
    .map_err(resource("the link thread"))?;

    let advertise = settings
        .advertise
        .clone()
        .unwrap_or_else(|| link_addr.to_string());
    let registry = registry::Registry::spawn(
        settings.redis.clone(),
        format!("{}@{advertise}", settings.node_id),
        settings.registry_ttl,
        engine_ready,
        Arc::clone(&metrics),
    )
    .map_err(resource("the registry thread"))?;
    let admin_addr = match admin {
        Some(listener) => {
            let addr = listener
                .local_addr()
                .map_err(resource("the admin listener"))?;
            admin_http::spawn(listener, admin_state(&runner, &control, &metrics))
                .map_err(resource("the admin thread"))?;
            addr.to_string()
        }
        None => "off".to_owned(),
    };
    print_ready_line(&settings, link_addr, &admin_addr, &advertise);

    // The link thread ends only once drained; wait for the first signal, or for it to die.
    let (first_signal, signalled) = crossbeam_channel::bounded::<i32>(1);
    spawn_signal_thread(signals, "hermod-broker", move |sig| {
        let _ = first_signal.send(sig);
    })?;
    let code = wait_for_signal(&signalled, &links);
    control.drain();
    registry.leave();
    if links.join().is_err() {
        tracing::error!("link thread panicked");
    }
    stop_runner(&runner);
    tracing::info!("stopped");
    Ok(code)
}

/// Binds the link listener (backlog 4096) and, if configured, the admin listener.
fn bind(
    settings: &Settings,
) -> Result<(TcpListener, SocketAddr, Option<std::net::TcpListener>), StartError> {
    let listener = bind_listener(settings.listen, false, DEFAULT_BACKLOG)
        .map_err(StartError::bind("listen", settings.listen))?;
    let link_addr = listener
        .local_addr()
        .map_err(resource("the link listener"))?;
    let admin = settings.admin_listen.map(bind_admin).transpose()?;
    Ok((listener, link_addr, admin))
}

/// Blocks until a signal (exit code 0) or the link thread's unexpected end (1).
fn wait_for_signal(
    signalled: &crossbeam_channel::Receiver<i32>,
    links: &thread::JoinHandle<()>,
) -> u8 {
    loop {
        match signalled.recv_timeout(Duration::from_millis(200)) {
            Ok(sig) => {
                tracing::info!(signal = sig, "draining");
                return 0;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if !links.is_finished() => {}
            Err(_) => {
                tracing::error!("the link thread stopped unexpectedly; shutting down");
                return 1;
            }
        }
    }
}

/// The runner's deliveries to the link thread: the sink only queues (a full queue marks the
/// session overflowed, as a full worker mailbox does in the proxy), and the flush after each
/// runner turn wakes the link thread once, so it sees a room fan-out whole and can send it
/// over each link as one `msg` push.
fn delivery_channel(waker: Arc<Waker>) -> (Sink, Flush, Receiver<Delivery>) {
    let (tx, rx) = crossbeam_channel::bounded::<Delivery>(DELIVERY_QUEUE);
    let queued = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&queued);
    let sink: Sink = Box::new(move |d| match tx.try_send(d) {
        Ok(()) => {
            flag.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(TrySendError::Disconnected(_)) => Ok(()),
        Err(TrySendError::Full(d)) => Err(d),
    });
    let flush: Flush = Box::new(move || {
        if queued.swap(false, Ordering::Relaxed) {
            if let Err(e) = waker.wake() {
                tracing::error!(error = %e, "cannot wake the link thread");
            }
        }
    });
    (sink, flush, rx)
}

fn start_runner(
    settings: &Settings,
    sink: Sink,
    flush: Flush,
) -> Result<EmbeddedBroker, StartError> {
    let limits = settings.limits.clone();
    let mut config = RedisEngineConfig::new(settings.redis.clone(), limits.clone());
    config.durability = settings.durability;
    // Brokers share the Redis: each delivers live what the others store (cross-broker fan-out).
    config.publish = true;
    let broker = Broker::new(RedisEngine::new(config, Instant::now()), limits);
    embedded::spawn_with_flush(broker, REQUEST_QUEUE, vec![sink], Some(flush))
        .map_err(resource("the broker runner"))
}

/// Whether the engine can serve, read through the shared runner.
fn ready_fn(runner: &SharedRunner) -> Arc<dyn Fn() -> bool + Send + Sync> {
    let runner = Arc::downgrade(runner);
    Arc::new(move || {
        runner.upgrade().is_some_and(|r| {
            r.lock()
                .ok()
                .is_some_and(|g| g.as_ref().is_some_and(EmbeddedBroker::is_ready))
        })
    })
}

/// Waits (bounded) for the engine's in-flight operations, then stops the runner.
fn stop_runner(runner: &SharedRunner) {
    let deadline = Instant::now() + FINISH_WAIT;
    let taken = loop {
        let busy = runner.lock().ok().and_then(|g| {
            g.as_ref()
                .map(|r| r.stats().pending_ops > 0 || !r.sender().is_empty())
        });
        if busy != Some(true) || Instant::now() >= deadline {
            break runner.lock().ok().and_then(|mut g| g.take());
        }
        thread::sleep(Duration::from_millis(10));
    };
    if let Some(r) = taken {
        r.shutdown();
    }
}

fn admin_state(
    runner: &SharedRunner,
    control: &Arc<Control>,
    metrics: &Arc<Metrics>,
) -> AdminState {
    let ready = ready_fn(runner);
    let control = Arc::clone(control);
    let metrics = Arc::clone(metrics);
    let stats_runner = Arc::clone(runner);
    AdminState {
        ready: Box::new(move || ready() && !control.draining.load(Ordering::Acquire)),
        render_metrics: Box::new(move |out| {
            let status = stats_runner
                .lock()
                .ok()
                .and_then(|g| g.as_ref().map(|r| (r.is_ready(), r.stats())));
            let (up, stats) = status.unwrap_or_default();
            metrics.render(out, up, &stats);
            hermod_core::admin_http::render_process(out);
        }),
    }
}

fn print_ready_line(settings: &Settings, link: SocketAddr, admin: &str, advertise: &str) {
    let storage = match settings.redis.target {
        Target::Direct { .. } => "redis",
        Target::Sentinel { .. } => "sentinel",
    };
    let auth = if settings.link_secret.is_some() {
        "secret"
    } else {
        tracing::warn!(
            "gateway links are not authenticated (no --link-secret): loopback development only"
        );
        "off"
    };
    eprintln!(
        "hermod-broker {} listening link={link} admin={admin} node={} advertise={advertise} \
         storage={storage} link_auth={auth}",
        env!("CARGO_PKG_VERSION"),
        settings.node_id,
    );
}
