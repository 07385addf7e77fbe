//! A sans-io RESP3 client connection: commands in, replies out matched FIFO to caller tags,
//! push frames (`>`, e.g. pub/sub messages on a RESP3 connection) routed apart.
//!
//! [`RespConn`] holds no socket and reads no clock. The shell (`crate::redis`) copies
//! [`RespConn::output`] to the socket, feeds received bytes to [`RespConn::handle_input`] and
//! pulls [`RespEvent`]s. Every in-flight command is pipelined; replies come back in order, so
//! each one answers the oldest pending tag. A caller that gave up on a command (timeout) calls
//! [`RespConn::abandon`]: the reply still arrives in its place, and is consumed and discarded
//! rather than matched to the next tag.
//!
//! Decoding: a structural pre-scan ([`scan`]) enforces [`RespLimits`] and finds where a whole
//! frame ends; only then does redis-protocol 6 decode it (zero-copy slices of the read buffer).
//! The pre-scan also says how many bytes are needed next, so a large reply arriving in small
//! reads is not re-parsed from the start on every read.
//!
//! Subscribe-family commands (`SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE` and their `UN` forms) are
//! confirmed in RESP3 by push frames, not replies: their tag is answered by the first
//! confirmation push of the same kind; further confirmations are delivered as pushes.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod encode;
mod reader;
mod scan;
mod value;

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};
use redis_protocol::resp3::{decode::complete::decode_bytes_mut, types::BytesFrame};

pub(crate) use encode::{decimal, put_bulk, put_header};
pub use encode::{encode_command, encode_push, encode_value};
pub use reader::RespReader;
pub use value::Value;

use scan::{scan_frame, Scan};

/// Bounds on what a peer can make us buffer or build. Exceeding one is a [`RespError`], and the
/// shell resets the connection.
#[derive(Clone, Debug)]
pub struct RespLimits {
    /// Largest bulk string: stops a `$999999999` header from making us wait for (and buffer)
    /// a gigabyte.
    pub max_bulk: usize,
    /// Deepest nesting of aggregates: stops `*1\r\n*1\r\n...` from overflowing the decoder's
    /// recursion.
    pub max_depth: usize,
    /// Most elements in one aggregate: stops a `*4000000000` header from allocating for them.
    pub max_array_len: usize,
    /// Longest header or simple-string line: stops an endless line without CRLF.
    pub max_line: usize,
    /// Most bytes buffered unparsed (one frame, plus what follows it): the memory cap per
    /// connection for input.
    pub max_buffer: usize,
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits {
            max_bulk: 16 << 20,
            max_depth: 32,
            max_array_len: 4 << 20,
            max_line: 64 << 10,
            max_buffer: 64 << 20,
        }
    }
}

/// Why the byte stream cannot be decoded; the connection must be reset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// A limit of [`RespLimits`] was exceeded.
    #[error("RESP {0} exceeds the configured limit")]
    TooLarge(&'static str),
    /// The bytes are not RESP3.
    #[error("RESP protocol error: {0}")]
    Protocol(String),
    /// A reply arrived with no command waiting for it.
    #[error("unexpected reply with no command pending")]
    UnexpectedReply,
}

/// What the connection has decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum RespEvent {
    /// The reply to the command queued with `tag` (possibly a [`Value::Error`]).
    Reply { tag: u64, value: Value },
    /// An out-of-band push frame (its elements), e.g. `["message", channel, payload]`.
    Push(Value),
}

/// What a pending command waits for.
#[derive(Debug)]
struct Pending {
    /// The caller's tag, returned with the reply.
    tag: u64,
    /// Set when the caller gave up (timeout): the reply is consumed and dropped.
    abandoned: bool,
    /// For subscribe-family commands, the push kind that confirms them (lower case).
    confirm: Option<&'static str>,
}

/// One RESP3 connection's protocol state. See the module docs.
#[derive(Debug)]
pub struct RespConn {
    /// The bounds enforced on input.
    limits: RespLimits,
    /// Encoded commands not yet written to the socket.
    output: BytesMut,
    /// Received bytes not yet decoded (at most `limits.max_buffer`).
    input: BytesMut,
    /// Skip scanning until `input` holds this many bytes (the pre-scan said so).
    need: usize,
    /// Commands sent or queued, oldest first; each reply answers the front one.
    pending: VecDeque<Pending>,
    /// Decoded events not yet pulled.
    events: VecDeque<RespEvent>,
    /// Replies consumed for abandoned commands (stats, tests).
    discarded: u64,
}

impl RespConn {
    /// A fresh connection state.
    pub fn new(limits: RespLimits) -> Self {
        RespConn {
            limits,
            output: BytesMut::with_capacity(4096),
            input: BytesMut::new(),
            need: 0,
            pending: VecDeque::new(),
            events: VecDeque::new(),
            discarded: 0,
        }
    }

