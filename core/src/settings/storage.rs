//! The Redis settings both server binaries read the same way: `--redis URL`, or
//! `--sentinel H:P,...` with `--sentinel-master NAME`, tuned by `--redis-timeout` and
//! `--redis-connections`, with credentials from `--redis-user` / `--redis-password` (the Redis
//! servers) and `--sentinel-password` (the sentinels themselves). What "none of them" means is
//! the binary's call: the proxy then runs the in-memory engine, the broker refuses to start.
//!
//! Passwords are secrets: no error message and no `Debug` output shows one (a bad `--redis` URL
//! is shown with its password replaced by `***`).

use std::time::Duration;

use super::{count, duration, is_host_port, Origin, SettingError, Sources};
use crate::redis::{parse_redis_url, ClientConfig, Secret, Target};

/// Sentinels one `--sentinel` may list.
pub const MAX_SENTINELS: usize = 16;
/// Longest `--sentinel-master` name (Redis itself has no limit; this only bounds the input).
pub const MAX_MASTER_NAME: usize = 128;
/// Longest `--redis-user` (an ACL user name; bounds the input only).
pub const MAX_USER: usize = 128;
/// Longest `--redis-password` / `--sentinel-password` (bounds the input only).
pub const MAX_PASSWORD: usize = 1024;
/// `--redis-connections` bounds: lane 0 carries reads, lane 1 writes (and WAIT), so 2 at least.
const MIN_CONNECTIONS: usize = 2;
const MAX_CONNECTIONS: usize = 16;
/// What is shown instead of a password.
const REDACTED: &str = "***";

/// `--redis`, `--sentinel`, `--sentinel-master` and the credentials as given, each checked on
/// its own; whether they make sense together is [`RedisChoice::into_client`]'s question. Two
/// steps, so a binary can check settings of its own (e.g. `--durability`) in between. Its
/// `Debug` shows no password.
#[derive(Debug, Clone)]
pub struct RedisChoice {
    /// `--redis`: one Redis, by URL.
    redis: Option<ClientConfig>,
    /// `--sentinel`: the sentinels to ask for the master.
    sentinels: Option<Vec<String>>,
    /// `--sentinel-master`: the name the sentinels monitor.
    master: Option<String>,
    /// `--redis-user`, `--redis-password`, `--sentinel-password`.
    credentials: Credentials,
}

/// The credentials given outside the URL (the passwords are [`Secret`]s: `Debug` hides them).
#[derive(Clone, Debug, Default)]
struct Credentials {
    /// `--redis-user`: the ACL user for the Redis servers (needs a password).
    user: Option<String>,
    /// `--redis-password`: for the master and replicas (`HELLO 3 AUTH`).
    password: Option<Secret>,
    /// `--sentinel-password`: the sentinels' own `requirepass`.
    sentinel_password: Option<Secret>,
}

impl RedisChoice {
    /// Reads the settings (in this order: `redis`, `sentinel`, `sentinel_master`, `redis_user`,
    /// `redis_password`, `sentinel_password`).
    pub fn parse(src: &Sources<'_>) -> Result<Self, SettingError> {
        Ok(RedisChoice {
            redis: src.get("redis", parse_url)?,
            sentinels: src.get("sentinel", parse_sentinels)?,
            master: src.get("sentinel_master", parse_master_name)?,
            credentials: Credentials {
                user: src.get("redis_user", parse_user)?,
                password: src.get("redis_password", parse_password)?,
                sentinel_password: src.get("sentinel_password", parse_password)?,
            },
        })
    }

    /// True when none of the settings is set.
    pub fn is_unset(&self) -> bool {
        let c = &self.credentials;
        self.redis.is_none()
            && self.sentinels.is_none()
            && self.master.is_none()
            && c.user.is_none()
            && c.password.is_none()
            && c.sentinel_password.is_none()
    }

    /// The client the settings name (`None` when none is set), with the credentials,
    /// `--redis-timeout` and `--redis-connections` applied. `--redis` with `--sentinel`, one
    /// sentinel setting without the other, credentials without a server, `--sentinel-password`
    /// without `--sentinel`, or a password both in the URL and in `--redis-password` is an error.
    pub fn into_client(self, src: &Sources<'_>) -> Result<Option<ClientConfig>, SettingError> {
        let mut client = match (self.redis, self.sentinels, self.master) {
            (None, None, None) => return self.credentials.without_server().map(|()| None),
            (Some(_), Some(_), _) => return cross("sentinel", "cannot be combined with --redis"),
            (_, None, Some(_)) => return cross("sentinel_master", "needs --sentinel"),
            (None, Some(_), None) => return cross("sentinel_master", "required with --sentinel"),
            (Some(client), None, None) => client,
            (None, Some(sentinels), Some(master)) => {
                ClientConfig::new(Target::Sentinel { sentinels, master })
            }
        };
        self.credentials.apply(&mut client)?;
        src.set(&mut client.command_timeout, "redis_timeout", |v| {
            duration(v, Duration::from_millis(10), Duration::from_secs(3600))
        })?;
        src.set(&mut client.connections, "redis_connections", |v| {
            count(v, MIN_CONNECTIONS, MAX_CONNECTIONS)
        })?;
        Ok(Some(client))
    }
}

