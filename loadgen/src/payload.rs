//! The header every load message carries, so the receiver can audit and time it without state
//! shared with the sender: who sent it, its sequence number, and its timestamp.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::schedule::Nanos;

/// Bytes of the header at the start of every payload: connection (u32), sequence (u64) and stamp
/// (u64), big-endian. Payloads are at least this long.
pub const HEADER_LEN: usize = 20;

/// The audit and timing fields of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Global index of the sending connection; tells whose sequence `seq` belongs to.
    pub conn: u32,
    /// Per-connection sequence number, from 0, in sending order.
    pub seq: u64,
    /// Open loop: the due time; closed loop: the actual send time. Latency is measured from it.
    pub stamp: Nanos,
}

/// A received payload that is not one of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    /// Shorter than the header: some other peer's message, or a truncating server.
    #[error("payload of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
}

/// Builds a payload of `size` bytes (at least `HEADER_LEN`) starting with `header`, zero-padded.
pub fn encode(header: Header, size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; size.max(HEADER_LEN)];
    buf[0..4].copy_from_slice(&header.conn.to_be_bytes());
    buf[4..12].copy_from_slice(&header.seq.to_be_bytes());
    buf[12..20].copy_from_slice(&header.stamp.to_be_bytes());
    buf
}

/// Reads the header back from a received payload.
pub fn decode(payload: &[u8]) -> Result<Header, PayloadError> {
    let too_short = || PayloadError::TooShort(payload.len());
    let field = |range: std::ops::Range<usize>| payload.get(range).ok_or_else(too_short);
    let conn = u32::from_be_bytes(field(0..4)?.try_into().map_err(|_| too_short())?);
    let seq = u64::from_be_bytes(field(4..12)?.try_into().map_err(|_| too_short())?);
    let stamp = u64::from_be_bytes(field(12..20)?.try_into().map_err(|_| too_short())?);
    Ok(Header { conn, seq, stamp })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let h = Header {
            conn: 7,
            seq: u64::MAX - 1,
            stamp: 123_456_789,
        };
        let p = encode(h, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(decode(&p), Ok(h));
        assert_eq!(encode(h, 3).len(), HEADER_LEN);
    }

    #[test]
    fn short_payloads_are_errors() {
        assert_eq!(decode(b"hello"), Err(PayloadError::TooShort(5)));
        assert_eq!(decode(&[]), Err(PayloadError::TooShort(0)));
    }
}