    /// Encodes a command into the output buffer; its reply will come back with `tag`.
    pub fn queue(&mut self, args: &[&[u8]], tag: u64) {
        encode_command(&mut self.output, args);
        let confirm = args.first().and_then(|name| subscribe_kind(name));
        self.pending.push_back(Pending {
            tag,
            abandoned: false,
            confirm,
        });
    }

    /// Queues one command that `encode` appends, already encoded, to the output buffer (by a
    /// protocol's own encoder, e.g. `crate::link::encode_request`); its reply will come back
    /// with `tag`. It must append exactly one command, and not a subscribe-family one.
    pub fn queue_encoded(&mut self, tag: u64, encode: impl FnOnce(&mut BytesMut)) {
        encode(&mut self.output);
        self.pending.push_back(Pending {
            tag,
            abandoned: false,
            confirm: None,
        });
    }

    /// Encoded bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Drops the first `n` output bytes (they were written).
    pub fn consume_output(&mut self, n: usize) {
        self.output.advance(n.min(self.output.len()));
    }

    /// Marks the pending command with `tag` as abandoned: its reply will be discarded. Returns
    /// whether such a live command was pending.
    pub fn abandon(&mut self, tag: u64) -> bool {
        match self
            .pending
            .iter_mut()
            .find(|p| p.tag == tag && !p.abandoned)
        {
            Some(p) => {
                p.abandoned = true;
                true
            }
            None => false,
        }
    }

    /// Decodes what it can from `data` (appended to what was buffered). On error the
    /// connection is unusable.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), RespError> {
        if self.input.len() + data.len() > self.limits.max_buffer {
            return Err(RespError::TooLarge("input buffer"));
        }
        self.input.extend_from_slice(data);
        self.decode_buffered()
    }

    /// The next decoded event.
    pub fn poll_event(&mut self) -> Option<RespEvent> {
        self.events.pop_front()
    }

    /// Commands waiting for a reply (abandoned ones included: their replies are still due).
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Replies discarded because their command was abandoned.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// The tags of commands still waiting for a reply and not abandoned, oldest first; for
    /// failing them when the connection is lost.
    pub fn drain_pending(&mut self) -> impl Iterator<Item = u64> + '_ {
        self.pending
            .drain(..)
            .filter(|p| !p.abandoned)
            .map(|p| p.tag)
    }

    /// Decodes every whole frame in the input buffer.
    fn decode_buffered(&mut self) -> Result<(), RespError> {
        while !self.input.is_empty() && self.input.len() >= self.need {
            let len = match scan_frame(&self.input, &self.limits)? {
                Scan::Incomplete(need) => {
                    self.need = need;
                    return Ok(());
                }
                Scan::Complete(len) => len,
            };
            self.need = 0;
            let (frame, is_push) = self.decode_one(len)?;
            self.route(frame, is_push)?;
        }
        Ok(())
    }

    /// Decodes the whole frame of `len` bytes at the front of the input.
    fn decode_one(&mut self, len: usize) -> Result<(Value, bool), RespError> {
        // RESP2 nulls, which redis-protocol's RESP3 decoder takes for streamed frames.
        if matches!(&self.input[..len], b"$-1\r\n" | b"*-1\r\n") {
            self.input.advance(len);
            return Ok((Value::Nil, false));
        }
        let mut frame_bytes = self.input.split_to(len);
        let decoded =
            decode_bytes_mut(&mut frame_bytes).map_err(|e| RespError::Protocol(e.to_string()))?;
        let Some((frame, _, _)) = decoded else {
            return Err(RespError::Protocol("frame ended early".into()));
        };
        let is_push = matches!(frame, BytesFrame::Push { .. });
        Ok((value::from_frame(frame)?, is_push))
    }

    /// Matches a reply to the oldest pending command, or queues a push.
    fn route(&mut self, value: Value, is_push: bool) -> Result<(), RespError> {
        if is_push {
            let confirms = self
                .pending
                .front()
                .and_then(|p| p.confirm)
                .is_some_and(|kind| {
                    value
                        .as_array()
                        .and_then(|items| items.first())
                        .and_then(Value::as_bytes)
                        .is_some_and(|k| k.eq_ignore_ascii_case(kind.as_bytes()))
                });
            if !confirms {
                self.events.push_back(RespEvent::Push(value));
                return Ok(());
            }
        }
        let pending = self.pending.pop_front().ok_or(RespError::UnexpectedReply)?;
        if pending.abandoned {
            self.discarded += 1;
        } else {
            self.events.push_back(RespEvent::Reply {
                tag: pending.tag,
                value,
            });
        }
        Ok(())
    }
}

/// The confirmation push kind of a subscribe-family command name.
fn subscribe_kind(name: &[u8]) -> Option<&'static str> {
    [
        "subscribe",
        "psubscribe",
        "ssubscribe",
        "unsubscribe",
        "punsubscribe",
        "sunsubscribe",
    ]
    .into_iter()
    .find(|kind| name.eq_ignore_ascii_case(kind.as_bytes()))
}

#[cfg(test)]
mod tests;
