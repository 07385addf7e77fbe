//! Per-channel ordering of operations across lanes.
//!
//! Reads go on lane 0 and writes on lane 1: two connections, so Redis may apply them in either
//! order. The broker needs a channel's completions in the order the engine applied them (an
//! append applied before a page read must complete before it). The gate gives that by never
//! having a read and a write of one channel in flight at once: reads of a channel pipeline
//! freely with each other, writes with each other, and an operation of the other class waits
//! (in arrival order) until the channel's in-flight ones completed. A write completes when it is
//! durable (after its WAIT with `--durability replica`), so a read never overtakes one.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use hermod_core::ids::MsgId;

use crate::engine::{Channel, Op, Token};

/// Reads and writes of one channel must not be in flight together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Page reads.
    Read,
    /// Appends and acks.
    Write,
}

/// An operation accepted by the engine and not sent yet, or sent and not completed.
#[derive(Debug)]
pub struct Queued {
    /// The broker's token for it.
    pub token: Token,
    /// The operation.
    pub op: Op,
    /// The broker's clock at submit (the message's `ts`, the stream id's ms).
    pub now_ms: u64,
    /// Fails with `Unavailable` if still unsent by then.
    pub deadline: Instant,
}

impl Queued {
    /// The channel the operation touches.
    pub fn channel(&self) -> Channel {
        match &self.op {
            Op::Append { channel, .. } => channel.clone(),
            Op::ReadInbox { user, .. } | Op::Ack { user, .. } => Channel::Inbox(user.clone()),
            Op::ReadRoom { room, .. } => Channel::Room(room.clone()),
        }
    }

    /// Whether it reads or writes the channel.
    pub fn class(&self) -> Class {
        match &self.op {
            Op::Append { .. } | Op::Ack { .. } => Class::Write,
            Op::ReadInbox { .. } | Op::ReadRoom { .. } => Class::Read,
        }
    }

    /// The client id it carries (an ack's, or a later page's position), if any.
    pub fn position(&self) -> Option<&MsgId> {
        match &self.op {
            Op::Ack { id, .. } => Some(id),
            Op::ReadInbox { after, .. } => after.as_ref(),
            Op::ReadRoom { since, .. } => since.as_ref(),
            Op::Append { .. } => None,
        }
    }
}

/// One channel's state.
#[derive(Debug, Default)]
struct Lane {
    /// Reads in flight.
    reads: usize,
    /// Writes in flight (until durable).
    writes: usize,
    /// Operations waiting for the other class to finish, in arrival order.
    waiting: VecDeque<Queued>,
}

impl Lane {
    fn admits(&self, class: Class) -> bool {
        match class {
            Class::Read => self.writes == 0,
            Class::Write => self.reads == 0,
        }
    }

    fn count(&mut self, class: Class, delta: isize) {
        let n = match class {
            Class::Read => &mut self.reads,
            Class::Write => &mut self.writes,
        };
        *n = n.saturating_add_signed(delta);
    }

    fn idle(&self) -> bool {
        self.reads == 0 && self.writes == 0 && self.waiting.is_empty()
    }
}

/// The gates of every channel with operations in flight or waiting.
#[derive(Debug, Default)]
pub struct Gates {
    /// Channel -> its state; removed when idle, so this holds only busy channels.
    lanes: HashMap<Channel, Lane>,
    /// Operations waiting, over all channels.
    waiting: usize,
}

impl Gates {
    /// Lets `q` through (counted in flight) or queues it behind its channel's other class.
    pub fn admit(&mut self, q: Queued) -> Option<Queued> {
        let class = q.class();
        let lane = self.lanes.entry(q.channel()).or_default();
        if lane.waiting.is_empty() && lane.admits(class) {
            lane.count(class, 1);
            return Some(q);
        }
        lane.waiting.push_back(q);
        self.waiting += 1;
        None
    }

    /// An operation let through earlier completed: whatever it held back and may go now is
    /// appended to `out` (counted in flight).
    pub fn finish(&mut self, channel: &Channel, class: Class, out: &mut Vec<Queued>) {
        let Entry::Occupied(mut e) = self.lanes.entry(channel.clone()) else {
            return;
        };
        let lane = e.get_mut();
        lane.count(class, -1);
        while lane.waiting.front().is_some_and(|q| lane.admits(q.class())) {
            if let Some(q) = lane.waiting.pop_front() {
                lane.count(q.class(), 1);
                self.waiting -= 1;
                out.push(q);
            }
        }
        if lane.idle() {
            e.remove();
        }
    }

