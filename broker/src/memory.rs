//! The in-memory engine: single process, everything lost on exit. The embedded default.
//!
//! Ids are `"{epoch}-{seq}"`: `epoch` is a random 32-bit number (8 hex digits) drawn when the
//! engine is created, `seq` a decimal counter. The counter is engine-wide rather than per channel,
//! so ids stay unique and ordered per channel (as the spec asks) and are never reused, even when a
//! channel is dropped by sweep and later recreated. An id from a previous process carries another
//! epoch and is recognised as foreign: a `since` from it gives `recovered:false`.
//!
//! Retention: an inbox message stays until retention drops it (length or age), whoever acked it;
//! devices are served from their own cursors, so a device that acked sees only newer messages,
//! and a device that never acked gets everything still retained.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde_json::value::RawValue;

use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::protocol::{encode_direct_msg, encode_room_msg};

use crate::dedupe::{Dedupe, MAX_DEDUPE_ENTRIES};
use crate::engine::{Channel, Completion, Done, Engine, EngineError, Op, Page, Stored, Token};
use crate::history::{History, Inbox};
use crate::limits::Limits;

/// The in-memory engine.
#[derive(Debug)]
pub struct MemoryEngine {
    /// Retention and dedupe bounds.
    limits: Limits,
    /// `"{epoch:08x}-"`: the prefix of every id this engine issues.
    prefix: String,
    /// Last sequence number issued, across all channels.
    seq: u64,
    /// Users' inboxes, created on first message or ack.
    inboxes: HashMap<Name, Inbox>,
    /// Rooms' histories, created on first publish or join.
    rooms: HashMap<Name, History>,
    /// `(user, cid)` of recent appends.
    dedupe: Dedupe,
    /// Finished operations waiting for `poll_completion` (all complete inside `submit`).
    done: VecDeque<Completion>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        MemoryEngine::new(&Limits::default())
    }
}

impl MemoryEngine {
    /// An empty engine with a random epoch.
    pub fn new(limits: &Limits) -> Self {
        MemoryEngine::with_epoch(limits, rand::random())
    }

    /// An empty engine with a chosen epoch (tests: to make ids of "another process").
    pub fn with_epoch(limits: &Limits, epoch: u32) -> Self {
        MemoryEngine::with_dedupe_cap(limits, epoch, MAX_DEDUPE_ENTRIES)
    }

    fn with_dedupe_cap(limits: &Limits, epoch: u32, dedupe_cap: usize) -> Self {
        MemoryEngine {
            limits: limits.clone(),
            prefix: format!("{epoch:08x}-"),
            seq: 0,
            inboxes: HashMap::new(),
            rooms: HashMap::new(),
            dedupe: Dedupe::new(millis(limits.dedupe_window), dedupe_cap),
            done: VecDeque::new(),
        }
    }

    /// Number of inboxes and rooms held (tests and metrics).
    pub fn channel_count(&self) -> usize {
        self.inboxes.len() + self.rooms.len()
    }

    /// Number of messages held in `channel` (tests and metrics).
    pub fn message_count(&self, channel: &Channel) -> usize {
        match channel {
            Channel::Inbox(u) => self.inboxes.get(u).map_or(0, |i| i.history.len()),
            Channel::Room(r) => self.rooms.get(r).map_or(0, History::len),
        }
    }

    /// Number of live dedupe entries (tests and metrics).
    pub fn dedupe_len(&self) -> usize {
        self.dedupe.entry_count()
    }

    /// The sequence number of an id this engine issued; `None` for anything else.
    fn seq_of(&self, id: &MsgId) -> Option<u64> {
        let tail = id.as_str().strip_prefix(self.prefix.as_str())?;
        if tail.is_empty() || tail.len() > 20 || !tail.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        tail.parse().ok()
    }

    fn append(
        &mut self,
        channel: Channel,
        from: Name,
        cid: Cid,
        data: &RawValue,
        now_ms: u64,
    ) -> Done {
        if let Some(id) = self.dedupe.get(&from, &cid, now_ms) {
            return Done::Appended {
                id: id.clone(),
                fresh: None,
            };
        }
        self.seq += 1;
        let seq = self.seq;
        let id = MsgId::new(format!("{}{seq}", self.prefix));
        let (history, max_len, frame) = match &channel {
            Channel::Inbox(to) => {
                let frame = encode_direct_msg(&id, &from, to, data, now_ms);
                let inbox = self
                    .inboxes
                    .entry(to.clone())
                    .or_insert_with(|| Inbox::new(seq - 1));
                (&mut inbox.history, self.limits.inbox_max_len, frame)
            }
            Channel::Room(room) => {
                let frame = encode_room_msg(&id, &from, room, data, now_ms);
                let history = self
                    .rooms
                    .entry(room.clone())
                    .or_insert_with(|| History::new(seq - 1));
                (history, self.limits.room_max_len, frame)
            }
        };
        let frame = Bytes::from(frame);
        history.push(seq, now_ms, id.clone(), frame.clone());
        history.trim(max_len, None);
        self.dedupe.insert(from, cid, id.clone(), now_ms);
        Done::Appended {
            id: id.clone(),
            fresh: Some(Stored { id, frame }),
        }
    }

