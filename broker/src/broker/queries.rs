//! What the server API asks the broker besides writes: a room's history without joining it,
//! who is in a room, a user's devices online, and closing a user's sessions (with an optional
//! ban on new ones). Presence and online are this broker's own view: with the embedded broker
//! that is every session of the process; in a broker tier a user's sessions are all on one
//! broker (placement by user), a room's members are not.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashMap, HashSet};

use hermod_core::bus::{
    Delivery, Event, Kick, Presence, Request, SessionKey, MAX_PRESENCE_MEMBERS,
};
use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::link::MAX_HISTORY_FRAMES;

use super::{code_of, error, Broker, Pending};
use crate::engine::{Done, Engine, EngineError, Op, Page};

/// Most bytes of frames one history answer carries (it holds at least one message).
pub const MAX_HISTORY_BYTES: usize = 1 << 20;

/// A position no engine issues: a read after it starts at the oldest retained message (every
/// engine reads from there when `since` is not one of its positions).
const OLDEST: &str = "0";

/// Most users banned at once; past it expired bans are dropped, then new bans are refused.
pub const MAX_BANS: usize = 100_000;

/// Users whose new sessions are refused until a time (unix ms), with the reason they are told.
#[derive(Debug, Default)]
pub struct Bans {
    until: HashMap<Name, (u64, String)>,
}

impl Bans {
    /// The reason `user` is banned at `now_ms`, if they are.
    pub fn reason(&self, user: &Name, now_ms: u64) -> Option<&str> {
        self.until
            .get(user)
            .filter(|(until, _)| *until > now_ms)
            .map(|(_, reason)| reason.as_str())
    }

    /// Bans `user` until `until_ms`; false when the table is full.
    pub fn ban(&mut self, user: Name, until_ms: u64, reason: String, now_ms: u64) -> bool {
        if self.until.len() >= MAX_BANS && !self.until.contains_key(&user) {
            self.until.retain(|_, (until, _)| *until > now_ms);
            if self.until.len() >= MAX_BANS {
                return false;
            }
        }
        self.until.insert(user, (until_ms, reason));
        true
    }

    /// Forgets the bans that ended.
    pub fn sweep(&mut self, now_ms: u64) {
        self.until.retain(|_, (until, _)| *until > now_ms);
    }
}

impl<E: Engine> Broker<E> {
    /// One of the server API's requests: `History`, `Presence`, `Online` or `Kick` (others
    /// are ignored: `handle` sends only these here).
    pub(super) fn query(&mut self, req: Request, now_ms: u64, out: &mut Vec<Delivery>) {
        match req {
            Request::History {
                session,
                cid,
                room,
                since,
                limit,
            } => self.history(session, cid, room, since, limit, now_ms),
            Request::Presence {
                session,
                cid,
                room,
                limit,
            } => out.push(self.presence(session, cid, room, limit)),
            Request::Online { session, cid, user } => out.push(self.online(session, cid, &user)),
            Request::Kick { session, kick } => self.kick(session, *kick, now_ms, out),
            _ => {}
        }
    }

    /// `Presence`: the room's sessions on this broker, and (user, device) of at most `limit`.
    pub(super) fn presence(
        &self,
        session: SessionKey,
        cid: Cid,
        room: Name,
        limit: u16,
    ) -> Delivery {
        let members = self.room_subs.get(&room);
        let count = members.map_or(0, |m| m.len() as u64);
        let limit = usize::from(limit.min(MAX_PRESENCE_MEMBERS));
        let mut seen = HashSet::new();
        let listed = members
            .into_iter()
            .flatten()
            .filter_map(|key| self.sessions.get(key))
            .map(|s| (s.user.clone(), s.device.clone()))
            .filter(|pair| seen.insert(pair.clone()))
            .take(limit)
            .collect();
        let event = Event::Presence(Box::new(Presence {
            cid,
            room,
            count,
            members: listed,
        }));
        Delivery { session, event }
    }

    /// `Online`: the devices `user` has a session from on this broker, each once.
    pub(super) fn online(&self, session: SessionKey, cid: Cid, user: &Name) -> Delivery {
        let mut devices: Vec<Name> = self
            .inbox_subs
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|key| self.sessions.get(key))
            .map(|s| s.device.clone())
            .collect();
        devices.sort();
        devices.dedup();
        devices.truncate(MAX_PRESENCE_MEMBERS as usize);
        Delivery {
            session,
            event: Event::Online { cid, devices },
        }
    }

    /// `Kick`: every session of `user` (of `device`, when given) is told to close; with a ban,
    /// the user's next attaches are refused the same way until it ends.
    pub(super) fn kick(
        &mut self,
        session: SessionKey,
        kick: Kick,
        now_ms: u64,
        out: &mut Vec<Delivery>,
    ) {
        let targets: Vec<SessionKey> = self
            .inbox_subs
            .get(&kick.user)
            .into_iter()
            .flatten()
            .copied()
            .filter(|key| {
                self.sessions
                    .get(key)
                    .is_some_and(|s| kick.device.as_ref().is_none_or(|d| *d == s.device))
            })
            .collect();
        for key in &targets {
            let reason = kick.reason.clone();
            out.push(Delivery {
                session: *key,
                event: Event::Kicked { reason },
            });
            // Gone from presence and online now, not once its close handshake ends; what it
            // did not ack waits in its inbox.
            self.detach(*key);
        }
        if kick.ban_secs > 0 {
            let until = now_ms.saturating_add(u64::from(kick.ban_secs) * 1000);
            if !self.bans.ban(kick.user.clone(), until, kick.reason, now_ms) {
                tracing::warn!(user = %kick.user, "ban table full: ban not recorded");
            }
        }
        let event = Event::Disconnected {
            cid: kick.cid,
            count: targets.len() as u64,
        };
        out.push(Delivery { session, event });
    }

    /// `History`: one page of the room's history after `since` (without it, from the oldest
    /// retained message, answered `recovered`), answered to `session` with `cid` (the session
    /// need not be a member, nor attached).
    fn history(
        &mut self,
        session: SessionKey,
        cid: Cid,
        room: Name,
        since: Option<MsgId>,
        limit: u16,
        now_ms: u64,
    ) {
        let max = usize::from(limit);
        let page = Page {
            max_messages: max.clamp(1, MAX_HISTORY_FRAMES),
            max_bytes: MAX_HISTORY_BYTES,
        };
        let from_oldest = since.is_none();
        let since = Some(since.unwrap_or_else(|| MsgId::new(OLDEST)));
        let op = Op::ReadRoom { room, since, page };
        let pending = Pending::History {
            session,
            cid,
            from_oldest,
        };
        self.submit(pending, op, now_ms);
    }

    /// A history read finished.
    pub(super) fn complete_history(
        (session, cid, from_oldest): (SessionKey, Cid, bool),
        result: Result<Done, EngineError>,
        out: &mut Vec<Delivery>,
    ) {
        let event = match result {
            Ok(Done::Room {
                recovered,
                messages,
                more,
            }) => Event::History {
                cid,
                recovered: recovered || from_oldest,
                frames: messages.into_iter().map(|m| m.frame).collect(),
                more,
            },
            Ok(_) => {
                let err = EngineError::Unavailable("engine answered oddly".into());
                return out.push(error(session, Some(cid), code_of(&err), &err.to_string()));
            }
            Err(err) => {
                return out.push(error(session, Some(cid), code_of(&err), &err.to_string()));
            }
        };
        out.push(Delivery { session, event });
    }
}
