//! Message ids of the Redis engine: `"<epoch>.<ms>-<seq>"`, the channel's epoch and the entry's
//! stream id. Opaque to clients; parsed back here (acks, `since`, later replay pages) into parts
//! the functions compare exactly. Anything else is refused, never guessed at.

use std::cmp::Ordering;
use std::fmt;

use hermod_core::ids::MsgId;

/// A Redis stream id, `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part (the broker's clock at append, or Redis's when that was behind).
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// Parses `ms-seq` (decimal, no sign, no leading `+`).
    pub fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-')?;
        Some(StreamId {
            ms: decimal(ms)?,
            seq: decimal(seq)?,
        })
    }
}

impl Ord for StreamId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ms, self.seq).cmp(&(other.ms, other.seq))
    }
}

impl PartialOrd for StreamId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A client-visible id taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    /// The channel's epoch when the id was issued (decimal text, compared as given).
    pub epoch: u64,
    /// The entry's stream id.
    pub stream: StreamId,
}

impl ClientId {
    /// Parses `"<epoch>.<ms>-<seq>"`; `None` for anything this engine did not issue.
    pub fn parse(id: &MsgId) -> Option<ClientId> {
        let (epoch, stream) = id.as_str().split_once('.')?;
        Some(ClientId {
            epoch: decimal(epoch)?,
            stream: StreamId::parse(stream)?,
        })
    }
}

/// A canonical decimal `u64`: digits only, no leading zero unless it is `0`.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_canonical_ids() {
        let id = ClientId::parse(&MsgId::new("1718000000123.1000000-7")).unwrap();
        assert_eq!(id.epoch, 1_718_000_000_123);
        assert_eq!(
            id.stream,
            StreamId {
                ms: 1_000_000,
                seq: 7
            }
        );
        assert_eq!(id.stream.to_string(), "1000000-7");
        for bad in [
            "",
            "1.2",
            "1.2-",
            "1.-2",
            ".1-2",
            "01.1-2",
            "1.01-2",
            "1.1-+2",
            "1.1-2-3",
            "x.1-2",
            "1.99999999999999999999-1",
            "00001234-1",
        ] {
            assert_eq!(ClientId::parse(&MsgId::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn orders_by_ms_then_seq() {
        let a = StreamId { ms: 5, seq: 9 };
        let b = StreamId { ms: 6, seq: 0 };
        assert!(a < b);
        assert!(StreamId { ms: 6, seq: 1 } > b);
    }
}
