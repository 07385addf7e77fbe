//! The storage settings (spec §1): `--redis`, `--sentinel` + `--sentinel-master`, `--durability`,
//! `--redis-timeout`, `--redis-connections`. Neither `--redis` nor `--sentinel`: the in-memory
//! engine. Both, or `--sentinel` without its master name: a configuration error.

use std::time::Duration;

use hermod_core::redis::{parse_redis_url, ClientConfig, Target};

use super::{count, duration, ConfigError, Origin, Sources};
use crate::settings::{Durability, Storage};

/// Sentinels one `--sentinel` may list.
const MAX_SENTINELS: usize = 16;
/// Longest `--sentinel-master` name (Redis itself has no limit; this only bounds the input).
const MAX_MASTER_NAME: usize = 128;
/// `--redis-connections` bounds: lane 0 carries reads, lane 1 writes (and WAIT), so 2 at least.
const MIN_CONNECTIONS: usize = 2;
const MAX_CONNECTIONS: usize = 16;

/// Resolves which engine the embedded broker runs, and the Redis client's settings.
pub(super) fn resolve_storage(src: &Sources<'_>) -> Result<Storage, ConfigError> {
    let redis = src.get("redis", parse_url)?;
    let sentinels = src.get("sentinel", parse_sentinels)?;
    let master = src.get("sentinel_master", parse_master_name)?;
    let durability = src
        .get("durability", parse_durability)?
        .unwrap_or(Durability::Leader);
    let cross = |key: &str, problem: &str| Err(ConfigError::new(key, Origin::Flag, problem));
    let mut client = match (redis, sentinels, master) {
        (None, None, None) if durability == Durability::Replica => {
            return cross("durability", "replica needs --redis or --sentinel");
        }
        (None, None, None) => return Ok(Storage::Memory),
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
    Ok(Storage::Redis {
        client: Box::new(client),
        durability,
    })
}

fn parse_url(v: &str) -> Result<ClientConfig, String> {
    parse_redis_url(v)
        .map_err(|e| format!("`{v}`: {e} (expected redis://[user:pass@]host:port/db)"))
}

/// `HOST:PORT,HOST:PORT,...`: 1 to 16 entries, each a non-empty host and a port 1-65535.
fn parse_sentinels(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for entry in v.split(',').map(str::trim) {
        let ok = entry.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_graphic())
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !ok {
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

fn parse_durability(v: &str) -> Result<Durability, String> {
    match v {
        "leader" => Ok(Durability::Leader),
        "replica" => Ok(Durability::Replica),
        _ => Err(format!("`{v}` is not one of: leader, replica")),
    }
}
