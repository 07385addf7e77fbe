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
//!
//! Storage budget (`budget.rs`): every byte held is charged, and a write that would take the store
//! past `Limits::memory_budget`, or its sender past `Limits::memory_per_user`, is refused
//! ([`EngineError::Full`]) rather than evicting anything.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde_json::value::RawValue;

use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::protocol::{encode_direct_msg, encode_room_msg};

use crate::budget::{channel_cost, entry_cost, Budget, BudgetStats, Refusal};
use crate::dedupe::{self, Dedupe, MAX_DEDUPE_ENTRIES};
use crate::engine::{
    Channel, Completion, Done, Engine, EngineError, EngineStats, Op, Page, Stored, Token,
};
use crate::history::{Charge, History, Inbox};
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
    /// Bytes held, in total and per sender (the dedupe table's are its own: `Dedupe::bytes`).
    budget: Budget,
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
            budget: Budget::new(limits.memory_budget, limits.memory_per_user),
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

    /// The storage budget's figures: bytes held (dedupe included), the budget, refusals.
    pub fn budget_stats(&self) -> BudgetStats {
        let mut s = self.budget.stats();
        s.used += self.dedupe.bytes();
        s
    }

    /// Whether `sender_cost` bytes charged to `from` plus `shared_cost` more fit; drops the
    /// oldest dedupe entries (never messages) to make room before refusing.
    fn admit(&mut self, from: &Name, sender_cost: u64, shared_cost: u64) -> Result<(), Refusal> {
        let wanted = sender_cost.saturating_add(shared_cost);
        while !self.budget.fits(wanted.saturating_add(self.dedupe.bytes()))
            && self.dedupe.evict_oldest()
        {}
        let elsewhere = shared_cost.saturating_add(self.dedupe.bytes());
        self.budget.admit(from, sender_cost, elsewhere)
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
    ) -> Result<Done, EngineError> {
        if let Some(id) = self.dedupe.get(&from, &cid, now_ms) {
            return Ok(Done::Appended {
                id: id.clone(),
                fresh: None,
            });
        }
        let seq = self.seq + 1;
        let id = MsgId::new(format!("{}{seq}", self.prefix));
        let (frame, new_channel) = match &channel {
            Channel::Inbox(to) => (
                encode_direct_msg(&id, &from, to, data, now_ms),
                (!self.inboxes.contains_key(to)).then(|| channel_cost(to)),
            ),
            Channel::Room(room) => (
                encode_room_msg(&id, &from, room, data, now_ms),
                (!self.rooms.contains_key(room)).then(|| channel_cost(room)),
            ),
        };
        let message_cost = entry_cost(frame.capacity(), id.as_str().len());
        let channel_cost = new_channel.unwrap_or(0);
        let sender_cost = message_cost + channel_cost;
        let dedupe_cost = dedupe::entry_cost(&from, &cid, &id);
        if let Err(refusal) = self.admit(&from, sender_cost, dedupe_cost) {
            return Err(EngineError::Full(match refusal {
                Refusal::Budget => "the server's memory budget is used up",
                Refusal::SenderQuota => "this user's stored messages reached the per-user quota",
            }));
        }
        self.seq = seq;
        self.budget.charge(&from, sender_cost);
        let charge_channel = || Charge {
            to: Some(from.clone()),
            bytes: channel_cost,
        };
        let (history, max_len) = match &channel {
            Channel::Inbox(to) => {
                let inbox = self
                    .inboxes
                    .entry(to.clone())
                    .or_insert_with(|| Inbox::new(seq - 1, charge_channel()));
                (&mut inbox.history, self.limits.inbox_max_len)
            }
            Channel::Room(room) => {
                let history = self
                    .rooms
                    .entry(room.clone())
                    .or_insert_with(|| History::new(seq - 1, charge_channel()));
                (history, self.limits.room_max_len)
            }
        };
        let frame = Bytes::from(frame);
        let charge = Charge {
            to: Some(from.clone()),
            bytes: message_cost,
        };
        history.push(seq, now_ms, id.clone(), frame.clone(), charge);
        let budget = &mut self.budget;
        history.trim(max_len, None, &mut |c| refund(budget, c));
        self.dedupe.insert(from, cid, id.clone(), now_ms);
        Ok(Done::Appended {
            id: id.clone(),
            fresh: Some(Stored { id, frame }),
        })
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
            let before = inbox.cursor_bytes();
            inbox.ack(device, seq);
            self.budget.refund_shared(before);
            self.budget.charge_shared(inbox.cursor_bytes());
        }
        Ok(Done::Acked)
    }

    fn read_room(&mut self, room: &Name, since: Option<&MsgId>, page: Page) -> Done {
        let since_seq = since.map(|id| self.seq_of(id));
        let engine_seq = self.seq;
        let budget = &mut self.budget;
        let history = self.rooms.entry(room.clone()).or_insert_with(|| {
            // A join's empty history is charged to no one: reads are never refused, and the
            // sweep drops it once no session is on it.
            let bytes = channel_cost(room);
            budget.charge_shared(bytes);
            History::new(engine_seq, Charge { to: None, bytes })
        });
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
            } => self.append(channel, from, cid, &data, now_ms),
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
        let budget = &mut self.budget;
        let inbox_cut = now_ms.checked_sub(millis(self.limits.inbox_max_age));
        let inbox_len = self.limits.inbox_max_len;
        self.inboxes.retain(|user, inbox| {
            inbox
                .history
                .trim(inbox_len, inbox_cut, &mut |c| refund(budget, c));
            // An empty inbox has no cursors left either (none holds anything back).
            let before = inbox.cursor_bytes();
            inbox.drop_idle_cursors();
            budget.refund_shared(before.saturating_sub(inbox.cursor_bytes()));
            let keep = !inbox.history.is_empty() || in_use(&Channel::Inbox(user.clone()));
            if !keep {
                budget.refund_shared(inbox.cursor_bytes());
                refund(budget, inbox.history.charge.clone());
            }
            keep
        });
        let room_cut = now_ms.checked_sub(millis(self.limits.room_max_age));
        let room_len = self.limits.room_max_len;
        self.rooms.retain(|room, history| {
            history.trim(room_len, room_cut, &mut |c| refund(budget, c));
            let keep = !history.is_empty() || in_use(&Channel::Room(room.clone()));
            if !keep {
                refund(budget, history.charge.clone());
            }
            keep
        });
    }

    fn stats(&self) -> EngineStats {
        let b = self.budget_stats();
        EngineStats {
            store_bytes: b.used,
            store_budget: b.limit,
            store_refused_budget: b.refused_budget,
            store_refused_quota: b.refused_quota,
            ..EngineStats::default()
        }
    }
}

