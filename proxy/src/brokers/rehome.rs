//! What the broker pool remembers of one session so that it can move it to another broker:
//! identity, rooms with the last message id seen in each, and the `send`/`publish` requests still
//! waiting for their `sent`. Pure state, no I/O: [`SessionState::rehome_plan`] lists the requests
//! that rebuild the session on a broker that has never seen it.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hermod_core::bus::{Event, Request, SessionKey};
use hermod_core::ids::{self, Cid, MsgId, Name};
use serde_json::value::RawValue;

/// Rooms remembered per session: the broker's own limit (1024 rooms per session), so a join it
/// refuses is not replayed on every re-home beyond it.
pub const MAX_ROOMS: usize = 1024;
/// Requests remembered in flight per session: the worker's own bound (`ws::protocol::MAX_IN_FLIGHT`).
pub const MAX_IN_FLIGHT: usize = crate::ws::protocol::MAX_IN_FLIGHT;

/// The broker a session is homed on: an id the pool gives each broker link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u32);

/// A `send` or `publish` awaiting its `sent` (or error).
#[derive(Debug)]
pub struct InFlight {
    /// The client's id for it: re-sent with the same one, so the broker's dedupe stores it once.
    pub cid: Cid,
    /// Where it goes.
    pub target: Target,
    /// The payload, kept to re-send it (a copy: the original went to the first broker).
    pub data: Box<RawValue>,
    /// When the worker sent it: past the request timeout the client has had `unavailable`, and
    /// a re-send would only surprise it.
    pub at: Instant,
}

/// The destination of an in-flight request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A direct message to this user (`send`).
    User(Name),
    /// A room message (`publish`).
    Room(Name),
}

/// One joined room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomState {
    /// The last message id the session saw in the room (or the `since` it joined with): where a
    /// re-join resumes.
    pub last: Option<MsgId>,
    /// Whether the client has had its `joined`: a later `joined` comes from a re-join and is
    /// not passed on (unless the history no longer covers the gap: `recovered: false`).
    pub confirmed: bool,
}

/// A session as the pool knows it.
#[derive(Debug)]
pub struct SessionState {
    /// The authenticated user: placement key and ATTACH argument.
    pub user: Name,
    /// The device, whose inbox cursor an ATTACH resumes from.
    pub device: Name,
    /// The broker serving it; `None` while no broker is live (or after an overflow).
    pub home: Option<LinkId>,
    /// Joined rooms (at most [`MAX_ROOMS`]).
    pub rooms: HashMap<Name, RoomState>,
    /// `send`/`publish` without an answer yet, oldest first (at most [`MAX_IN_FLIGHT`]).
    pub in_flight: VecDeque<InFlight>,
    /// Its deliveries overflowed the worker's mailbox: it is detached from its broker and
    /// waits for the worker's `Detach`; its requests are ignored meanwhile.
    pub overflowed: bool,
}

impl SessionState {
    /// A new session, not placed yet.
    pub fn new(user: Name, device: Name) -> Self {
        SessionState {
            user,
            device,
            home: None,
            rooms: HashMap::new(),
            in_flight: VecDeque::new(),
            overflowed: false,
        }
    }

    /// Records what a request changes (before it is sent, so that a broker dying right after
    /// still finds it to re-send). Returns false for a `send`/`publish` that cannot be tracked
    /// (too many in flight: the worker bounds this too, so it does not happen in practice).
    pub fn record(&mut self, request: &Request, now: Instant) -> bool {
        match request {
            Request::Send { cid, to, data, .. } => {
                self.track(cid, Target::User(to.clone()), data, now)
            }
            Request::Publish {
                cid, room, data, ..
            } => self.track(cid, Target::Room(room.clone()), data, now),
            Request::Join { room, since, .. } => {
                if self.rooms.len() < MAX_ROOMS || self.rooms.contains_key(room) {
                    let state = RoomState {
                        last: since.clone(),
                        confirmed: false,
                    };
                    self.rooms.insert(room.clone(), state);
                }
                true
            }
            Request::Leave { room, .. } => {
                self.rooms.remove(room);
                true
            }
            _ => true,
        }
    }

