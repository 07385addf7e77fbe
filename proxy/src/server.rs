//! Startup wiring and shutdown of the gateway process.
//!
//! Order matters and is the contract the integration tests rely on:
//! 1. signal handlers (so a SIGTERM at any later point is a graceful stop, never a kill);
//! 2. every listener bound (client listeners share worker 0's actual port via SO_REUSEPORT, so
//!    `--listen 127.0.0.1:0` works), then the admin listener; a failure here is one line, exit 1;
//! 3. workers prepared, the embedded broker started with their sinks on the configured engine
//!    (memory, or Redis via `--redis`/`--sentinel`) or, with `--brokers`/`--registry`, the links
//!    to external brokers (`brokers/`), one thread per worker;
//! 4. the admin thread, and with Redis a watcher that logs each change of reachability (with
//!    `--webhook-url`, the `hermod-webhooks` thread, and with `--events-stream` the
//!    `hermod-events-stream` thread, start before the workers);
//! 5. the ready line on stderr, always printed whatever `--log` says:
//!    `hermod-proxy VERSION listening client=IP:PORT admin=IP:PORT ... storage=memory|redis|sentinel|brokers|registry`
//!    (tests parse it).
//!
//! Startup never waits for Redis: with Redis down the proxy listens, `/readyz` answers 503 and
//! storage requests are answered `unavailable`, until the engine reaches Redis (it keeps
//! reconnecting); then `/readyz` turns 200 and the watcher logs `Redis reachable: ready`.
//!
//! Then the main thread waits for an [`Event`]: the first SIGTERM/SIGINT starts a graceful stop
//! (every worker told to close its sessions with 1012 and flush, bounded by `shutdown_grace` + 1 s),
//! a second one exits at once. A worker thread that ends on its own is a failure: the others are
//! stopped the same way and the exit code is 1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use hermod_broker::embedded::{self, EmbeddedBroker};
use hermod_broker::{Broker, Limits, MemoryEngine, RedisEngine, RedisEngineConfig};
use hermod_core::bus::{Delivery, Request};
use hermod_core::reactor::listener::{bind_listener, DEFAULT_BACKLOG};
use hermod_core::reactor::mailbox::MailboxSender;
use hermod_core::startup::{bind_admin, resource, spawn_signal_thread, termination_signals};
use parking_lot::Mutex;

use crate::admin::{self, AdminState};
use crate::api;
use crate::auth::JwksRefresher;
use crate::brokers::{self, BrokerLinks};
use crate::metrics::Metrics;
use crate::settings::resolve::Resolved;
use crate::settings::{AuthMode, Brokers, Durability, Settings, Storage};
use crate::webhooks;
use crate::worker::{self, PreparedWorker, WorkerHandle};

/// Requests the embedded broker's channel holds before workers see it full.
const BROKER_QUEUE: usize = 65_536;
/// Lifetime of the `demo` token printed with a generated secret.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Time allowed beyond `shutdown_grace` for workers to finish before the process exits anyway.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(1);
/// How often the storage watcher looks at the broker's readiness (to log its changes).
const STORAGE_WATCH_EVERY: Duration = Duration::from_millis(100);

/// The embedded broker, shared by the main thread (which takes it out to shut it down) and the
/// admin and watcher threads (which read its readiness and counters).
type SharedBroker = Arc<Mutex<Option<EmbeddedBroker>>>;

/// Why the gateway could not start (one line each; `exit_code` says 1 or 2).
pub use hermod_core::startup::StartError;

/// What the main thread waits for.
#[derive(Debug)]
enum Event {
    /// The first SIGTERM or SIGINT.
    Signal(i32),
    /// A worker thread ended (normally only after its `shutdown()`).
    WorkerExited(u16),
}

/// A 32-byte random secret, hex-encoded: the text a user passes back as `--jwt-secret` (the
/// HMAC key is that text's bytes, as for any configured secret).
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// With `--jwks-url`: the first fetch (blocking, before the gateway serves; a failure is logged
/// and retried in the background) and the refresher thread.
fn start_jwks(settings: &Settings, metrics: &Arc<Metrics>) -> Result<(), StartError> {
    let AuthMode::Tokens(verifier) = &settings.auth else {
        return Ok(());
    };
    let Some(source) = verifier.jwks() else {
        return Ok(());
    };
    let fetched = source.fetch();
    metrics.jwks_fetched(fetched.is_ok());
    match &fetched {
        Ok(keys) => tracing::info!(url = %source.url(), keys, "JWKS fetched"),
        Err(e) => tracing::warn!(
            url = %source.url(), error = %e,
            "JWKS fetch failed: RS256/ES256 tokens are refused until a refresh succeeds"
        ),
    }
    let metrics = Arc::clone(metrics);
    let counted = move |ok| metrics.jwks_fetched(ok);
    JwksRefresher::spawn(Arc::clone(verifier), fetched.is_ok(), counted)
        .map_err(resource("the JWKS refresher"))
}

