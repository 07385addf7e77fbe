//! Broker discovery through the registry in Redis: every broker keeps a member
//! `<node-id>@<host:port>` in the sorted set [`REGISTRY_KEY`], scored with the unix-ms instant it
//! expires at, and refreshes it well before. The gateway polls the live ones every
//! [`POLL_EVERY`] (`ZRANGEBYSCORE hermod:brokers <now-ms> +inf`), and adds or drops links to
//! match. The Redis client runs on the hub's own Poll; while Redis is unreachable the known
//! brokers are kept (the links' own heartbeats still notice dead brokers).

use std::time::{Duration, Instant};

use hermod_core::redis::{ClientConfig, ClientEvent, RedisClient};
use hermod_core::resp::Value;
use mio::event::Event;
use mio::{Registry, Token};

/// The sorted set brokers announce themselves in.
pub use hermod_core::link::REGISTRY_KEY;
/// How often the registry is read.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// Most brokers taken from the registry (the query's LIMIT): bounds what it can make us open.
pub const MAX_BROKERS: usize = 256;
/// Longest member accepted (`node@host:port`).
const MAX_MEMBER: usize = 512;

/// One live broker in the registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// The whole member, `node@host:port`: the broker's identity (a restarted broker with a
    /// new node id is a new broker) and its name for placement.
    pub name: String,
    /// Where to connect.
    pub addr: String,
}

/// Parses a member `node@host:port`; `None` if it is not one.
pub fn parse_member(member: &[u8]) -> Option<Entry> {
    if member.len() > MAX_MEMBER {
        return None;
    }
    let text = std::str::from_utf8(member).ok()?;
    let (node, addr) = text.rsplit_once('@')?;
    let (host, port) = addr.rsplit_once(':')?;
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    let valid = !node.is_empty()
        && !host.is_empty()
        && printable(text)
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    valid.then(|| Entry {
        name: text.to_owned(),
        addr: addr.to_owned(),
    })
}

/// The live brokers in a `ZRANGEBYSCORE` reply, sorted and deduplicated; malformed members are
/// skipped. `None` when the reply is not an array.
pub fn parse_reply(value: &Value) -> Option<Vec<Entry>> {
    let mut entries: Vec<Entry> = value
        .as_array()?
        .iter()
        .filter_map(Value::as_bytes)
        .filter_map(|m| parse_member(m))
        .take(MAX_BROKERS)
        .collect();
    entries.sort();
    entries.dedup();
    Some(entries)
}

/// The registry poller on the hub's Poll.
#[derive(Debug)]
pub struct Discovery {
    /// The Redis client (one lane).
    client: RedisClient,
    /// When the next poll is due.
    next_poll: Instant,
    /// The tag of the poll in flight, if any.
    in_flight: Option<u64>,
    /// Tag of the next poll.
    next_tag: u64,
    /// Whether the last problem was logged (one warning per outage).
    warned: bool,
}

impl Discovery {
    /// A poller using `config` (forced to one lane), its tokens from `first_token`.
    pub fn new(mut config: ClientConfig, first_token: usize, now: Instant) -> Self {
        config.connections = 1;
        Discovery {
            client: RedisClient::new(config, first_token, now),
            next_poll: now,
            in_flight: None,
            next_tag: 0,
            warned: false,
        }
    }

    /// Whether `token` is the client's.
    pub fn owns(&self, token: Token) -> bool {
        self.client.owns(token)
    }

    /// A readiness event for one of the client's tokens.
    pub fn on_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        self.client.on_event(registry, event, now);
    }

    /// The earliest instant [`Discovery::tick`] has work at, if any.
    pub fn deadline(&self) -> Option<Instant> {
        let poll = (self.in_flight.is_none() && self.client.is_up()).then_some(self.next_poll);
        [poll, self.client.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Drives the client, sends a poll when due, and returns the registry's live brokers when
    /// an answer came. `now_ms` is the wall clock (the registry's scores are unix ms).
    pub fn tick(&mut self, registry: &Registry, now: Instant, now_ms: u64) -> Option<Vec<Entry>> {
        self.client.on_tick(registry, now);
        let mut found = None;
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Reply { tag, result } if Some(tag) == self.in_flight => {
                    self.in_flight = None;
                    match result.map(|v| parse_reply(&v)) {
                        Ok(Some(entries)) => {
                            self.warned = false;
                            found = Some(entries);
                        }
                        Ok(None) => self.warn("the registry reply is not an array"),
                        Err(e) => self.warn(&e.to_string()),
                    }
                }
                ClientEvent::Down { reason } => self.warn(&reason),
                _ => {}
            }
        }
        if self.in_flight.is_none() && now >= self.next_poll && self.client.is_up() {
            self.next_poll = now + POLL_EVERY;
            self.poll(now, now_ms);
        }
        self.client.flush(registry);
        found
    }

    fn poll(&mut self, now: Instant, now_ms: u64) {
        self.next_tag += 1;
        let min = now_ms.to_string();
        let limit = MAX_BROKERS.to_string();
        let args: [&[u8]; 7] = [
            b"ZRANGEBYSCORE",
            REGISTRY_KEY.as_bytes(),
            min.as_bytes(),
            b"+inf",
            b"LIMIT",
            b"0",
            limit.as_bytes(),
        ];
        match self.client.send(0, &args, self.next_tag, now) {
            Ok(()) => self.in_flight = Some(self.next_tag),
            Err(e) => self.warn(&e.to_string()),
        }
    }

    /// Flushes the client's output (once per loop turn).
    pub fn flush(&mut self, registry: &Registry) {
        self.client.flush(registry);
    }

    fn warn(&mut self, problem: &str) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                problem,
                "cannot read the broker registry; keeping the known brokers"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members() {
        let e = parse_member(b"node-1@127.0.0.1:7070").unwrap();
        assert_eq!(e.addr, "127.0.0.1:7070");
        assert_eq!(e.name, "node-1@127.0.0.1:7070");
        assert_eq!(
            parse_member(b"a@b@host.example:1").map(|e| e.addr),
            Some("host.example:1".into())
        );
        for bad in [
            &b"@127.0.0.1:1"[..],
            b"n@:1",
            b"n@h:0",
            b"n@h:99999",
            b"n@h",
            b"no-at-sign:1",
            b"n @h:1",
            b"\xff@h:1",
        ] {
            assert_eq!(parse_member(bad), None, "{bad:?}");
        }
        assert_eq!(parse_member(&[b'a'; 600]), None);
    }

    #[test]
    fn replies() {
        let bulk = |s: &str| Value::Bulk(bytes::Bytes::copy_from_slice(s.as_bytes()));
        let reply = Value::Array(vec![
            bulk("b@127.0.0.1:2"),
            bulk("garbage"),
            bulk("a@127.0.0.1:1"),
            bulk("a@127.0.0.1:1"),
            Value::Int(3),
        ]);
        let names: Vec<String> = parse_reply(&reply)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["a@127.0.0.1:1", "b@127.0.0.1:2"]);
        assert_eq!(parse_reply(&Value::Nil), None);
    }
}
