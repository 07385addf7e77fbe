//! The broker pool, sans-io: which broker serves which session, what to send where, and
//! how sessions move when a broker goes away. The shell (`links_loop.rs`) feeds it requests from the
//! workers, link state changes and broker pushes, and executes the [`Out`]s it queues: commands
//! for a link, deliveries for a worker. No sockets, no clock (time comes in as `now`).
//!
//! Link lifecycle as the pool sees it:
//!
//! ```text
//!   add_link --> Down --link_up--> Up --draining / ATTACH refused DRAINING--> Draining
//!                 ^                 |                                            |
//!                 +---- link_down --+--------------------------------------------+
//!   remove_link: from any state (the registry dropped it)
//! ```
//!
//! Sessions are placed on `Up` links only, by rendezvous hashing on their user. When a link
//! leaves `Up`, each of its sessions is re-homed: ATTACH on its new broker, JOIN of its rooms
//! from the last id seen, the re-send of its in-flight `send`/`publish` (same cid: dedupe makes
//! it safe), then DETACH on the old broker if that link is still connected. With no `Up` link a
//! session waits unplaced and is attached as soon as one comes up.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::protocol::ErrorCode;

use super::placement;
use super::rehome::{room_of, LinkId, Plan, SessionState};
use presence::{attach_probe, Gathers, PROBE_WORKER};

mod presence;

/// What the shell must do.
#[derive(Debug)]
pub enum Out {
    /// Send `request` as a command on `link`.
    Command { link: LinkId, request: Request },
    /// Hand `delivery` to the worker that owns its session.
    Deliver(Delivery),
}

/// A link's state as placement sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected (connecting, backing off).
    Down,
    /// Connected and handshaken: takes new sessions.
    Up,
    /// Connected, but the broker is going away: takes nothing new.
    Draining,
}

/// One broker link.
#[derive(Debug)]
struct LinkInfo {
    /// Its name in the placement hash: the registry entry (`node@addr`) or the `--brokers` address.
    name: String,
    /// Where it stands.
    state: LinkState,
    /// Sessions homed on it (for metrics and tests).
    sessions: usize,
}

/// Counters the shell publishes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Sessions moved off a broker link that went away (re-homed).
    pub rehomed: u64,
    /// Sessions waiting for a live broker.
    pub unplaced: usize,
    /// Sessions known.
    pub sessions: usize,
}

/// A session placed on a link, with what to send there.
#[derive(Debug)]
struct Move {
    /// The session.
    key: SessionKey,
    /// Its new home.
    link: LinkId,
    /// The requests that rebuild it there.
    plan: Plan,
    /// The link it left, if any (detached there if still connected).
    from: Option<LinkId>,
}

/// The gateway's pool of broker links: who serves which session. See the module docs.
#[derive(Debug)]
pub struct BrokerPool {
    /// Every broker link, by id (ids are never reused).
    links: BTreeMap<LinkId, LinkInfo>,
    /// The next link id.
    next_link: u32,
    /// Every attached session of every worker.
    sessions: HashMap<SessionKey, SessionState>,
    /// Requests older than this have been answered `unavailable` by the worker: not re-sent.
    request_timeout: Duration,
    /// Work for the shell, in order.
    out: VecDeque<Out>,
    /// Counters.
    rehomed: u64,
    /// Pushes (per session) dropped because the session is not placed on the link they came
    /// from.
    foreign_pushes: u64,
    /// Room presence requests gathering their answers from every link (`presence.rs`).
    gathers: Gathers,
}

impl BrokerPool {
    /// An empty pool; `request_timeout` is the workers' `--request-timeout`.
    pub fn new(request_timeout: Duration) -> Self {
        BrokerPool {
            links: BTreeMap::new(),
            next_link: 0,
            sessions: HashMap::new(),
            request_timeout,
            out: VecDeque::new(),
            rehomed: 0,
            foreign_pushes: 0,
            gathers: Gathers::default(),
        }
    }

