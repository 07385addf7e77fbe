//! Settings resolution: the command line, the environment and the `--config` TOML file merged into
//! one [`Settings`], flag beats env beats file beats default.
//!
//! Every setting has one name, used three ways: `--admin-listen` on the command line,
//! `HERMOD_ADMIN_LISTEN` in the environment, `admin_listen` in the file. The machinery (sources
//! and precedence, the file, value parsers, the one-line [`ConfigError`]) is
//! `hermod_core::settings`, shared with `hermod-broker`; this module declares the gateway's
//! settings and resolves them. Resolution is a pure function of (flags, environment lookup, file
//! text), but for one step: a route upstream's host name is looked up here ([`lookup_host`]),
//! once at startup, so that no reactor ever resolves a name. Tests need no process environment.
//!
//! Durations are integer seconds, or an integer with a unit: `500ms`, `30s`, `10m`, `1h`, `7d`
//! (in the file: `idle_timeout = 60` or `idle_timeout = "500ms"`). Sizes are integer bytes.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use hermod_broker::server::config::resolve_limits;
pub use hermod_core::settings::{
    config_path, env_name, ConfigFile, EnvLookup, Origin, SettingError as ConfigError, ENV_PREFIX,
};
use hermod_core::settings::{count, duration, log_filter, socket_addr, Sources};

pub use super::auth::{resolve_token, TokenRequest};
use super::paths::parse_path;
use super::routes::{parse_route, Route};
use super::{storage, AddressLimit, Settings};

/// Routes one process may have (each is matched by a linear scan of short strings).
const MAX_ROUTES: usize = 64;

const AFTER_HELP: &str = "\
Every setting is also read from the environment (HERMOD_<NAME>, e.g. HERMOD_ADMIN_LISTEN) and
from the --config TOML file (key <name>, e.g. admin_listen = \"127.0.0.1:9090\").
Precedence: flag, then environment, then file, then default. Unknown file keys are errors.
Durations: integer seconds, or with a unit: 500ms, 30s, 10m, 1h, 7d. Sizes: integer bytes.";

/// The command line of `hermod-proxy`.
#[derive(Debug, Parser)]
#[command(name = "hermod-proxy", version, about, after_help = AFTER_HELP)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Without a subcommand the gateway runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of the gateway (ignored by subcommands, which have their own).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a signed HS256 token for a user (for clients, tests and the load generator).
    Token(TokenArgs),
}

/// Every setting's name in snake_case: each is a flag, an environment variable and a file key.
pub const SETTING_KEYS: &[&str] = RunArgs::KEYS;

/// The keys a config file may hold: every setting, and the `[[namespace]]` tables (file only).
pub fn file_keys() -> Vec<&'static str> {
    let mut keys = SETTING_KEYS.to_vec();
    keys.push(super::permissions::NAMESPACE_KEY);
    keys
}