    fn read_inbox(
        &self,
        user: &Name,
        device: &Name,
        after: Option<&MsgId>,
        page: Page,
    ) -> Result<Done, EngineError> {
        let Some(inbox) = self.inboxes.get(user) else {
            return Ok(Done::Inbox {
                messages: Vec::new(),
                more: false,
            });
        };
        let from = match after {
            Some(id) => self.seq_of(id).ok_or(EngineError::UnknownId)?,
            None => inbox.cursor(device),
        };
        let (messages, more) = inbox.history.page(from, page);
        Ok(Done::Inbox { messages, more })
    }

    fn ack(&mut self, user: &Name, device: &Name, id: &MsgId) -> Result<Done, EngineError> {
        let seq = self.seq_of(id).ok_or(EngineError::UnknownId)?;
        // No inbox: no message to hold back, and every later one gets a higher sequence number.
        if let Some(inbox) = self.inboxes.get_mut(user) {
            inbox.ack(device, seq);
        }
        Ok(Done::Acked)
    }

    fn read_room(&mut self, room: &Name, since: Option<&MsgId>, page: Page) -> Done {
        let since_seq = since.map(|id| self.seq_of(id));
        let engine_seq = self.seq;
        let history = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| History::new(engine_seq));
        let (recovered, from) = match since_seq {
            None => {
                return Done::Room {
                    recovered: true,
                    messages: Vec::new(),
                    more: false,
                }
            }
            Some(Some(seq)) if history.covers(seq) => (true, seq),
            // Trimmed past `since`, another epoch, or not a position here: a gap. Send what
            // is retained so the client has at least that.
            Some(_) => (false, 0),
        };
        let (messages, more) = history.page(from, page);
        Done::Room {
            recovered,
            messages,
            more,
        }
    }
}

impl Engine for MemoryEngine {
    fn submit(&mut self, token: Token, op: Op, now_ms: u64) {
        let result = match op {
            Op::Append {
                channel,
                from,
                cid,
                data,
            } => Ok(self.append(channel, from, cid, &data, now_ms)),
            Op::ReadInbox {
                user,
                device,
                after,
                page,
            } => self.read_inbox(&user, &device, after.as_ref(), page),
            Op::Ack { user, device, id } => self.ack(&user, &device, &id),
            Op::ReadRoom { room, since, page } => Ok(self.read_room(&room, since.as_ref(), page)),
        };
        self.done.push_back((token, result));
    }

    fn poll_completion(&mut self) -> Option<Completion> {
        self.done.pop_front()
    }

    fn sweep(&mut self, now_ms: u64, in_use: &dyn Fn(&Channel) -> bool) {
        self.dedupe.sweep(now_ms);
        let inbox_cut = now_ms.checked_sub(millis(self.limits.inbox_max_age));
        let inbox_len = self.limits.inbox_max_len;
        self.inboxes.retain(|user, inbox| {
            inbox.history.trim(inbox_len, inbox_cut);
            // An empty inbox has no cursors left either (none holds anything back).
            inbox.drop_idle_cursors();
            !inbox.history.is_empty() || in_use(&Channel::Inbox(user.clone()))
        });
        let room_cut = now_ms.checked_sub(millis(self.limits.room_max_age));
        let room_len = self.limits.room_max_len;
        self.rooms.retain(|room, history| {
            history.trim(room_len, room_cut);
            !history.is_empty() || in_use(&Channel::Room(room.clone()))
        });
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_for_their_own_epoch() {
        let e = MemoryEngine::with_epoch(&Limits::default(), 0xabcd);
        assert_eq!(e.seq_of(&MsgId::new("0000abcd-17")), Some(17));
        assert_eq!(e.seq_of(&MsgId::new("0000abce-17")), None);
        assert_eq!(e.seq_of(&MsgId::new("0000abcd-+17")), None);
        assert_eq!(e.seq_of(&MsgId::new("0000abcd-")), None);
        assert_eq!(e.seq_of(&MsgId::new("garbage")), None);
        assert_eq!(e.seq_of(&MsgId::new("0000abcd-99999999999999999999")), None);
    }

    #[test]
    fn small_dedupe_cap_is_respected() {
        let mut e = MemoryEngine::with_dedupe_cap(&Limits::default(), 1, 3);
        let from = Name::parse("user", "a").unwrap();
        let data = RawValue::from_string("1".into()).unwrap();
        for i in 0..10 {
            let cid = Cid::parse(&format!("c{i}")).unwrap();
            e.submit(
                Token(i),
                Op::Append {
                    channel: Channel::Room(from.clone()),
                    from: from.clone(),
                    cid,
                    data: data.clone(),
                },
                0,
            );
        }
        assert_eq!(e.dedupe_len(), 3);
    }
}
