//! Public keys from a JWKS URL: [`JwksSource`] holds the current [`KeySet`] that reactors read,
//! [`JwksRefresher`] is the thread that replaces it.
//!
//! The first fetch runs at startup, before the gateway serves. Then the refresher fetches every
//! [`REFRESH_EVERY`], and sooner when a token names a key id the set lacks (a key rotation at the
//! identity provider): [`JwksSource::request_refresh`] sets a flag and unparks the thread, which
//! fetches at most once per [`MIN_REFRESH_GAP`]. The token that asked is refused (401); the
//! client's retry after the refresh succeeds. A failed fetch or a document without a usable key
//! keeps the previous set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use hermod_core::jwt::KeySet;
use parking_lot::RwLock;

use super::http_get::{self, HttpUrl};
use super::TokenVerifier;

/// Periodic refresh interval: keys an identity provider adds are picked up within this even
/// before a token needs them.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);

/// Least time between two fetches, whatever asks: a stream of tokens with made-up key ids costs
/// the identity provider at most one request per this.
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(5);

/// Retry interval after a failed fetch.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Time allowed to each step of a fetch (connect, write, each read).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A JWKS URL and the keys last fetched from it.
pub struct JwksSource {
    url: HttpUrl,
    /// The current set: reactors clone the `Arc` under the read lock; the refresher swaps it.
    keys: RwLock<Arc<KeySet>>,
    /// A token named an unknown key id since the last fetch.
    wanted: AtomicBool,
    /// The refresher thread, to unpark; unset until it runs.
    refresher: OnceLock<Thread>,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("url", &self.url)
            .field("keys", &self.keys.read())
            .finish()
    }
}

impl JwksSource {
    /// A source with no keys yet (every RS256/ES256 token is refused until the first fetch).
    pub fn new(url: HttpUrl) -> Self {
        JwksSource {
            url,
            keys: RwLock::new(Arc::new(KeySet::default())),
            wanted: AtomicBool::new(false),
            refresher: OnceLock::new(),
        }
    }

    /// The URL keys are fetched from.
    pub fn url(&self) -> &HttpUrl {
        &self.url
    }

    /// The current key set.
    pub fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read())
    }

    /// Asks the refresher for a fetch (non-blocking: a flag and an unpark).
    pub fn request_refresh(&self) {
        if !self.wanted.swap(true, Ordering::AcqRel) {
            if let Some(thread) = self.refresher.get() {
                thread.unpark();
            }
        }
    }

    /// Fetches the JWKS once and, if it has a usable key, makes it the current set. Blocking:
    /// call at startup or on the refresher's thread. Returns the number of keys.
    pub fn fetch(&self) -> Result<usize, String> {
        let body = http_get::get(&self.url, FETCH_TIMEOUT).map_err(|e| e.to_string())?;
        let set = KeySet::from_jwks(&body).map_err(|e| e.to_string())?;
        let count = set.len();
        *self.keys.write() = Arc::new(set);
        Ok(count)
    }
}

/// The background thread that keeps a [`JwksSource`] fresh. It runs until the process exits.
#[derive(Debug)]
pub struct JwksRefresher;

impl JwksRefresher {
    /// Starts the refresher of `verifier`'s JWKS source (none: nothing to do). `fetched_ok`:
    /// whether the startup fetch succeeded (if not, the first retry comes sooner); `counted` is
    /// told the result of every fetch (the metrics).
    pub fn spawn(
        verifier: Arc<TokenVerifier>,
        fetched_ok: bool,
        counted: impl Fn(bool) + Send + 'static,
    ) -> std::io::Result<()> {
        if verifier.jwks().is_none() {
            return Ok(());
        }
        std::thread::Builder::new()
            .name("jwks-refresh".to_owned())
            .spawn(move || {
                if let Some(source) = verifier.jwks() {
                    let _ = source.refresher.set(std::thread::current());
                    refresh_loop(source, fetched_ok, &counted);
                }
            })?;
        Ok(())
    }
}

fn refresh_loop(source: &JwksSource, fetched_ok: bool, counted: &dyn Fn(bool)) -> ! {
    let mut last = Instant::now();
    let mut next = last
        + if fetched_ok {
            REFRESH_EVERY
        } else {
            RETRY_AFTER_FAILURE
        };
    loop {
        let now = Instant::now();
        if now < next && !source.wanted.load(Ordering::Acquire) {
            std::thread::park_timeout(next - now);
            continue;
        }
        let earliest = last + MIN_REFRESH_GAP;
        let now = Instant::now();
        if now < earliest {
            std::thread::sleep(earliest - now);
        }
        source.wanted.store(false, Ordering::Release);
        let fetched = source.fetch();
        counted(fetched.is_ok());
        let wait = match fetched {
            Ok(keys) => {
                tracing::info!(url = %source.url, keys, "JWKS refreshed");
                REFRESH_EVERY
            }
            Err(e) => {
                tracing::warn!(url = %source.url, error = %e, "JWKS refresh failed; keeping the previous keys");
                RETRY_AFTER_FAILURE
            }
        };
        last = Instant::now();
        next = last + wait;
    }
}