hermod_core::setting_args! {
    /// The gateway's settings as given on the command line, unparsed (see [`resolve`]).
    #[derive(Debug, Default, Clone, Args)]
    pub struct RunArgs {
        /// Tunnel: WebSocket upgrades on PATH are passed through to that upstream untouched,
        /// as nginx does. Repeatable; env: comma-separated; file: an array (default: none).
        #[arg(long, value_name = "PATH=ws://HOST:PORT[/path]")]
        pub route: Vec<String>,
        /// Server API key (at least 16 bytes), presented as `Authorization: Bearer KEY`.
        /// Repeatable; env: comma-separated; file: an array. Without one the API is off.
        #[arg(long, value_name = "KEY")]
        pub api_key: Vec<String>,
    }
    settings {
    /// Client listener (default 127.0.0.1:8080; port 0 picks a free port).
    listen: "ADDR",
    /// Admin HTTP listener: /healthz, /readyz, /metrics (default 127.0.0.1:9090).
    admin_listen: "ADDR",
    /// Server API listener (HTTP/1.1 + JSON; needs --api-key), or off (default 127.0.0.1:9091).
    api_listen: "ADDR|off",
    /// Reactor threads, 1 to 256 (default: number of cores).
    workers: "N",
    /// How clients authenticate: jwt or none (development only; identity from ?user=). Default jwt.
    auth: "jwt|none",
    /// Who may send direct messages: any (any authenticated user to any user) or grant (only
    /// to users the token's `send` claim matches). Default any.
    direct_messages: "any|grant",
    /// HS256 secret, at least 32 bytes. When none of it, --jwt-public-key and --jwks-url is
    /// given (and --auth is jwt), a random secret is made and printed.
    jwt_secret: "S",
    /// PEM public key file (RSA 2048-4096 bits for RS256, or EC P-256 for ES256) that verifies
    /// tokens; HS256 tokens still go to --jwt-secret if set (default: none).
    jwt_public_key: "FILE",
    /// JWKS URL (http:// only for now) whose RS256/ES256 keys verify tokens, fetched at start,
    /// every 5 minutes, and when a token names an unknown kid (default: none).
    jwks_url: "URL",
    /// Longest token lifetime accepted, as exp - now and exp - iat (default 24h).
    jwt_max_lifetime: "DURATION",
    /// Required audience: the token's aud (string or array) must contain it (default: not checked).
    jwt_audience: "AUD",
    /// Required issuer: the token's iss must equal it (default: not checked).
    jwt_issuer: "ISS",
    /// Browser origins allowed to open /ws, comma-separated, * wildcards
    /// (https://*.example.com); others get 403; upgrades without Origin pass (default: any).
    allowed_origins: "LIST",
    /// Path of a built-in WebSocket echo endpoint, e.g. /echo (default: off).
    echo_path: "PATH",
    /// Largest WebSocket message in bytes; larger closes with 1009 (default 65536).
    max_message_size: "BYTES",
    /// Close a peer silent this long (default 60s).
    idle_timeout: "DURATION",
    /// Ping a quiet peer this often; must be shorter than --idle-timeout (default 20s).
    ping_interval: "DURATION",
    /// Time a new connection has to send its first byte; silent ones are closed (default 2s).
    first_byte_timeout: "DURATION",
    /// Time from connect to a whole request head and finished upgrade (default 5s).
    handshake_timeout: "DURATION",
    /// Bytes queued for a client that is not reading before it is closed with 1008 (default 1048576).
    max_outbound_bytes: "BYTES",
    /// Open client connections per process; more are answered 503 (default 19000).
    max_connections: "N",
    /// Concurrent connections per client address (IPv6: per /64), 0 = off; more are answered
    /// 503. The default exempts loopback; a value set explicitly applies to it (default 256).
    max_connections_per_ip: "N",
    /// New connections per second per client address, 0 = off; faster is answered 503. Same
    /// loopback rule (default 50).
    max_connects_per_ip_per_sec: "N",
    /// Sessions one user may hold at once, all workers, 0 = off; more are answered 429
    /// (default 64).
    max_sessions_per_user: "N",
    /// Time a send/publish waits for the broker before `unavailable` (default 5s).
    request_timeout: "DURATION",
    /// Time graceful shutdown waits for closes and flushes (default 5s).
    shutdown_grace: "DURATION",
    // Issue 11, session fairness: per-session rate limits of /ws sessions.
    /// Messages per second a /ws session may send, sustained (every op, acks included); past
    /// it requests get `rate_limited`; 0 turns the limits off (default 2000).
    session_rate: "N",
    /// Messages a /ws session may send at once above --session-rate (default 4000).
    session_burst: "N",
    /// Bytes per second a /ws session may send, sustained, with a burst of two seconds' worth;
    /// 0 turns the byte limit off (default 8388608).
    session_byte_rate: "BYTES",
    /// Messages kept per inbox (default 10000).
    inbox_max_len: "N",
    /// Age after which inbox messages are dropped (default 7d).
    inbox_max_age: "DURATION",
    /// Messages of room history kept for `since` (default 1000).
    room_max_len: "N",
    /// Age after which room history is dropped (default 1h).
    room_max_age: "DURATION",
    /// How long a repeated (user, cid) is answered with the first id (default 10m).
    dedupe_window: "DURATION",
    /// In-memory engine: most bytes the store may hold; past it send/publish answer
    /// `unavailable` and nothing is evicted (default 1073741824, 1 GiB).
    memory_budget: "BYTES",
    /// In-memory engine: most bytes of stored messages one sender may hold (default 67108864,
    /// 64 MiB).
    memory_per_user: "BYTES",
    }
    redis_settings;
    settings {
    /// Use these external hermod-broker processes instead of the embedded broker:
    /// HOST:PORT,HOST:PORT,... (default: embedded).
    brokers: "H:P,...",
    /// Use the external brokers listed in the registry of the Redis that --redis or --sentinel
    /// names (discovered every second) instead of the embedded broker (default false).
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    registry: "BOOL",
    /// Secret presented to every broker (HELLO 3 AUTH hermod SECRET), 16 to 512 printable
    /// characters; brokers listening beyond loopback require it. Never shown; visible in ps:
    /// prefer HERMOD_LINK_SECRET or the config file.
    link_secret: "SECRET",
    /// Log filter, tracing env-filter syntax, e.g. info or hermod_proxy=debug (default info).
    log: "FILTER",
    /// Time a tunnel's TCP connect to its upstream may take before the client gets 502
    /// (default 5s).
    route_connect_timeout: "DURATION",
    /// Close a tunnel after this long without a byte either way (WebSocket pings count);
    /// 0 turns it off (default 300s).
    route_idle_timeout: "DURATION",
    /// Tunnel: comma-separated addresses of front proxies whose X-Forwarded-For, Forwarded and
    /// X-Real-IP a tunnel keeps (appending the peer); from anyone else they are replaced
    /// (default: none).
    route_trusted_proxies: "IP,...",
    // Issue 13, events to backends (docs/api.md, "Webhooks").
    /// Receiver of the webhook POSTs, http:// only for now (default: off).
    webhook_url: "URL",
    /// HMAC-SHA256 key of X-Hermod-Signature, at least 32 bytes; required with --webhook-url.
    /// Never shown; visible in ps: prefer HERMOD_WEBHOOK_SECRET or the config file.
    webhook_secret: "S",
    /// Events reported, comma-separated: connect, disconnect, join, leave, publish (every room
    /// message a client publishes); to the webhooks and to --events-stream (default: all but
    /// publish).
    webhook_events: "LIST",
    /// Events held for the receiver; past it new events are dropped and counted (default 100000).
    webhook_queue: "N",
    /// Events per POST, at most (default 100).
    webhook_batch: "N",
    /// Time one POST may take before it counts as failed and is retried (default 10s).
    webhook_timeout: "DURATION",
    /// Also append every event chosen by --webhook-events to this Redis stream (XADD), for a
    /// backend to read with a consumer group; needs --redis or --sentinel (default: off).
    events_stream: "KEY",
    /// Entries the events stream keeps, about (XADD MAXLEN ~) (default 1000000).
    events_stream_maxlen: "N",
    /// Events held for the stream while Redis is slow or failing; past it new events are
    /// dropped and counted (default 100000).
    events_stream_queue: "N",
    }
}

