//! The `echo` scenario's script: binary frames carrying the audit header, sent on a connection and
//! expected back on the same connection.

use hdrhistogram::Histogram;
use tungstenite::Message;

use crate::audit::{Audit, Receipt};
use crate::driver::Script;
use crate::outcome::Outcome;
use crate::payload::{self, Header};
use crate::report::{new_histogram, record_ns};
use crate::schedule::Nanos;

/// One worker's echo bookkeeping.
pub struct EchoScript {
    /// Global index of each local connection, checked against the `conn` field of replies.
    indexes: Vec<u32>,
    /// Per-connection sequence bookkeeping.
    audit: Audit,
    /// Latency of measured messages.
    latency: Histogram<u64>,
    /// Unparseable or crossed replies.
    errors: u64,
    /// Payload bytes.
    size: usize,
}

impl EchoScript {
    /// A script for connections with global indexes `indexes` (local index = position).
    pub fn new(indexes: Vec<u32>, size: usize) -> Self {
        EchoScript {
            audit: Audit::new(indexes.len()),
            indexes,
            latency: new_histogram(),
            errors: 0,
            size,
        }
    }
}

impl Script for EchoScript {
    fn frame(&mut self, k: usize, stamp: Nanos, measured: bool) -> Message {
        let seq = self.audit.on_sent(k, measured).unwrap_or(0);
        let header = Header {
            conn: self.indexes.get(k).copied().unwrap_or(u32::MAX),
            seq,
            stamp,
        };
        Message::Binary(payload::encode(header, self.size).into())
    }

    fn on_message(&mut self, k: usize, msg: Message, now: Nanos) -> u32 {
        let bytes: &[u8] = match &msg {
            Message::Binary(b) => b,
            Message::Text(t) => t.as_bytes(),
            _ => return 0,
        };
        let Ok(header) = payload::decode(bytes) else {
            self.errors += 1;
            return 0;
        };
        if self.indexes.get(k) != Some(&header.conn) {
            self.errors += 1;
            return 0;
        }
        match self.audit.on_received(k, header.seq) {
            Receipt::First { measured } => {
                if measured {
                    record_ns(&mut self.latency, now.saturating_sub(header.stamp));
                }
                1
            }
            // Unknown sequence numbers are counted by the audit.
            Receipt::Duplicate | Receipt::Unknown => 0,
        }
    }

    fn pending(&mut self, _k: usize) -> Option<Message> {
        None
    }

    fn drained(&self, _now: Nanos) -> bool {
        self.audit.outstanding() == 0
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.audit.received_all(),
            self.errors + self.audit.summary().unknown,
        )
    }

    fn latency(&self) -> &Histogram<u64> {
        &self.latency
    }

    fn finish(self) -> Outcome {
        let audit = self.audit.summary();
        Outcome {
            errors: self.errors + audit.unknown,
            received_all: self.audit.received_all(),
            audit,
            latency: self.latency,
            ..Outcome::default()
        }
    }
}