/// Gives a dropped message's or channel's bytes back to whoever they were charged to.
fn refund(budget: &mut Budget, charge: Charge) {
    match &charge.to {
        Some(sender) => budget.refund(sender, charge.bytes),
        None => budget.refund_shared(charge.bytes),
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

    fn append_to(
        e: &mut MemoryEngine,
        to: &str,
        from: &str,
        cid: &str,
        len: usize,
        now: u64,
    ) -> Result<Done, EngineError> {
        let data = RawValue::from_string(format!("\"{}\"", "x".repeat(len))).unwrap();
        e.append(
            Channel::Inbox(Name::parse("user", to).unwrap()),
            Name::parse("user", from).unwrap(),
            Cid::parse(cid).unwrap(),
            &data,
            now,
        )
    }

    fn small_budget(total: u64, per_user: u64) -> MemoryEngine {
        let limits = Limits {
            memory_budget: total,
            memory_per_user: per_user,
            inbox_max_age: std::time::Duration::from_secs(10),
            ..Limits::default()
        };
        MemoryEngine::with_epoch(&limits, 1)
    }

    #[test]
    fn per_user_quota_refuses_without_evicting_and_sweep_frees_everything() {
        let mut e = small_budget(1 << 20, 100_000);
        let mut stored = 0;
        let mut refused = 0;
        for i in 0..100 {
            match append_to(
                &mut e,
                &format!("nobody{i}"),
                "mallory",
                &format!("c{i}"),
                4000,
                0,
            ) {
                Ok(_) => stored += 1,
                Err(EngineError::Full(_)) => refused += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert!(stored > 10 && refused > 0, "{stored} {refused}");
        assert!(
            e.budget
                .sender_used(&Name::parse("user", "mallory").unwrap())
                <= 100_000
        );
        // Another user still has room, and everything stored is still there.
        assert!(append_to(&mut e, "bob", "alice", "a1", 4000, 0).is_ok());
        assert_eq!(e.channel_count(), stored + 1);
        assert_eq!(e.budget_stats().refused_quota, refused as u64);
        // Past retention and the dedupe window, with no session on them, all is given back.
        e.sweep(3_600_000, &|_| false);
        assert_eq!(e.channel_count(), 0);
        assert_eq!(e.budget_stats().used, 0);
    }

    #[test]
    fn total_budget_refuses_and_counts_every_byte() {
        let mut e = small_budget(200_000, u64::MAX);
        let mut stored = 0;
        for i in 0..100 {
            let from = format!("u{i}");
            if append_to(&mut e, "bob", &from, "c", 4000, 0).is_ok() {
                stored += 1;
            }
        }
        let s = e.budget_stats();
        assert!(s.used <= 200_000 && s.used > 150_000, "{s:?}");
        assert!(s.refused_budget > 0);
        assert_eq!(
            e.message_count(&Channel::Inbox(Name::parse("user", "bob").unwrap())),
            stored
        );
        // Acks and joins are never refused; cursors and empty rooms are counted.
        let bob = Name::parse("user", "bob").unwrap();
        let dev = Name::parse("device", "phone").unwrap();
        let before = e.budget_stats().used;
        assert!(e.ack(&bob, &dev, &MsgId::new("00000001-1")).is_ok());
        let room = Name::parse("room", "lobby").unwrap();
        let _ = e.read_room(
            &room,
            None,
            Page {
                max_messages: 1,
                max_bytes: 1,
            },
        );
        assert!(e.budget_stats().used > before);
        e.sweep(3_600_000, &|_| false);
        assert_eq!(e.budget_stats().used, 0);
    }
}
