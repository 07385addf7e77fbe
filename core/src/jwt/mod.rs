//! JSON Web Tokens: `sub` (the user id), `exp` (unix seconds), the room grants `rooms`
//! (patterns the user may join) and `publish` (patterns the user may publish to), checked
//! against the claim [`rules`] (`exp`, `nbf`, `iat`, `aud`, `iss`).
//!
//! - HS256 with a shared secret: minted here ([`mint_claims`]) and verified with our own HMAC
//!   path, the fast one.
//! - RS256 and ES256 with public [`keys`] (a PEM file or a JWKS document): verified only.
//!
//! Sans-io: the caller passes the current time and the keys. The algorithm is read from the
//! header but pinned by the key: HS256 goes only to the secret, RS256 and ES256 only to public
//! keys of that algorithm, so `alg: none` and algorithm-confusion tokens are refused. The HMAC is
//! compared in constant time.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod keys;
#[cfg(test)]
mod keys_tests;
pub mod rules;
#[cfg(test)]
mod tests;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Number;
use sha2::Sha256;

use crate::protocol::push_json_str;
pub use keys::{Algorithm, KeyError, KeySet};
pub use rules::{Rules, DEFAULT_MAX_LIFETIME_SECS, LEEWAY_SECS};

/// Longest token accepted, in bytes. Ours are about 150 bytes, an RS256 one from an identity
/// provider about 800; the bound stops a peer from making us decode and hash large inputs before
/// the signature check fails.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Shortest HS256 secret the gateway and `hermod-proxy token` accept, in bytes: 256 bits, the
/// size of the HMAC-SHA256 output (RFC 7518 section 3.2 asks for at least that).
pub const MIN_SECRET_LEN: usize = 32;

/// The base64url of `{"alg":"HS256","typ":"JWT"}`, the header of every token we mint.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id, as the issuer wrote it; the caller validates it as a name.
    pub sub: String,
    /// Expiry in unix seconds; a fractional `exp` is rounded up, so `exp > now` held at
    /// verification.
    pub exp: u64,
    /// Room patterns the user may join (live and history); empty when the claim is absent.
    pub rooms: Vec<String>,
    /// Room patterns the user may publish to; empty when the claim is absent.
    pub publish: Vec<String>,
    /// User patterns the user may send direct messages to (read under `--direct-messages
    /// grant`); empty when the claim is absent.
    pub send: Vec<String>,
}

impl Claims {
    /// Claims with no room grants.
    pub fn new(sub: impl Into<String>, exp: u64) -> Self {
        Claims {
            sub: sub.into(),
            exp,
            rooms: Vec::new(),
            publish: Vec::new(),
            send: Vec::new(),
        }
    }
}

/// The registered claims a minted token may carry besides `sub` and `exp` (for `hermod-proxy
/// token` and tests); `None` leaves a claim out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registered {
    pub iat: Option<u64>,
    pub nbf: Option<u64>,
    pub aud: Option<String>,
    pub iss: Option<String>,
}

/// Why a token was refused. The text follows `bad token: ` in a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm (or no key configured for it)")]
    UnsupportedAlgorithm,
    #[error("token signed by an unknown key id")]
    UnknownKey,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    #[error("token `{0}` is not a plausible date")]
    AbsurdTime(&'static str),
    #[error("token lifetime longer than the maximum of {max_secs} s")]
    LifetimeTooLong { max_secs: u64 },
    #[error("token audience (aud) does not match")]
    WrongAudience,
    #[error("token issuer (iss) does not match")]
    WrongIssuer,
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
}

/// The fields of the header we read; others (`typ`, ...) are ignored.
#[derive(Deserialize)]
struct Header {
    /// `HS256`, `RS256` or `ES256`, each used only with its own kind of key.
    alg: Option<String>,
    /// Which public key signed the token (JWKS); ignored for HS256.
    kid: Option<String>,
}

/// The claims we read; others are ignored.
#[derive(Deserialize)]
struct Payload {
    /// Missing or null: [`JwtError::MissingClaim`].
    sub: Option<String>,
    /// Integer or float seconds, as issuers differ.
    exp: Option<Number>,
    nbf: Option<Number>,
    iat: Option<Number>,
    aud: Option<rules::Audience>,
    iss: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    send: Vec<String>,
}

/// What a token may be verified with.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// The HS256 secret, if HS256 tokens are accepted.
    pub secret: Option<&'a [u8]>,
    /// Public keys for RS256/ES256, if those are accepted.
    pub public: Option<&'a KeySet>,
}

