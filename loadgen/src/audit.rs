//! The delivery audit (sans-io): per connection, which sequence numbers were sent and which came
//! back, giving exact lost, duplicated and reordered counts.
//!
//! Sequence numbers are assigned here, in sending order. Messages sent during the warmup are a
//! prefix of each connection's sequence; only the measured suffix is counted.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashMap, VecDeque};

/// Widest gap (in 64-bit words of the seen bitmap) a stream may open above its lowest missing
/// sequence number: bounds the memory a bogus sequence number from the network can claim.
const MAX_WINDOW_WORDS: u64 = 1 << 16;

/// The set of sequence numbers seen, as a bitmap that slides forward: everything below `base` has
/// been seen, so an in-order stream costs a few words however long the run.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeenSet {
    /// Every sequence number below this one has been seen.
    base: u64,
    /// Bit `i` of word `w` is sequence `base + 64 * w + i`.
    words: VecDeque<u64>,
}

impl SeenSet {
    /// Marks `seq` seen; false when it already was (a duplicate).
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        let Some(offset) = seq.checked_sub(self.base) else {
            return false;
        };
        if offset / 64 >= MAX_WINDOW_WORDS {
            // Out of the window: only reachable through `insert_checked` callers' bugs; treat
            // as seen rather than allocate.
            return false;
        }
        let word = (offset / 64) as usize;
        let bit = 1u64 << (offset % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        while self.words.front() == Some(&u64::MAX) {
            self.words.pop_front();
            self.base += 64;
        }
        fresh
    }
}

/// One sender-to-receiver stream as its receiver sees it.
#[derive(Debug, Default, Clone)]
struct Stream {
    /// Sequence numbers of this stream received at least once.
    seen: SeenSet,
    /// Highest sequence number received; an arrival below it is a reorder.
    max_seen: Option<u64>,
}

/// The receiver side of messages that cross connections (`direct`, `room`): one stream per
/// (sender, receiver). A receiver alone can count duplicates and reorders; loss needs the
/// senders' counts, so `expected` is filled in by the senders and `lost` after merging.
#[derive(Debug, Default, Clone)]
pub struct StreamAudit {
    /// Streams by (sender, receiver) global connection index.
    streams: HashMap<(u32, u32), Stream>,
    /// Measured counts: `received`, `duplicated`, `reordered`, `unknown`.
    totals: AuditSummary,
    /// Distinct copies received, warmup included (for the drain and progress).
    received_all: u64,
}

impl StreamAudit {
    /// An empty audit.
    pub fn new() -> Self {
        StreamAudit::default()
    }

    /// Records copy `seq` of stream `sender -> receiver`; `measured` from its due time.
    pub fn on_received(&mut self, sender: u32, receiver: u32, seq: u64, measured: bool) -> Receipt {
        let stream = self.streams.entry((sender, receiver)).or_default();
        if seq.saturating_sub(stream.seen.base) / 64 >= MAX_WINDOW_WORDS {
            self.totals.unknown += 1;
            return Receipt::Unknown;
        }
        if !stream.seen.insert(seq) {
            self.totals.duplicated += u64::from(measured);
            return Receipt::Duplicate;
        }
        self.received_all += 1;
        let late = stream.max_seen.is_some_and(|max| seq < max);
        stream.max_seen = Some(stream.max_seen.map_or(seq, |max| max.max(seq)));
        if measured {
            self.totals.received += 1;
            self.totals.reordered += u64::from(late);
        }
        Receipt::First { measured }
    }

    /// Counts an arrival that is not one of this run's messages.
    pub fn on_unknown(&mut self) {
        self.totals.unknown += 1;
    }

    /// Distinct copies received, warmup included.
    pub fn received_all(&self) -> u64 {
        self.received_all
    }

    /// The receiver-side counts (`sent`, `expected` and `lost` are the senders' business).
    pub fn summary(&self) -> AuditSummary {
        self.totals
    }
}

/// The audit state of one connection.
#[derive(Debug, Default, Clone)]
struct ConnAudit {
    /// Messages sent so far; also the next sequence number to hand out.
    sent: u64,
    /// Sequence number of the first measured message, once one has been sent.
    first_measured: Option<u64>,
    /// Sequence numbers received at least once.
    seen: SeenSet,
    /// Highest sequence number received; an arrival below it is a reorder.
    max_seen: Option<u64>,
}

