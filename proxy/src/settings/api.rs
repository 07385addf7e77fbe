//! `--api-listen` and `--api-key`: where the server API listens and the keys it accepts.
//!
//! The API is on when at least one key is configured: with the default listener
//! (127.0.0.1:9091) and no key it stays off (an API nobody can call is no use, and one anybody
//! can call is a hole); an explicit `--api-listen` without a key is a configuration error.
//! Keys are kept only as HMAC tags and compared in constant time ([`ApiKeys::verify`]).

use std::fmt;

use hermod_core::settings::{env_name, socket_addr, Origin, SettingError as ConfigError, Sources};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Settings;

/// Shortest accepted API key: a guessable key is no authentication.
pub const MIN_API_KEY_LEN: usize = 16;
/// Longest accepted API key.
pub const MAX_API_KEY_LEN: usize = 256;
/// Most API keys configured at once (each request is checked against all of them).
pub const MAX_API_KEYS: usize = 32;
/// Fixed key of the tags compared in [`ApiKeys::verify`] (not a secret: it only makes the
/// comparison independent of the keys' lengths).
const TAG_KEY: &[u8] = b"hermod-api-key-v1";

/// The accepted API keys, as tags. `Debug` shows only how many there are.
#[derive(Clone, Default)]
pub struct ApiKeys {
    tags: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Keys from their texts (lengths are checked by [`resolve_api`]).
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let tags = keys
            .into_iter()
            .map(|k| {
                let mut mac = keyed();
                mac.update(k.as_bytes());
                mac.finalize().into_bytes().into()
            })
            .collect();
        ApiKeys { tags }
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Whether `presented` is one of the keys. Every key is compared, each in constant time,
    /// so the answer's timing says nothing about which key, or how much of one, matched.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let mut ok = false;
        for tag in &self.tags {
            let mut mac = keyed();
            mac.update(presented);
            ok |= mac.verify_slice(tag).is_ok();
        }
        ok
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys)", self.tags.len())
    }
}

fn keyed() -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this never fails.
    <Hmac<Sha256> as Mac>::new_from_slice(TAG_KEY).expect("HMAC accepts keys of any length")
}

/// Resolves `s.api_listen` and `s.api_keys` from the `--api-key` flags (repeatable),
/// `HERMOD_API_KEY` (comma-separated) or the file's `api_key` (a string or an array).
pub(super) fn resolve_api(
    flags: &[String],
    src: &Sources<'_>,
    s: &mut Settings,
) -> Result<(), ConfigError> {
    let listen = src.get("api_listen", |v| match v.trim() {
        "off" => Ok(None),
        addr => socket_addr(addr, "127.0.0.1:9091").map(Some),
    })?;
    let (keys, origin) = super::resolve::raw_list("api_key", flags, src)?;
    let error = |problem: String| ConfigError::new("api_key", origin.clone(), problem);
    if keys.len() > MAX_API_KEYS {
        return Err(error(format!("at most {MAX_API_KEYS} keys")));
    }
    let keys: Vec<&str> = keys.iter().map(|k| k.trim()).collect();
    if keys
        .iter()
        .any(|k| k.len() < MIN_API_KEY_LEN || k.len() > MAX_API_KEY_LEN)
    {
        let problem = format!("each key must be {MIN_API_KEY_LEN} to {MAX_API_KEY_LEN} bytes");
        return Err(error(problem));
    }
    s.api_keys = ApiKeys::new(keys);
    s.api_listen = match listen {
        Some(None) => None,
        Some(Some(addr)) if s.api_keys.is_empty() => {
            let var = env_name("api_key");
            let problem = format!(
                "required when --api-listen ({addr}) is set: set --api-key or {var}, or use \
                 --api-listen off"
            );
            return Err(ConfigError::new("api_key", Origin::Flag, problem));
        }
        Some(Some(addr)) => Some(addr),
        None if s.api_keys.is_empty() => None,
        None => s.api_listen,
    };
    if let Some(addr) = s.api_listen {
        let clash = [("listen", s.listen), ("admin_listen", s.admin_listen)]
            .into_iter()
            .find(|(_, other)| addr.port() != 0 && *other == addr);
        if let Some((name, _)) = clash {
            let problem = format!("must differ from --{}", name.replace('_', "-"));
            return Err(ConfigError::new("api_listen", Origin::Flag, problem));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_verified_whole() {
        let keys = ApiKeys::new(["k".repeat(16).as_str(), "another-key-0123456789"]);
        assert!(keys.verify("k".repeat(16).as_bytes()));
        assert!(keys.verify(b"another-key-0123456789"));
        assert!(!keys.verify("k".repeat(15).as_bytes()));
        assert!(!keys.verify("k".repeat(17).as_bytes()));
        assert!(!keys.verify(b""));
        assert!(!ApiKeys::default().verify(b""));
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 keys)");
    }
}