    fn track(&mut self, cid: &Cid, target: Target, data: &RawValue, now: Instant) -> bool {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return false;
        }
        self.in_flight.push_back(InFlight {
            cid: cid.clone(),
            target,
            data: data.to_owned(),
            at: now,
        });
        true
    }

    /// Looks at an event on its way to the client: updates the state, and says whether the
    /// client should see it (a re-join's `joined` should not).
    pub fn observe(&mut self, event: &Event, room_of_message: Option<&Name>) -> bool {
        match event {
            Event::Sent { cid, .. } | Event::Error { cid: Some(cid), .. } => {
                self.answered(cid);
                true
            }
            Event::Joined { room, recovered } => match self.rooms.get_mut(room) {
                Some(state) if state.confirmed => !recovered,
                Some(state) => {
                    state.confirmed = true;
                    true
                }
                None => true,
            },
            Event::Message { id, .. } => {
                if let Some(state) = room_of_message.and_then(|r| self.rooms.get_mut(r)) {
                    state.last = Some(id.clone());
                }
                true
            }
            _ => true,
        }
    }

    /// Forgets the in-flight request `cid` (answered).
    pub fn answered(&mut self, cid: &Cid) {
        if let Some(pos) = self.in_flight.iter().position(|f| &f.cid == cid) {
            self.in_flight.remove(pos);
        }
    }

    /// The requests that rebuild this session on a broker that does not know it: ATTACH (the
    /// inbox then replays from the device's cursor), JOIN of every room from the last id seen,
    /// and every `send`/`publish` still in flight and younger than `timeout`, with its cid.
    pub fn rehome_plan(&mut self, session: SessionKey, now: Instant, timeout: Duration) -> Plan {
        self.in_flight
            .retain(|f| now.saturating_duration_since(f.at) < timeout);
        let mut rebuild = Vec::with_capacity(1 + self.rooms.len());
        rebuild.push(Request::Attach {
            session,
            user: self.user.clone(),
            device: self.device.clone(),
        });
        let mut rooms: Vec<_> = self.rooms.iter().collect();
        rooms.sort_by(|a, b| a.0.cmp(b.0));
        rebuild.extend(rooms.into_iter().map(|(room, state)| Request::Join {
            session,
            room: room.clone(),
            since: state.last.clone(),
        }));
        let resend = self.in_flight.iter().map(|f| resend(session, f)).collect();
        Plan { rebuild, resend }
    }
}

/// What moves a session to a broker, in two parts: when several sessions move at once, every
/// `rebuild` goes before any `resend`, so that a re-sent message finds every moving member of
/// its room (or its recipient) attached and joined on the new broker already.
#[derive(Debug, Default)]
pub struct Plan {
    /// ATTACH, then a JOIN per room.
    pub rebuild: Vec<Request>,
    /// The in-flight `send`/`publish` requests, oldest first.
    pub resend: Vec<Request>,
}

/// The request that re-sends `f`.
fn resend(session: SessionKey, f: &InFlight) -> Request {
    let cid = f.cid.clone();
    let data = f.data.clone();
    match &f.target {
        Target::User(to) => Request::Send {
            session,
            cid,
            to: to.clone(),
            data,
        },
        Target::Room(room) => Request::Publish {
            session,
            cid,
            room: room.clone(),
            data,
        },
    }
}

