//! Paged replay with flow control: where each subscription of a session stands, and whose turn
//! it is to read the next page.
//!
//! A replay (the inbox backlog on attach, a room's history after `since` on join) is read a
//! [`Page`](crate::Page) at a time. The first page is read at once. After a full page the
//! subscription is paused and queued in the session's [`Replays`]; the broker tells the
//! session [`Event::ReplayPaused`] and reads nothing more for it until the gateway answers
//! `ResumeReplay` (once it has written the page out). Each `ResumeReplay` reads exactly one page,
//! of the replay first in the queue; a replay whose page came back full goes to the back of the
//! queue, so several replays of one session take turns. At most one `ReplayPaused` is outstanding
//! per session: it is sent when replays are waiting and no resumed read is in flight, and the
//! next one only after a `ResumeReplay`. A `ResumeReplay` while none is outstanding is ignored.
//!
//! ```text
//!            first page read                 page full: queued, ReplayPaused (one at a time)
//!  (join) ----------------> Reading{token} ------------------------------------> Paused
//!                            |  ^  ^                                                   |
//!       page short: page,    |  |  '------------ ResumeReplay, its turn: read after last'
//!       held live msgs ----> Live
//!                               '-- catch-up (the engine's live feed lost messages): read after last
//! ```
//!
//! Every subscription keeps `last`, the id of the last message it delivered (its high-water
//! mark): paused replays and catch-up reads continue after it, and a message of an engine's
//! live feed (an engine shared by several brokers, `broker/live.rs`) goes out only if it comes
//! after it, so a message both replayed and reported live reaches the session once.
//!
//! Live messages while the subscription is
//! - `Reading`: held (bounded), because a read in flight may or may not contain them. After a
//!   short (final) page, those the page does not contain (and, from a live feed, that come
//!   after the last id delivered) are sent after it; after a full page
//!   they are dropped, as the next page reads them (an append completed before the read
//!   completed was applied before it, so it is in this page or after its last id).
//! - `Paused`: not sent, not kept: they are stored after the last id delivered, where a later
//!   page reads them.
//!
//! Rooms: if retention trims a room's history past the last id delivered while its replay is
//! paused, the next page starts from the oldest message retained: the client gets what is left,
//! with a gap (`recovered` was already answered in `Joined`; the gap is only logged).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashSet, VecDeque};

use hermod_core::bus::{Delivery, Event, SessionKey};
use hermod_core::ids::{MsgId, Name};

use crate::engine::{Stored, Token};

/// Live messages held for one subscription while a page read is in flight (only an asynchronous
/// engine ever has any). Past this the session is closed with `Overflow` and resumes later.
pub const MAX_REPLAY_BUFFER: usize = 10_000;

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sub {
    /// Its user's inbox.
    Inbox,
    /// A room it joined.
    Room(Name),
}

/// Where one subscription's replay stands.
#[derive(Debug)]
enum State {
    /// Replay done: live messages go straight out.
    Live,
    /// The page read under `token` is in flight: live messages wait in `held`, in order, so none
    /// overtakes the replay and none is sent twice. A completion under another token is stale
    /// (the subscription was replaced since) and is ignored.
    Reading { token: Token, held: Vec<Stored> },
    /// A full page went out, ending at the feed's `last`; the next page is read after it on the
    /// session's turn. Live messages are left to that read.
    Paused,
}

/// Where one subscription (a session's inbox, or one of its rooms) stands, and the last id it
/// delivered.
#[derive(Debug)]
pub struct Feed {
    /// Replay progress.
    state: State,
    /// The id of the last message delivered on this subscription (its high-water mark): a
    /// paused replay's next page and a catch-up read continue after it, and a message of the
    /// engine's live feed at or below it is a copy of one already delivered (see
    /// `broker/live.rs`). `None` until the first delivery.
    last: Option<MsgId>,
}

/// Whether an id comes after another in its channel ([`Engine::is_after`](crate::Engine)).
pub type After<'a> = &'a dyn Fn(&MsgId, &MsgId) -> bool;

/// What to do with a live message for one subscription.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Send it now.
    Send,
    /// Held, left to a later page, or already delivered: nothing to send now.
    Kept,
    /// The hold buffer is full: the session cannot be kept consistent.
    Overflow,
}

/// How a page read ended for its subscription.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The completion was for a replaced subscription: nothing sent.
    Stale,
    /// The page went out and more remain: the subscription is `Paused` and must be queued.
    Paused,
    /// The last page went out, then the held live messages: the subscription is `Live`.
    Live,
}

impl Feed {
    /// A subscription whose first page is being read under `token`.
    pub fn reading(token: Token) -> Feed {
        Feed {
            state: State::Reading {
                token,
                held: Vec::new(),
            },
            last: None,
        }
    }

    /// The id of the last message delivered on this subscription.
    pub fn last(&self) -> Option<&MsgId> {
        self.last.as_ref()
    }

