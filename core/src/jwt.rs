//! HS256 JSON Web Tokens: `sub` (the user id), `exp` (unix seconds), and the room grants
//! `rooms` (patterns the user may join) and `publish` (patterns the user may publish to).
//!
//! Sans-io: the caller passes the current time. Only HS256 is accepted; the algorithm is checked
//! before the signature, so `alg: none` and algorithm-confusion tokens are refused outright. The
//! signature is compared in constant time.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Number;
use sha2::Sha256;

use crate::protocol::push_json_str;

/// Longest token accepted, in bytes. Ours are about 150 bytes; the bound stops a peer from making
/// us decode and hash large inputs before the signature check fails.
pub const MAX_TOKEN_LEN: usize = 4096;

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

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm (only HS256)")]
    UnsupportedAlgorithm,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token has no `{0}` claim")]
    MissingClaim(&'static str),
}

/// The fields of the header we read; others (`typ`, `kid`, ...) are ignored.
#[derive(Deserialize)]
struct Header {
    /// Must be `HS256`.
    alg: Option<String>,
}

/// The claims we read; others (`iat`, `nbf`, ...) are ignored.
#[derive(Deserialize)]
struct Payload {
    /// Missing or null: [`JwtError::MissingClaim`].
    sub: Option<String>,
    /// Integer or float seconds, as issuers differ.
    exp: Option<Number>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    send: Vec<String>,
}

/// Signs a token for `sub` that expires at `exp_unix` (unix seconds), with no room grants.
pub fn mint(secret: &[u8], sub: &str, exp_unix: u64) -> String {
    mint_claims(secret, &Claims::new(sub, exp_unix))
}

/// Signs a token carrying `claims` (`rooms`, `publish` and `send` only when not empty).
pub fn mint_claims(secret: &[u8], claims: &Claims) -> String {
    let mut payload = String::with_capacity(claims.sub.len() + 32);
    payload.push_str("{\"sub\":");
    push_json_str(&mut payload, &claims.sub);
    payload.push_str(",\"exp\":");
    payload.push_str(&claims.exp.to_string());
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

/// Verifies `token` with `secret` at time `now_unix` and returns its claims.
///
/// Checks, in order: size and shape (three base64url parts), `alg` is HS256, the signature, then
/// the claims (`sub` and `exp` present, `exp > now`). The charset of `sub` is not checked here.
pub fn verify(secret: &[u8], token: &str, now_unix: u64) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (header, payload) = signed.split_once('.').ok_or(JwtError::Malformed)?;
    if payload.contains('.') {
        return Err(JwtError::Malformed);
    }

    let header: Header = decode_json(header)?;
    if header.alg.as_deref() != Some("HS256") {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed)?;
    let mut mac = hmac_sha256(secret);
    mac.update(signed.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| JwtError::BadSignature)?;

    let payload: Payload = decode_json(payload)?;
    let sub = payload.sub.ok_or(JwtError::MissingClaim("sub"))?;
    let exp = payload.exp.ok_or(JwtError::MissingClaim("exp"))?;
    let exp = unexpired(&exp, now_unix)?;
    Ok(Claims {
        sub,
        exp,
        rooms: payload.rooms,
        publish: payload.publish,
        send: payload.send,
    })
}

