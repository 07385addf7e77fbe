//! [`RespReader`]: the server side of a RESP connection. It only decodes: each whole frame the
//! peer sent (for a server, its commands) comes out as a [`Value`], in order, with no reply
//! matching. The bounds and the pre-scan are those of [`super::RespConn`].

use bytes::{Buf, BytesMut};
use redis_protocol::resp3::decode::complete::decode_bytes_mut;

use super::scan::{scan_frame, Scan};
use super::{value, RespError, RespLimits, Value};

/// Decodes the frames of one byte stream, bounded by [`RespLimits`]. Sans-io: the shell feeds
/// what it read and pulls values.
#[derive(Debug)]
pub struct RespReader {
    /// The bounds enforced on input.
    limits: RespLimits,
    /// Received bytes not yet decoded (at most `limits.max_buffer`).
    input: BytesMut,
    /// Skip scanning until `input` holds this many bytes (the pre-scan said so).
    need: usize,
}

impl RespReader {
    /// A reader with nothing buffered.
    pub fn new(limits: RespLimits) -> Self {
        RespReader {
            limits,
            input: BytesMut::new(),
            need: 0,
        }
    }

    /// Replaces the bounds (e.g. once a link authenticated). Bytes already buffered stay; the
    /// next scan applies the new bounds.
    pub fn set_limits(&mut self, limits: RespLimits) {
        self.limits = limits;
        self.need = 0;
    }

    /// Appends received bytes. Fails (and the connection must be reset) when more than
    /// `max_buffer` bytes would wait undecoded.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), RespError> {
        if self.input.len() + data.len() > self.limits.max_buffer {
            return Err(RespError::TooLarge("input buffer"));
        }
        self.input.extend_from_slice(data);
        Ok(())
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed. A push frame (`>`) comes
    /// out as the array of its elements. On error the stream is unusable.
    pub fn next_value(&mut self) -> Result<Option<Value>, RespError> {
        if self.input.is_empty() || self.input.len() < self.need {
            return Ok(None);
        }
        let len = match scan_frame(&self.input, &self.limits)? {
            Scan::Incomplete(need) => {
                self.need = need;
                return Ok(None);
            }
            Scan::Complete(len) => len,
        };
        self.need = 0;
        // RESP2 nulls, which redis-protocol's RESP3 decoder takes for streamed frames.
        if matches!(&self.input[..len], b"$-1\r\n" | b"*-1\r\n") {
            self.input.advance(len);
            return Ok(Some(Value::Nil));
        }
        let mut frame_bytes = self.input.split_to(len);
        let decoded =
            decode_bytes_mut(&mut frame_bytes).map_err(|e| RespError::Protocol(e.to_string()))?;
        let Some((frame, _, _)) = decoded else {
            return Err(RespError::Protocol("frame ended early".into()));
        };
        value::from_frame(frame).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::encode_command;

    #[test]
    fn commands_come_out_whole_and_in_order() {
        let mut wire = BytesMut::new();
        encode_command(&mut wire, &[b"PING"]);
        encode_command(&mut wire, &[b"SEND", b"0-1-1", b"{\"a\":1}"]);
        let mut r = RespReader::new(RespLimits::default());
        let (a, b) = wire.split_at(7);
        r.feed(a).unwrap();
        assert_eq!(r.next_value().unwrap(), None);
        r.feed(b).unwrap();
        let ping = r.next_value().unwrap().unwrap();
        assert_eq!(ping, Value::Array(vec![Value::Bulk("PING".into())]));
        let send = r.next_value().unwrap().unwrap();
        assert_eq!(send.as_array().map(<[Value]>::len), Some(3));
        assert_eq!(r.next_value().unwrap(), None);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn bounded() {
        let limits = RespLimits {
            max_buffer: 8,
            ..RespLimits::default()
        };
        let mut r = RespReader::new(limits);
        assert_eq!(
            r.feed(b"*1\r\n$100\r\n"),
            Err(RespError::TooLarge("input buffer"))
        );
        let mut r = RespReader::new(RespLimits {
            max_bulk: 4,
            ..RespLimits::default()
        });
        r.feed(b"*1\r\n$100\r\n").unwrap();
        assert_eq!(r.next_value(), Err(RespError::TooLarge("bulk string")));
    }
}
