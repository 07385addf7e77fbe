//! The broker's message interface: requests in, deliveries out.
//!
//! The gateway (proxy) turns client frames into [`Request`]s and hands them to a broker; the broker
//! answers with [`Delivery`]s addressed to sessions. Embedded, the two sides are joined by channels
//! in one process; later the same messages travel over a link to a `hermod-broker` process.
//! The broker keeps per-session state from [`Request::Attach`] (user, device), so the other
//! requests carry only the session they come from.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::ids::{Cid, MsgId, Name};
use crate::protocol::ErrorCode;

/// One client session, unique in the process: the gateway worker that owns it and the
/// generation-tagged slot it sits in there. A reused slot has a new generation, so a delivery
/// for a closed session can never reach its successor.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub worker: u16,
    pub slot: u32,
    pub generation: u32,
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.worker, self.slot, self.generation)
    }
}

/// Work for the broker, each from one session.
#[derive(Debug)]
pub enum Request {
    /// A session opened for `user` on `device`: deliver every unacked inbox message in order,
    /// then live ones.
    Attach {
        session: SessionKey,
        user: Name,
        device: Name,
    },
    /// The session is gone: drop its subscriptions. Its unacked messages stay in the inbox.
    Detach { session: SessionKey },
    /// Store a direct message for `to`, answer `Sent` (or an error), deliver to `to`'s sessions.
    Send {
        session: SessionKey,
        cid: Cid,
        to: Name,
        data: Box<RawValue>,
    },
    /// Store a room message, answer `Sent`, deliver to every member of the room.
    Publish {
        session: SessionKey,
        cid: Cid,
        room: Name,
        data: Box<RawValue>,
    },
    /// Cumulative ack of the session's inbox, for its device, up to and including `id`.
    Ack { session: SessionKey, id: MsgId },
    /// Join a room, optionally replaying history after `since`.
    Join {
        session: SessionKey,
        room: Name,
        since: Option<MsgId>,
    },
    /// Leave a room.
    Leave { session: SessionKey, room: Name },
    /// Flow control of a replay: the session has written out what it was given after
    /// [`Event::ReplayPaused`] and wants the next page of its backlog.
    ResumeReplay { session: SessionKey },
    /// Read a room's history after `since` (from its oldest retained message without one), at
    /// most `limit` messages, without joining it: answered [`Event::History`] with `cid`.
    History {
        session: SessionKey,
        cid: Cid,
        room: Name,
        since: Option<MsgId>,
        limit: u16,
    },
    /// Who is in a room, on this broker: answered [`Event::Presence`] with `cid` (at most
    /// `limit` members; 0: the count only).
    Presence {
        session: SessionKey,
        cid: Cid,
        room: Name,
        limit: u16,
    },
    /// The devices `user` is connected from, on this broker (a user's sessions are all on one
    /// broker): answered [`Event::Online`] with `cid`.
    Online {
        session: SessionKey,
        cid: Cid,
        user: Name,
    },
    /// Closes a user's sessions ([`Kick`]); answered [`Event::Disconnected`]. Boxed: it is
    /// rare, and every slot of the broker's request queue is as large as the largest request.
    Kick {
        session: SessionKey,
        kick: Box<Kick>,
    },
}

/// Closes `user`'s sessions (one `device`'s, when given) with [`Event::Kicked`] carrying
/// `reason`, and refuses the user's new sessions for `ban_secs` (0: none); answered
/// [`Event::Disconnected`] with `cid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub cid: Cid,
    pub user: Name,
    pub device: Option<Name>,
    pub reason: String,
    pub ban_secs: u32,
}

impl Request {
    /// The session this request comes from.
    pub fn session(&self) -> SessionKey {
        match self {
            Request::Attach { session, .. }
            | Request::Detach { session }
            | Request::Send { session, .. }
            | Request::Publish { session, .. }
            | Request::Ack { session, .. }
            | Request::Join { session, .. }
            | Request::Leave { session, .. }
            | Request::ResumeReplay { session }
            | Request::History { session, .. }
            | Request::Presence { session, .. }
            | Request::Online { session, .. }
            | Request::Kick { session, .. } => *session,
        }
    }

