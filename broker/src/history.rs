//! The in-memory channel: an ordered, bounded run of stored messages, plus the inbox's per-device
//! cursors.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use hermod_core::ids::{MsgId, Name};

use crate::engine::{Page, Stored};

/// Devices with a cursor kept per inbox. The device name is chosen by the client, so a user could
/// otherwise mint cursors without end. Past the cap, the device with the oldest cursor loses it:
/// it is then sent everything still retained again (at-least-once allows that).
pub const MAX_CURSORS_PER_INBOX: usize = 256;

/// One stored message.
#[derive(Debug, Clone)]
struct Entry {
    /// Engine-wide sequence number: orders the channel and is the id's tail.
    seq: u64,
    /// When it was stored (unix ms), for age-based retention.
    ts_ms: u64,
    /// The id as the client sees it (`"{epoch}-{seq}"`).
    id: MsgId,
    /// The encoded `msg` frame, shared with every delivery and replay.
    frame: Bytes,
    /// Who sent it and what it was charged to the storage budget (refunded when it goes).
    charge: Charge,
}

/// What one stored message or one channel is charged to the storage budget, and to whom.
#[derive(Debug, Clone)]
pub struct Charge {
    /// The sender charged; `None`: shared bytes (a room history created by a join).
    pub to: Option<Name>,
    /// Bytes charged.
    pub bytes: u64,
}

/// An ordered, bounded run of messages: a room's history or an inbox's messages.
#[derive(Debug)]
pub struct History {
    /// Oldest first; sequence numbers strictly increase.
    entries: VecDeque<Entry>,
    /// The sequence number just before the oldest message this history can vouch for: the last
    /// one it dropped, or the engine's sequence when the channel was created (anything older
    /// never was, or no longer is, known here). A position at or above it is covered.
    floor: u64,
    /// The newest sequence number this channel holds or held (`floor` while it has none).
    tip: u64,
    /// What the channel itself is charged to the storage budget.
    pub charge: Charge,
}

impl History {
    /// A new, empty channel, created when the engine's sequence stood at `engine_seq`.
    pub fn new(engine_seq: u64, charge: Charge) -> Self {
        History {
            entries: VecDeque::new(),
            floor: engine_seq,
            tip: engine_seq,
            charge,
        }
    }

    pub fn push(&mut self, seq: u64, ts_ms: u64, id: MsgId, frame: Bytes, charge: Charge) {
        self.tip = seq;
        self.entries.push_back(Entry {
            seq,
            ts_ms,
            id,
            frame,
            charge,
        });
    }

    /// Drops the oldest messages beyond `max_len` and those stored at or before `cutoff_ms`,
    /// handing each dropped message's charge to `refund`.
    pub fn trim(&mut self, max_len: usize, cutoff_ms: Option<u64>, refund: &mut dyn FnMut(Charge)) {
        while self.entries.len() > max_len
            || self
                .entries
                .front()
                .zip(cutoff_ms)
                .is_some_and(|(e, cut)| e.ts_ms <= cut)
        {
            match self.entries.pop_front() {
                Some(e) => {
                    self.floor = e.seq;
                    refund(e.charge);
                }
                None => break,
            }
        }
    }

    /// Whether the history vouches for every message after `seq`.
    pub fn covers(&self, seq: u64) -> bool {
        self.floor <= seq && seq <= self.tip
    }

    /// Newest sequence number held or ever held here.
    pub fn tip(&self) -> u64 {
        self.tip
    }

    /// Sequence number of the oldest message held.
    pub fn first_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| e.seq)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// One page of the messages with a sequence number above `seq`, oldest first, and whether
    /// more remain after it.
    pub fn page(&self, seq: u64, page: Page) -> (Vec<Stored>, bool) {
        let start = self.entries.partition_point(|e| e.seq <= seq);
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        let mut rest = self.entries.range(start..).peekable();
        while let Some(e) = rest.next_if(|e| page.admits(messages.len(), bytes, e.frame.len())) {
            bytes = bytes.saturating_add(e.frame.len());
            messages.push(Stored {
                id: e.id.clone(),
                frame: e.frame.clone(),
            });
        }
        let more = rest.peek().is_some();
        (messages, more)
    }
}

/// A user's inbox: its messages and where each device stands.
#[derive(Debug)]
pub struct Inbox {
    pub history: History,
    /// Device -> sequence number of the last message it acked. A device without an entry has
    /// acked nothing that is still retained.
    cursors: HashMap<Name, u64>,
    /// Bytes the cursors are charged to the storage budget (see [`cursor_cost`]).
    cursor_bytes: u64,
}

/// What one cursor is charged to the storage budget.
pub fn cursor_cost(device: &Name) -> u64 {
    crate::budget::CURSOR_OVERHEAD + device.as_str().len() as u64
}

impl Inbox {
    pub fn new(engine_seq: u64, charge: Charge) -> Self {
        Inbox {
            history: History::new(engine_seq, charge),
            cursors: HashMap::new(),
            cursor_bytes: 0,
        }
    }

    /// Bytes the cursors are charged now.
    pub fn cursor_bytes(&self) -> u64 {
        self.cursor_bytes
    }

    /// The device's cursor (0: nothing acked).
    pub fn cursor(&self, device: &Name) -> u64 {
        self.cursors.get(device).copied().unwrap_or(0)
    }

