//! The broker's side of paged replay (see `replay.rs` for the protocol): reading the next page
//! on `ResumeReplay`, and taking page reads as they complete.

use hermod_core::bus::{Delivery, Event, SessionKey};
use hermod_core::ids::MsgId;

use super::{code_of, error, feed_of, Broker, Pending};
use crate::engine::{Done, Engine, EngineError, Op, Token};
use crate::replay::{Applied, Sub};

/// Which page read a token stands for.
#[derive(Debug)]
pub(super) struct PageOf {
    /// The session replaying.
    pub session: SessionKey,
    /// Which of its subscriptions.
    pub sub: Sub,
    /// The page read on attach or join (a join's first page is answered with `Joined` before
    /// it), rather than one read on `ResumeReplay`.
    pub first: bool,
}

impl<E: Engine> Broker<E> {
    /// `ResumeReplay`: reads the next page of the replay whose turn it is. Ignored for an unknown
    /// session, or when no `ReplayPaused` is outstanding.
    pub(super) fn resume(&mut self, session: SessionKey, now_ms: u64) {
        let page = self.page();
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(sub) = s.replays.resume() else {
            return;
        };
        let token = Token(self.next_token);
        let resumed = feed_of(&mut s.inbox, &mut s.rooms, &sub).and_then(|f| f.resume(token));
        let Some(after) = resumed else {
            // Cannot happen (a left or rejoined room leaves the queue); nothing to read.
            tracing::debug!(%session, ?sub, "resumed replay is not paused");
            return;
        };
        self.next_token = self.next_token.wrapping_add(1);
        s.replays.reading(token);
        let op = match &sub {
            Sub::Inbox => Op::ReadInbox {
                user: s.user.clone(),
                device: s.device.clone(),
                after: Some(after),
                page,
            },
            Sub::Room(room) => Op::ReadRoom {
                room: room.clone(),
                since: Some(after),
                page,
            },
        };
        let pending = Pending::Page(PageOf {
            session,
            sub,
            first: false,
        });
        self.submit_as(token, pending, op, now_ms);
    }

    /// A page read under `token` completed.
    pub(super) fn complete_page(
        &mut self,
        token: Token,
        of: PageOf,
        done: Done,
        out: &mut Vec<Delivery>,
    ) {
        let (messages, more, joined) = match (&of.sub, done) {
            (Sub::Inbox, Done::Inbox { messages, more }) => (messages, more, None),
            (
                Sub::Room(room),
                Done::Room {
                    recovered,
                    messages,
                    more,
                },
            ) => {
                if !of.first && !recovered {
                    let session = of.session;
                    tracing::debug!(%session, %room, "room history trimmed during a paged replay");
                }
                (messages, more, of.first.then_some(recovered))
            }
            _ => {
                let odd = EngineError::Unavailable("engine answered oddly".into());
                return self.fail_page(token, of, &odd, out);
            }
        };
        let PageOf { session, sub, .. } = of;
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.replays.page_done(token);
        let engine = &self.engine;
        let after = |id: &MsgId, mark: &MsgId| engine.is_after(id, mark);
        if let Some(feed) = feed_of(&mut s.inbox, &mut s.rooms, &sub) {
            if let (Some(recovered), Sub::Room(room), true) = (joined, &sub, feed.is_reading(token))
            {
                let room = room.clone();
                let event = Event::Joined { room, recovered };
                out.push(Delivery { session, event });
            }
            if feed.apply_page(session, token, messages, more, &after, out) == Applied::Paused {
                s.replays.push(sub);
            }
        }
        if s.replays.poll_paused() {
            let event = Event::ReplayPaused;
            out.push(Delivery { session, event });
        }
    }

    /// Retries the attach-time inbox reads that failed, for sessions still waiting on them.
    pub(super) fn retry_inbox_reads(&mut self, now_ms: u64) {
        let page = self.page();
        for (session, failed) in std::mem::take(&mut self.retry_inbox) {
            let token = Token(self.next_token);
            let Some(s) = self.sessions.get_mut(&session) else {
                continue;
            };
            if !s.inbox.retarget(failed, token) {
                continue;
            }
            self.next_token = self.next_token.wrapping_add(1);
            let op = Op::ReadInbox {
                user: s.user.clone(),
                device: s.device.clone(),
                after: None,
                page,
            };
            let pending = Pending::Page(PageOf {
                session,
                sub: Sub::Inbox,
                first: true,
            });
            self.submit_as(token, pending, op, now_ms);
        }
    }

    /// A page read failed. A join's first page: the join fails with an error. An attach's first
    /// inbox page, storage unavailable: an error, and the read is retried on the next sweep
    /// (see `retry_inbox`). Any other page:
    /// the session cannot be served in order, so it is closed; the client comes back and
    /// replays from its cursor and `since`. A stale read (the subscription was left or
    /// replaced since) only ends the session's turn.
    pub(super) fn fail_page(
        &mut self,
        token: Token,
        of: PageOf,
        err: &EngineError,
        out: &mut Vec<Delivery>,
    ) {
        let PageOf {
            session,
            sub,
            first,
        } = of;
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.replays.page_done(token);
        let current =
            feed_of(&mut s.inbox, &mut s.rooms, &sub).is_some_and(|f| f.is_reading(token));
        match (current, first, sub) {
            (true, true, Sub::Inbox) if matches!(err, EngineError::Unavailable(_)) => {
                // Stay attached (still `Reading` under this token, holding live messages) and
                // read again on the next sweep.
                self.retry_inbox.push((session, token));
                let text = err.to_string();
                out.push(error(session, None, code_of(err), &text));
            }
            (true, true, Sub::Room(room)) => {
                s.rooms.remove(&room);
                self.unsubscribe_room(&room, session);
                let text = err.to_string();
                out.push(error(session, None, code_of(err), &text));
            }
            (true, _, _) => self.overflow(session, out),
            (false, _, _) => {
                if s.replays.poll_paused() {
                    let event = Event::ReplayPaused;
                    out.push(Delivery { session, event });
                }
            }
        }
    }
}