/// What one received message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// First arrival of a message; `measured` says whether to record its latency.
    First {
        /// Sent in the measured window (not during warmup).
        measured: bool,
    },
    /// A message already received once.
    Duplicate,
    /// A sequence number never sent on that connection: corruption or a foreign message.
    Unknown,
}

/// The audit of every connection of one worker.
#[derive(Debug, Clone)]
pub struct Audit {
    /// Per connection, indexed by the worker's local connection index.
    conns: Vec<ConnAudit>,
    /// Totals over the measured messages of all connections.
    totals: AuditSummary,
    /// Messages sent on all connections, warmup included.
    sent_all: u64,
    /// Distinct messages received on all connections, warmup included.
    received_all: u64,
}

/// Audit counts over the measured messages; `lost` is final only once the run has drained.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditSummary {
    /// Measured messages sent.
    pub sent: u64,
    /// Measured copies that should be delivered: `sent` for echo, stored messages for direct,
    /// stored publishes times room members for room. `lost` is this minus `received`.
    pub expected: u64,
    /// Measured messages received at least once.
    pub received: u64,
    /// Measured messages sent and never received.
    pub lost: u64,
    /// Extra arrivals of measured messages already received.
    pub duplicated: u64,
    /// Measured messages that arrived after a later message of the same connection.
    pub reordered: u64,
    /// Arrivals with a sequence number that was never sent.
    pub unknown: u64,
    /// `direct`/`room`: measured copies of requests whose answer went with a closed session:
    /// stored or not, nobody knows, so they are not in `expected`; the ones that arrive still
    /// count as received. The loss is thus between `lost` and `lost + unconfirmed`.
    #[serde(default)]
    pub unconfirmed: u64,
}

impl AuditSummary {
    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &AuditSummary) {
        self.sent += other.sent;
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.unknown += other.unknown;
        self.unconfirmed += other.unconfirmed;
    }
}

impl Audit {
    /// An audit of `connections` connections, nothing sent yet.
    pub fn new(connections: usize) -> Self {
        Audit {
            conns: vec![ConnAudit::default(); connections],
            totals: AuditSummary::default(),
            sent_all: 0,
            received_all: 0,
        }
    }

    /// Records a message sent on `conn` and returns its sequence number. Returns `None` for a
    /// connection index out of range.
    pub fn on_sent(&mut self, conn: usize, measured: bool) -> Option<u64> {
        let c = self.conns.get_mut(conn)?;
        let seq = c.sent;
        c.sent += 1;
        self.sent_all += 1;
        if measured {
            c.first_measured.get_or_insert(seq);
            self.totals.sent += 1;
            self.totals.expected += 1;
        }
        Some(seq)
    }

    /// The sequence number the next message on `conn` will get.
    pub fn next_seq(&self, conn: usize) -> u64 {
        self.conns.get(conn).map_or(0, |c| c.sent)
    }

    /// Records a message received on `conn` carrying `seq`.
    pub fn on_received(&mut self, conn: usize, seq: u64) -> Receipt {
        let Some(c) = self.conns.get_mut(conn) else {
            self.totals.unknown += 1;
            return Receipt::Unknown;
        };
        if seq >= c.sent {
            self.totals.unknown += 1;
            return Receipt::Unknown;
        }
        let measured = c.first_measured.is_some_and(|first| seq >= first);
        if !c.seen.insert(seq) {
            if measured {
                self.totals.duplicated += 1;
            }
            return Receipt::Duplicate;
        }
        self.received_all += 1;
        let late = c.max_seen.is_some_and(|max| seq < max);
        c.max_seen = Some(c.max_seen.map_or(seq, |max| max.max(seq)));
        if measured {
            self.totals.received += 1;
            self.totals.reordered += u64::from(late);
        }
        Receipt::First { measured }
    }

    /// Messages sent (warmup included) and not received yet: the drain waits for this to be 0.
    pub fn outstanding(&self) -> u64 {
        self.sent_all - self.received_all
    }

    /// Distinct messages received, warmup included (for progress lines).
    pub fn received_all(&self) -> u64 {
        self.received_all
    }

    /// The counts so far; `lost` counts every measured message not received yet.
    pub fn summary(&self) -> AuditSummary {
        self.totals.with_lost()
    }
}