    /// The next thing to do.
    pub fn poll_out(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    /// A new broker link, `Down` until [`BrokerPool::link_up`].
    pub fn add_link(&mut self, name: String) -> LinkId {
        let id = LinkId(self.next_link);
        self.next_link += 1;
        let info = LinkInfo {
            name,
            state: LinkState::Down,
            sessions: 0,
        };
        self.links.insert(id, info);
        id
    }

    /// The link is gone for good: its sessions move.
    pub fn remove_link(&mut self, link: LinkId, now: Instant) {
        self.leave(link, LinkState::Down, now);
        self.links.remove(&link);
        self.link_gone(link);
    }

    /// The link connected and answered HELLO: waiting sessions are placed, and sessions left
    /// on a draining broker (for want of another) move.
    pub fn link_up(&mut self, link: LinkId, now: Instant) {
        let Some(info) = self.links.get_mut(&link) else {
            return;
        };
        info.state = LinkState::Up;
        // The link's probe session, through which room presence is asked (`presence.rs`).
        let request = attach_probe(link);
        self.out.push_back(Out::Command { link, request });
        let mut waiting: Vec<(SessionKey, Option<LinkId>)> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.overflowed)
            .filter_map(|(k, s)| match s.home {
                None => Some((*k, None)),
                Some(home)
                    if self.links.get(&home).map(|l| l.state) == Some(LinkState::Draining) =>
                {
                    Some((*k, Some(home)))
                }
                Some(_) => None,
            })
            .collect();
        waiting.sort();
        let mut moves = Vec::with_capacity(waiting.len());
        for (key, from) in waiting {
            if let Some(old) = from {
                self.unplace(key, old);
            }
            moves.extend(self.place(key, from, now));
        }
        self.dispatch(moves);
    }

    /// The link was lost: its sessions move (nothing is sent to it), and presence requests stop
    /// waiting for it.
    pub fn link_down(&mut self, link: LinkId, now: Instant) {
        self.leave(link, LinkState::Down, now);
        self.link_gone(link);
    }

    /// Presence requests no longer wait for `link`; those complete now are answered.
    fn link_gone(&mut self, link: LinkId) {
        for (session, event) in self.gathers.link_gone(link) {
            self.deliver(session, event);
        }
    }

    /// The broker said it is going away (`draining` push, or `-DRAINING` to an ATTACH): its
    /// sessions move, each detached from it once attached elsewhere.
    pub fn draining(&mut self, link: LinkId, now: Instant) {
        if self.state(link) == Some(LinkState::Up) {
            self.leave(link, LinkState::Draining, now);
        }
    }

    /// A link's state, if it exists.
    pub fn state(&self, link: LinkId) -> Option<LinkState> {
        self.links.get(&link).map(|l| l.state)
    }

    /// A link's name (registry member or address).
    pub fn name(&self, link: LinkId) -> Option<&str> {
        self.links.get(&link).map(|l| l.name.as_str())
    }

    /// Sessions homed on `link`.
    pub fn sessions_on(&self, link: LinkId) -> usize {
        self.links.get(&link).map_or(0, |l| l.sessions)
    }

    /// Links `Up`.
    pub fn links_up(&self) -> usize {
        self.links
            .values()
            .filter(|l| l.state == LinkState::Up)
            .count()
    }

    /// Sessions moved off a broker so far (cheap, unlike [`BrokerPool::stats`]).
    pub fn rehomed(&self) -> u64 {
        self.rehomed
    }

    /// Pushes dropped because their session is placed on another link (or none).
    pub fn foreign_pushes(&self) -> u64 {
        self.foreign_pushes
    }

