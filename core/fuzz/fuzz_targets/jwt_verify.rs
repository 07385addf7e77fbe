//! Feeds arbitrary tokens to `hermod_core::jwt::verify` (every `?token=` at the handshake goes
//! through it), half of them with a valid signature over fuzzer-chosen header and claims so the
//! claim checks are reached too. It must never panic, and never accept a token whose signature
//! does not match. Raw tokens also go to `verify_with` with RS256 and ES256 public keys only
//! (the core's test keys): without their private keys nothing may pass.

#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hermod_core::jwt::{verify, verify_with, KeySet, Keys, Rules};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const SECRET: &[u8] = b"fuzz-secret-0123456789-0123456789";
const RSA_PUB: &str = include_str!("../../src/jwt/testdata/rsa.pub");
const EC_PUB: &str = include_str!("../../src/jwt/testdata/ec.pub");
const NOW: u64 = 1_764_134_400;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if control & 1 == 0 {
        // As it came: almost always a bad signature, so it must be refused.
        let _ = verify(SECRET, text, NOW);
        for pem in [RSA_PUB, EC_PUB] {
            let Ok(keys) = KeySet::from_pem(pem) else {
                return;
            };
            let public = Keys {
                secret: None,
                public: Some(&keys),
            };
            assert!(verify_with(public, &Rules::default(), text, NOW).is_err());
        }
        return;
    }
    // Fuzzer-chosen header and claims JSON (split at the first NUL), correctly signed.
    let (header, claims) = text
        .split_once('\0')
        .unwrap_or((r#"{"alg":"HS256"}"#, text));
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(SECRET) else {
        return;
    };
    mac.update(signing.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    let token = format!("{signing}.{sig}");
    if let Ok(claims) = verify(SECRET, &token, NOW) {
        let _ = format!("{claims:?}");
        // The same token under another secret never passes.
        assert!(verify(b"another-secret-0123456789-0123456789", &token, NOW).is_err());
    }
});
