//! RS256 and ES256: tokens made by PyJWT (testdata/pyjwt.json, from the keys in testdata/)
//! verify with a PEM file and with a JWKS; tampering, wrong keys and algorithm confusion fail.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::pkcs8::DecodePrivateKey as _;
use sha2::Sha256;

use super::*;

const NOW: u64 = 1_700_000_000;
const RSA_PUB: &str = include_str!("testdata/rsa.pub");
const RSA_PRIVATE: &str = include_str!("testdata/rsa.pem");
const EC_PUB: &str = include_str!("testdata/ec.pub");
const EC_PRIVATE: &str = include_str!("testdata/ec.pem");
const PYJWT: &str = include_str!("testdata/pyjwt.json");

fn pyjwt(field: &str) -> String {
    let doc: serde_json::Value = serde_json::from_str(PYJWT).expect("testdata JSON");
    match &doc[field] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn public(keys: &KeySet) -> Keys<'_> {
    Keys {
        secret: None,
        public: Some(keys),
    }
}

fn check(keys: &KeySet, token: &str) -> Result<Claims, JwtError> {
    verify_with(public(keys), &Rules::default(), token, NOW)
}

/// Signs `header.payload` (JSON texts) with the test RSA or EC private key.
fn sign(alg: &str, header: &str, payload: &str) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = match alg {
        "RS256" => {
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PRIVATE).expect("test key");
            let key = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
            key.sign(signed.as_bytes()).to_vec()
        }
        _ => {
            let key = p256::ecdsa::SigningKey::from_pkcs8_pem(EC_PRIVATE).expect("test key");
            let sig: p256::ecdsa::Signature = key.sign(signed.as_bytes());
            sig.to_vec()
        }
    };
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn alice() -> Claims {
    Claims {
        rooms: vec!["team.*".into()],
        ..Claims::new("alice", NOW + 600)
    }
}

#[test]
fn pyjwt_tokens_verify_with_pem_files() {
    let rsa = KeySet::from_pem(RSA_PUB).expect("RSA PEM");
    let ec = KeySet::from_pem(EC_PUB).expect("EC PEM");
    assert_eq!(check(&rsa, &pyjwt("rs256")), Ok(alice()));
    assert_eq!(check(&ec, &pyjwt("es256")), Ok(alice()));
    // Each key verifies its own algorithm only.
    assert_eq!(
        check(&rsa, &pyjwt("es256")),
        Err(JwtError::UnknownKey),
        "an ES256 token with a kid and no EC key"
    );
    let no_kid = sign(
        "ES256",
        r#"{"alg":"ES256"}"#,
        r#"{"sub":"a","exp":1700000060}"#,
    );
    assert_eq!(check(&rsa, &no_kid), Err(JwtError::UnsupportedAlgorithm));
}

#[test]
fn pyjwt_tokens_verify_with_a_jwks() {
    let jwks = pyjwt("jwks");
    let keys = KeySet::from_jwks(jwks.as_bytes()).expect("JWKS");
    assert_eq!(
        keys.len(),
        2,
        "the oct and the encryption keys are skipped: {keys:?}"
    );
    assert_eq!(check(&keys, &pyjwt("rs256")), Ok(alice()));
    assert_eq!(check(&keys, &pyjwt("es256")), Ok(alice()));
    let unknown = sign(
        "RS256",
        r#"{"alg":"RS256","kid":"r2"}"#,
        r#"{"sub":"a","exp":1700000060}"#,
    );
    assert_eq!(check(&keys, &unknown), Err(JwtError::UnknownKey));
    // A kid names one key: an RS256 token naming the EC key finds no RSA key under that id.
    let wrong_kid = sign(
        "RS256",
        r#"{"alg":"RS256","kid":"e1"}"#,
        r#"{"sub":"a","exp":1700000060}"#,
    );
    assert_eq!(check(&keys, &wrong_kid), Err(JwtError::UnknownKey));
}

