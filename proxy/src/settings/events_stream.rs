//! `--events-stream KEY`, `--events-stream-maxlen N`, `--events-stream-queue N`: the events the
//! webhooks carry, also appended to a Redis stream a backend reads with a consumer group
//! (docs/api.md, "Redis stream").
//!
//! Only with Redis storage (`--redis` or `--sentinel`): the stream lives in that Redis, reached
//! the way the engine reaches it. The kinds appended are `--webhook-events`'s (one selection for
//! both ways out; it applies even without `--webhook-url`).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use hermod_core::settings::{count, Origin, SettingError as ConfigError, Sources};

use super::webhooks::{parse_events, EventSet, MAX_QUEUE};
use super::{Settings, Storage};

/// Longest stream key accepted.
pub const MAX_KEY_LEN: usize = 256;
/// Largest `--events-stream-maxlen`.
pub const MAX_MAXLEN: usize = 1_000_000_000;

/// Where and how events are appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsStreamSettings {
    /// The stream's key, e.g. `hermod:events`.
    pub key: String,
    /// `XADD ... MAXLEN ~ maxlen`: the stream keeps about this many entries.
    pub maxlen: usize,
    /// Events held for Redis, at most; past it new events are dropped and counted.
    pub queue: usize,
    /// The kinds appended (`--webhook-events`).
    pub events: EventSet,
}

/// A key of 1 to 256 printable ASCII bytes, no space.
fn parse_key(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() || v.len() > MAX_KEY_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "must be 1 to {MAX_KEY_LEN} printable ASCII characters, no space (e.g. hermod:events)"
        ));
    }
    Ok(v.to_owned())
}

/// Resolves `s.events_stream`: `None` without `--events-stream`. Needs `s.storage` resolved.
pub(super) fn resolve_events_stream(
    src: &Sources<'_>,
    s: &mut Settings,
) -> Result<(), ConfigError> {
    let key = src.get("events_stream", parse_key)?;
    let maxlen = src.get("events_stream_maxlen", |v| count(v, 1, MAX_MAXLEN))?;
    let queue = src.get("events_stream_queue", |v| count(v, 1, MAX_QUEUE))?;
    let events = src.get("webhook_events", parse_events)?;
    let Some(key) = key else {
        return Ok(());
    };
    if matches!(s.storage, Storage::Memory) {
        let problem =
            "needs the Redis engine (--redis or --sentinel): the stream lives in its Redis";
        return Err(ConfigError::new("events_stream", Origin::Flag, problem));
    }
    s.events_stream = Some(EventsStreamSettings {
        key,
        maxlen: maxlen.unwrap_or(1_000_000),
        queue: queue.unwrap_or(100_000),
        events: events.unwrap_or(EventSet::DEFAULT),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(parse_key(" hermod:events ").as_deref(), Ok("hermod:events"));
        assert!(parse_key("").is_err());
        assert!(parse_key("a b").is_err());
        assert!(parse_key("é").is_err());
        assert!(parse_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(parse_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
    }
}
