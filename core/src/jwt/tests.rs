//! HS256 minting and the token checks of `verify`; the claim rules have their own tests in
//! `rules.rs`, the public keys in `keys_tests.rs`.

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
    let claims = verify(SECRET, PY_TOKEN, 1_999_999_000).unwrap();
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
fn only_hs256_is_accepted_without_public_keys() {
    let payload = b64(r#"{"sub":"alice","exp":2000000000}"#);
    for alg in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"HS512"}"#,
        r#"{"alg":"hs256"}"#,
        r#"{"alg":"RS256"}"#,
        r#"{"alg":"ES256","kid":"k"}"#,
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
    // Its `iat` of 1 makes its lifetime 54 years: too long by default, fine under a larger bound.
    let too_long = Err(JwtError::LifetimeTooLong {
        max_secs: DEFAULT_MAX_LIFETIME_SECS,
    });
    assert_eq!(verify(SECRET, float, 1_700_000_000), too_long);
    let keys = Keys {
        secret: Some(SECRET),
        public: None,
    };
    let lax = Rules {
        max_lifetime_secs: u64::MAX,
        ..Rules::default()
    };
    let claims = verify_with(keys, &lax, float, 1_700_000_000).unwrap();
    assert_eq!(claims, Claims::new("bob", 1_700_000_001));
    assert_eq!(
        verify_with(keys, &lax, float, 1_700_000_001),
        Err(JwtError::Expired)
    );
    let negative = sign(SECRET, HS256, r#"{"sub":"a","exp":-5}"#);
    assert_eq!(verify(SECRET, &negative, 0), Err(JwtError::Expired));
    let huge = sign(SECRET, HS256, r#"{"sub":"a","exp":1e300}"#);
    assert_eq!(verify(SECRET, &huge, 0), Err(JwtError::AbsurdTime("exp")));
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
    fn minted_tokens_verify(
        sub in any::<String>(), exp in 1..rules::MAX_NUMERIC_DATE, secret in any::<Vec<u8>>(),
    ) {
        let claims = verify(&secret, &mint(&secret, &sub, exp), exp - 1).unwrap();
        prop_assert_eq!(claims, Claims::new(sub, exp));
    }
}

#[test]
fn registered_claims_are_minted_and_checked() {
    let registered = Registered {
        iat: Some(1_000),
        nbf: Some(1_000),
        aud: Some("chat".into()),
        iss: Some("hermod".into()),
    };
    let token = mint_registered(SECRET, &Claims::new("alice", 2_000), &registered);
    let payload = token.split('.').nth(1).unwrap();
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(
        json,
        r#"{"sub":"alice","exp":2000,"iat":1000,"nbf":1000,"aud":"chat","iss":"hermod"}"#
    );
    let rules = Rules {
        audience: Some("chat".into()),
        issuer: Some("hermod".into()),
        ..Rules::default()
    };
    let keys = Keys {
        secret: Some(SECRET),
        public: None,
    };
    assert!(verify_with(keys, &rules, &token, 1_500).is_ok());
    assert_eq!(
        verify_with(keys, &rules, &token, 900),
        Err(JwtError::NotYetValid)
    );
    let other = Rules {
        audience: Some("billing".into()),
        ..rules
    };
    assert_eq!(
        verify_with(keys, &other, &token, 1_500),
        Err(JwtError::WrongAudience)
    );
}
