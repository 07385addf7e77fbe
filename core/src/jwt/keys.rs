//! Public keys for RS256 and ES256 tokens: a [`KeySet`] read from a PEM file or from a JWKS
//! document, and the signature check of one token against it.
//!
//! The cryptography is RustCrypto's (`rsa` PKCS#1 v1.5 with SHA-256, `p256` ECDSA); this module
//! only picks the key. Each key verifies one algorithm, fixed when it is loaded: an RSA key only
//! RS256, a P-256 key only ES256, so a token cannot choose how a key is used (an HS256 token
//! "signed" with the RSA public key as an HMAC secret never meets that key).
//!
//! Sans-io: fetching a JWKS is the shell's job; this module parses the bytes it got.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;
use sha2::Sha256;

use super::JwtError;

/// Keys one set may hold. A JWKS usually has two or three (current and next); the bound keeps a
/// hostile or broken JWKS endpoint from making every token try thousands of keys.
pub const MAX_KEYS: usize = 32;

/// Smallest RSA modulus accepted, in bits (NIST's floor since 2013). `rsa` itself caps it at
/// 4096 bits, which bounds the cost of one check.
pub const MIN_RSA_BITS: usize = 2048;

/// The asymmetric algorithms a [`PublicKey`] verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256, the signature as 64 bytes `r || s`.
    Es256,
}

impl Algorithm {
    /// The algorithm a token header's `alg` names, if it is one of ours.
    pub fn from_alg(alg: &str) -> Option<Algorithm> {
        match alg {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            _ => None,
        }
    }
}

/// One public key, tied to its algorithm.
#[derive(Clone)]
pub enum PublicKey {
    Rs256(Box<rsa::pkcs1v15::VerifyingKey<Sha256>>),
    Es256(Box<p256::ecdsa::VerifyingKey>),
}

impl PublicKey {
    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::Rs256(_) => Algorithm::Rs256,
            PublicKey::Es256(_) => Algorithm::Es256,
        }
    }

    /// Whether `signature` (decoded from base64url) signs `message` under this key.
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Rs256(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            PublicKey::Es256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
        }
    }

    fn rsa(key: rsa::RsaPublicKey) -> Result<PublicKey, KeyError> {
        if key.n().bits() < MIN_RSA_BITS {
            return Err(KeyError::WeakRsa(key.n().bits()));
        }
        Ok(PublicKey::Rs256(Box::new(
            rsa::pkcs1v15::VerifyingKey::new(key),
        )))
    }
}

/// A key and the id (`kid`) a token names it by.
#[derive(Clone)]
struct Entry {
    /// From the JWKS; `None` for a key file, which then serves every token of its algorithm.
    kid: Option<String>,
    key: PublicKey,
}

/// The public keys tokens are checked against. Immutable: a JWKS refresh builds a new set.
#[derive(Clone, Default)]
pub struct KeySet {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<_> = self
            .entries
            .iter()
            .map(|e| (e.kid.as_deref().unwrap_or("-"), e.key.algorithm()))
            .collect();
        f.debug_struct("KeySet").field("keys", &keys).finish()
    }
}

/// Why a key file or a JWKS document could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key (RSA or EC P-256, `-----BEGIN PUBLIC KEY-----`)")]
    Pem,
    #[error("RSA key of {0} bits: at least 2048 are required")]
    WeakRsa(usize),
    #[error("not a JWKS document: {0}")]
    Jwks(String),
    #[error("JWKS has no usable RS256 or ES256 signing key")]
    NoUsableKey,
}

/// One entry of a JWKS `keys` array; only what we read.
#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// The key of a PEM file: an SPKI `PUBLIC KEY` (RSA or EC P-256) or a PKCS#1 `RSA PUBLIC KEY`.
    pub fn from_pem(pem: &str) -> Result<KeySet, KeyError> {
        let key = if let Ok(key) = rsa::RsaPublicKey::from_public_key_pem(pem) {
            PublicKey::rsa(key)?
        } else if let Ok(key) = rsa::RsaPublicKey::from_pkcs1_pem(pem) {
            PublicKey::rsa(key)?
        } else if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            PublicKey::Es256(Box::new(key))
        } else {
            return Err(KeyError::Pem);
        };
        Ok(KeySet {
            entries: vec![Entry { kid: None, key }],
        })
    }

    /// The signing keys of a JWKS document (RFC 7517). Keys we cannot use (encryption keys, other
    /// curves and algorithms, RSA under 2048 bits) are skipped, as a JWKS often mixes them; a
    /// document with none left is an error, so a broken endpoint never empties a working set.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, KeyError> {
        let doc: Jwks = serde_json::from_slice(json).map_err(|e| KeyError::Jwks(e.to_string()))?;
        let entries: Vec<Entry> = doc
            .keys
            .iter()
            .filter_map(|jwk| {
                Some(Entry {
                    kid: jwk.kid.clone(),
                    key: jwk_key(jwk)?,
                })
            })
            .take(MAX_KEYS)
            .collect();
        if entries.is_empty() {
            return Err(KeyError::NoUsableKey);
        }
        Ok(KeySet { entries })
    }

    /// Keys in the set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks `signature` over `message` for a token whose header says `alg` and `kid`. With a
    /// `kid`, only the key of that id is tried (none: [`JwtError::UnknownKey`], which tells a JWKS
    /// shell to refresh); without, every key of the algorithm.
    pub fn verify(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), JwtError> {
        // A key file's key (no kid) serves any kid; a JWKS key only its own.
        let named = |e: &&Entry| match (kid, e.kid.as_deref()) {
            (Some(wanted), Some(own)) => wanted == own,
            _ => true,
        };
        let mut candidates = self
            .entries
            .iter()
            .filter(|e| e.key.algorithm() == alg)
            .filter(named)
            .peekable();
        if candidates.peek().is_none() {
            // With a kid, perhaps a key published since the last fetch (even into an empty set).
            return Err(match kid {
                Some(_) => JwtError::UnknownKey,
                None => JwtError::UnsupportedAlgorithm,
            });
        }
        if candidates.any(|e| e.key.verifies(message, signature)) {
            Ok(())
        } else {
            Err(JwtError::BadSignature)
        }
    }
}

/// The key of one JWK, if it is an RS256 or ES256 signing key we accept.
fn jwk_key(jwk: &Jwk) -> Option<PublicKey> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let b64 = |v: &Option<String>| URL_SAFE_NO_PAD.decode(v.as_deref()?).ok();
    match (jwk.kty.as_deref()?, jwk.alg.as_deref()) {
        ("RSA", None | Some("RS256")) => {
            let n = rsa::BigUint::from_bytes_be(&b64(&jwk.n)?);
            let e = rsa::BigUint::from_bytes_be(&b64(&jwk.e)?);
            PublicKey::rsa(rsa::RsaPublicKey::new(n, e).ok()?).ok()
        }
        ("EC", None | Some("ES256")) if jwk.crv.as_deref() == Some("P-256") => {
            let (x, y) = (b64(&jwk.x)?, b64(&jwk.y)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let point = p256::EncodedPoint::from_affine_coordinates(
                p256::FieldBytes::from_slice(&x),
                p256::FieldBytes::from_slice(&y),
                false,
            );
            let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point).ok()?;
            Some(PublicKey::Es256(Box::new(key)))
        }
        _ => None,
    }
}