/// `exp` as whole seconds (rounded up) if it is after `now`.
fn unexpired(exp: &Number, now: u64) -> Result<u64, JwtError> {
    if let Some(exp) = exp.as_u64() {
        return if exp > now {
            Ok(exp)
        } else {
            Err(JwtError::Expired)
        };
    }
    // Negative or fractional. `as` saturates, and precision loss near 2^53 is harmless here.
    match exp.as_f64() {
        Some(exp) if exp > now as f64 => Ok(exp.ceil() as u64),
        _ => Err(JwtError::Expired),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"hermod-test-secret";
    /// Computed with Python's hmac/hashlib/base64 (see the test below).
    const PY_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0.\
        1B6Vpu2VsRm36YdoU92tNWPgMFWw_5rINcB2c6xu--w";

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// Signs arbitrary header and payload JSON, to build tokens `mint` would never make.
    fn sign(secret: &[u8], header: &str, payload: &str) -> String {
        let signed = format!("{}.{}", b64(header), b64(payload));
        let mut mac = hmac_sha256(secret);
        mac.update(signed.as_bytes());
        format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    #[test]
    fn matches_a_token_computed_with_python() {
        // python3: b = lambda x: base64.urlsafe_b64encode(x).rstrip(b'=').decode()
        //   h = b(b'{"alg":"HS256","typ":"JWT"}'); p = b(b'{"sub":"alice","exp":2000000000}')
        //   s = b(hmac.new(b'hermod-test-secret', (h+'.'+p).encode(), hashlib.sha256).digest())
        assert_eq!(mint(SECRET, "alice", 2_000_000_000), PY_TOKEN);
        let claims = verify(SECRET, PY_TOKEN, 1_700_000_000).unwrap();
        assert_eq!(claims, Claims::new("alice", 2_000_000_000));
    }

    #[test]
    fn round_trips_with_escapes() {
        for sub in ["bob", "a\"b\\c", "é😀", ""] {
            let token = mint(b"k", sub, 100);
            assert_eq!(verify(b"k", &token, 99).unwrap().sub, sub);
        }
        assert_eq!(verify(b"", &mint(b"", "x", 5), 0).unwrap().exp, 5);
    }

    #[test]
    fn room_grants_round_trip() {
        let claims = Claims {
            rooms: vec!["team.42".into(), "team.42.*".into()],
            publish: vec!["team.\"x".into()],
            send: vec!["bob".into(), "support.*".into()],
            ..Claims::new("alice", 100)
        };
        assert_eq!(verify(b"k", &mint_claims(b"k", &claims), 99), Ok(claims));
        let wrong = sign(SECRET, HS256, r#"{"sub":"a","exp":9,"rooms":"team"}"#);
        assert_eq!(verify(SECRET, &wrong, 0), Err(JwtError::Malformed));
    }

    #[test]
    fn tampering_and_wrong_secrets_fail_the_signature() {
        let token = mint(SECRET, "alice", 2_000_000_000);
        let (_, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = format!(
            "{HEADER_B64}.{}.{sig}",
            b64(r#"{"sub":"admin","exp":2000000000}"#)
        );
        assert_eq!(verify(SECRET, &forged, 0), Err(JwtError::BadSignature));
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        let bad_sig = format!(
            "{}{flipped}{}",
            &token[..token.len() - sig.len()],
            &sig[1..]
        );
        assert_eq!(verify(SECRET, &bad_sig, 0), Err(JwtError::BadSignature));
        assert_eq!(verify(b"other", &token, 0), Err(JwtError::BadSignature));
        let truncated = &token[..token.len() - 3]; // 40 base64 chars: 30 bytes
        assert_eq!(verify(SECRET, truncated, 0), Err(JwtError::BadSignature));
    }

    #[test]
    fn only_hs256_is_accepted() {
        let payload = b64(r#"{"sub":"alice","exp":2000000000}"#);
        for alg in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"hs256"}"#,
            "{}",
        ] {
            let token = format!("{}.{payload}.", b64(alg));
            assert_eq!(
                verify(SECRET, &token, 0),
                Err(JwtError::UnsupportedAlgorithm),
                "{alg}"
            );
            let signed = sign(SECRET, alg, r#"{"sub":"alice","exp":2000000000}"#);
            assert_eq!(
                verify(SECRET, &signed, 0),
                Err(JwtError::UnsupportedAlgorithm)
            );
        }
    }

    #[test]
    fn expiry_is_checked_for_integer_and_float_exp() {
        let token = mint(SECRET, "alice", 1000);
        assert!(verify(SECRET, &token, 999).is_ok());
        assert_eq!(verify(SECRET, &token, 1000), Err(JwtError::Expired));
        assert_eq!(verify(SECRET, &token, 5000), Err(JwtError::Expired));
        // From Python too: {"exp":1700000000.5,"sub":"bob","iat":1}.
        let float = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJleHAiOjE3MDAwMDAwMDAuNSwic3ViIjoiYm9iIiwiaWF0IjoxfQ.\
            OWro0V6GL6Y6gFVFeCv76fORpjMl0k9ZDL47-qk5gOM";
        let claims = verify(SECRET, float, 1_700_000_000).unwrap();
        assert_eq!(claims, Claims::new("bob", 1_700_000_001));
        assert_eq!(verify(SECRET, float, 1_700_000_001), Err(JwtError::Expired));
        let negative = sign(SECRET, HS256, r#"{"sub":"a","exp":-5}"#);
        assert_eq!(verify(SECRET, &negative, 0), Err(JwtError::Expired));
        let huge = sign(SECRET, HS256, r#"{"sub":"a","exp":1e300}"#);
        assert_eq!(verify(SECRET, &huge, 0).unwrap().exp, u64::MAX);
    }

    #[test]
    fn claims_must_be_present_and_well_typed() {
        let cases = [
            (r#"{"exp":2000000000}"#, JwtError::MissingClaim("sub")),
            (
                r#"{"sub":null,"exp":2000000000}"#,
                JwtError::MissingClaim("sub"),
            ),
            (r#"{"sub":"a"}"#, JwtError::MissingClaim("exp")),
            (r#"{"sub":7,"exp":2000000000}"#, JwtError::Malformed),
            (r#"{"sub":"a","exp":"2000000000"}"#, JwtError::Malformed),
            (
                r#"{"sub":"a","sub":"b","exp":2000000000}"#,
                JwtError::Malformed,
            ),
            (r#"["a",2000000000]"#, JwtError::Malformed),
            ("not json", JwtError::Malformed),
        ];
        for (payload, expected) in cases {
            assert_eq!(
                verify(SECRET, &sign(SECRET, HS256, payload), 0),
                Err(expected),
                "{payload}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let token = mint(SECRET, "alice", 2_000_000_000);
        let long = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
        let padded = format!("{token}=");
        let four = format!("{token}.x");
        let bad_sig = format!("{HEADER_B64}.e30.***");
        let array_header = format!("{}.e30.AAAA", b64(r#"["HS256"]"#));
        for garbage in [
            "",
            ".",
            "..",
            "a.b",
            "!!.x.y",
            &bad_sig,
            &array_header,
            &long,
            &padded,
            &four,
        ] {
            assert_eq!(
                verify(SECRET, garbage, 0),
                Err(JwtError::Malformed),
                "{garbage}"
            );
        }
    }

    proptest! {
        #[test]
        fn verify_never_panics(token in any::<String>(), now in any::<u64>()) {
            let _ = verify(SECRET, &token, now);
        }

        #[test]
        fn verify_never_panics_on_token_shapes(
            token in "[A-Za-z0-9_=-]{0,60}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,50}"
        ) {
            let _ = verify(SECRET, &token, 0);
        }

        #[test]
        fn minted_tokens_verify(sub in any::<String>(), exp in 1..u64::MAX, secret in any::<Vec<u8>>()) {
            let claims = verify(&secret, &mint(&secret, &sub, exp), exp - 1).unwrap();
            prop_assert_eq!(claims, Claims::new(sub, exp));
        }
    }
}
