//! Settings resolution: the command line, the environment and the `--config` TOML file merged into
//! one [`Settings`], flag beats env beats file beats default (spec §1).
//!
//! Every setting has one name, used three ways: `--admin-listen` on the command line,
//! `HERMOD_ADMIN_LISTEN` in the environment, `admin_listen` in the file. Clap only collects the
//! flags as strings; every value, whatever its source, goes through the same parser here, so a bad
//! value gives the same one-line error naming the setting (and where it came from). Resolution is
//! a pure function of (flags, environment lookup, file text): tests need no process environment.
//!
//! Durations are integer seconds, or an integer with a unit: `500ms`, `30s`, `10m`, `1h`, `7d`
//! (in the file: `idle_timeout = 60` or `idle_timeout = "500ms"`). Sizes are integer bytes.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use hermod_core::ids::Name;

use crate::settings::{AuthMode, Settings};

/// Prefix of every environment variable: `HERMOD_` + the setting's name in upper snake case.
pub const ENV_PREFIX: &str = "HERMOD_";

/// The environment as resolution sees it: a variable's value, if set. Empty counts as unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

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

/// Declares the settings once: the clap fields, the key list and the flag lookup stay in step.
macro_rules! settings_args {
    ($( $(#[doc = $doc:literal])* $field:ident : $value_name:literal ),* $(,)?) => {
        /// The gateway's settings as given on the command line, unparsed (see [`resolve`]).
        #[derive(Debug, Default, Clone, Args)]
        pub struct RunArgs {
            /// TOML file with settings (keys: the flag names in snake_case).
            #[arg(long, value_name = "FILE")]
            pub config: Option<String>,
            $( $(#[doc = $doc])* #[arg(long, value_name = $value_name)] pub $field: Option<String>, )*
        }

        /// Every setting's name in snake_case: exactly the keys a config file may hold.
        pub const SETTING_KEYS: &[&str] = &[$(stringify!($field)),*];

        impl RunArgs {
            /// The value given on the command line for `key`, if any.
            fn flag(&self, key: &str) -> Option<&str> {
                match key {
                    "config" => self.config.as_deref(),
                    $(stringify!($field) => self.$field.as_deref(),)*
                    _ => None,
                }
            }
        }
    };
}

settings_args! {
    /// Client listener (default 127.0.0.1:8080; port 0 picks a free port).
    listen: "ADDR",
    /// Admin HTTP listener: /healthz, /readyz, /metrics (default 127.0.0.1:9090).
    admin_listen: "ADDR",
    /// Reactor threads, 1 to 256 (default: number of cores).
    workers: "N",
    /// How clients authenticate: jwt or none (development only; identity from ?user=). Default jwt.
    auth: "jwt|none",
    /// HS256 secret. Without one (and --auth jwt) a random secret is made and printed.
    jwt_secret: "S",
    /// Path of a built-in WebSocket echo endpoint, e.g. /echo (default: off).
    echo_path: "PATH",
    /// Largest WebSocket message in bytes; larger closes with 1009 (default 65536).
    max_message_size: "BYTES",
    /// Close a peer silent this long (default 60s).
    idle_timeout: "DURATION",
    /// Ping a quiet peer this often; must be shorter than --idle-timeout (default 20s).
    ping_interval: "DURATION",
    /// Time allowed for the HTTP upgrade (default 10s).
    handshake_timeout: "DURATION",
    /// Bytes queued for a client that is not reading before it is closed with 1008 (default 1048576).
    max_outbound_bytes: "BYTES",
    /// Open client connections per process; more are refused (default 19000).
    max_connections: "N",
    /// Time a send/publish waits for the broker before `unavailable` (default 5s).
    request_timeout: "DURATION",
    /// Time graceful shutdown waits for closes and flushes (default 5s).
    shutdown_grace: "DURATION",
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
    /// Use the Redis engine on one Redis: redis://[user:pass@]host:port/db (default: in-memory).
    redis: "URL",
    /// Use the Redis engine through Sentinel: HOST:PORT,HOST:PORT,... (needs --sentinel-master).
    sentinel: "H:P,...",
    /// The master name the sentinels monitor (with --sentinel).
    sentinel_master: "NAME",
    /// When `sent` is answered: leader (applied on the Redis master) or replica (a replica
    /// confirmed it too, WAIT 1). Default leader.
    durability: "leader|replica",
    /// A Redis command without reply by then fails: the request is answered `unavailable`
    /// (default 5s).
    redis_timeout: "DURATION",
    /// Pipelined connections to Redis, 2 to 16 (default 2: reads and writes apart).
    redis_connections: "N",
    /// Log filter, tracing env-filter syntax, e.g. info or hermod_proxy=debug (default info).
    log: "FILTER",
}

/// `hermod-proxy token`: its own small set of options.
#[derive(Debug, Default, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub`): 1 to 128 bytes of [A-Za-z0-9_.:@-]. Required.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Lifetime in seconds, or a duration such as 1h or 7d (default 3600).
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<String>,
    /// HS256 secret [env: HERMOD_JWT_SECRET, or jwt_secret in the --config file].
    #[arg(long, value_name = "S")]
    pub jwt_secret: Option<String>,
    /// TOML file to read jwt_secret from [env: HERMOD_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
}

/// The clap command, with each gateway setting's environment variable added to its help.
pub fn command() -> clap::Command {
    Cli::command().mut_args(|arg| match arg.get_long() {
        Some(long) if long != "help" && long != "version" => {
            let env = env_name(&long.replace('-', "_"));
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            arg.help(format!("{help} [env: {env}]"))
        }
        _ => arg,
    })
}

/// Parses the command line. Help and version requests come back as errors too (clap's
/// `DisplayHelp`/`DisplayVersion`); the caller prints them and exits 0.
pub fn parse_cli<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// A setting that could not be used. Displayed as one line, e.g.
/// `--workers (from HERMOD_WORKERS): must be between 1 and 256`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{}{origin}: {problem}", setting.replace('_', "-"))]
pub struct ConfigError {
    /// The setting's snake_case name (shown as its flag).
    pub setting: String,
    /// Where the bad value came from, so the user knows what to fix.
    pub origin: Origin,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    fn new(setting: &str, origin: Origin, problem: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.to_owned(),
            origin,
            problem: problem.into(),
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line (or a check across settings: no single source).
    Flag,
    /// The environment variable of that name.
    Env(String),
    /// The config file at that path.
    File(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => Ok(()),
            Origin::Env(var) => write!(f, " (from {var})"),
            Origin::File(path) => write!(f, " (from {path})"),
        }
    }
}

/// A parsed `--config` file: its path (for errors) and its keys.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: String,
    table: toml::Table,
}

impl ConfigFile {
    /// Parses `text` and checks that every key is a known setting (`allowed`).
    pub fn parse(path: &str, text: &str, allowed: &[&str]) -> Result<Self, ConfigError> {
        let origin = Origin::File(path.to_owned());
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].lines().count().max(1)
            });
            let message: Vec<&str> = e.message().lines().map(str::trim).collect();
            let problem = format!("line {line}: {}", message.join("; "));
            ConfigError::new("config", origin.clone(), problem)
        })?;
        if let Some(key) = table.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ConfigError::new(
                "config",
                origin,
                format!("unknown key `{key}`"),
            ));
        }
        Ok(ConfigFile {
            path: path.to_owned(),
            table,
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &str, allowed: &[&str]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("config", Origin::Flag, format!("{path}: {e}")))?;
        Self::parse(path, &text, allowed)
    }

    /// The value of `key` as text (integers are written out), or an error for other TOML types.
    fn get(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(_) => Err(ConfigError::new(
                key,
                Origin::File(self.path.clone()),
                "expected a string or an integer",
            )),
        }
    }
}