    /// Takes a live message for this subscription. `after` is given for a message of the
    /// engine's live feed, which may repeat what a page delivered: then only a message after
    /// `last` goes out, and becomes the new `last`. The broker's own fan-out (`None`: appends
    /// in storage order, or a duplicate's stored entry repeated) goes out as it comes and
    /// leaves `last` alone (it matters only with a live feed).
    pub fn offer(&mut self, msg: &Stored, after: Option<After<'_>>) -> Offer {
        match &mut self.state {
            State::Live => {
                if let Some(after) = after {
                    if self.last.as_ref().is_some_and(|last| !after(&msg.id, last)) {
                        return Offer::Kept;
                    }
                    self.last = Some(msg.id.clone());
                }
                Offer::Send
            }
            State::Reading { held, .. } if held.len() < MAX_REPLAY_BUFFER => {
                held.push(msg.clone());
                Offer::Kept
            }
            State::Reading { .. } => Offer::Overflow,
            State::Paused => Offer::Kept,
        }
    }

    /// Moves a read in flight under `from` to `to` (a retry of the read), keeping what it holds.
    /// `false` when `from` is not the current read.
    pub fn retarget(&mut self, from: Token, to: Token) -> bool {
        match &mut self.state {
            State::Reading { token, .. } if *token == from => {
                *token = to;
                true
            }
            _ => false,
        }
    }

    /// Whether the page read under `token` is this subscription's current one.
    pub fn is_reading(&self, token: Token) -> bool {
        matches!(&self.state, State::Reading { token: t, .. } if *t == token)
    }

    /// A paused replay's next page is read under `token`: the id to read after, or `None` (and
    /// nothing changes) when the replay is not paused.
    pub fn resume(&mut self, token: Token) -> Option<MsgId> {
        match (&self.state, &self.last) {
            (State::Paused, Some(last)) => {
                let after = last.clone();
                self.state = State::Reading {
                    token,
                    held: Vec::new(),
                };
                Some(after)
            }
            _ => None,
        }
    }

    /// A live subscription is read again under `token`, after [`Feed::last`] (a catch-up after
    /// the engine's live feed lost messages); live messages are held meanwhile, as during any
    /// read. `false` (nothing changes) when it is not live: a read or a paused replay will read
    /// after its last id anyway.
    pub fn catch_up(&mut self, token: Token) -> bool {
        if !matches!(self.state, State::Live) {
            return false;
        }
        self.state = State::Reading {
            token,
            held: Vec::new(),
        };
        true
    }

    /// Delivers the page read under `token` to `session` and moves on: `Paused` when `more`,
    /// else `Live` after sending the held messages that follow the page (not in it, and after
    /// the last id delivered).
    pub fn apply_page(
        &mut self,
        session: SessionKey,
        token: Token,
        page: Vec<Stored>,
        more: bool,
        after: After<'_>,
        out: &mut Vec<Delivery>,
    ) -> Applied {
        if !self.is_reading(token) {
            return Applied::Stale;
        }
        for msg in &page {
            out.push(message(session, msg));
        }
        if let Some(last) = page.last() {
            self.last = Some(last.id.clone());
            if more {
                // Held messages are in this page or after `last`: the next page reads them.
                self.state = State::Paused;
                return Applied::Paused;
            }
        }
        let held = match std::mem::replace(&mut self.state, State::Live) {
            State::Reading { held, .. } => held,
            State::Live | State::Paused => Vec::new(),
        };
        if !held.is_empty() {
            let replayed: HashSet<&MsgId> = page.iter().map(|m| &m.id).collect();
            for msg in held.iter().filter(|m| !replayed.contains(&m.id)) {
                if self.last.as_ref().is_some_and(|last| !after(&msg.id, last)) {
                    continue;
                }
                out.push(message(session, msg));
                self.last = Some(msg.id.clone());
            }
        }
        Applied::Live
    }
}

/// Whose turn it is in a session's flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// No `ReplayPaused` outstanding and no resumed read in flight.
    Idle,
    /// `ReplayPaused` sent: waiting for `ResumeReplay`.
    Told,
    /// The page read that `ResumeReplay` started, under this token, is in flight.
    Reading(Token),
}

/// A session's paused replays and its flow-control turn.
#[derive(Debug)]
pub struct Replays {
    /// Paused subscriptions, the next to resume first. Each at most once (a subscription is
    /// queued when it pauses and leaves the queue when resumed or dropped), so the length is
    /// bounded by the session's subscriptions.
    waiting: VecDeque<Sub>,
    /// Where the session stands between `ReplayPaused` and `ResumeReplay`.
    turn: Turn,
}

impl Default for Replays {
    fn default() -> Self {
        Replays {
            waiting: VecDeque::new(),
            turn: Turn::Idle,
        }
    }
}

impl Replays {
    /// Queues a subscription that just paused.
    pub fn push(&mut self, sub: Sub) {
        self.waiting.push_back(sub);
    }

    /// Drops a subscription that was left or replaced.
    pub fn forget(&mut self, sub: &Sub) {
        self.waiting.retain(|s| s != sub);
    }

    /// A page read under `token` completed (stale or not): if it was the resumed one, the
    /// turn is over.
    pub fn page_done(&mut self, token: Token) {
        if self.turn == Turn::Reading(token) {
            self.turn = Turn::Idle;
        }
    }

