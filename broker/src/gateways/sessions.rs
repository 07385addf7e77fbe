//! [`GatewaySessions`], the gateway links thread's state, sans-io: gateway links, the sessions
//! attached through them, and the way between gateway sids and the broker's own
//! [`SessionKey`]s; it detaches every session of a link that closes or stays silent.
//!
//! A session attached by link `L` under the gateway's sid `g` gets a slot in the sessions slab;
//! its broker key is `{worker: 0, slot, generation}` of that slot, so a delivery for a session
//! that has since detached (its slot reused with a new generation) finds nothing and is dropped.
//!
//! Deliveries are collected per link during a loop turn and encoded at its end
//! ([`GatewaySessions::end_tick`]): message deliveries that share one frame (the same `Bytes`:
//! a room fan-out) become one `msg` push naming every sid, so a room message crosses each link
//! once. A session joins an open group only if nothing else was queued for it after the group
//! opened, so every session still sees its events in the order the broker produced them.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::ids::MsgId;
use hermod_core::link::{
    decode_request, encode_draining, encode_event, encode_message, LinkCommand, LinkError,
    LinkSecret, MAX_SIDS_PER_PUSH,
};
use hermod_core::reactor::slots::{Key, Slots};
use hermod_core::resp::{encode_value, Value};

use super::auth::{gate, Gate, Refusal};
use crate::metrics::Metrics;

/// Most sessions attached through all links at once; more ATTACHes are refused.
pub const MAX_SESSIONS: usize = 1 << 20;

/// Where requests go: the runner's bounded mailbox, seen through what [`GatewaySessions`]
/// needs.
pub trait RequestSink {
    /// Whether a request can be taken now (no control request waiting, mailbox not full).
    fn has_room(&self) -> bool;
    /// Hands over a request; only called after `has_room`.
    fn send(&mut self, req: Request);
    /// Hands over a request that must not be lost (a Detach), queued in order if need be.
    fn send_control(&mut self, req: Request);
}

/// What `handle` did with a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// Answered; go on with the next.
    Done,
    /// The runner's mailbox is full: the request is parked on the link; stop reading it until
    /// [`GatewaySessions::retry_parked`] succeeds.
    Parked,
    /// The link just authenticated: its bounds are now those of an authenticated link.
    Authenticated,
    /// Refused: write what was answered, then close the link (counted by the reason).
    Close(Refusal),
}

/// One push waiting for the end of the turn.
#[derive(Debug)]
enum Item {
    Event {
        sid: SessionKey,
        event: Event,
    },
    Message {
        id: MsgId,
        frame: Bytes,
        sids: Vec<SessionKey>,
    },
}

/// One gateway link. `io` is the shell's part (the socket).
#[derive(Debug)]
pub struct Link<S> {
    /// The shell's socket (or `()` in tests).
    pub io: S,
    /// Bytes to write: replies as commands are handled, pushes at the end of each turn.
    pub out: BytesMut,
    /// When the gateway last sent anything: a link silent past the timeout is closed.
    pub last_heard: Instant,
    /// When it was accepted: one not authenticated by the auth deadline is closed.
    opened: Instant,
    /// It presented the link secret (always true when none is configured).
    authed: bool,
    /// Gateway sid -> our session slot, for the sessions this link attached.
    sids: HashMap<SessionKey, Key>,
    /// Pushes of this turn, in order.
    items: Vec<Item>,
    /// Open `msg` groups of this turn: frame (pointer, length) -> index in `items`.
    groups: HashMap<(usize, usize), usize>,
    /// A request the full mailbox refused; sent before anything else is read.
    parked: Option<Request>,
}

/// One attached session.
#[derive(Debug)]
struct Session {
    /// The link that attached it.
    link: Key,
    /// The gateway's name for it.
    sid: SessionKey,
    /// (turn, item index) of the last push queued for it: it may join only a later group.
    last_item: Option<(u64, usize)>,
}

/// The links, their sessions and the drain state. See the module docs.
pub struct GatewaySessions<S> {
    links: Slots<Link<S>>,
    sessions: Slots<Session>,
    /// Links with pushes queued or replies written this turn.
    dirty: Vec<Key>,
    /// Loop turns, to tell this turn's groups from older ones.
    tick: u64,
    /// Set once: refuse ATTACH, tell every link.
    draining: bool,
    /// For HELLO and INFO.
    node_id: String,
    /// Whether the engine can serve (for INFO).
    redis_up: Arc<dyn Fn() -> bool + Send + Sync>,
    metrics: Arc<Metrics>,
    /// The link secret links must present; `None`: every link is trusted (loopback only).
    secret: Option<LinkSecret>,
}