/// Where to look for a setting, in order.
struct Sources<'a> {
    flag: &'a dyn Fn(&str) -> Option<String>,
    env: EnvLookup<'a>,
    file: Option<&'a ConfigFile>,
}

impl Sources<'_> {
    /// The highest-precedence raw value of `key`, and where it came from.
    fn raw(&self, key: &str) -> Result<Option<(String, Origin)>, ConfigError> {
        if let Some(v) = (self.flag)(key) {
            return Ok(Some((v, Origin::Flag)));
        }
        let var = env_name(key);
        if let Some(v) = (self.env)(&var).filter(|v| !v.is_empty()) {
            return Ok(Some((v, Origin::Env(var))));
        }
        match self.file {
            Some(file) => Ok(file.get(key)?.map(|v| (v, Origin::File(file.path.clone())))),
            None => Ok(None),
        }
    }

    /// The value of `key` through `parse`, `None` when no source sets it.
    fn get<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.raw(key)? {
            None => Ok(None),
            Some((raw, origin)) => parse(&raw)
                .map(Some)
                .map_err(|problem| ConfigError::new(key, origin, problem)),
        }
    }

    /// Overwrites `slot` when some source sets `key`.
    fn set<T>(
        &self,
        slot: &mut T,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = self.get(key, parse)? {
            *slot = v;
        }
        Ok(())
    }
}

