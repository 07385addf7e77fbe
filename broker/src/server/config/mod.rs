//! `hermod-broker`'s settings: the command line, the environment and the `--config` TOML file
//! merged into one [`Settings`], flag beats env beats file beats default, as `hermod-proxy` does.
//!
//! Every setting has one name used three ways: `--registry-ttl` on the command line,
//! `HERMOD_REGISTRY_TTL` in the environment, `registry_ttl` in the file. The machinery (sources
//! and precedence, the file, value parsers, the one-line [`ConfigError`], the Redis settings) is
//! `hermod_core::settings`, shared with the proxy; so are [`resolve_limits`] and
//! [`parse_durability`], which the proxy calls for its embedded broker. Resolution is a pure
//! function of (flags, env lookup, file text).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use hermod_core::settings::{
    self, count, duration, is_host_port, link_secret, log_filter, one_of, require_link_secret,
    socket_addr, RedisChoice, Sources,
};
pub use hermod_core::settings::{
    config_path, env_name, EnvLookup, Origin, SettingError as ConfigError, ENV_PREFIX,
};

use super::settings::Settings;
use crate::{Durability, Limits};

/// Smallest `--link-buffer-budget`: one largest command and its reply.
const MIN_LINK_BUFFER_BUDGET: usize = 2 * hermod_core::link::MAX_FRAME_LEN;

/// Longest `--advertise` address (bounds the input only).
const MAX_TEXT: usize = 128;

const AFTER_HELP: &str = "\
Every setting is also read from the environment (HERMOD_<NAME>, e.g. HERMOD_NODE_ID) and from
the --config TOML file (key <name>, e.g. node_id = \"b1\").
Precedence: flag, then environment, then file, then default. Unknown file keys are errors.
Durations: integer seconds, or with a unit: 500ms, 30s, 10m, 1h, 7d.";

/// Every setting's name in snake_case: exactly the keys a config file may hold.
pub const SETTING_KEYS: &[&str] = Cli::KEYS;

hermod_core::setting_args! {
    /// The command line of `hermod-broker`, unparsed (see [`resolve`]).
    #[derive(Debug, Default, Clone, Parser)]
    #[command(name = "hermod-broker", version, about, after_help = AFTER_HELP)]
    pub struct Cli {}
    settings {
    /// Link listener for gateways (default 127.0.0.1:7070; port 0 picks a free port).
    listen: "ADDR",
    /// Address announced in the registry for gateways to dial (default: the bound --listen).
    advertise: "HOST:PORT",
    /// Admin HTTP listener: /healthz, /readyz, /metrics (default: off).
    admin_listen: "ADDR",
    /// This broker's name in the registry, [A-Za-z0-9_.:-] (default: hostname-pid).
    node_id: "ID",
    /// Lifetime of a registry entry; it is renewed every third of it (default 3s).
    registry_ttl: "DURATION",
    /// Close a gateway link silent this long (default 5s; gateways PING every 1s).
    link_timeout: "DURATION",
    /// Secret gateways must present (HELLO 3 AUTH hermod SECRET), 16 to 512 printable
    /// characters; required unless --listen is loopback. Never shown; visible in ps: prefer
    /// HERMOD_LINK_SECRET or the config file.
    link_secret: "SECRET",
    /// Most bytes buffered across all gateway links, input and output (default 536870912 =
    /// 512 MiB); a link past its share when it is reached is closed.
    link_buffer_budget: "BYTES",
    /// After SIGTERM, wait this long for gateways to move their sessions away (default 10s).
    drain_timeout: "DURATION",
    }
    redis_settings;
    settings {
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
    /// Log filter, tracing env-filter syntax (default info).
    log: "FILTER",
    }
}

/// The clap command, with each setting's environment variable added to its help.
pub fn command() -> clap::Command {
    settings::with_env_help(Cli::command())
}

/// Parses the command line. Help and version requests come back as clap errors of those kinds.
pub fn parse_cli<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    settings::parse_cli(args)
}

/// A parsed `--config` file whose keys are all broker settings.
#[derive(Debug, Clone)]
pub struct ConfigFile(settings::ConfigFile);

impl ConfigFile {
    /// Parses `text`; every key must be a known setting.
    pub fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        settings::ConfigFile::parse(path, text, SETTING_KEYS).map(ConfigFile)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &str) -> Result<Self, ConfigError> {
        settings::ConfigFile::load(path, SETTING_KEYS).map(ConfigFile)
    }
}