impl AuditSummary {
    /// These counts with `lost` recomputed as expected copies never received.
    pub fn with_lost(self) -> AuditSummary {
        AuditSummary {
            lost: self.expected.saturating_sub(self.received),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(audit: &mut Audit, conn: usize, n: u64, measured: bool) {
        for _ in 0..n {
            audit.on_sent(conn, measured);
        }
    }

    #[test]
    fn in_order_delivery_is_clean() {
        let mut a = Audit::new(2);
        sent(&mut a, 0, 1000, true);
        sent(&mut a, 1, 10, true);
        for s in 0..1000 {
            assert_eq!(a.on_received(0, s), Receipt::First { measured: true });
        }
        assert_eq!(a.outstanding(), 10);
        let s = a.summary();
        assert_eq!((s.sent, s.received, s.lost), (1010, 1000, 10));
        assert_eq!((s.duplicated, s.reordered, s.unknown), (0, 0, 0));
        assert!(a.conns[0].seen.words.len() <= 1, "window slides");
    }

    #[test]
    fn every_nth_dropped_is_counted_exactly() {
        let mut a = Audit::new(1);
        sent(&mut a, 0, 1000, true);
        for s in (0..1000).filter(|s| s % 10 != 9) {
            a.on_received(0, s);
        }
        assert_eq!(a.summary().lost, 100);
        assert_eq!(a.summary().reordered, 0);
    }

    #[test]
    fn duplicates_and_reorders() {
        let mut a = Audit::new(1);
        sent(&mut a, 0, 5, true);
        a.on_received(0, 0);
        a.on_received(0, 2);
        assert_eq!(a.on_received(0, 1), Receipt::First { measured: true });
        assert_eq!(a.on_received(0, 1), Receipt::Duplicate);
        assert_eq!(a.on_received(0, 0), Receipt::Duplicate);
        a.on_received(0, 4);
        a.on_received(0, 3);
        let s = a.summary();
        assert_eq!(
            (s.received, s.lost, s.duplicated, s.reordered),
            (5, 0, 2, 2)
        );
    }

    #[test]
    fn warmup_messages_are_not_counted() {
        let mut a = Audit::new(1);
        sent(&mut a, 0, 3, false);
        sent(&mut a, 0, 2, true);
        assert_eq!(a.on_received(0, 1), Receipt::First { measured: false });
        assert_eq!(a.on_received(0, 3), Receipt::First { measured: true });
        let s = a.summary();
        assert_eq!((s.sent, s.received, s.lost), (2, 1, 1));
        assert_eq!(a.outstanding(), 3);
    }

    #[test]
    fn streams_are_audited_separately() {
        let mut a = StreamAudit::new();
        assert_eq!(
            a.on_received(1, 2, 0, true),
            Receipt::First { measured: true }
        );
        assert_eq!(
            a.on_received(3, 2, 1, true),
            Receipt::First { measured: true }
        );
        // Stream 3->2 is behind but stream 1->2 is not: no reorder across streams.
        a.on_received(1, 2, 1, true);
        a.on_received(3, 2, 0, true);
        assert_eq!(a.on_received(3, 2, 0, true), Receipt::Duplicate);
        a.on_received(1, 2, 5, false);
        let s = a.summary();
        assert_eq!((s.received, s.duplicated, s.reordered), (4, 1, 1));
        assert_eq!(a.received_all(), 5);
    }

    #[test]
    fn absurd_sequence_numbers_are_refused_without_allocating() {
        let mut a = StreamAudit::new();
        assert_eq!(a.on_received(0, 1, u64::MAX / 2, true), Receipt::Unknown);
        assert_eq!(a.summary().unknown, 1);
        let s = AuditSummary {
            expected: 10,
            received: 7,
            ..AuditSummary::default()
        };
        assert_eq!(s.with_lost().lost, 3);
    }

    #[test]
    fn unknown_sequences_and_connections() {
        let mut a = Audit::new(1);
        sent(&mut a, 0, 2, true);
        assert_eq!(a.on_received(0, 2), Receipt::Unknown);
        assert_eq!(a.on_received(5, 0), Receipt::Unknown);
        assert_eq!(a.on_sent(5, true), None);
        assert_eq!(a.summary().unknown, 2);
    }
}