/// Runs the gateway until a signal; returns the process exit code.
pub fn run(resolved: Resolved) -> Result<u8, StartError> {
    let signals = termination_signals()?;
    let settings = Arc::new(resolved.settings);
    let (listeners, client_addr) = bind_clients(&settings)?;
    let admin_listener = bind_admin(settings.admin_listen)?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(resource("admin listener"))?;
    let api = bind_api(&settings)?;

    let metrics = Arc::new(Metrics::default());
    start_jwks(&settings, &metrics)?;
    let hooks = webhooks::start(&settings, &metrics)
        .map_err(resource("the webhook and events stream threads"))?;
    let mut workers = Vec::with_capacity(listeners.len());
    let mut handles: Vec<WorkerHandle> = Vec::with_capacity(listeners.len());
    let limits = worker::SharedLimits::new(&settings);
    for (id, listener) in (0u16..).zip(listeners) {
        let shared = (Arc::clone(&metrics), limits.clone(), hooks.clone());
        let (w, h) = worker::prepare(id, Arc::clone(&settings), listener, shared)
            .map_err(resource("a worker"))?;
        workers.push(w);
        handles.push(h);
    }
    let mut sinks: Vec<embedded::Sink> = handles.iter().map(WorkerHandle::sink).collect();
    if let Some((_, _, handle)) = &api {
        sinks.push(handle.sink());
    }
    let backend = Backend::start(&settings, sinks)?;

    let mut api_handle = None;
    let (events_tx, events) = crossbeam_channel::unbounded();
    let threads = spawn_workers(workers, &backend, &events_tx)?;
    let serving = Arc::new(AtomicBool::new(true));
    let redis = matches!(settings.storage, Storage::Redis { .. });
    let state = match &backend {
        Backend::Embedded { broker, alive, .. } => {
            admin_state(&serving, alive.clone(), &metrics, broker, redis)
        }
        Backend::Links(hub) => links_admin_state(&serving, &metrics, hub.status()),
    };
    admin::spawn(admin_listener, state).map_err(resource("the admin thread"))?;
    let api_addr = match api {
        Some((prepared, addr, handle)) => {
            let lane = u16::try_from(settings.workers).unwrap_or(u16::MAX);
            let info = api::NodeInfo {
                storage: storage_label(&settings),
                brokers: match &backend {
                    Backend::Links(hub) => {
                        let status = hub.status();
                        Some(Box::new(move || status.counts()))
                    }
                    Backend::Embedded { .. } => None,
                },
            };
            let settings = Arc::clone(&settings);
            let sender = backend.sender(lane);
            prepared
                .spawn(lane, settings, Arc::clone(&metrics), info, sender)
                .map_err(resource("the API thread"))?;
            api_handle = Some(handle);
            Some(addr)
        }
        None => None,
    };
    if let (Backend::Embedded { broker, .. }, true) = (&backend, redis) {
        spawn_storage_watch(broker)?;
    }
    spawn_signal_thread(signals, "hermod-proxy", move |sig| {
        let _ = events_tx.send(Event::Signal(sig));
    })?;

    if let Some(secret) = &resolved.generated_secret {
        print_generated_secret(secret, client_addr);
    }
    print_ready_line(&settings, client_addr, admin_addr, api_addr);

    let first = events.recv();
    serving.store(false, Ordering::Release);
    let code = match first {
        Ok(Event::Signal(sig)) => {
            tracing::info!(signal = sig, "shutting down: closing sessions (1012)");
            0
        }
        Ok(Event::WorkerExited(id)) => {
            tracing::error!(worker = id, "a worker stopped unexpectedly; shutting down");
            1
        }
        Err(_) => 1,
    };
    let deadline = Instant::now() + settings.shutdown_grace + SHUTDOWN_SLACK;
    if let Some(api) = &api_handle {
        api.shutdown();
    }
    if stop_workers(&handles, threads, &events, deadline) {
        backend.shutdown();
    } else {
        tracing::warn!("workers still running after the shutdown grace; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(code)
}

/// What takes the workers' requests: the embedded broker, or (`--brokers`, `--registry`) the
/// links to external brokers.
enum Backend {
    /// The embedded broker, the token alive while its runner holds the sinks, and a sender
    /// to clone for the workers.
    Embedded {
        broker: SharedBroker,
        alive: Weak<()>,
        requests: MailboxSender<Request>,
    },
    /// The links to external brokers.
    Links(BrokerLinks),
}

impl Backend {
    /// Starts the embedded broker, or the links to brokers, with every worker's sink (and the
    /// API's, last).
    fn start(settings: &Settings, sinks: Vec<embedded::Sink>) -> Result<Backend, StartError> {
        let upstream = match &settings.brokers {
            Brokers::Embedded => {
                let (broker, alive) = start_broker(settings, sinks)?;
                let requests = broker.sender();
                let broker = Arc::new(Mutex::new(Some(broker)));
                return Ok(Backend::Embedded {
                    broker,
                    alive,
                    requests,
                });
            }
            Brokers::Static(addrs) => brokers::Upstream::Static(addrs.clone()),
            Brokers::Registry => match &settings.storage {
                Storage::Redis { client, .. } => brokers::Upstream::Registry(client.clone()),
                // Configuration resolution refuses --registry without Redis.
                Storage::Memory => brokers::Upstream::Static(Vec::new()),
            },
        };
        let config = brokers::BrokersConfig {
            upstream,
            request_timeout: settings.request_timeout,
            max_message_size: settings.max_message_size,
            queue: BROKER_QUEUE,
            link_secret: settings.link_secret.clone(),
        };
        let hub = brokers::spawn(config, sinks).map_err(resource("the broker links thread"))?;
        Ok(Backend::Links(hub))
    }

    /// The sender of worker `id`'s requests: its own lane of the broker's mailbox.
    fn sender(&self, id: u16) -> MailboxSender<Request> {
        match self {
            Backend::Embedded {
                broker, requests, ..
            } => match &*broker.lock() {
                Some(b) => b.sender_for(usize::from(id)),
                None => requests.clone(),
            },
            Backend::Links(hub) => hub.sender_for(usize::from(id)),
        }
    }

    /// Stops it (after the workers, so that their final Detaches are passed on).
    fn shutdown(self) {
        match self {
            Backend::Embedded {
                broker, requests, ..
            } => {
                drop(requests);
                let taken = broker.lock().take();
                if let Some(broker) = taken {
                    broker.shutdown();
                }
            }
            Backend::Links(hub) => hub.shutdown(),
        }
    }
}

/// `/readyz` and `/metrics` with external brokers: ready while serving and at least one
/// broker link is up.
fn links_admin_state(
    serving: &Arc<AtomicBool>,
    metrics: &Arc<Metrics>,
    status: Arc<brokers::LinkStatus>,
) -> AdminState {
    let serving = Arc::clone(serving);
    let metrics = Arc::clone(metrics);
    let ready = Arc::clone(&status);
    AdminState {
        ready: Box::new(move || serving.load(Ordering::Acquire) && ready.is_ready()),
        render_metrics: Box::new(move |out| {
            metrics.render(out);
            status.render(out);
        }),
    }
}

/// One thread per worker, `hermod-worker-N`, each with its own request sender to the broker
/// (its own lane of the broker's mailbox).
fn spawn_workers(
    workers: Vec<PreparedWorker>,
    backend: &Backend,
    events: &Sender<Event>,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut threads = Vec::with_capacity(workers.len());
    for (id, w) in (0u16..).zip(workers) {
        let sender = backend.sender(id);
        let notice = ExitNotice(id, events.clone());
        let t = thread::Builder::new()
            .name(format!("hermod-worker-{id}"))
            .spawn(move || {
                let _notice = notice;
                w.run(sender);
            });
        threads.push(t.map_err(resource("a worker thread"))?);
    }
    Ok(threads)
}

/// Binds one client listener per worker: worker 0 at `settings.listen`, the others at the address
/// it actually got (port 0 resolved), all with SO_REUSEPORT.
fn bind_clients(
    settings: &Settings,
) -> Result<(Vec<mio::net::TcpListener>, SocketAddr), StartError> {
    let bind = |addr: SocketAddr| {
        bind_listener(addr, true, DEFAULT_BACKLOG).map_err(StartError::bind("listen", addr))
    };
    let first = bind(settings.listen)?;
    let addr = first
        .local_addr()
        .map_err(resource("the client listener"))?;
    let mut listeners = vec![first];
    for _ in 1..settings.workers {
        listeners.push(bind(addr)?);
    }
    Ok((listeners, addr))
}

/// Starts the embedded broker with every worker's sink. Returns it and a token that is alive
/// exactly as long as the broker's runner holds the sinks: the runner owns them, so when its
/// thread ends (or panics) they are dropped and the token dies.
fn start_broker(
    settings: &Settings,
    sinks: Vec<embedded::Sink>,
) -> Result<(EmbeddedBroker, Weak<()>), StartError> {
    let alive = Arc::new(());
    let sinks = sinks
        .into_iter()
        .map(|sink| {
            let token = Arc::clone(&alive);
            let wrapped: embedded::Sink = Box::new(move |d: Delivery| {
                let _held = &token;
                sink(d)
            });
            wrapped
        })
        .collect();
    let mut limits = settings.broker.clone();
    // A replay page must fit comfortably in a session's outbound bound, or a client with a long
    // backlog would be closed as a slow consumer on every reconnect.
    limits.replay_page_bytes = limits
        .replay_page_bytes
        .min(settings.max_outbound_bytes / 4)
        .max(1);
    let embedded = match &settings.storage {
        Storage::Memory => {
            let broker = Broker::new(MemoryEngine::new(&limits), limits);
            embedded::spawn(broker, BROKER_QUEUE, sinks)
        }
        Storage::Redis { client, durability } => {
            let config = redis_engine_config(client, *durability, limits.clone());
            let broker = Broker::new(RedisEngine::new(config, Instant::now()), limits);
            embedded::spawn(broker, BROKER_QUEUE, sinks)
        }
    };
    let embedded = embedded.map_err(resource("the broker"))?;
    Ok((embedded, Arc::downgrade(&alive)))
}

/// The Redis engine's settings: the engine's defaults (`WAIT`'s timeout under the command
/// timeout) with the configured durability.
fn redis_engine_config(
    client: &hermod_core::redis::ClientConfig,
    durability: Durability,
    limits: Limits,
) -> RedisEngineConfig {
    let mut config = RedisEngineConfig::new(client.clone(), limits);
    config.durability = durability;
    config
}

fn admin_state(
    serving: &Arc<AtomicBool>,
    alive: Weak<()>,
    metrics: &Arc<Metrics>,
    broker: &SharedBroker,
    redis: bool,
) -> AdminState {
    let serving = Arc::clone(serving);
    let metrics = Arc::clone(metrics);
    let ready_broker = Arc::clone(broker);
    let stats_broker = Arc::clone(broker);
    AdminState {
        ready: Box::new(move || {
            serving.load(Ordering::Acquire)
                && alive.strong_count() > 0
                && ready_broker.lock().as_ref().is_some_and(|b| b.is_ready())
        }),
        render_metrics: Box::new(move |out| {
            metrics.render(out);
            let status = stats_broker
                .lock()
                .as_ref()
                .map(|b| (b.is_ready(), b.stats()));
            match status {
                Some((up, stats)) if redis => admin::render_engine(out, up, &stats),
                Some((_, stats)) => admin::render_store(out, &stats),
                None => {}
            }
        }),
    }
}

/// Logs each change of the storage's reachability (the broker's readiness): startup does not
/// wait for Redis, so this is how an operator sees the proxy become ready, or stop being so.
fn spawn_storage_watch(broker: &SharedBroker) -> Result<(), StartError> {
    let broker = Arc::downgrade(broker);
    let started = Instant::now();
    thread::Builder::new()
        .name("hermod-storage-watch".to_owned())
        .spawn(move || {
            let mut was = None;
            while let Some(shared) = broker.upgrade() {
                let Some(ready) = shared.lock().as_ref().map(EmbeddedBroker::is_ready) else {
                    return; // shut down
                };
                drop(shared);
                match (was, ready) {
                    (Some(true), true) | (Some(false), false) => {}
                    (None, false) => tracing::warn!(
                        "Redis not reachable yet: not ready; requests are answered `unavailable` \
                         until it is"
                    ),
                    (_, true) => tracing::info!(
                        after_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "Redis reachable: ready"
                    ),
                    (Some(true), false) => tracing::warn!(
                        "Redis unreachable: not ready; requests are answered `unavailable`"
                    ),
                }
                was = Some(ready);
                thread::sleep(STORAGE_WATCH_EVERY);
            }
        })
        .map(drop)
        .map_err(resource("the storage watch thread"))
}

/// Tells the main thread that a worker thread ended, even if it panicked.
struct ExitNotice(u16, Sender<Event>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.1.send(Event::WorkerExited(self.0));
    }
}

/// Asks every worker to stop and waits for their threads until `deadline`. True when all ended.
fn stop_workers(
    handles: &[WorkerHandle],
    threads: Vec<JoinHandle<()>>,
    events: &Receiver<Event>,
    deadline: Instant,
) -> bool {
    for h in handles {
        h.shutdown();
    }
    // Exit notices only wake us; the truth is each thread's state (a notice is sent just before
    // its thread finishes, and the first one may have been consumed already by `run`).
    loop {
        if threads.iter().all(JoinHandle::is_finished) {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = events.recv_timeout(left.min(Duration::from_millis(20)));
    }
    let mut all = true;
    for (id, t) in threads.into_iter().enumerate() {
        if !t.is_finished() {
            all = false;
            tracing::warn!(worker = id, "worker did not stop in time");
        } else if t.join().is_err() {
            tracing::error!(worker = id, "worker thread panicked");
        }
    }
    all
}

/// With a server API: its listener bound and its thread prepared (so that its sink exists
/// before the broker starts).
fn bind_api(
    settings: &Settings,
) -> Result<Option<(api::PreparedApi, SocketAddr, api::ApiHandle)>, StartError> {
    let Some(addr) = settings.api_listen else {
        return Ok(None);
    };
    let listener = bind_listener(addr, false, DEFAULT_BACKLOG)
        .map_err(StartError::bind("api_listen", addr))?;
    let bound = listener
        .local_addr()
        .map_err(resource("the API listener"))?;
    let std_listener: std::net::TcpListener = listener.into();
    let (prepared, handle) = api::prepare(std_listener).map_err(resource("the API"))?;
    Ok(Some((prepared, bound, handle)))
}

/// How the ready line and `GET /api/info` name the storage.
fn storage_label(settings: &Settings) -> &'static str {
    match (&settings.brokers, &settings.storage) {
        (Brokers::Static(_), _) => "brokers",
        (Brokers::Registry, _) => "registry",
        (Brokers::Embedded, Storage::Memory) => "memory",
        (Brokers::Embedded, Storage::Redis { client, .. }) => match client.target {
            hermod_core::redis::Target::Direct { .. } => "redis",
            hermod_core::redis::Target::Sentinel { .. } => "sentinel",
        },
    }
}

fn print_ready_line(
    settings: &Settings,
    client: SocketAddr,
    admin: SocketAddr,
    api: Option<SocketAddr>,
) {
    let auth = match settings.auth {
        AuthMode::Tokens(_) => "jwt",
        AuthMode::None => "none",
    };
    let storage = storage_label(settings);
    let api = api.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let echo = settings
        .echo_path
        .as_deref()
        .map(|p| format!(" echo={p}"))
        .unwrap_or_default();
    eprintln!(
        "hermod-proxy {} listening client={client} admin={admin} api={api} workers={} \
         auth={auth} storage={storage}{echo}",
        env!("CARGO_PKG_VERSION"),
        settings.workers,
    );
}

/// The loud notice for a generated secret: without it nobody could mint a valid token.
fn print_generated_secret(secret: &str, client: SocketAddr) {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + DEMO_TOKEN_TTL.as_secs();
    let token = hermod_core::jwt::mint(secret.as_bytes(), "demo", exp);
    let host = match client {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        other => other.to_string(),
    };
    let rule = "=".repeat(78);
    eprintln!(
        "{rule}\n\
         WARNING: no --jwt-secret (or HERMOD_JWT_SECRET) given: using a RANDOM secret.\n\
         Tokens signed with it stop working when this process restarts.\n\n\
         \x20 secret:        {secret}\n\
         \x20 token (demo):  {token}\n\
         \x20 connect:       ws://{host}/ws?token={token}\n\
         \x20 more tokens:   hermod-proxy token --user NAME --jwt-secret {secret}\n\
         {rule}"
    );
}