/// `hermod-proxy token`: its own small set of options.
#[derive(Debug, Default, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub`): 1 to 128 bytes of [A-Za-z0-9_.:@-]. Required.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Lifetime in seconds, or a duration such as 1h or 7d, at most 365d (default 3600; the
    /// gateway refuses tokens longer than its --jwt-max-lifetime, 24h by default).
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<String>,
    /// Room patterns the token grants for joining (the `rooms` claim), comma-separated.
    #[arg(long, value_name = "P,...")]
    pub rooms: Option<String>,
    /// Room patterns the token grants for publishing (the `publish` claim), comma-separated.
    #[arg(long, value_name = "P,...")]
    pub publish: Option<String>,
    /// Audience (the `aud` claim).
    #[arg(long, value_name = "A")]
    pub aud: Option<String>,
    /// Issuer (the `iss` claim).
    #[arg(long, value_name = "I")]
    pub iss: Option<String>,
    /// HS256 secret, at least 32 bytes [env: HERMOD_JWT_SECRET, or jwt_secret in the --config
    /// file].
    #[arg(long, value_name = "S")]
    pub jwt_secret: Option<String>,
    /// TOML file to read jwt_secret from [env: HERMOD_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
}

/// The clap command, with each gateway setting's environment variable added to its help.
pub fn command() -> clap::Command {
    hermod_core::settings::with_env_help(Cli::command())
}

/// Parses the command line. Help and version requests come back as errors too (clap's
/// `DisplayHelp`/`DisplayVersion`); the caller prints them and exits 0.
pub fn parse_cli<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    hermod_core::settings::parse_cli(args)
}

/// The gateway's settings after resolution.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// What the workers, the broker and the admin listener run with.
    pub settings: Settings,
    /// The tracing env-filter directive (`--log`), already checked to parse.
    pub log: String,
    /// `Some(secret)` when auth is jwt and no secret was configured, so one was made: startup must
    /// say so loudly, or nobody could mint a token.
    pub generated_secret: Option<String>,
}

