//! The storage settings: `--redis`, `--sentinel` + `--sentinel-master`, `--durability`,
//! `--redis-timeout`, `--redis-connections` (read as `hermod-broker` reads them:
//! `hermod_core::settings::RedisChoice`). Neither `--redis` nor `--sentinel`: the in-memory
//! engine. Both, or `--sentinel` without its master name: a configuration error.
//!
//! `--brokers H:P,...` or `--registry` replace the embedded broker by external ones (so no
//! engine runs here): `--registry` reads the broker registry in the Redis that `--redis` /
//! `--sentinel` name, so it needs one of them; `--brokers` takes none of the storage settings
//! (the brokers have their own); the two exclude each other.

use hermod_broker::server::config::parse_durability;
use hermod_core::settings::{
    boolean, is_host_port, Origin, RedisChoice, SettingError as ConfigError, Sources,
};

use super::{Brokers, Durability, Storage};

/// Brokers one `--brokers` may list.
const MAX_BROKERS: usize = 64;

/// Resolves where the broker runs: embedded (on `storage`), or external.
pub(super) fn resolve_brokers(
    src: &Sources<'_>,
    storage: &Storage,
) -> Result<Brokers, ConfigError> {
    let listed = src.get("brokers", parse_brokers)?;
    let registry = src.get("registry", boolean)?.unwrap_or(false);
    let cross = |key: &str, problem: &str| Err(ConfigError::new(key, Origin::Flag, problem));
    match (listed, registry, storage) {
        (Some(_), true, _) => cross("registry", "cannot be combined with --brokers"),
        (Some(_), false, Storage::Redis { .. }) => cross(
            "brokers",
            "cannot be combined with --redis or --sentinel (the brokers have their own storage)",
        ),
        (Some(list), false, Storage::Memory) => Ok(Brokers::Static(list)),
        (None, true, Storage::Memory) => cross(
            "registry",
            "needs --redis or --sentinel (the Redis that holds the registry)",
        ),
        (None, true, Storage::Redis { .. }) => Ok(Brokers::Registry),
        (None, false, _) => Ok(Brokers::Embedded),
    }
}

/// `HOST:PORT,HOST:PORT,...`: 1 to 64 distinct entries.
fn parse_brokers(v: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for entry in v.split(',').map(str::trim) {
        if entry.len() > 256 || !is_host_port(entry) {
            return Err(format!("`{entry}` is not HOST:PORT (e.g. 127.0.0.1:7070)"));
        }
        if out.len() == MAX_BROKERS {
            return Err(format!("at most {MAX_BROKERS} brokers"));
        }
        if !out.iter().any(|e| e == entry) {
            out.push(entry.to_owned());
        }
    }
    Ok(out)
}

/// Resolves which engine the embedded broker runs, and the Redis client's settings.
pub(super) fn resolve_storage(src: &Sources<'_>) -> Result<Storage, ConfigError> {
    let choice = RedisChoice::parse(src)?;
    let durability = src
        .get("durability", parse_durability)?
        .unwrap_or(Durability::Leader);
    if choice.is_unset() && durability == Durability::Replica {
        let problem = "replica needs --redis or --sentinel";
        return Err(ConfigError::new("durability", Origin::Flag, problem));
    }
    Ok(match choice.into_client(src)? {
        None => Storage::Memory,
        Some(client) => Storage::Redis {
            client: Box::new(client),
            durability,
        },
    })
}