/// Resolves the broker's settings: flag > env > file > default. `default_node_id` is called
/// only when no node id is set anywhere.
pub fn resolve(
    cli: &Cli,
    env: EnvLookup<'_>,
    file: Option<&ConfigFile>,
    default_node_id: impl FnOnce() -> String,
) -> Result<Settings, ConfigError> {
    let flag = |key: &str| cli.flag(key).map(str::to_owned);
    let src = Sources {
        flag: &flag,
        env,
        file: file.map(|f| &f.0),
    };
    let client = RedisChoice::parse(&src)?
        .into_client(&src)?
        .ok_or_else(|| {
            let problem = "required (or --sentinel with --sentinel-master): brokers share storage";
            ConfigError::new("redis", Origin::Flag, problem)
        })?;
    let mut s = Settings::new(client);
    src.set(&mut s.listen, "listen", parse_addr)?;
    s.link_secret = link_secret(&src)?;
    require_link_secret(s.listen, s.link_secret.as_ref())?;
    src.set(&mut s.link_buffer_budget, "link_buffer_budget", |v| {
        count(v, MIN_LINK_BUFFER_BUDGET, 1 << 40)
    })?;
    s.admin_listen = src.get("admin_listen", parse_addr)?;
    if s.admin_listen == Some(s.listen) && s.listen.port() != 0 {
        let problem = "must differ from --listen";
        return Err(ConfigError::new("admin_listen", Origin::Flag, problem));
    }
    s.advertise = src.get("advertise", parse_advertise)?;
    s.node_id = match src.get("node_id", parse_node_id)? {
        Some(id) => id,
        None => default_node_id(),
    };
    src.set(&mut s.durability, "durability", parse_durability)?;
    const MIN: Duration = Duration::from_millis(300);
    const HOUR: Duration = Duration::from_secs(3600);
    src.set(&mut s.registry_ttl, "registry_ttl", |v| {
        duration(v, MIN, HOUR)
    })?;
    src.set(&mut s.link_timeout, "link_timeout", |v| {
        duration(v, MIN, HOUR)
    })?;
    src.set(&mut s.drain_timeout, "drain_timeout", |v| {
        duration(v, Duration::ZERO, HOUR)
    })?;
    resolve_limits(&src, &mut s.limits)?;
    src.set(&mut s.log, "log", log_filter)?;
    Ok(s)
}

/// The retention and dedupe settings (`--inbox-max-len`, `--inbox-max-age`, `--room-max-len`,
/// `--room-max-age`, `--dedupe-window`) into `l`; the proxy reads them the same way for its
/// embedded broker.
pub fn resolve_limits(src: &Sources<'_>, l: &mut Limits) -> Result<(), ConfigError> {
    const MIN: Duration = Duration::from_millis(1);
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    src.set(&mut l.inbox_max_len, "inbox_max_len", |v| {
        count(v, 1, 10_000_000)
    })?;
    src.set(&mut l.inbox_max_age, "inbox_max_age", |v| {
        duration(v, MIN, YEAR)
    })?;
    src.set(&mut l.room_max_len, "room_max_len", |v| {
        count(v, 1, 10_000_000)
    })?;
    src.set(&mut l.room_max_age, "room_max_age", |v| {
        duration(v, MIN, YEAR)
    })?;
    src.set(&mut l.dedupe_window, "dedupe_window", |v| {
        duration(v, MIN, YEAR)
    })
}

fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    socket_addr(v, "127.0.0.1:7070")
}

/// `HOST:PORT` with a non-empty printable host and a port 1-65535.
fn parse_advertise(v: &str) -> Result<String, String> {
    let ok = v.len() <= MAX_TEXT && is_host_port(v) && !v.contains('@');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("`{v}` is not HOST:PORT (e.g. 10.0.0.5:7070)"))
    }
}

/// 1 to 128 bytes of `[A-Za-z0-9_.:-]` (no `@`: the registry entry is `node@addr`).
pub fn parse_node_id(v: &str) -> Result<String, String> {
    let ok = (1..=MAX_TEXT).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "`{v}` is not a node id (1 to {MAX_TEXT} of A-Z a-z 0-9 _ . : -)"
        ))
    }
}

/// `leader` or `replica` (`--durability`).
pub fn parse_durability(v: &str) -> Result<Durability, String> {
    one_of(
        v,
        &[
            ("leader", Durability::Leader),
            ("replica", Durability::Replica),
        ],
    )
}

#[cfg(test)]
mod tests;