    /// Takes the waiting operations whose deadline passed (they fail; nothing else moves).
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Queued>) {
        if self.waiting == 0 {
            return;
        }
        for lane in self.lanes.values_mut() {
            while lane.waiting.front().is_some_and(|q| q.deadline <= now) {
                if let Some(q) = lane.waiting.pop_front() {
                    self.waiting -= 1;
                    out.push(q);
                }
            }
        }
        self.lanes.retain(|_, l| !l.idle());
    }

    /// Takes every waiting operation (the connection is gone: they all fail).
    pub fn drain_waiting(&mut self, out: &mut Vec<Queued>) {
        for lane in self.lanes.values_mut() {
            out.extend(lane.waiting.drain(..));
        }
        self.waiting = 0;
        self.lanes.retain(|_, l| !l.idle());
    }

    /// The earliest deadline of a waiting operation.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.waiting == 0 {
            return None;
        }
        self.lanes
            .values()
            .filter_map(|l| l.waiting.front().map(|q| q.deadline))
            .min()
    }

    /// Operations waiting, over all channels.
    pub fn waiting(&self) -> usize {
        self.waiting
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin
mod tests {
    use super::*;
    use hermod_core::ids::Name;
    use std::time::Duration;

    fn name(s: &str) -> Name {
        Name::parse("n", s).unwrap()
    }

    fn read(t: u64, room: &str, deadline: Instant) -> Queued {
        let op = Op::ReadRoom {
            room: name(room),
            since: None,
            page: crate::Page {
                max_messages: 1,
                max_bytes: 1,
            },
        };
        Queued {
            token: Token(t),
            op,
            now_ms: 0,
            deadline,
        }
    }

    fn ack(t: u64, user: &str, deadline: Instant) -> Queued {
        let op = Op::Ack {
            user: name(user),
            device: name("d"),
            id: MsgId::new("x"),
        };
        Queued {
            token: Token(t),
            op,
            now_ms: 0,
            deadline,
        }
    }

    /// A read of user `u`'s inbox (one message a page).
    fn inbox_read(t: u64, deadline: Instant) -> Queued {
        Queued {
            op: Op::ReadInbox {
                user: name("u"),
                device: name("d"),
                after: None,
                page: crate::Page {
                    max_messages: 1,
                    max_bytes: 1,
                },
            },
            ..read(t, "x", deadline)
        }
    }

    #[test]
    fn a_class_waits_for_the_other_in_arrival_order() {
        let now = Instant::now();
        let mut g = Gates::default();
        assert!(g.admit(read(1, "r", now)).is_some());
        assert!(g.admit(read(2, "r", now)).is_some());
        // another channel is independent
        assert!(g.admit(ack(3, "u", now)).is_some());
        assert!(g.admit(inbox_read(4, now)).is_none());
        assert!(
            g.admit(ack(5, "u", now)).is_none(),
            "queued behind the read"
        );
        assert_eq!(g.waiting(), 2);
        let mut out = Vec::new();
        g.finish(&Channel::Inbox(name("u")), Class::Write, &mut out);
        assert_eq!(out.iter().map(|q| q.token).collect::<Vec<_>>(), [Token(4)]);
        out.clear();
        g.finish(&Channel::Inbox(name("u")), Class::Read, &mut out);
        assert_eq!(out.iter().map(|q| q.token).collect::<Vec<_>>(), [Token(5)]);
        assert_eq!(g.waiting(), 0);
    }

    #[test]
    fn waiting_operations_expire_and_drain() {
        let now = Instant::now();
        let mut g = Gates::default();
        assert!(g.admit(ack(1, "u", now)).is_some());
        assert!(g.admit(inbox_read(2, now)).is_none());
        assert!(g
            .admit(inbox_read(3, now + Duration::from_secs(60)))
            .is_none());
        assert_eq!(g.next_deadline(), Some(now));
        let mut out = Vec::new();
        g.expire(now, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        g.drain_waiting(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(g.waiting(), 0);
    }
}