impl Credentials {
    /// Credentials given with neither `--redis` nor `--sentinel` are a mistake, not a no-op.
    fn without_server(&self) -> Result<(), SettingError> {
        if self.sentinel_password.is_some() {
            return cross("sentinel_password", "needs --sentinel");
        }
        if self.password.is_some() {
            return cross("redis_password", "needs --redis or --sentinel");
        }
        if self.user.is_some() {
            return cross("redis_user", "needs --redis or --sentinel");
        }
        Ok(())
    }

    /// Moves the credentials into `client` (built from `--redis` or `--sentinel`).
    fn apply(self, client: &mut ClientConfig) -> Result<(), SettingError> {
        let in_url = client.password.is_some() || client.username.is_some();
        if in_url && self.password.is_some() {
            return cross(
                "redis_password",
                "give the password in the URL or in --redis-password, not both",
            );
        }
        if in_url && self.user.is_some() {
            return cross(
                "redis_user",
                "give the user in the URL or in --redis-user, not both",
            );
        }
        if self.user.is_some() && self.password.is_none() {
            return cross("redis_user", "needs --redis-password");
        }
        let sentinel = matches!(client.target, Target::Sentinel { .. });
        if self.sentinel_password.is_some() && !sentinel {
            return cross("sentinel_password", "needs --sentinel");
        }
        if self.password.is_some() {
            client.username = self.user;
            client.password = self.password;
        }
        client.sentinel_password = self.sentinel_password;
        Ok(())
    }
}

/// A check across settings failed: the error names `key`, no single source.
fn cross<T>(key: &str, problem: &str) -> Result<T, SettingError> {
    Err(SettingError::new(key, Origin::Flag, problem))
}

fn parse_url(v: &str) -> Result<ClientConfig, String> {
    parse_redis_url(v).map_err(|e| {
        let shown = redact_url(v);
        format!("`{shown}`: {e} (expected redis://[user:pass@]host:port/db)")
    })
}

/// `v` with the password of its userinfo (everything up to the last `@`) replaced by `***`:
/// `redis://bob:pw@h` shows as `redis://bob:***@h`, `redis://pw@h` as `redis://***@h`.
pub(super) fn redact_url(v: &str) -> String {
    let Some((before, after)) = v.rsplit_once('@') else {
        return v.to_owned();
    };
    let (scheme, userinfo) = match before.find("://") {
        Some(i) => before.split_at(i + 3),
        None => ("", before),
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:{REDACTED}@{after}"),
        None => format!("{scheme}{REDACTED}@{after}"),
    }
}

/// `HOST:PORT,HOST:PORT,...`: 1 to 16 entries, each a non-empty host and a port 1-65535.
fn parse_sentinels(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for entry in v.split(',').map(str::trim) {
        if !is_host_port(entry) {
            return Err(format!("`{entry}` is not HOST:PORT (e.g. 127.0.0.1:26379)"));
        }
        if out.len() == MAX_SENTINELS {
            return Err(format!("at most {MAX_SENTINELS} sentinels"));
        }
        out.push(entry.to_owned());
    }
    Ok(out)
}

fn parse_master_name(v: &str) -> Result<String, String> {
    let ok = (1..=MAX_MASTER_NAME).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "`{v}` is not a master name (1 to {MAX_MASTER_NAME} printable characters, no spaces)"
        ))
    }
}

/// An ACL user name: 1 to 128 printable ASCII characters, no spaces.
fn parse_user(v: &str) -> Result<String, String> {
    let ok = (1..=MAX_USER).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "`{v}` is not a user name (1 to {MAX_USER} printable characters, no spaces)"
        ))
    }
}

/// A password: 1 to 1024 bytes, no control characters. The error never repeats the value.
fn parse_password(v: &str) -> Result<Secret, String> {
    if (1..=MAX_PASSWORD).contains(&v.len()) && !v.chars().any(char::is_control) {
        Ok(Secret::new(v))
    } else {
        Err(format!(
            "must be 1 to {MAX_PASSWORD} bytes without control characters (value not shown)"
        ))
    }
}