    /// Whether to send `ReplayPaused` now: replays wait and nothing is outstanding.
    pub fn poll_paused(&mut self) -> bool {
        if self.turn == Turn::Idle && !self.waiting.is_empty() {
            self.turn = Turn::Told;
            return true;
        }
        false
    }

    /// A `ResumeReplay` arrived: the subscription whose turn it is, if a `ReplayPaused` was
    /// outstanding and one still waits. The caller starts its read and calls
    /// [`Replays::reading`].
    pub fn resume(&mut self) -> Option<Sub> {
        if self.turn != Turn::Told {
            return None;
        }
        self.turn = Turn::Idle;
        self.waiting.pop_front()
    }

    /// The resumed read was submitted under `token`.
    pub fn reading(&mut self, token: Token) {
        self.turn = Turn::Reading(token);
    }

    /// Paused replays queued (tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// A `msg` delivery of a stored message.
pub fn message(session: SessionKey, msg: &Stored) -> Delivery {
    Delivery {
        session,
        event: Event::Message {
            id: msg.id.clone(),
            frame: msg.frame.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn stored(n: u32) -> Stored {
        Stored {
            id: MsgId::new(format!("e-{n}")),
            frame: Bytes::new(),
        }
    }

    const S: SessionKey = SessionKey {
        worker: 0,
        slot: 0,
        generation: 0,
    };

    fn any(_: &MsgId, _: &MsgId) -> bool {
        true
    }

    /// Ids `e-N` ordered by N.
    fn by_number(a: &MsgId, b: &MsgId) -> bool {
        let n = |m: &MsgId| m.as_str()[2..].parse::<u32>().unwrap();
        n(a) > n(b)
    }

    #[test]
    fn full_page_drops_held_short_page_sends_the_new_ones() {
        let mut feed = Feed::reading(Token(1));
        assert_eq!(feed.offer(&stored(2), None), Offer::Kept);
        let mut out = Vec::new();
        let applied = feed.apply_page(S, Token(1), vec![stored(1)], true, &any, &mut out);
        assert_eq!((applied, out.len()), (Applied::Paused, 1));
        assert_eq!(feed.offer(&stored(3), None), Offer::Kept);
        assert_eq!(feed.resume(Token(2)), Some(MsgId::new("e-1")));
        feed.offer(&stored(3), None);
        feed.offer(&stored(4), None);
        let page = vec![stored(2), stored(3)];
        let applied = feed.apply_page(S, Token(2), page, false, &any, &mut out);
        assert_eq!((applied, out.len()), (Applied::Live, 4));
        assert_eq!(feed.last(), Some(&MsgId::new("e-4")));
        assert_eq!(feed.offer(&stored(5), None), Offer::Send);
        assert_eq!(
            feed.offer(&stored(1), None),
            Offer::Send,
            "a repeat goes out"
        );
        assert_eq!(feed.last(), Some(&MsgId::new("e-4")), "and moves nothing");
        assert_eq!(
            feed.apply_page(S, Token(2), vec![], false, &any, &mut out),
            Applied::Stale
        );
    }

    #[test]
    fn live_feed_copies_at_or_below_the_mark_are_dropped() {
        let mut feed = Feed::reading(Token(1));
        // a copy of a message the page holds, and one stored after the read
        feed.offer(&stored(2), Some(&by_number));
        feed.offer(&stored(3), Some(&by_number));
        let mut out = Vec::new();
        let page = vec![stored(1), stored(2)];
        feed.apply_page(S, Token(1), page, false, &by_number, &mut out);
        assert_eq!(out.len(), 3);
        // a late copy of a replayed message, then a new one
        assert_eq!(feed.offer(&stored(2), Some(&by_number)), Offer::Kept);
        assert_eq!(feed.offer(&stored(4), Some(&by_number)), Offer::Send);
        // catch-up: held while reading, the page's messages not sent twice
        assert!(feed.catch_up(Token(5)));
        assert!(!feed.catch_up(Token(6)));
        assert_eq!(feed.offer(&stored(6), Some(&by_number)), Offer::Kept);
        out.clear();
        let page = vec![stored(5), stored(6)];
        feed.apply_page(S, Token(5), page, false, &by_number, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(feed.last(), Some(&MsgId::new("e-6")));
    }

    #[test]
    fn one_pause_outstanding_and_round_robin() {
        let mut r = Replays::default();
        assert!(!r.poll_paused());
        assert_eq!(r.resume(), None);
        r.push(Sub::Inbox);
        r.push(Sub::Room(Name::parse("room", "a").unwrap()));
        assert!(r.poll_paused());
        assert!(!r.poll_paused());
        assert_eq!(r.resume(), Some(Sub::Inbox));
        assert_eq!(r.resume(), None);
        r.reading(Token(7));
        assert!(!r.poll_paused());
        r.page_done(Token(6));
        assert!(!r.poll_paused());
        r.page_done(Token(7));
        assert!(r.poll_paused());
        assert!(matches!(r.resume(), Some(Sub::Room(_))));
        assert_eq!(r.waiting(), 0);
    }
}