    /// Counters; walks every session.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            rehomed: self.rehomed,
            unplaced: self
                .sessions
                .values()
                .filter(|s| s.home.is_none() && !s.overflowed)
                .count(),
            sessions: self.sessions.len(),
        }
    }

    /// Where a session is homed (tests, diagnostics).
    pub fn home_of(&self, session: SessionKey) -> Option<LinkId> {
        self.sessions.get(&session).and_then(|s| s.home)
    }

    /// A request from a worker.
    pub fn on_request(&mut self, request: Request, now: Instant) {
        let key = request.session();
        match request {
            Request::Attach { user, device, .. } => {
                if let Some(old) = self.sessions.remove(&key) {
                    self.unhome(key, &old, true);
                }
                self.sessions.insert(key, SessionState::new(user, device));
                let placed = self.place(key, None, now);
                self.dispatch(placed.into_iter().collect());
            }
            Request::Detach { .. } => {
                if let Some(old) = self.sessions.remove(&key) {
                    self.unhome(key, &old, !old.overflowed);
                }
            }
            Request::Presence {
                session,
                cid,
                room,
                limit,
            } => self.gather_presence(session, cid, room, limit),
            request => self.forward(key, request, now),
        }
    }

    /// Any request but Attach/Detach: recorded, then sent to the session's home if it has one.
    fn forward(&mut self, key: SessionKey, request: Request, now: Instant) {
        let Some(state) = self.sessions.get_mut(&key) else {
            return self.refuse(
                key,
                &request,
                "session unknown to the gateway's broker links",
            );
        };
        if state.overflowed {
            return;
        }
        if !state.record(&request, now) {
            return self.refuse(key, &request, "too many requests in flight");
        }
        match (state.home, &request) {
            (Some(link), _) => self.out.push_back(Out::Command { link, request }),
            // No broker: a leave is answered here; sends wait (re-sent once placed, within the
            // request timeout); acks and replay resumes are moot (the attach starts over).
            (None, Request::Leave { room, .. }) => {
                let event = Event::Left { room: room.clone() };
                self.deliver(key, event);
            }
            (None, _) => {}
        }
    }

    /// A room's presence: asked of every connected link through its probe, answered merged.
    fn gather_presence(&mut self, session: SessionKey, cid: Cid, room: Name, limit: u16) {
        if !self.sessions.contains_key(&session) {
            return;
        }
        let links: Vec<LinkId> = self
            .links
            .keys()
            .copied()
            .filter(|l| self.connected(*l))
            .collect();
        let commands = self
            .gathers
            .start((session, cid.clone()), room, limit, links);
        if commands.is_empty() {
            let event = Event::Error {
                cid: Some(cid),
                code: ErrorCode::Unavailable,
                message: "no broker is reachable".to_owned(),
            };
            return self.deliver(session, event);
        }
        for (link, request) in commands {
            self.out.push_back(Out::Command { link, request });
        }
    }

    /// Answers a `send`/`publish` that cannot be taken with `unavailable`.
    fn refuse(&mut self, key: SessionKey, request: &Request, why: &str) {
        let cid = match request {
            Request::Send { cid, .. }
            | Request::Publish { cid, .. }
            | Request::History { cid, .. } => cid.clone(),
            _ => return,
        };
        let event = Event::Error {
            cid: Some(cid),
            code: ErrorCode::Unavailable,
            message: why.to_owned(),
        };
        self.deliver(key, event);
    }

    /// A broker refused a `send`/`publish` command itself (`-ERR`): the client is told now
    /// instead of at its request timeout.
    pub fn command_failed(&mut self, key: SessionKey, cid: &Cid, message: &str) {
        let Some(state) = self.sessions.get_mut(&key) else {
            return;
        };
        state.answered(cid);
        let event = Event::Error {
            cid: Some(cid.clone()),
            code: ErrorCode::Unavailable,
            message: format!("broker refused: {message}"),
        };
        self.deliver(key, event);
    }

    /// An `ev` push from the broker on `link` for one session. A session not placed on that
    /// link is not that broker's business: the push is dropped (and counted).
    pub fn on_event(&mut self, link: LinkId, key: SessionKey, event: Event) {
        if key.worker == PROBE_WORKER {
            if let Event::Presence(p) = event {
                let merged = self.gathers.answer(link, &p.cid, p.count, p.members);
                if let Some((session, merged)) = merged {
                    self.deliver(session, merged);
                }
            }
            return;
        }
        let Some(state) = self.sessions.get_mut(&key) else {
            return;
        };
        if state.home != Some(link) {
            self.foreign_pushes += 1;
            return;
        }
        if !state.overflowed && state.observe(&event, None) {
            self.deliver(key, event);
        }
    }

    /// A `msg` push from the broker on `link`: one frame for several sessions, each getting
    /// the same (shared) bytes; sessions not placed on that link are skipped (and counted).
    pub fn on_message(&mut self, link: LinkId, id: &MsgId, frame: &Bytes, sids: &[SessionKey]) {
        let room = room_of(frame).and_then(|r| Name::parse("room", r).ok());
        for key in sids {
            let Some(state) = self.sessions.get_mut(key) else {
                continue;
            };
            if state.home != Some(link) {
                self.foreign_pushes += 1;
                continue;
            }
            let event = Event::Message {
                id: id.clone(),
                frame: frame.clone(),
            };
            if !state.overflowed && state.observe(&event, room.as_ref()) {
                self.deliver(*key, event);
            }
        }
    }

    /// Whether `key`'s deliveries are being dropped because its worker's mailbox overflowed.
    pub fn is_overflowed(&self, key: SessionKey) -> bool {
        self.sessions.get(&key).is_some_and(|s| s.overflowed)
    }

    /// The worker's mailbox refused a delivery for `key`: as the embedded broker does, the
    /// session is detached from its broker and its deliveries dropped until the worker, told
    /// `Overflow` (by the shell), closes it with 1008 and sends `Detach`.
    pub fn overflowed(&mut self, key: SessionKey) {
        let Some(state) = self.sessions.get_mut(&key) else {
            return;
        };
        if state.overflowed {
            return;
        }
        state.overflowed = true;
        let home = state.home.take();
        if let Some(link) = home {
            self.release(link);
            if self.connected(link) {
                let request = Request::Detach { session: key };
                self.out.push_back(Out::Command { link, request });
            }
        }
    }

    /// Moves every session off `link`, which enters `state`. Sessions of a draining broker stay
    /// on it while no other broker is up (it still serves them).
    fn leave(&mut self, link: LinkId, state: LinkState, now: Instant) {
        let Some(info) = self.links.get_mut(&link) else {
            return;
        };
        info.state = state;
        if state == LinkState::Draining && self.links_up() == 0 {
            return;
        }
        let mut moving: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.home == Some(link))
            .map(|(k, _)| *k)
            .collect();
        moving.sort();
        let mut moves = Vec::with_capacity(moving.len());
        for key in moving {
            self.unplace(key, link);
            moves.extend(self.place(key, Some(link), now));
        }
        self.dispatch(moves);
    }

    /// Takes a session off `link` (counted as re-homed).
    fn unplace(&mut self, key: SessionKey, link: LinkId) {
        if let Some(s) = self.sessions.get_mut(&key) {
            s.home = None;
        }
        self.release(link);
        self.rehomed += 1;
    }

    /// Places a session on the best `Up` link; `from` is the link it leaves. Returns what to
    /// send ([`BrokerPool::dispatch`]); `None` (unplaced) when no link is up.
    fn place(&mut self, key: SessionKey, from: Option<LinkId>, now: Instant) -> Option<Move> {
        let state = self.sessions.get_mut(&key)?;
        let live = self
            .links
            .iter()
            .filter(|(_, l)| l.state == LinkState::Up)
            .map(|(id, l)| (*id, l.name.as_str()));
        let link = placement::pick(placement::placed_as(state.user.as_str()), live)?;
        state.home = Some(link);
        let plan = state.rehome_plan(key, now, self.request_timeout);
        if let Some(info) = self.links.get_mut(&link) {
            info.sessions += 1;
        }
        Some(Move {
            key,
            link,
            plan,
            from,
        })
    }

    /// Sends the plans of sessions placed together: every ATTACH and JOIN first, then every
    /// re-sent request (see [`Plan`]), then the DETACHes from the old links still connected.
    fn dispatch(&mut self, moves: Vec<Move>) {
        let mut resends = Vec::new();
        let mut detaches = Vec::new();
        for m in moves {
            let link = m.link;
            let rebuild = m.plan.rebuild.into_iter();
            self.out
                .extend(rebuild.map(|request| Out::Command { link, request }));
            let resend = m.plan.resend.into_iter();
            resends.extend(resend.map(|request| Out::Command { link, request }));
            detaches.extend(m.from.map(|old| (old, m.key)));
        }
        self.out.extend(resends);
        for (old, session) in detaches {
            if self.connected(old) {
                let request = Request::Detach { session };
                self.out.push_back(Out::Command { link: old, request });
            }
        }
    }

    /// Drops a session from its home (DETACH there when `detach` and the link is connected).
    fn unhome(&mut self, key: SessionKey, state: &SessionState, detach: bool) {
        if let Some(link) = state.home {
            self.release(link);
            if detach && self.connected(link) {
                let request = Request::Detach { session: key };
                self.out.push_back(Out::Command { link, request });
            }
        }
    }

    fn release(&mut self, link: LinkId) {
        if let Some(info) = self.links.get_mut(&link) {
            info.sessions = info.sessions.saturating_sub(1);
        }
    }

    /// Whether commands can be sent on `link`.
    fn connected(&self, link: LinkId) -> bool {
        matches!(self.state(link), Some(LinkState::Up | LinkState::Draining))
    }

    fn deliver(&mut self, session: SessionKey, event: Event) {
        self.out
            .push_back(Out::Deliver(Delivery { session, event }));
    }
}

#[cfg(test)]
mod tests;
