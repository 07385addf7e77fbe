//! The broker proper: sessions, subscriptions and fan-out over an [`Engine`]. Sans-io: requests
//! and the time go in, deliveries come out; no clock, no threads. Replays are paged under flow
//! control (`replay.rs`).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashMap, HashSet};

use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::protocol::ErrorCode;
use serde_json::value::RawValue;

use crate::engine::{Channel, Done, Engine, EngineError, Op, Page, Stored, Token};
use crate::replay::{message, Feed, Offer, Replays, Sub};

mod live;
mod paging;
mod queries;

use crate::limits::Limits;
use paging::PageOf;
use queries::Bans;

/// Rooms one session may be in at once. Room names are the client's choice; without a cap one
/// session could make the broker track any number of memberships.
pub const MAX_ROOMS_PER_SESSION: usize = 1024;

/// An attached session.
#[derive(Debug)]
struct Session {
    /// Whose inbox this session reads, and in whose name it sends.
    user: Name,
    /// Which cursor of the inbox it reads and moves.
    device: Name,
    /// Its inbox subscription.
    inbox: Feed,
    /// The rooms it joined.
    rooms: HashMap<Name, Feed>,
    /// Its paused replays, waiting for `ResumeReplay`.
    replays: Replays,
}

impl Session {
    fn new(user: Name, device: Name, inbox: Feed) -> Self {
        Session {
            user,
            device,
            inbox,
            rooms: HashMap::new(),
            replays: Replays::default(),
        }
    }
}

/// The feed of `sub` among a session's subscriptions (a free function so that the caller keeps
/// the session's other fields borrowable).
fn feed_of<'a>(
    inbox: &'a mut Feed,
    rooms: &'a mut HashMap<Name, Feed>,
    sub: &Sub,
) -> Option<&'a mut Feed> {
    match sub {
        Sub::Inbox => Some(inbox),
        Sub::Room(room) => rooms.get_mut(room),
    }
}

/// What the broker remembers about an operation until the engine completes it.
#[derive(Debug)]
enum Pending {
    /// A send or publish: answer `Sent` to `session`, fan out to `channel`'s subscribers.
    Append {
        session: SessionKey,
        cid: Cid,
        channel: Channel,
    },
    /// An ack: only a failure is answered.
    Ack { session: SessionKey },
    /// A page of a replay.
    Page(PageOf),
    /// A history read for `session`, answered with `cid`; `from_oldest` when it had no
    /// `since`.
    History {
        session: SessionKey,
        cid: Cid,
        from_oldest: bool,
    },
}

/// The message processor: takes [`Request`]s, answers with [`Delivery`]s.
#[derive(Debug)]
pub struct Broker<E: Engine> {
    /// Storage.
    engine: E,
    /// Retention and dedupe bounds (the engine has its own copy; kept for introspection).
    limits: Limits,
    /// Attached sessions.
    sessions: HashMap<SessionKey, Session>,
    /// User -> their attached sessions (all devices): who gets a new direct message live.
    inbox_subs: HashMap<Name, Vec<SessionKey>>,
    /// Room -> member sessions: who gets a new room message live.
    room_subs: HashMap<Name, HashSet<SessionKey>>,
    /// Operations submitted to the engine and not yet completed.
    pending: HashMap<Token, Pending>,
    /// The next operation token.
    next_token: u64,
    /// Sessions whose attach-time inbox read failed (storage unavailable), with the token of
    /// the failed read: the read is retried on every sweep while the session stays attached
    /// (live messages are held meanwhile, as during any read), so a client that connects
    /// during an outage gets its backlog once storage is back instead of being closed.
    retry_inbox: Vec<(SessionKey, Token)>,
    /// The latest `now_ms` handed in: stamps the catch-up reads started from
    /// `poll_completions`, which gets no clock.
    now_ms: u64,
    /// Users whose new sessions are refused for a while (`Kick` with a ban).
    bans: Bans,
}

impl<E: Engine> Broker<E> {
    pub fn new(engine: E, limits: Limits) -> Self {
        Broker {
            engine,
            limits,
            sessions: HashMap::new(),
            inbox_subs: HashMap::new(),
            room_subs: HashMap::new(),
            pending: HashMap::new(),
            next_token: 0,
            retry_inbox: Vec::new(),
            now_ms: 0,
            bans: Bans::default(),
        }
    }

