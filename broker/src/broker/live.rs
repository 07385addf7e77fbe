//! Cross-broker live fan-out: what an engine shared by several brokers reports about the
//! channels this broker's sessions watch ([`Live`]).
//!
//! With such an engine (Redis with `publish`), every message stored in a channel, by this broker
//! or another, comes back through the engine's live feed, in storage order; the broker's own
//! appends are *not* fanned out from their completion (`Done::Appended::fresh` is `None`), so a
//! channel's live messages reach a session through one ordered stream only.
//!
//! Exactly once, in order, per session and channel:
//! - the broker asks the engine to watch a channel *before* submitting the first read of it
//!   (attach, join), and the engine does not let that read run before the watch is in place: a
//!   message stored after the read is reported live; one stored between the watch and the read
//!   is both in the page and reported live.
//! - each subscription keeps the id of the last message it delivered (`Feed::last`); a live
//!   message at or below it is such a copy and is dropped ([`Engine::is_after`]). Ids compare
//!   within an epoch; a message of a later epoch (a new history: the channel expired and came
//!   back, or a failover rolled it back) counts as after, one of an earlier epoch as before.
//! - while a page read is in flight, live messages are held and sent after the page (those not
//!   in it and after its last id); while a replay is paused they are left to its next page.
//! - when the engine's watch was lost and is back ([`Live::Resumed`]), messages stored meanwhile
//!   were never reported: every live subscription of the channel reads again after its last id
//!   (a catch-up read, paged like a replay), holding live messages meanwhile. A subscription
//!   that delivered nothing yet reads from the engine's `since` (a room; an inbox reads from the
//!   device's cursor). A catch-up read that fails closes the session (`Overflow`): the client
//!   reconnects and resumes from its cursor and `since`, as after any failed later page.

use hermod_core::bus::{Delivery, SessionKey};

use super::paging::PageOf;
use super::{Broker, Pending};
use crate::engine::{Channel, Engine, Live, Op, Token};
use crate::replay::Sub;

impl<E: Engine> Broker<E> {
    /// One report of the engine's live feed.
    pub(super) fn on_live(&mut self, live: Live, out: &mut Vec<Delivery>) {
        match live {
            Live::Message { channel, msg } => self.fan_out(&channel, msg, true, out),
            Live::Resumed { channel, since } => {
                for session in self.watchers(&channel) {
                    self.catch_up(session, &channel, since.as_ref());
                }
            }
        }
    }

    /// The local sessions watching `channel`.
    fn watchers(&self, channel: &Channel) -> Vec<SessionKey> {
        match channel {
            Channel::Inbox(user) => self.inbox_subs.get(user).cloned().unwrap_or_default(),
            Channel::Room(room) => self
                .room_subs
                .get(room)
                .map(|m| m.iter().copied().collect())
                .unwrap_or_default(),
        }
    }

    /// Reads `session`'s subscription to `channel` again after the last id it delivered, if it
    /// is live (a read in flight or a paused replay reads after it anyway).
    fn catch_up(
        &mut self,
        session: SessionKey,
        channel: &Channel,
        since: Option<&hermod_core::ids::MsgId>,
    ) {
        let page = self.page();
        let token = Token(self.next_token);
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let (sub, feed) = match channel {
            Channel::Inbox(_) => (Sub::Inbox, Some(&mut s.inbox)),
            Channel::Room(room) => (Sub::Room(room.clone()), s.rooms.get_mut(room)),
        };
        let Some(feed) = feed else {
            return;
        };
        let op = match (&sub, feed.last()) {
            (Sub::Inbox, after) => Op::ReadInbox {
                user: s.user.clone(),
                device: s.device.clone(),
                after: after.cloned(),
                page,
            },
            (Sub::Room(room), last) => match last.or(since) {
                Some(since) => Op::ReadRoom {
                    room: room.clone(),
                    since: Some(since.clone()),
                    page,
                },
                None => {
                    tracing::warn!(%session, %room, "no position to catch up from: a gap is possible");
                    return;
                }
            },
        };
        if !feed.catch_up(token) {
            return;
        }
        self.next_token = self.next_token.wrapping_add(1);
        let pending = Pending::Page(PageOf {
            session,
            sub,
            first: false,
        });
        let now_ms = self.now_ms;
        self.submit_as(token, pending, op, now_ms);
    }
}
