//! The authentication settings: `--auth`, the keys (`--jwt-secret`, `--jwt-public-key`,
//! `--jwks-url`), the claim rules (`--jwt-max-lifetime`, `--jwt-audience`, `--jwt-issuer`),
//! `--allowed-origins`, and the options of `hermod-proxy token`.
//!
//! HS256 and public keys may be configured together: HS256 tokens then go to the secret, RS256
//! and ES256 tokens to the public keys, each algorithm to its own key. `--jwt-public-key` and
//! `--jwks-url` exclude each other. With none of the three (and `--auth jwt`), a random secret is
//! made, as before.

use std::sync::Arc;
use std::time::Duration;

use hermod_core::ids::Name;
use hermod_core::jwt::{self, KeySet, Registered, Rules};
use hermod_core::settings::{duration, one_of, Origin, SettingError as ConfigError, Sources};

use super::origins::parse_origins;
use super::resolve::TokenArgs;
use super::{AuthMode, Settings};
use crate::auth::http_get::parse_http_url;
use crate::auth::{JwksSource, PublicKeys, TokenVerifier};

/// Longest `--jwt-max-lifetime` (and `token --ttl`): one year.
const MAX_LIFETIME_BOUND: Duration = Duration::from_secs(365 * 86_400);

/// Resolves `s.auth` and `s.allowed_origins`; `Some(secret)` when one was generated.
pub(super) fn resolve_auth(
    src: &Sources<'_>,
    s: &mut Settings,
    make_secret: impl FnOnce() -> String,
) -> Result<Option<String>, ConfigError> {
    src.set(&mut s.allowed_origins, "allowed_origins", parse_origins)?;
    let use_jwt = src.get("auth", parse_auth)?.unwrap_or(true);
    let secret = src.get("jwt_secret", parse_secret)?;
    let public = public_keys(src)?;
    let rules = rules(src)?;
    if !use_jwt {
        s.auth = AuthMode::None;
        return Ok(None);
    }
    let mut generated = None;
    let secret = match (secret, &public) {
        (Some(secret), _) => Some(secret.into_bytes()),
        (None, Some(_)) => None,
        (None, None) => {
            let secret = make_secret();
            generated = Some(secret.clone());
            Some(secret.into_bytes())
        }
    };
    s.auth = AuthMode::Tokens(Arc::new(TokenVerifier::new(secret, public, rules)));
    Ok(generated)
}

/// `--jwt-public-key FILE` or `--jwks-url URL` (not both).
fn public_keys(src: &Sources<'_>) -> Result<Option<PublicKeys>, ConfigError> {
    let file = src.get("jwt_public_key", read_public_key)?;
    let jwks = src.get("jwks_url", parse_http_url)?;
    match (file, jwks) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "jwks_url",
            Origin::Flag,
            "give either --jwt-public-key or --jwks-url, not both",
        )),
        (Some(keys), None) => Ok(Some(PublicKeys::File(keys))),
        (None, Some(url)) => Ok(Some(PublicKeys::Jwks(JwksSource::new(url)))),
        (None, None) => Ok(None),
    }
}

/// The claim rules.
fn rules(src: &Sources<'_>) -> Result<Rules, ConfigError> {
    let mut rules = Rules::default();
    if let Some(max) = src.get("jwt_max_lifetime", |v| {
        duration(v, Duration::from_secs(1), MAX_LIFETIME_BOUND)
    })? {
        rules.max_lifetime_secs = max.as_secs();
    }
    rules.audience = src.get("jwt_audience", claim_text)?;
    rules.issuer = src.get("jwt_issuer", claim_text)?;
    Ok(rules)
}

/// Reads and parses a PEM public key file (at startup).
fn read_public_key(path: &str) -> Result<KeySet, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    KeySet::from_pem(&text).map_err(|e| format!("{path}: {e}"))
}

/// An `aud` or `iss` value: 1 to 256 bytes.
fn claim_text(v: &str) -> Result<String, String> {
    match v.len() {
        1..=256 => Ok(v.to_owned()),
        _ => Err("must be 1 to 256 bytes".to_owned()),
    }
}

/// `jwt` → true, `none` → false.
fn parse_auth(v: &str) -> Result<bool, String> {
    one_of(v, &[("jwt", true), ("none", false)])
}

/// An HS256 secret: 32 to 4096 bytes (its UTF-8 bytes are the HMAC key).
pub(super) fn parse_secret(v: &str) -> Result<String, String> {
    match v.len() {
        n if n < jwt::MIN_SECRET_LEN => Err(format!(
            "must be at least {} bytes, got {n} (make one with: openssl rand -hex 32)",
            jwt::MIN_SECRET_LEN
        )),
        n if n <= 4096 => Ok(v.to_owned()),
        _ => Err("must be at most 4096 bytes".to_owned()),
    }
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
    /// Room patterns to grant for joining (`rooms`).
    pub rooms: Vec<String>,
    /// Room patterns to grant for publishing (`publish`).
    pub publish: Vec<String>,
    /// `aud` and `iss` (`iat` is set to now when the token is made).
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

impl TokenRequest {
    /// The signed token, issued at `now_unix`.
    pub fn mint(&self, now_unix: u64) -> String {
        let claims = jwt::Claims {
            rooms: self.rooms.clone(),
            publish: self.publish.clone(),
            ..jwt::Claims::new(
                self.user.as_str(),
                now_unix.saturating_add(self.ttl.as_secs()),
            )
        };
        let registered = Registered {
            iat: Some(now_unix),
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
            ..Registered::default()
        };
        jwt::mint_registered(&self.secret, &claims, &registered)
    }
}

/// Resolves `token`'s options: the secret is flag > `HERMOD_JWT_SECRET` > file `jwt_secret`.
pub fn resolve_token(
    args: &TokenArgs,
    env: hermod_core::settings::EnvLookup<'_>,
    file: Option<&hermod_core::settings::ConfigFile>,
) -> Result<TokenRequest, ConfigError> {
    let flag_error = |key: &str, problem: String| ConfigError::new(key, Origin::Flag, problem);
    let user = args
        .user
        .as_deref()
        .ok_or_else(|| flag_error("user", "required".to_owned()))?;
    let user = Name::parse_user("user", user).map_err(|e| flag_error("user", e.to_string()))?;
    let ttl = match &args.ttl {
        None => Duration::from_secs(3600),
        Some(v) => duration(v, Duration::from_secs(1), MAX_LIFETIME_BOUND)
            .map_err(|p| flag_error("ttl", p))?,
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
    let patterns = |key: &str, v: &Option<String>| -> Result<Vec<String>, ConfigError> {
        let Some(v) = v else { return Ok(Vec::new()) };
        let list: Vec<String> = v
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if list.len() > 256 || list.iter().any(|p| p.len() > 256) {
            return Err(flag_error(
                key,
                "at most 256 patterns of 256 bytes".to_owned(),
            ));
        }
        Ok(list)
    };
    let text = |key: &str, v: &Option<String>| {
        v.as_deref()
            .map(claim_text)
            .transpose()
            .map_err(|p| flag_error(key, p))
    };
    Ok(TokenRequest {
        user,
        ttl,
        secret: secret.into_bytes(),
        rooms: patterns("rooms", &args.rooms)?,
        publish: patterns("publish", &args.publish)?,
        audience: text("aud", &args.aud)?,
        issuer: text("iss", &args.iss)?,
    })
}