impl<S> GatewaySessions<S> {
    pub fn new(
        node_id: String,
        redis_up: Arc<dyn Fn() -> bool + Send + Sync>,
        metrics: Arc<Metrics>,
    ) -> Self {
        GatewaySessions {
            links: Slots::default(),
            sessions: Slots::default(),
            dirty: Vec::new(),
            tick: 0,
            draining: false,
            node_id,
            redis_up,
            metrics,
            secret: None,
        }
    }

    /// Links must present `secret` before anything but HELLO/AUTH/PING is served.
    pub fn with_secret(mut self, secret: Option<LinkSecret>) -> Self {
        self.secret = secret;
        self
    }

    /// Whether links must authenticate.
    pub fn requires_auth(&self) -> bool {
        self.secret.is_some()
    }

    /// Whether the link presented the secret (or none is needed).
    pub fn is_authenticated(&self, key: Key) -> bool {
        self.links.get(key).is_some_and(|l| l.authed)
    }

    /// How many links have not authenticated, and the oldest of them.
    pub fn unauthenticated(&self) -> (usize, Option<Key>) {
        let mut count = 0;
        let mut oldest: Option<(Key, Instant)> = None;
        for (key, link) in self.links.iter().filter(|(_, l)| !l.authed) {
            count += 1;
            if oldest.is_none_or(|(_, at)| link.opened < at) {
                oldest = Some((key, link.opened));
            }
        }
        (count, oldest.map(|(key, _)| key))
    }

    /// Links not authenticated `deadline` after they were accepted.
    pub fn unauthenticated_past(&self, now: Instant, deadline: Duration) -> Vec<Key> {
        self.links
            .iter()
            .filter(|(_, l)| !l.authed && now.saturating_duration_since(l.opened) >= deadline)
            .map(|(k, _)| k)
            .collect()
    }

    /// Adds a link; its key's token is the socket's.
    pub fn add_link(&mut self, io: S, now: Instant) -> Key {
        let mut link = Link {
            io,
            out: BytesMut::new(),
            last_heard: now,
            opened: now,
            authed: self.secret.is_none(),
            sids: HashMap::new(),
            items: Vec::new(),
            groups: HashMap::new(),
            parked: None,
        };
        if self.draining {
            encode_draining(&mut link.out);
        }
        let key = self.links.insert(link);
        if self.draining {
            self.dirty.push(key);
        }
        Metrics::set(&self.metrics.links, self.links.len() as u64);
        key
    }

    pub fn link_mut(&mut self, key: Key) -> Option<&mut Link<S>> {
        self.links.get_mut(key)
    }

    /// Every link's key.
    pub fn link_keys(&self) -> Vec<Key> {
        self.links.keys().collect()
    }

    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Removes a link and detaches every session it attached.
    pub fn remove_link(&mut self, key: Key, sink: &mut impl RequestSink) -> Option<Link<S>> {
        let link = self.links.remove(key)?;
        for session_key in link.sids.values() {
            if self.sessions.remove(*session_key).is_some() {
                sink.send_control(Request::Detach {
                    session: broker_key(*session_key),
                });
            }
        }
        self.publish_gauges();
        Some(link)
    }