/// Resolves the gateway's settings: flag > env > file > default. `make_secret` is called only
/// when auth is jwt and no secret is set anywhere.
pub fn resolve(
    args: &RunArgs,
    env: EnvLookup<'_>,
    file: Option<&ConfigFile>,
    make_secret: impl FnOnce() -> String,
) -> Result<Resolved, ConfigError> {
    let flag = |key: &str| args.flag(key).map(str::to_owned);
    let src = Sources {
        flag: &flag,
        env,
        file,
    };
    let mut s = Settings::defaults();
    resolve_network(&src, &mut s)?;
    resolve_timing(&src, &mut s)?;
    resolve_rate(&src, &mut s)?;
    resolve_limits(&src, &mut s.broker)?;
    resolve_memory(&src, &mut s.broker)?;
    s.storage = storage::resolve_storage(&src)?;
    s.brokers = storage::resolve_brokers(&src, &s.storage)?;
    s.link_secret = hermod_core::settings::link_secret(&src)?;
    resolve_routes(&args.route, &src, &mut s)?;
    super::api::resolve_api(&args.api_key, &src, &mut s)?;
    super::webhooks::resolve_webhooks(&src, &mut s)?;
    super::events_stream::resolve_events_stream(&src, &mut s)?;
    super::permissions::resolve_permissions(&src, &mut s)?;
    let mut log = "info".to_owned();
    src.set(&mut log, "log", log_filter)?;

    let generated_secret = super::auth::resolve_auth(&src, &mut s, make_secret)?;
    Ok(Resolved {
        settings: s,
        log,
        generated_secret,
    })
}

fn resolve_network(src: &Sources<'_>, s: &mut Settings) -> Result<(), ConfigError> {
    src.set(&mut s.listen, "listen", parse_addr)?;
    src.set(&mut s.admin_listen, "admin_listen", parse_addr)?;
    if s.listen.port() != 0 && s.listen == s.admin_listen {
        return Err(ConfigError::new(
            "admin_listen",
            Origin::Flag,
            "must differ from --listen",
        ));
    }
    src.set(&mut s.workers, "workers", |v| count(v, 1, 256))?;
    if let Some(path) = src.get("echo_path", parse_path)? {
        if path == s.ws_path {
            let problem = format!("must differ from the protocol path {}", s.ws_path);
            return Err(ConfigError::new("echo_path", Origin::Flag, problem));
        }
        s.echo_path = Some(path);
    }
    src.set(&mut s.max_message_size, "max_message_size", |v| {
        count(v, 16, 64 << 20)
    })?;
    src.set(&mut s.max_outbound_bytes, "max_outbound_bytes", |v| {
        count(v, 1, 1 << 30)
    })?;
    src.set(&mut s.max_connections, "max_connections", |v| {
        count(v, 1, 1_000_000)
    })?;
    let per_address = |v: &str| count(v, 0, 1_000_000).map(|n| n as u32);
    // Set explicitly (any source), a per-address limit applies to loopback addresses too.
    for (slot, key) in [
        (&mut s.max_connections_per_ip, "max_connections_per_ip"),
        (
            &mut s.max_connects_per_ip_per_sec,
            "max_connects_per_ip_per_sec",
        ),
    ] {
        if let Some(max) = src.get(key, per_address)? {
            *slot = AddressLimit {
                max,
                loopback: true,
            };
        }
    }
    src.set(&mut s.max_sessions_per_user, "max_sessions_per_user", |v| {
        count(v, 0, 1_000_000).map(|n| n as u32)
    })
}

/// `--memory-budget` and `--memory-per-user` (the embedded in-memory engine's storage budget).
fn resolve_memory(src: &Sources<'_>, l: &mut hermod_broker::Limits) -> Result<(), ConfigError> {
    let bytes = |v: &str| count(v, 1 << 16, usize::MAX).map(|n| n as u64);
    src.set(&mut l.memory_budget, "memory_budget", bytes)?;
    src.set(&mut l.memory_per_user, "memory_per_user", bytes)
}

/// `--session-rate`, `--session-burst`, `--session-byte-rate`: the per-session rate limits.
fn resolve_rate(src: &Sources<'_>, s: &mut Settings) -> Result<(), ConfigError> {
    let r = &mut s.rate;
    src.set(&mut r.messages_per_sec, "session_rate", |v| {
        count(v, 0, 10_000_000).map(|n| n as u32)
    })?;
    src.set(&mut r.burst, "session_burst", |v| {
        count(v, 1, 10_000_000).map(|n| n as u32)
    })?;
    src.set(&mut r.bytes_per_sec, "session_byte_rate", |v| {
        count(v, 0, 1 << 40).map(|n| n as u64)
    })
}

