//! Who a token says the client is: [`TokenVerifier`] checks a token with the configured HS256
//! secret and/or public keys under the claim rules (`hermod_core::jwt`), and keeps the public key
//! set that the JWKS refresher ([`jwks`]) replaces in the background.
//!
//! Reactors call [`TokenVerifier::verify`]: it reads the current key set under a read lock held
//! for one `Arc` clone, never touches the network, and at most asks the refresher (an atomic flag
//! and a thread unpark) to look for a key id it does not know.

pub mod http_get;
pub mod jwks;

use std::sync::Arc;

use hermod_core::jwt::{self, Claims, JwtError, KeySet, Keys, Rules};
use parking_lot::RwLock;

pub use jwks::{JwksRefresher, JwksSource};

/// Where the public keys come from.
#[derive(Debug)]
pub enum PublicKeys {
    /// One key read from a PEM file at startup (`--jwt-public-key`).
    File(KeySet),
    /// Keys of a JWKS document, fetched at start and refreshed in the background (`--jwks-url`).
    Jwks(JwksSource),
}

/// Verifies client tokens: the gateway's one place for "is this token good, and whose is it".
pub struct TokenVerifier {
    /// HS256 secret (at least 32 bytes, checked when resolved); `None`: HS256 tokens refused.
    secret: Option<Vec<u8>>,
    /// RS256/ES256 keys; `None`: those tokens refused.
    public: Option<PublicKeys>,
    /// The claim rules (`--jwt-max-lifetime`, `--jwt-audience`, `--jwt-issuer`).
    rules: Rules,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("public", &self.public)
            .field("rules", &self.rules)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier with these keys and rules. At least one of `secret` and `public` should be set,
    /// or every token is refused.
    pub fn new(secret: Option<Vec<u8>>, public: Option<PublicKeys>, rules: Rules) -> Self {
        TokenVerifier {
            secret,
            public,
            rules,
        }
    }

    /// An HS256-only verifier with the default rules.
    pub fn hs256(secret: Vec<u8>) -> Self {
        TokenVerifier::new(Some(secret), None, Rules::default())
    }

    /// The HS256 secret, if HS256 tokens are accepted.
    pub fn secret(&self) -> Option<&[u8]> {
        self.secret.as_deref()
    }

    /// The claim rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The JWKS source, when keys come from a JWKS URL (the server starts its refresher).
    pub fn jwks(&self) -> Option<&JwksSource> {
        match &self.public {
            Some(PublicKeys::Jwks(source)) => Some(source),
            _ => None,
        }
    }

    /// Verifies `token` at `now_unix`. A token naming a key id the JWKS does not have asks the
    /// refresher for one (rate-limited) refresh; this token is refused all the same.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, JwtError> {
        let jwks_keys: Option<Arc<KeySet>> = self.jwks().map(JwksSource::current);
        let public = match (&self.public, &jwks_keys) {
            (Some(PublicKeys::File(keys)), _) => Some(keys),
            (_, Some(keys)) => Some(keys.as_ref()),
            _ => None,
        };
        let keys = Keys {
            secret: self.secret.as_deref(),
            public,
        };
        let verified = jwt::verify_with(keys, &self.rules, token, now_unix);
        if verified == Err(JwtError::UnknownKey) {
            if let Some(source) = self.jwks() {
                source.request_refresh();
            }
        }
        verified
    }
}

/// A key set shared between the refresher (writer) and the reactors (readers).
pub type SharedKeySet = Arc<RwLock<Arc<KeySet>>>;