    /// Links silent since before `now - timeout`.
    pub fn silent_links(&self, now: Instant, timeout: Duration) -> Vec<Key> {
        self.links
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.last_heard) >= timeout)
            .map(|(k, _)| k)
            .collect()
    }

    /// Starts draining: ATTACH is refused from now on and every link is told `draining`.
    pub fn start_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        Metrics::set(&self.metrics.draining, 1);
        let keys = self.link_keys();
        for key in keys {
            if let Some(link) = self.links.get_mut(key) {
                encode_draining(&mut link.out);
                self.dirty.push(key);
            }
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Handles one whole RESP value a link sent.
    pub fn handle(&mut self, key: Key, value: Value, sink: &mut impl RequestSink) -> Handled {
        Metrics::add(&self.metrics.commands, 1);
        let authed = self.is_authenticated(key);
        let cmd = match gate(self.secret.as_ref(), authed, decode_request(value)) {
            Gate::Serve(cmd) => cmd,
            Gate::Authenticated(cmd) => {
                if let Some(link) = self.links.get_mut(key) {
                    link.authed = true;
                }
                let reply = match cmd {
                    LinkCommand::Hello { proto, .. } => self.hello(proto),
                    _ => ok(),
                };
                self.reply(key, &reply);
                return if authed {
                    Handled::Done
                } else {
                    Handled::Authenticated
                };
            }
            Gate::Answer(reply) => {
                self.reply(key, &reply);
                return Handled::Done;
            }
            Gate::Refuse(reply, why) => {
                self.reply(key, &reply);
                return Handled::Close(why);
            }
        };
        let reply = match cmd {
            Ok(LinkCommand::Request(req)) => return self.request(key, req, sink),
            Ok(LinkCommand::Ping { message: None }) => Value::Simple(Bytes::from_static(b"PONG")),
            Ok(LinkCommand::Ping { message: Some(m) }) => Value::Bulk(m),
            Ok(LinkCommand::Hello { proto, .. }) => self.hello(proto),
            // No secret configured: credentials are accepted and ignored.
            Ok(LinkCommand::Auth(_)) => ok(),
            Ok(LinkCommand::Info) => Value::Bulk(Bytes::from(self.info())),
            Err(e) => error(&e),
        };
        self.reply(key, &reply);
        Handled::Done
    }

    /// Sends a parked request if the mailbox has room now.
    pub fn retry_parked(&mut self, key: Key, sink: &mut impl RequestSink) -> Handled {
        match self.links.get_mut(key).and_then(|l| l.parked.take()) {
            Some(req) => self.request(key, req, sink),
            None => Handled::Done,
        }
    }

    /// Whether a link has a parked request.
    #[cfg(test)]
    pub fn is_parked(&self, key: Key) -> bool {
        self.links.get(key).is_some_and(|l| l.parked.is_some())
    }

    fn request(&mut self, key: Key, req: Request, sink: &mut impl RequestSink) -> Handled {
        if !sink.has_room() {
            if let Some(link) = self.links.get_mut(key) {
                link.parked = Some(req);
            }
            return Handled::Parked;
        }
        let reply = match self.map_request(key, req, sink) {
            Ok(Some(req)) => {
                sink.send(req);
                ok()
            }
            Ok(None) => ok(),
            Err(reply) => {
                Metrics::add(&self.metrics.command_errors, 1);
                reply
            }
        };
        self.publish_gauges();
        self.reply(key, &reply);
        Handled::Done
    }

    /// Rewrites a request's session to ours (attaching or detaching as asked); `Ok(None)` when
    /// there is nothing to send, `Err(reply)` when it is refused.
    fn map_request(
        &mut self,
        link_key: Key,
        mut req: Request,
        sink: &mut impl RequestSink,
    ) -> Result<Option<Request>, Value> {
        let sid = req.session();
        let Some(link) = self.links.get_mut(link_key) else {
            return Ok(None);
        };
        let existing = link.sids.get(&sid).copied();
        let session = match &req {
            Request::Attach { .. } => {
                if self.draining {
                    return Err(Value::Error(
                        "DRAINING broker is draining: attach elsewhere".into(),
                    ));
                }
                if let Some(old) = existing {
                    // A re-ATTACH of a live sid: the old session is detached first, in order.
                    self.sessions.remove(old);
                    link.sids.remove(&sid);
                    sink.send_control(Request::Detach {
                        session: broker_key(old),
                    });
                }
                if self.sessions.len() >= MAX_SESSIONS {
                    return Err(Value::Error("ERR too many sessions on this broker".into()));
                }
                let s = self.sessions.insert(Session {
                    link: link_key,
                    sid,
                    last_item: None,
                });
                link.sids.insert(sid, s);
                s
            }
            Request::Detach { .. } => match existing {
                Some(s) => {
                    link.sids.remove(&sid);
                    self.sessions.remove(s);
                    s
                }
                None => return Ok(None),
            },
            _ => existing.ok_or_else(|| Value::Error("ERR unknown sid: ATTACH it first".into()))?,
        };
        *req.session_mut() = broker_key(session);
        Ok(Some(req))
    }

    fn reply(&mut self, key: Key, value: &Value) {
        if let Some(link) = self.links.get_mut(key) {
            encode_value(&mut link.out, value);
            self.dirty.push(key);
        }
    }

    fn hello(&self, proto: Option<u32>) -> Value {
        let proto = proto.unwrap_or(2);
        if proto != 2 && proto != 3 {
            return Value::Error("NOPROTO unsupported protocol version".into());
        }
        let pairs = vec![
            (bulk("server"), bulk("hermod-broker")),
            (bulk("version"), bulk(env!("CARGO_PKG_VERSION"))),
            (bulk("proto"), Value::Int(i64::from(proto))),
            (bulk("node"), Value::Bulk(Bytes::from(self.node_id.clone()))),
            (bulk("role"), bulk("broker")),
        ];
        if proto == 3 {
            Value::Map(pairs)
        } else {
            Value::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
        }
    }

    /// `INFO`: operator text in Redis's `key:value` layout.
    fn info(&self) -> String {
        let mut out = String::with_capacity(256);
        let _ = write!(
            out,
            "# Server\r\nserver:hermod-broker\r\nversion:{}\r\nnode_id:{}\r\n\r\n# Broker\r\n\
             links:{}\r\nsessions:{}\r\ndraining:{}\r\nredis_up:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            self.node_id,
            self.links.len(),
            self.sessions.len(),
            u8::from(self.draining),
            u8::from((self.redis_up)()),
        );
        out
    }

    fn publish_gauges(&self) {
        Metrics::set(&self.metrics.links, self.links.len() as u64);
        Metrics::set(&self.metrics.sessions, self.sessions.len() as u64);
    }

    /// Queues one delivery from the runner on its session's link (dropped if the session is
    /// gone).
    pub fn route(&mut self, delivery: Delivery) {
        let key = Key {
            slot: delivery.session.slot,
            generation: delivery.session.generation,
        };
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(link) = self.links.get_mut(session.link) else {
            return;
        };
        if link.items.is_empty() {
            self.dirty.push(session.link);
        }
        let sid = session.sid;
        let tick = self.tick;
        let after = session
            .last_item
            .filter(|(t, _)| *t == tick)
            .map(|(_, i)| i);
        let index = match delivery.event {
            Event::Message { id, frame } => {
                let group = (frame.as_ptr() as usize, frame.len());
                let joinable = link.groups.get(&group).copied().filter(|g| {
                    after.is_none_or(|a| a < *g)
                        && matches!(&link.items[*g], Item::Message { sids, id: gid, .. }
                            if sids.len() < MAX_SIDS_PER_PUSH && *gid == id)
                });
                match joinable {
                    Some(g) => {
                        if let Item::Message { sids, .. } = &mut link.items[g] {
                            sids.push(sid);
                        }
                        g
                    }
                    None => {
                        link.items.push(Item::Message {
                            id,
                            frame,
                            sids: vec![sid],
                        });
                        link.groups.insert(group, link.items.len() - 1);
                        link.items.len() - 1
                    }
                }
            }
            event => {
                link.items.push(Item::Event { sid, event });
                link.items.len() - 1
            }
        };
        session.last_item = Some((tick, index));
    }

    /// Encodes this turn's pushes and returns the links with something to write.
    pub fn end_tick(&mut self) -> Vec<Key> {
        self.tick += 1;
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let (mut events, mut messages, mut copies) = (0u64, 0u64, 0u64);
        for key in &dirty {
            let Some(link) = self.links.get_mut(*key) else {
                continue;
            };
            link.groups.clear();
            for item in link.items.drain(..) {
                match item {
                    Item::Event { sid, event } => {
                        encode_event(sid, &event, &mut link.out);
                        events += 1;
                    }
                    Item::Message { id, frame, sids } => {
                        encode_message(&id, &frame, &sids, &mut link.out);
                        messages += 1;
                        copies += sids.len() as u64;
                    }
                }
            }
        }
        Metrics::add(&self.metrics.event_pushes, events);
        Metrics::add(&self.metrics.message_pushes, messages);
        Metrics::add(&self.metrics.message_deliveries, copies);
        dirty.retain(|k| self.links.get(*k).is_some_and(|l| !l.out.is_empty()));
        dirty
    }
}

/// The broker-side key of a session slot.
fn broker_key(key: Key) -> SessionKey {
    SessionKey {
        worker: 0,
        slot: key.slot,
        generation: key.generation,
    }
}

fn ok() -> Value {
    Value::Simple(Bytes::from_static(b"OK"))
}

fn bulk(s: &'static str) -> Value {
    Value::Bulk(Bytes::from_static(s.as_bytes()))
}

fn error(e: &LinkError) -> Value {
    Value::Error(Bytes::from(format!("ERR {e}")))
}