fn resolve_timing(src: &Sources<'_>, s: &mut Settings) -> Result<(), ConfigError> {
    const MIN: Duration = Duration::from_millis(10);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);
    src.set(&mut s.idle_timeout, "idle_timeout", |v| {
        duration(v, MIN, DAY)
    })?;
    src.set(&mut s.ping_interval, "ping_interval", |v| {
        duration(v, MIN, DAY)
    })?;
    if s.ping_interval >= s.idle_timeout {
        let problem = format!(
            "must be shorter than --idle-timeout ({:?} >= {:?})",
            s.ping_interval, s.idle_timeout
        );
        return Err(ConfigError::new("ping_interval", Origin::Flag, problem));
    }
    src.set(&mut s.first_byte_timeout, "first_byte_timeout", |v| {
        duration(v, MIN, HOUR)
    })?;
    src.set(&mut s.handshake_timeout, "handshake_timeout", |v| {
        duration(v, MIN, HOUR)
    })?;
    src.set(&mut s.request_timeout, "request_timeout", |v| {
        duration(v, MIN, HOUR)
    })?;
    src.set(&mut s.shutdown_grace, "shutdown_grace", |v| {
        duration(v, Duration::ZERO, HOUR)
    })
}

fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    socket_addr(v, "127.0.0.1:8080")
}

/// The tunnel settings: `--route` (repeatable; `HERMOD_ROUTE` as a comma-separated list;
/// `route = ["/t=ws://..."]` or one string in the file), `--route-connect-timeout` and
/// `--route-idle-timeout`. As for every setting, the first source that sets `route` wins as a
/// whole: flags are not merged with the environment or the file.
///
/// Resolves the routes (`flags`: the `--route` flags given) and their timeouts into `s` (after
/// `ws_path`/`echo_path`, which a route must not shadow).
pub(super) fn resolve_routes(
    flags: &[String],
    src: &Sources<'_>,
    s: &mut Settings,
) -> Result<(), ConfigError> {
    let (raw, origin) = raw_list("route", flags, src)?;
    let error = |problem: String| ConfigError::new("route", origin.clone(), problem);
    if raw.len() > MAX_ROUTES {
        return Err(error(format!("at most {MAX_ROUTES} routes")));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for v in &raw {
        let route = parse_route(v.trim(), lookup_host).map_err(error)?;
        let taken = s.serves_path(&route.path) || routes.iter().any(|r| r.path == route.path);
        if taken {
            return Err(error(format!("path {} is already in use", route.path)));
        }
        routes.push(route);
    }
    s.routes = routes;
    src.set(&mut s.route_connect_timeout, "route_connect_timeout", |v| {
        duration(v, Duration::from_millis(10), Duration::from_secs(3600))
    })?;
    let idle = src.get("route_idle_timeout", |v| {
        duration(v, Duration::ZERO, Duration::from_secs(7 * 86_400))
    })?;
    if let Some(idle) = idle {
        s.route_idle_timeout = (!idle.is_zero()).then_some(idle);
    }
    src.set(
        &mut s.route_trusted_proxies,
        "route_trusted_proxies",
        parse_ips,
    )
}

/// `IP,IP,...`: up to 64 addresses (none: an empty string).
fn parse_ips(v: &str) -> Result<Vec<std::net::IpAddr>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let ip = item
            .parse()
            .map_err(|_| format!("`{item}` is not an IP address (e.g. 10.0.0.2)"))?;
        if out.len() == 64 {
            return Err("at most 64 addresses".to_owned());
        }
        out.push(ip);
    }
    Ok(out)
}

/// The unparsed routes of the first source that has any, and where they came from.
/// A repeatable setting's values: every flag given, else the env variable split at commas, else
/// the file's string or array of strings.
pub(super) fn raw_list(
    key: &'static str,
    flags: &[String],
    src: &Sources<'_>,
) -> Result<(Vec<String>, Origin), ConfigError> {
    if !flags.is_empty() {
        return Ok((flags.to_vec(), Origin::Flag));
    }
    let var = env_name(key);
    if let Some(v) = (src.env)(&var).filter(|v| !v.trim().is_empty()) {
        let list = v.split(',').map(str::to_owned).collect();
        return Ok((list, Origin::Env(var)));
    }
    let Some(file) = src.file else {
        return Ok((Vec::new(), Origin::Flag));
    };
    let origin = file.origin();
    let list = match file.value(key) {
        None => Vec::new(),
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| ConfigError::new(key, origin.clone(), "must be an array of strings"))?,
        Some(_) => {
            let problem = "must be a string or an array of strings";
            return Err(ConfigError::new(key, origin, problem));
        }
    };
    Ok((list, origin))
}

/// Resolves `host` with the system resolver (blocking): called once per route while the settings
/// are resolved at startup, never on a reactor thread.
pub fn lookup_host(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
}