/// `HERMOD_` + `key` in upper case.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// The config file to read, if any: `--config`, else `HERMOD_CONFIG`.
pub fn config_path(flag: Option<&str>, env: EnvLookup<'_>) -> Option<String> {
    flag.map(str::to_owned)
        .or_else(|| env(&env_name("config")).filter(|v| !v.is_empty()))
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
    resolve_broker(&src, &mut s)?;
    s.storage = storage::resolve_storage(&src)?;
    let mut log = "info".to_owned();
    src.set(&mut log, "log", parse_log)?;

    let use_jwt = src.get("auth", parse_auth)?.unwrap_or(true);
    let secret = src.get("jwt_secret", parse_secret)?;
    let mut generated_secret = None;
    s.auth = match (use_jwt, secret) {
        (false, _) => AuthMode::None,
        (true, Some(secret)) => AuthMode::Jwt {
            secret: secret.into_bytes(),
        },
        (true, None) => {
            let secret = make_secret();
            generated_secret = Some(secret.clone());
            AuthMode::Jwt {
                secret: secret.into_bytes(),
            }
        }
    };
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
    if let Some(path) = src.get("echo_path", parse_echo_path)? {
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

fn resolve_broker(src: &Sources<'_>, s: &mut Settings) -> Result<(), ConfigError> {
    const MIN: Duration = Duration::from_millis(1);
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    let b = &mut s.broker;
    src.set(&mut b.inbox_max_len, "inbox_max_len", |v| {
        count(v, 1, 10_000_000)
    })?;
    src.set(&mut b.inbox_max_age, "inbox_max_age", |v| {
        duration(v, MIN, YEAR)
    })?;
    src.set(&mut b.room_max_len, "room_max_len", |v| {
        count(v, 1, 10_000_000)
    })?;
    src.set(&mut b.room_max_age, "room_max_age", |v| {
        duration(v, MIN, YEAR)
    })?;
    src.set(&mut b.dedupe_window, "dedupe_window", |v| {
        duration(v, MIN, YEAR)
    })
}

/// What `hermod-proxy token` needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The token's subject.
    pub user: Name,
    /// Lifetime from now.
    pub ttl: Duration,
    /// The HS256 key (the secret's UTF-8 bytes, as the gateway uses them).
    pub secret: Vec<u8>,
}

/// Resolves `token`'s options: the secret is flag > `HERMOD_JWT_SECRET` > file `jwt_secret`.
pub fn resolve_token(
    args: &TokenArgs,
    env: EnvLookup<'_>,
    file: Option<&ConfigFile>,
) -> Result<TokenRequest, ConfigError> {
    let user = args
        .user
        .as_deref()
        .ok_or_else(|| ConfigError::new("user", Origin::Flag, "required"))?;
    let user = Name::parse("user", user)
        .map_err(|e| ConfigError::new("user", Origin::Flag, e.to_string()))?;
    let ttl = match &args.ttl {
        None => Duration::from_secs(3600),
        Some(v) => duration(
            v,
            Duration::from_secs(1),
            Duration::from_secs(10 * 365 * 86400),
        )
        .map_err(|p| ConfigError::new("ttl", Origin::Flag, p))?,
    };
    let flag = |key: &str| {
        (key == "jwt_secret")
            .then(|| args.jwt_secret.clone())
            .flatten()
    };
    let src = Sources {
        flag: &flag,
        env,
        file,
    };
    let secret = src.get("jwt_secret", parse_secret)?.ok_or_else(|| {
        let problem = "required (or HERMOD_JWT_SECRET, or jwt_secret in --config)";
        ConfigError::new("jwt_secret", Origin::Flag, problem)
    })?;
    Ok(TokenRequest {
        user,
        ttl,
        secret: secret.into_bytes(),
    })
}

fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("`{v}` is not an IP:PORT address (e.g. 127.0.0.1:8080)"))
}

fn count(v: &str, min: usize, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be an integer between {min} and {max}")),
    }
}

/// An integer with an optional unit (`ms`, `s`, `m`, `h`, `d`); a bare integer is seconds.
pub fn duration(v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = v.split_at(digits);
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => u64::MAX,
    };
    let parsed = number
        .parse::<u64>()
        .ok()
        .filter(|_| millis_per_unit != u64::MAX)
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis);
    match parsed {
        Some(d) if d >= min && d <= max => Ok(d),
        Some(_) => Err(format!(
            "must be between {} and {}",
            show_duration(min),
            show_duration(max)
        )),
        None => Err(format!(
            "`{v}` is not a duration (integer seconds, or e.g. 500ms, 30s, 10m, 1h, 7d)"
        )),
    }
}

/// A duration the way the user would write it, for errors.
fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        _ if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// `jwt` → true, `none` → false.
fn parse_auth(v: &str) -> Result<bool, String> {
    match v {
        "jwt" => Ok(true),
        "none" => Ok(false),
        _ => Err(format!("`{v}` is not one of: jwt, none")),
    }
}

fn parse_secret(v: &str) -> Result<String, String> {
    match v.len() {
        0 => Err("must not be empty".to_owned()),
        1..=4096 => Ok(v.to_owned()),
        _ => Err("must be at most 4096 bytes".to_owned()),
    }
}

fn parse_echo_path(v: &str) -> Result<String, String> {
    let ok = v.starts_with('/')
        && v.len() <= 256
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "`{v}` is not a path (starts with /, at most 256 printable characters, no ? or #)"
        ))
    }
}

fn parse_log(v: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(v)
        .map(|_| v.to_owned())
        .map_err(|e| format!("`{v}`: {e}"))
}

#[path = "config_storage.rs"]
mod storage;

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