    /// The session field, to rewrite it (a broker maps gateway sessions to its own keys).
    pub fn session_mut(&mut self) -> &mut SessionKey {
        match self {
            Request::Attach { session, .. }
            | Request::Detach { session }
            | Request::Send { session, .. }
            | Request::Publish { session, .. }
            | Request::Ack { session, .. }
            | Request::Join { session, .. }
            | Request::Leave { session, .. }
            | Request::ResumeReplay { session }
            | Request::History { session, .. }
            | Request::Presence { session, .. }
            | Request::Online { session, .. }
            | Request::Kick { session, .. } => session,
        }
    }
}

/// Something for one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub session: SessionKey,
    pub event: Event,
}

/// What the broker tells a session.
#[derive(Debug, Clone)]
pub enum Event {
    /// A `send` or `publish` is stored: `{"op":"sent","cid":C,"id":ID}`.
    Sent { cid: Cid, id: MsgId },
    /// `{"op":"joined","room":R,"recovered":B}`; replayed messages follow as `Message`s.
    Joined { room: Name, recovered: bool },
    /// `{"op":"left","room":R}`.
    Left { room: Name },
    /// `{"op":"error",...}`; the session stays open.
    Error {
        cid: Option<Cid>,
        code: ErrorCode,
        message: String,
    },
    /// A message for the client, already encoded as the JSON text of its `msg` frame. `Bytes` so
    /// that a room fan-out shares one buffer between all members. Always valid UTF-8.
    Message { id: MsgId, frame: Bytes },
    /// The broker cannot keep this session consistent (e.g. its deliveries overflowed): the
    /// gateway closes it with 1008 and the client resumes from its inbox and `since`.
    Overflow,
    /// A replay (inbox backlog on attach, or room history after `since`) has more pages: the
    /// gateway sends [`Request::ResumeReplay`] once the session's outbound queue has drained, so a
    /// long backlog never trips the slow-consumer bound of a client that reads at a normal pace.
    ReplayPaused,
    /// The answer to [`Request::History`]: the `msg` frames, oldest first; `recovered` is false
    /// when the history no longer covers `since`; `more` when messages remain after the last.
    History {
        cid: Cid,
        recovered: bool,
        frames: Vec<Bytes>,
        more: bool,
    },
    /// The answer to [`Request::Presence`]. Boxed, as a rare event larger than the others
    /// (every slot of a worker's mailbox is as large as the largest event).
    Presence(Box<Presence>),
    /// The answer to [`Request::Online`]: the user's devices with a session, each once.
    Online { cid: Cid, devices: Vec<Name> },
    /// The answer to [`Request::Kick`]: how many sessions were told to close.
    Disconnected { cid: Cid, count: u64 },
    /// The server closes this session (`reason` as the server API gave it): the gateway sends
    /// it to the client and closes the session with 4002.
    Kicked { reason: String },
}

/// Who is in a room: `count` sessions, and the (user, device) of at most the asked `limit` of
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub cid: Cid,
    pub room: Name,
    pub count: u64,
    pub members: Vec<(Name, Name)>,
}

/// Longest `reason` of a [`Request::Kick`], in bytes.
pub const MAX_KICK_REASON: usize = 256;
/// Longest ban of a [`Request::Kick`]: one day.
pub const MAX_BAN_SECS: u32 = 86_400;
/// Most members one presence answer lists.
pub const MAX_PRESENCE_MEMBERS: u16 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every slot of the broker's request queue (65,536 of them) and of each worker's mailbox
    /// (16,384) is as large as the largest request or event, and is touched when the queue is
    /// made: rare, large variants are boxed so that they cost nothing there.
    #[test]
    fn requests_and_deliveries_stay_small() {
        eprintln!(
            "Request {} B, Event {} B, Delivery {} B",
            size_of::<Request>(),
            size_of::<Event>(),
            size_of::<Delivery>()
        );
        assert!(size_of::<Request>() <= 64, "{}", size_of::<Request>());
        assert!(size_of::<Delivery>() <= 72, "{}", size_of::<Delivery>());
    }
}