    /// The storage engine (tests and metrics).
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The storage engine, for its driver (the broker loop pumps its Redis client core).
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    /// The bounds this broker was built with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of attached sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of `session`'s replays paused and waiting for `ResumeReplay` (tests and metrics).
    pub fn paused_replays(&self, session: SessionKey) -> usize {
        self.sessions
            .get(&session)
            .map_or(0, |s| s.replays.waiting())
    }

    /// Whether `session` is attached.
    pub fn is_attached(&self, session: SessionKey) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Applies one request at `now_ms` (unix ms); deliveries it causes are appended to `out`.
    pub fn handle(&mut self, req: Request, now_ms: u64, out: &mut Vec<Delivery>) {
        self.now_ms = now_ms;
        match req {
            Request::Attach {
                session,
                user,
                device,
            } => match self.bans.reason(&user, now_ms) {
                Some(reason) => {
                    let event = Event::Kicked {
                        reason: reason.to_owned(),
                    };
                    out.push(Delivery { session, event });
                }
                None => self.attach(session, user, device, now_ms),
            },
            Request::Detach { session } => self.detach(session),
            Request::Send {
                session,
                cid,
                to,
                data,
            } => self.append(session, cid, Channel::Inbox(to), data, now_ms, out),
            Request::Publish {
                session,
                cid,
                room,
                data,
            } => self.append(session, cid, Channel::Room(room), data, now_ms, out),
            Request::Ack { session, id } => self.ack(session, id, now_ms),
            Request::Join {
                session,
                room,
                since,
            } => self.join(session, room, since, now_ms, out),
            Request::Leave { session, room } => self.leave(session, room, out),
            Request::ResumeReplay { session } => self.resume(session, now_ms),
            query @ (Request::History { .. }
            | Request::Presence { .. }
            | Request::Online { .. }
            | Request::Kick { .. }) => self.query(query, now_ms, out),
        }
        self.poll_completions(out);
    }

    /// Collects whatever the engine finished, and what its live feed reports (`live.rs`).
    /// `handle` calls it; an asynchronous engine's driver also calls it when replies arrive.
    pub fn poll_completions(&mut self, out: &mut Vec<Delivery>) {
        loop {
            let mut progressed = false;
            while let Some((token, result)) = self.engine.poll_completion() {
                progressed = true;
                if let Some(pending) = self.pending.remove(&token) {
                    self.complete(token, pending, result, out);
                }
            }
            while let Some(live) = self.engine.poll_live() {
                progressed = true;
                self.on_live(live, out);
            }
            if !progressed {
                break;
            }
        }
    }

    /// Retention and dedupe expiry; drops empty channels nobody is subscribed to.
    pub fn sweep(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let inbox_subs = &self.inbox_subs;
        let room_subs = &self.room_subs;
        let in_use = |ch: &Channel| match ch {
            Channel::Inbox(user) => inbox_subs.contains_key(user),
            Channel::Room(room) => room_subs.contains_key(room),
        };
        self.engine.sweep(now_ms, &in_use);
        self.bans.sweep(now_ms);
        self.retry_inbox_reads(now_ms);
    }