/// Signs a token for `sub` that expires at `exp_unix` (unix seconds), with no room grants.
pub fn mint(secret: &[u8], sub: &str, exp_unix: u64) -> String {
    mint_claims(secret, &Claims::new(sub, exp_unix))
}

/// Signs a token carrying `claims` (`rooms`, `publish` and `send` only when not empty).
pub fn mint_claims(secret: &[u8], claims: &Claims) -> String {
    mint_registered(secret, claims, &Registered::default())
}

/// Signs a token carrying `claims` and the `registered` ones that are set.
pub fn mint_registered(secret: &[u8], claims: &Claims, registered: &Registered) -> String {
    let mut payload = String::with_capacity(claims.sub.len() + 32);
    payload.push_str("{\"sub\":");
    push_json_str(&mut payload, &claims.sub);
    payload.push_str(",\"exp\":");
    payload.push_str(&claims.exp.to_string());
    for (name, time) in [("iat", registered.iat), ("nbf", registered.nbf)] {
        if let Some(time) = time {
            payload.push_str(&format!(",\"{name}\":{time}"));
        }
    }
    for (name, text) in [("aud", &registered.aud), ("iss", &registered.iss)] {
        if let Some(text) = text {
            payload.push_str(&format!(",\"{name}\":"));
            push_json_str(&mut payload, text);
        }
    }
    for (name, patterns) in [
        ("rooms", &claims.rooms),
        ("publish", &claims.publish),
        ("send", &claims.send),
    ] {
        if patterns.is_empty() {
            continue;
        }
        payload.push_str(",\"");
        payload.push_str(name);
        payload.push_str("\":[");
        for (i, pattern) in patterns.iter().enumerate() {
            if i > 0 {
                payload.push(',');
            }
            push_json_str(&mut payload, pattern);
        }
        payload.push(']');
    }
    payload.push('}');

    let mut token = String::with_capacity(HEADER_B64.len() + payload.len() * 4 / 3 + 48);
    token.push_str(HEADER_B64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let mut mac = hmac_sha256(secret);
    mac.update(token.as_bytes());
    let signature = mac.finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

/// Verifies an HS256 `token` with `secret` at time `now_unix` under the default [`Rules`] and
/// returns its claims.
pub fn verify(secret: &[u8], token: &str, now_unix: u64) -> Result<Claims, JwtError> {
    let keys = Keys {
        secret: Some(secret),
        public: None,
    };
    verify_with(keys, &Rules::default(), token, now_unix)
}

/// Verifies `token` with `keys` at time `now_unix` and returns its claims.
///
/// Checks, in order: size and shape (three base64url parts), `alg` has a key of its kind, the
/// signature, then the claims (`sub` present, then the [`Rules`]). The charset of `sub` is not
/// checked here.
pub fn verify_with(
    keys: Keys<'_>,
    rules: &Rules,
    token: &str,
    now_unix: u64,
) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header, payload) = signed.split_once('.').ok_or(JwtError::Malformed)?;
    if payload.contains('.') {
        return Err(JwtError::Malformed);
    }

    let header: Header = decode_json(header)?;
    let alg = header
        .alg
        .as_deref()
        .ok_or(JwtError::UnsupportedAlgorithm)?;
    if alg == "HS256" {
        let secret = keys.secret.ok_or(JwtError::UnsupportedAlgorithm)?;
        let signature = decode_signature(signature)?;
        let mut mac = hmac_sha256(secret);
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| JwtError::BadSignature)?;
    } else {
        let algorithm = Algorithm::from_alg(alg).ok_or(JwtError::UnsupportedAlgorithm)?;
        let public = keys.public.ok_or(JwtError::UnsupportedAlgorithm)?;
        let signature = decode_signature(signature)?;
        public.verify(
            algorithm,
            header.kid.as_deref(),
            signed.as_bytes(),
            &signature,
        )?;
    }

    let payload: Payload = decode_json(payload)?;
    let sub = payload.sub.ok_or(JwtError::MissingClaim("sub"))?;
    let times = rules::TimeAndParties {
        exp: payload.exp,
        nbf: payload.nbf,
        iat: payload.iat,
        aud: payload.aud,
        iss: payload.iss,
    };
    let exp = rules.check(&times, now_unix)?;
    Ok(Claims {
        sub,
        exp,
        rooms: payload.rooms,
        publish: payload.publish,
        send: payload.send,
    })
}

fn decode_signature(signature: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed)
}

/// Decodes one base64url part holding a JSON object (serde would also take an array for a struct).
fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(JwtError::Malformed);
    }
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

fn hmac_sha256(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (longer ones are hashed), so this never fails.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length")
}