    /// Moves the device's cursor forward to `seq`, clamped to the newest message; never back.
    pub fn ack(&mut self, device: &Name, seq: u64) {
        let seq = seq.min(self.history.tip());
        if let Some(cur) = self.cursors.get_mut(device) {
            *cur = (*cur).max(seq);
            return;
        }
        if self.cursors.len() >= MAX_CURSORS_PER_INBOX {
            let oldest = self
                .cursors
                .iter()
                .min_by_key(|(_, s)| **s)
                .map(|(d, _)| d.clone());
            if let Some(d) = oldest {
                self.cursors.remove(&d);
                self.cursor_bytes = self.cursor_bytes.saturating_sub(cursor_cost(&d));
            }
        }
        self.cursors.insert(device.clone(), seq);
        self.cursor_bytes += cursor_cost(device);
    }

    /// Forgets cursors that no longer hold anything back: those below every retained message.
    pub fn drop_idle_cursors(&mut self) {
        let first = self.history.first_seq();
        let mut freed = 0;
        self.cursors.retain(|d, s| {
            let keep = first.is_some_and(|first| *s >= first);
            if !keep {
                freed += cursor_cost(d);
            }
            keep
        });
        self.cursor_bytes = self.cursor_bytes.saturating_sub(freed);
    }

    #[cfg(test)]
    pub fn cursor_count(&self) -> usize {
        self.cursors.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: u64) -> History {
        let mut h = History::new(0, free());
        for seq in 1..=n {
            h.push(
                seq,
                seq * 10,
                MsgId::new(format!("e-{seq}")),
                Bytes::new(),
                free(),
            );
        }
        h
    }

    fn free() -> Charge {
        Charge { to: None, bytes: 1 }
    }

    #[test]
    fn trims_by_length_and_age_and_tracks_the_floor() {
        let mut h = filled(10);
        let mut refunded = 0;
        h.trim(8, None, &mut |c| refunded += c.bytes);
        assert_eq!(refunded, 2);
        assert_eq!(h.first_seq(), Some(3));
        assert!(h.covers(2) && !h.covers(1) && h.covers(10) && !h.covers(11));
        h.trim(8, Some(50), &mut |_| {});
        assert_eq!(h.first_seq(), Some(6));
        assert_eq!(h.page(8, ALL).0.len(), 2);
    }

    const ALL: Page = Page {
        max_messages: usize::MAX,
        max_bytes: usize::MAX,
    };

    #[test]
    fn pages_by_count_and_bytes_with_at_least_one_message() {
        let mut h = History::new(0, free());
        for seq in 1..=5 {
            h.push(
                seq,
                0,
                MsgId::new(format!("e-{seq}")),
                Bytes::from(vec![b'x'; 10]),
                free(),
            );
        }
        let ids = |(page, more): (Vec<Stored>, bool)| {
            let ids: Vec<String> = page.iter().map(|m| m.id.as_str().to_owned()).collect();
            (ids, more)
        };
        let by_count = Page {
            max_messages: 2,
            max_bytes: usize::MAX,
        };
        assert_eq!(
            ids(h.page(0, by_count)),
            (vec!["e-1".into(), "e-2".into()], true)
        );
        assert_eq!(
            ids(h.page(3, by_count)),
            (vec!["e-4".into(), "e-5".into()], false)
        );
        assert_eq!(ids(h.page(5, by_count)), (vec![], false));
        let by_bytes = Page {
            max_messages: 100,
            max_bytes: 25,
        };
        assert_eq!(
            ids(h.page(1, by_bytes)),
            (vec!["e-2".into(), "e-3".into()], true)
        );
        let tiny = Page {
            max_messages: 0,
            max_bytes: 0,
        };
        assert_eq!(ids(h.page(4, tiny)), (vec!["e-5".into()], false));
    }

    #[test]
    fn cursor_clamps_and_never_moves_back() {
        let mut inbox = Inbox::new(0, free());
        inbox
            .history
            .push(1, 0, MsgId::new("e-1"), Bytes::new(), free());
        let d = Name::parse("device", "d").unwrap();
        inbox.ack(&d, 99);
        assert_eq!(inbox.cursor(&d), 1);
        inbox.ack(&d, 0);
        assert_eq!(inbox.cursor(&d), 1);
    }

    #[test]
    fn cursors_are_capped() {
        let mut inbox = Inbox::new(0, free());
        inbox
            .history
            .push(1, 0, MsgId::new("e-1"), Bytes::new(), free());
        for i in 0..MAX_CURSORS_PER_INBOX + 5 {
            let d = Name::parse("device", &format!("d{i}")).unwrap();
            inbox.ack(&d, 1);
        }
        assert_eq!(inbox.cursor_count(), MAX_CURSORS_PER_INBOX);
        // Device names of 2 to 4 bytes.
        let n = MAX_CURSORS_PER_INBOX as u64;
        let per = crate::budget::CURSOR_OVERHEAD;
        assert!((n * (per + 2)..=n * (per + 4)).contains(&inbox.cursor_bytes()));
        inbox.history.trim(0, None, &mut |_| {});
        inbox.drop_idle_cursors();
        assert_eq!(inbox.cursor_bytes(), 0);
    }
}