#[test]
fn tampered_asymmetric_tokens_fail() {
    let keys = KeySet::from_jwks(pyjwt("jwks").as_bytes()).expect("JWKS");
    for token in [pyjwt("rs256"), pyjwt("es256")] {
        let parts: Vec<&str> = token.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(r#"{"sub":"admin","exp":1700000600}"#);
        let swapped = format!("{}.{evil}.{}", parts[0], parts[2]);
        assert_eq!(check(&keys, &swapped), Err(JwtError::BadSignature));
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64");
        sig[5] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(check(&keys, &flipped), Err(JwtError::BadSignature));
        let short = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode(&sig[..10])
        );
        assert_eq!(check(&keys, &short), Err(JwtError::BadSignature));
    }
}

#[test]
fn an_hs256_token_keyed_with_the_public_key_is_refused() {
    // The classic confusion: HMAC over the token with the RSA public key's PEM as the secret.
    let keys = KeySet::from_pem(RSA_PUB).expect("RSA PEM");
    let forged = mint(RSA_PUB.as_bytes(), "admin", NOW + 60);
    assert_eq!(check(&keys, &forged), Err(JwtError::UnsupportedAlgorithm));
    // With a secret configured too, HS256 goes to the secret only.
    let both = Keys {
        secret: Some(b"0123456789abcdef0123456789abcdef"),
        public: Some(&keys),
    };
    assert_eq!(
        verify_with(both, &Rules::default(), &forged, NOW),
        Err(JwtError::BadSignature)
    );
    let ours = mint(b"0123456789abcdef0123456789abcdef", "bob", NOW + 60);
    assert!(verify_with(both, &Rules::default(), &ours, NOW).is_ok());
    assert_eq!(check(&keys, &pyjwt("rs256")), Ok(alice()));
}

#[test]
fn asymmetric_tokens_obey_the_claim_rules() {
    let keys = KeySet::from_pem(EC_PUB).expect("EC PEM");
    let rules = Rules {
        audience: Some("chat".into()),
        ..Rules::default()
    };
    let token = sign(
        "ES256",
        r#"{"alg":"ES256"}"#,
        r#"{"sub":"a","exp":1700000060,"aud":["x","chat"]}"#,
    );
    assert!(verify_with(public(&keys), &rules, &token, NOW).is_ok());
    assert_eq!(
        verify_with(public(&keys), &rules, &pyjwt("es256"), NOW),
        Err(JwtError::MissingClaim("aud"))
    );
    assert_eq!(check(&keys, &pyjwt("es256")).map(|c| c.exp), Ok(NOW + 600));
    assert_eq!(
        verify_with(public(&keys), &Rules::default(), &pyjwt("es256"), NOW + 600),
        Err(JwtError::Expired)
    );
}

#[test]
fn bad_key_material_is_a_clear_error() {
    assert_eq!(KeySet::from_pem("nonsense").unwrap_err(), KeyError::Pem);
    assert_eq!(KeySet::from_pem(RSA_PRIVATE).unwrap_err(), KeyError::Pem);
    assert!(matches!(KeySet::from_jwks(b"[]"), Err(KeyError::Jwks(_))));
    assert_eq!(
        KeySet::from_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap_err(),
        KeyError::NoUsableKey
    );
    // A 1024-bit RSA key: skipped in a JWKS, refused in a file.
    let small_n = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
    let jwks = format!(r#"{{"keys":[{{"kty":"RSA","n":"{small_n}","e":"AQAB"}}]}}"#);
    assert_eq!(
        KeySet::from_jwks(jwks.as_bytes()).unwrap_err(),
        KeyError::NoUsableKey
    );
    let many: Vec<String> = (0..100).map(|i| format!(r#"{{"kty":"EC","crv":"P-256","kid":"{i}","x":"w3ngFE3-2xy01a28ysOQO_-zNc6ysi_30n0HRVhIUtE","y":"LvzcKINybFK6gtigqzNomDlRMw94BrHt7IJa0Nj-BbA"}}"#)).collect();
    let big = format!(r#"{{"keys":[{}]}}"#, many.join(","));
    assert_eq!(
        KeySet::from_jwks(big.as_bytes()).map(|k| k.len()),
        Ok(keys::MAX_KEYS)
    );
}
