//! The Redis settings both server binaries read the same way (spec §1): `--redis URL`, or
//! `--sentinel H:P,...` with `--sentinel-master NAME`, tuned by `--redis-timeout` and
//! `--redis-connections`. What "none of them" means is the binary's call: the proxy then runs
//! the in-memory engine, the broker refuses to start.

use std::time::Duration;

use super::{count, duration, is_host_port, Origin, SettingError, Sources};
use crate::redis::{parse_redis_url, ClientConfig, Target};

/// Sentinels one `--sentinel` may list.
pub const MAX_SENTINELS: usize = 16;
/// Longest `--sentinel-master` name (Redis itself has no limit; this only bounds the input).
pub const MAX_MASTER_NAME: usize = 128;
/// `--redis-connections` bounds: lane 0 carries reads, lane 1 writes (and WAIT), so 2 at least.
const MIN_CONNECTIONS: usize = 2;
const MAX_CONNECTIONS: usize = 16;

/// `--redis`, `--sentinel` and `--sentinel-master` as given, each checked on its own; whether
/// they make sense together is [`RedisChoice::into_client`]'s question. Two steps, so a binary
/// can check settings of its own (e.g. `--durability`) in between.
#[derive(Debug, Clone)]
pub struct RedisChoice {
    /// `--redis`: one Redis, by URL.
    redis: Option<ClientConfig>,
    /// `--sentinel`: the sentinels to ask for the master.
    sentinels: Option<Vec<String>>,
    /// `--sentinel-master`: the name the sentinels monitor.
    master: Option<String>,
}

impl RedisChoice {
    /// Reads the three settings (in this order: `redis`, `sentinel`, `sentinel_master`).
    pub fn parse(src: &Sources<'_>) -> Result<Self, SettingError> {
        Ok(RedisChoice {
            redis: src.get("redis", parse_url)?,
            sentinels: src.get("sentinel", parse_sentinels)?,
            master: src.get("sentinel_master", parse_master_name)?,
        })
    }

    /// True when none of the three is set.
    pub fn is_unset(&self) -> bool {
        self.redis.is_none() && self.sentinels.is_none() && self.master.is_none()
    }

    /// The client the settings name (`None` when none is set), with `--redis-timeout` and
    /// `--redis-connections` applied. `--redis` with `--sentinel`, or one sentinel setting
    /// without the other, is an error.
    pub fn into_client(self, src: &Sources<'_>) -> Result<Option<ClientConfig>, SettingError> {
        let cross = |key: &str, problem: &str| Err(SettingError::new(key, Origin::Flag, problem));
        let mut client = match (self.redis, self.sentinels, self.master) {
            (None, None, None) => return Ok(None),
            (Some(_), Some(_), _) => return cross("sentinel", "cannot be combined with --redis"),
            (_, None, Some(_)) => return cross("sentinel_master", "needs --sentinel"),
            (None, Some(_), None) => return cross("sentinel_master", "required with --sentinel"),
            (Some(client), None, None) => client,
            (None, Some(sentinels), Some(master)) => {
                ClientConfig::new(Target::Sentinel { sentinels, master })
            }
        };
        src.set(&mut client.command_timeout, "redis_timeout", |v| {
            duration(v, Duration::from_millis(10), Duration::from_secs(3600))
        })?;
        src.set(&mut client.connections, "redis_connections", |v| {
            count(v, MIN_CONNECTIONS, MAX_CONNECTIONS)
        })?;
        Ok(Some(client))
    }
}

fn parse_url(v: &str) -> Result<ClientConfig, String> {
    parse_redis_url(v)
        .map_err(|e| format!("`{v}`: {e} (expected redis://[user:pass@]host:port/db)"))
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
