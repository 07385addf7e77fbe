//! `--webhook-url`, `--webhook-secret`, `--webhook-events`, `--webhook-queue`,
//! `--webhook-batch`, `--webhook-timeout`: events to an application backend by signed HTTP POSTs
//! (docs/api.md, "Webhooks").
//!
//! Webhooks are on when a URL is set, and a URL needs a secret of at least
//! [`MIN_SECRET_LEN`] bytes: a receiver must be able to tell our POSTs from anybody's. The secret
//! is never printed (`Debug` shows `***`).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt;
use std::time::Duration;

use hermod_core::settings::{count, duration, Origin, SettingError as ConfigError, Sources};

use super::Settings;
use crate::auth::http_get::parse_http_url;

/// Shortest accepted secret: 32 bytes, as for `--jwt-secret`.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest accepted secret.
pub const MAX_SECRET_LEN: usize = 1024;
/// Most events one gateway holds for the receiver (`--webhook-queue`'s upper bound): each is
/// about a hundred bytes, reserved up front.
pub const MAX_QUEUE: usize = 10_000_000;
/// Most events in one POST (`--webhook-batch`'s upper bound).
pub const MAX_BATCH: usize = 10_000;

/// A kind of event the gateway reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A session opened (after the handshake).
    Connect,
    /// A session ended, with its close code.
    Disconnect,
    /// The broker answered `joined` to a session's `join`.
    Join,
    /// The broker answered `left` (a `leave`, or a refresh that took the room away).
    Leave,
    /// The broker answered `sent` to a client's `publish` (opt-in).
    Publish,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Connect,
        EventKind::Disconnect,
        EventKind::Join,
        EventKind::Leave,
        EventKind::Publish,
    ];

    /// The `type` of the event in the payload, and its name in `--webhook-events`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::Disconnect => "disconnect",
            EventKind::Join => "join",
            EventKind::Leave => "leave",
            EventKind::Publish => "publish",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The kinds of event reported (`--webhook-events`); `publish` only when named.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EventSet(u8);

impl EventSet {
    /// The default: every kind but `publish` (one event per message: opt-in).
    pub const DEFAULT: EventSet = EventSet(0b1111);

    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

impl fmt::Debug for EventSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = EventKind::ALL
            .iter()
            .filter(|k| self.contains(**k))
            .map(|k| k.as_str())
            .collect();
        write!(f, "{}", names.join(","))
    }
}

/// `connect,join,...`: at least one known kind.
pub fn parse_events(v: &str) -> Result<EventSet, String> {
    const KINDS: &str = "connect, disconnect, join, leave, publish";
    let mut set = 0u8;
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == item)
            .ok_or_else(|| format!("`{item}` is not one of {KINDS}"))?;
        set |= kind.bit();
    }
    if set == 0 {
        return Err(format!("name at least one of {KINDS}"));
    }
    Ok(EventSet(set))
}

/// The HMAC key of the signatures. `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn new(secret: &str) -> Self {
        WebhookSecret(secret.as_bytes().to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where events go and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The receiver, `http://HOST[:PORT]/PATH` as given.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Hermod-Signature`.
    pub secret: WebhookSecret,
    /// The kinds reported.
    pub events: EventSet,
    /// Events held for the receiver, at most; past it new events are dropped and counted.
    pub queue: usize,
    /// Events per POST, at most.
    pub batch: usize,
    /// Time one POST may take, connect to last byte of the answer.
    pub timeout: Duration,
}

/// Resolves `s.webhooks`: `None` without `--webhook-url`.
pub(super) fn resolve_webhooks(src: &Sources<'_>, s: &mut Settings) -> Result<(), ConfigError> {
    let url = src.get("webhook_url", |v| {
        parse_http_url(v.trim()).map(|_| v.trim().to_owned())
    })?;
    let secret = src.get("webhook_secret", |v| {
        if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&v.len()) {
            Ok(WebhookSecret::new(v))
        } else {
            Err(format!(
                "must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes"
            ))
        }
    })?;
    let events = src.get("webhook_events", parse_events)?;
    let queue = src.get("webhook_queue", |v| count(v, 1, MAX_QUEUE))?;
    let batch = src.get("webhook_batch", |v| count(v, 1, MAX_BATCH))?;
    let timeout = src.get("webhook_timeout", |v| {
        duration(v, Duration::from_millis(10), Duration::from_secs(600))
    })?;
    let Some(url) = url else {
        return Ok(());
    };
    let Some(secret) = secret else {
        let problem = "required with --webhook-url (at least 32 bytes)";
        return Err(ConfigError::new("webhook_secret", Origin::Flag, problem));
    };
    s.webhooks = Some(WebhookSettings {
        url,
        secret,
        events: events.unwrap_or(EventSet::DEFAULT),
        queue: queue.unwrap_or(100_000),
        batch: batch.unwrap_or(100),
        timeout: timeout.unwrap_or(Duration::from_secs(10)),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lists_parse() {
        let set = parse_events("join, leave").expect("valid");
        assert!(set.contains(EventKind::Join) && set.contains(EventKind::Leave));
        assert!(!set.contains(EventKind::Connect) && !set.contains(EventKind::Disconnect));
        assert_eq!(format!("{set:?}"), "join,leave");
        assert_eq!(
            parse_events("connect,disconnect,join,leave").expect("valid"),
            EventSet::DEFAULT
        );
        let publish = parse_events("publish").expect("valid");
        assert!(
            publish.contains(EventKind::Publish) && !EventSet::DEFAULT.contains(EventKind::Publish)
        );
        assert!(parse_events("").is_err());
        assert!(parse_events("connect,typo").is_err());
    }

    #[test]
    fn the_secret_is_never_shown() {
        let secret = WebhookSecret::new(&"s".repeat(40));
        assert_eq!(format!("{secret:?}"), "***");
    }
}