/// The room of a `msg` frame as the broker encodes it (`{"op":"msg","id":..,"from":..,"room":R,
/// "data":..}`), `None` for a direct message (`"to"`) or anything else. The target field comes
/// before `data`, and a JSON string cannot hold a bare `"`, so the first `,"room":"` or `,"to":"`
/// is the real field: the payload cannot fake it. Only the head of the frame is searched (the
/// id and the sender name before the target are short), so a large payload costs nothing.
pub fn room_of(frame: &[u8]) -> Option<&str> {
    const ROOM: &[u8] = b",\"room\":\"";
    const TO: &[u8] = b",\"to\":\"";
    let head = &frame[..frame.len().min(TARGET_WITHIN)];
    let room_at = find(head, ROOM)?;
    if find(&head[..room_at], TO).is_some() {
        return None;
    }
    let rest = &frame[room_at + ROOM.len()..];
    let end = rest
        .iter()
        .take(ids::MAX_NAME_LEN + 1)
        .position(|b| *b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// How far into a `msg` frame its target field may start: `{"op":"msg","id":` plus an id and a
/// sender name (each bounded), with room to spare.
const TARGET_WITHIN: usize = 1024;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin
mod tests {
    use super::*;
    use hermod_core::protocol::{encode_direct_msg, encode_room_msg};

    fn n(s: &str) -> Name {
        Name::parse("name", s).unwrap()
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    const KEY: SessionKey = SessionKey {
        worker: 1,
        slot: 2,
        generation: 3,
    };

    #[test]
    fn room_of_reads_the_target_field_only() {
        let id = MsgId::new("7-1");
        let data = raw(r#"{"x":",\"room\":\"evil\""}"#);
        let room = encode_room_msg(&id, &n("a"), &n("lobby"), &data, 1);
        assert_eq!(room_of(room.as_bytes()), Some("lobby"));
        let direct = encode_direct_msg(&id, &n("a"), &n("b"), &raw(r#"",\"room\":\"x\"""#), 1);
        assert_eq!(room_of(direct.as_bytes()), None);
        let sneaky = encode_direct_msg(&id, &n("a"), &n("b"), &raw(r#"{"k":1,"room":"x"}"#), 1);
        assert_eq!(room_of(sneaky.as_bytes()), None);
        assert_eq!(room_of(b"garbage"), None);
    }

    #[test]
    fn plan_rebuilds_rooms_and_in_flight() {
        let t0 = Instant::now();
        let mut s = SessionState::new(n("alice"), n("phone"));
        let join = |room: &str, since: Option<&str>| Request::Join {
            session: KEY,
            room: n(room),
            since: since.map(MsgId::new),
        };
        s.record(&join("r1", None), t0);
        s.record(&join("r2", Some("5-0")), t0);
        s.record(&join("r3", None), t0);
        s.record(
            &Request::Leave {
                session: KEY,
                room: n("r3"),
            },
            t0,
        );
        let send = |cid: &str| Request::Send {
            session: KEY,
            cid: Cid::parse(cid).unwrap(),
            to: n("bob"),
            data: raw("1"),
        };
        s.record(&send("c1"), t0);
        s.record(&send("c2"), t0);
        s.record(
            &Request::Publish {
                session: KEY,
                cid: Cid::parse("c3").unwrap(),
                room: n("r1"),
                data: raw("\"hi\""),
            },
            t0 + Duration::from_secs(4),
        );
        // c1 is answered; a message in r1 moves its position.
        let sent = Event::Sent {
            cid: Cid::parse("c1").unwrap(),
            id: MsgId::new("9-0"),
        };
        assert!(s.observe(&sent, None));
        let msg = Event::Message {
            id: MsgId::new("8-2"),
            frame: bytes::Bytes::new(),
        };
        assert!(s.observe(&msg, Some(&n("r1"))));

        let plan = s.rehome_plan(KEY, t0 + Duration::from_secs(6), Duration::from_secs(5));
        let all = plan.rebuild.iter().chain(&plan.resend);
        let text: Vec<String> = all.map(|r| format!("{r:?}")).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(text[0].starts_with("Attach") && text[0].contains("\"phone\""));
        assert!(text[1].contains("\"r1\"") && text[1].contains("Some(\"8-2\")"));
        assert!(text[2].contains("\"r2\"") && text[2].contains("Some(\"5-0\")"));
        // c2 is older than the timeout (the client had `unavailable`); c3 is re-sent.
        assert!(text[3].starts_with("Publish") && text[3].contains("\"c3\""));
    }

    #[test]
    fn a_rejoin_answer_is_hidden_unless_it_lost_history() {
        let mut s = SessionState::new(n("a"), n("d"));
        let t = Instant::now();
        s.record(
            &Request::Join {
                session: KEY,
                room: n("r"),
                since: None,
            },
            t,
        );
        let joined = |recovered| Event::Joined {
            room: n("r"),
            recovered,
        };
        assert!(s.observe(&joined(true), None), "the client's own join");
        assert!(!s.observe(&joined(true), None), "a re-join");
        assert!(s.observe(&joined(false), None), "a re-join with a gap");
        assert!(s.observe(&Event::Left { room: n("x") }, None));
    }

    #[test]
    fn bounded() {
        let mut s = SessionState::new(n("a"), n("d"));
        let t = Instant::now();
        for i in 0..MAX_IN_FLIGHT + 5 {
            let ok = s.record(
                &Request::Send {
                    session: KEY,
                    cid: Cid::parse(&format!("c{i}")).unwrap(),
                    to: n("b"),
                    data: raw("0"),
                },
                t,
            );
            assert_eq!(ok, i < MAX_IN_FLIGHT);
        }
        for i in 0..MAX_ROOMS + 5 {
            s.record(
                &Request::Join {
                    session: KEY,
                    room: n(&format!("r{i}")),
                    since: None,
                },
                t,
            );
        }
        assert_eq!(s.rooms.len(), MAX_ROOMS);
    }
}