    fn next_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1);
        token
    }

    fn submit(&mut self, pending: Pending, op: Op, now_ms: u64) {
        let token = self.next_token();
        self.submit_as(token, pending, op, now_ms);
    }

    fn submit_as(&mut self, token: Token, pending: Pending, op: Op, now_ms: u64) {
        self.pending.insert(token, pending);
        self.engine.submit(token, op, now_ms);
    }

    /// The size of one replay page.
    fn page(&self) -> Page {
        Page {
            max_messages: self.limits.replay_page_messages,
            max_bytes: self.limits.replay_page_bytes,
        }
    }

    /// The user of an attached session. An unknown session is answered with an error when the
    /// request carries a `cid` (the client can match it), and otherwise ignored.
    fn user_of(
        &self,
        session: SessionKey,
        cid: Option<&Cid>,
        out: &mut Vec<Delivery>,
    ) -> Option<Name> {
        match self.sessions.get(&session) {
            Some(s) => Some(s.user.clone()),
            None => {
                if let Some(cid) = cid {
                    out.push(error(
                        session,
                        Some(cid.clone()),
                        ErrorCode::BadRequest,
                        "session not attached",
                    ));
                }
                None
            }
        }
    }

    fn append(
        &mut self,
        session: SessionKey,
        cid: Cid,
        channel: Channel,
        data: Box<RawValue>,
        now_ms: u64,
        out: &mut Vec<Delivery>,
    ) {
        let Some(from) = self.user_of(session, Some(&cid), out) else {
            return;
        };
        let op = Op::Append {
            channel: channel.clone(),
            from,
            cid: cid.clone(),
            data,
        };
        let pending = Pending::Append {
            session,
            cid,
            channel,
        };
        self.submit(pending, op, now_ms);
    }

    fn attach(&mut self, session: SessionKey, user: Name, device: Name, now_ms: u64) {
        if self.sessions.contains_key(&session) {
            self.detach(session);
        }
        if !self.inbox_subs.contains_key(&user) {
            // Before the read: the engine reports everything stored after it.
            self.engine.watch(&Channel::Inbox(user.clone()));
        }
        self.inbox_subs
            .entry(user.clone())
            .or_default()
            .push(session);
        let op = Op::ReadInbox {
            user: user.clone(),
            device: device.clone(),
            after: None,
            page: self.page(),
        };
        let token = self.next_token();
        let s = Session::new(user, device, Feed::reading(token));
        self.sessions.insert(session, s);
        let pending = Pending::Page(PageOf {
            session,
            sub: Sub::Inbox,
            first: true,
        });
        self.submit_as(token, pending, op, now_ms);
    }

    /// Removes the session from everything. Its unacked messages stay in the inbox.
    fn detach(&mut self, session: SessionKey) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if let Some(keys) = self.inbox_subs.get_mut(&s.user) {
            keys.retain(|k| *k != session);
            if keys.is_empty() {
                self.inbox_subs.remove(&s.user);
                self.engine.unwatch(&Channel::Inbox(s.user.clone()));
            }
        }
        for room in s.rooms.keys() {
            self.unsubscribe_room(room, session);
        }
    }

    fn unsubscribe_room(&mut self, room: &Name, session: SessionKey) {
        if let Some(members) = self.room_subs.get_mut(room) {
            members.remove(&session);
            if members.is_empty() {
                self.room_subs.remove(room);
                self.engine.unwatch(&Channel::Room(room.clone()));
            }
        }
    }

    fn ack(&mut self, session: SessionKey, id: MsgId, now_ms: u64) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let op = Op::Ack {
            user: s.user.clone(),
            device: s.device.clone(),
            id,
        };
        self.submit(Pending::Ack { session }, op, now_ms);
    }

    fn join(
        &mut self,
        session: SessionKey,
        room: Name,
        since: Option<MsgId>,
        now_ms: u64,
        out: &mut Vec<Delivery>,
    ) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if !s.rooms.contains_key(&room) && s.rooms.len() >= MAX_ROOMS_PER_SESSION {
            out.push(error(
                session,
                None,
                ErrorCode::Forbidden,
                "too many rooms joined",
            ));
            return;
        }
        // A rejoin replaces the subscription: a read still in flight for it becomes stale.
        let token = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1);
        let sub = Sub::Room(room.clone());
        s.replays.forget(&sub);
        s.rooms.insert(room.clone(), Feed::reading(token));
        if !self.room_subs.contains_key(&room) {
            // Before the read: the engine reports everything stored after it.
            self.engine.watch(&Channel::Room(room.clone()));
        }
        self.room_subs
            .entry(room.clone())
            .or_default()
            .insert(session);
        let op = Op::ReadRoom {
            room,
            since,
            page: self.page(),
        };
        let pending = Pending::Page(PageOf {
            session,
            sub,
            first: true,
        });
        self.submit_as(token, pending, op, now_ms);
    }

    fn leave(&mut self, session: SessionKey, room: Name, out: &mut Vec<Delivery>) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.replays.forget(&Sub::Room(room.clone()));
        if s.rooms.remove(&room).is_none() {
            let message = format!("not a member of room {room}");
            out.push(error(session, None, ErrorCode::NotJoined, &message));
            return;
        }
        self.unsubscribe_room(&room, session);
        out.push(Delivery {
            session,
            event: Event::Left { room },
        });
    }

    fn complete(
        &mut self,
        token: Token,
        pending: Pending,
        result: Result<Done, EngineError>,
        out: &mut Vec<Delivery>,
    ) {
        match (pending, result) {
            (
                Pending::Append {
                    session,
                    cid,
                    channel,
                },
                Ok(Done::Appended { id, fresh }),
            ) => {
                if self.sessions.contains_key(&session) {
                    let event = Event::Sent { cid, id };
                    out.push(Delivery { session, event });
                }
                if let Some(msg) = fresh {
                    self.fan_out(&channel, msg, false, out);
                }
            }
            (Pending::Ack { .. }, Ok(Done::Acked)) => {}
            (Pending::Page(of), Ok(done)) => self.complete_page(token, of, done, out),
            (
                Pending::History {
                    session,
                    cid,
                    from_oldest,
                },
                result,
            ) => Self::complete_history((session, cid, from_oldest), result, out),
            (pending, result) => self.fail(token, pending, result.err(), out),
        }
    }

    /// An operation failed (or the engine answered with the wrong kind of result).
    fn fail(
        &mut self,
        token: Token,
        pending: Pending,
        err: Option<EngineError>,
        out: &mut Vec<Delivery>,
    ) {
        let err = err.unwrap_or_else(|| EngineError::Unavailable("engine answered oddly".into()));
        tracing::debug!(?pending, %err, "engine operation failed");
        let code = code_of(&err);
        let text = err.to_string();
        match pending {
            Pending::Append { session, cid, .. } => {
                if self.sessions.contains_key(&session) {
                    out.push(error(session, Some(cid), code, &text));
                }
            }
            Pending::Ack { session } => {
                if self.sessions.contains_key(&session) {
                    out.push(error(session, None, code, &text));
                }
            }
            Pending::Page(of) => self.fail_page(token, of, &err, out),
            Pending::History { session, cid, .. } => {
                out.push(error(session, Some(cid), code, &text));
            }
        }
    }

    /// Delivers a freshly stored message to every subscriber of `channel`: one this broker
    /// stored, or (`live`) one the engine's live feed reported, which a subscriber may have had
    /// from a replay page already (only those after its last id go out).
    fn fan_out(&mut self, channel: &Channel, msg: Stored, live: bool, out: &mut Vec<Delivery>) {
        let subscribers: Vec<SessionKey> = match channel {
            Channel::Inbox(user) => self.inbox_subs.get(user).cloned().unwrap_or_default(),
            Channel::Room(room) => self
                .room_subs
                .get(room)
                .map(|m| m.iter().copied().collect())
                .unwrap_or_default(),
        };
        let mut overflowed = Vec::new();
        let engine = &self.engine;
        let is_after = |id: &MsgId, mark: &MsgId| engine.is_after(id, mark);
        let after = live.then_some(&is_after as crate::replay::After<'_>);
        for key in subscribers {
            let Some(s) = self.sessions.get_mut(&key) else {
                continue;
            };
            let feed = match channel {
                Channel::Inbox(_) => Some(&mut s.inbox),
                Channel::Room(room) => s.rooms.get_mut(room),
            };
            match feed.map(|f| f.offer(&msg, after)) {
                Some(Offer::Send) => out.push(message(key, &msg)),
                Some(Offer::Overflow) => overflowed.push(key),
                Some(Offer::Kept) | None => {}
            }
        }
        for key in overflowed {
            self.overflow(key, out);
        }
    }

    /// Closes a session the broker cannot keep consistent.
    fn overflow(&mut self, session: SessionKey, out: &mut Vec<Delivery>) {
        self.detach(session);
        out.push(Delivery {
            session,
            event: Event::Overflow,
        });
    }
}

/// The error code a client sees for an engine failure.
fn code_of(err: &EngineError) -> ErrorCode {
    match err {
        EngineError::UnknownId => ErrorCode::BadRequest,
        EngineError::Unavailable(_) | EngineError::Full(_) => ErrorCode::Unavailable,
    }
}

fn error(session: SessionKey, cid: Option<Cid>, code: ErrorCode, message: &str) -> Delivery {
    Delivery {
        session,
        event: Event::Error {
            cid,
            code,
            message: message.to_owned(),
        },
    }
}
