//! [`Dispatcher`]: the server API's side of the broker. Sans-io: writes go in with the time and
//! a port to send requests through; broker deliveries go in; finished calls come out.
//!
//! Each sender (`@`, `@alice`, ...) has one broker session, attached on its first write and
//! kept for the next ones (in a broker tier, placed and re-homed like any session), at most
//! [`MAX_SENDERS`] of them: past that the least recently used idle one is detached. A write's
//! targets go out as `publish`/`send` requests of that session; the broker's `sent` answers
//! come back by `cid`, so any number of calls may be in flight on one session.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hermod_core::bus::{Delivery, Event, Kick, Presence, Request, SessionKey};
use hermod_core::ids::{Cid, Name};

use super::calls::{broker_error, Flight, Write};
use super::http::ApiError;
use super::queries::{history_answer, Query};

/// Sender sessions kept attached at once.
pub const MAX_SENDERS: usize = 1024;

/// A call's outcome: the JSON answer, or why it failed.
pub type Outcome = Result<String, ApiError>;

/// A send of a request to the broker; false when its queue is full.
pub type Port<'a> = &'a mut dyn FnMut(Request) -> bool;

/// One sender's broker session.
#[derive(Debug)]
struct Sender {
    session: SessionKey,
    /// The dispatcher's use counter at its last write (the least recent idle one goes first).
    used: u64,
    /// Targets of its writes waiting for an answer.
    waiting: usize,
}

/// A call in flight.
#[derive(Debug)]
struct InFlight {
    work: Work,
    sender: Name,
    deadline: Instant,
}

/// What a call in flight waits for.
#[derive(Debug)]
enum Work {
    /// A write's answers so far.
    Write(Flight),
    /// One event; `about` is the user an online query asked about (its answer names them).
    Query { about: Option<Name> },
}

/// The API's broker sessions and calls in flight (see the module docs).
#[derive(Debug)]
pub struct Dispatcher {
    /// The `worker` of the API's session keys: its lane to the broker and its sink.
    lane: u16,
    senders: HashMap<Name, Sender>,
    /// Session slot -> its sender.
    slots: HashMap<u32, Name>,
    /// Slot of the next sender session (never reused, so a late delivery for a detached
    /// session finds nothing).
    next_slot: u32,
    /// (session slot, cid) -> the calls and target indices waiting for that answer.
    waiting: HashMap<(u32, Cid), Vec<(u64, usize)>>,
    calls: HashMap<u64, InFlight>,
    uses: u64,
}

impl Dispatcher {
    pub fn new(lane: u16) -> Self {
        Dispatcher {
            lane,
            senders: HashMap::new(),
            slots: HashMap::new(),
            next_slot: 0,
            waiting: HashMap::new(),
            calls: HashMap::new(),
            uses: 0,
        }
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Sender sessions attached.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Starts `write` as call `id`, answered by [`Dispatcher::handle`] or
    /// [`Dispatcher::expire`] (after `timeout`). Refused at once when the broker's queue is
    /// full (some targets may then be stored: a retry with the same idempotency key stores
    /// them once).
    pub fn start(
        &mut self,
        id: u64,
        write: Write,
        now: Instant,
        timeout: Duration,
        port: Port<'_>,
    ) -> Result<(), ApiError> {
        let session = self
            .session_of(&write.sender, port)
            .ok_or_else(queue_full)?;
        let call = InFlight {
            work: Work::Write(Flight::new(&write)),
            sender: write.sender.clone(),
            deadline: now + timeout,
        };
        self.calls.insert(id, call);
        for (i, (target, cid)) in write.targets.into_iter().enumerate() {
            let request = if write.shape.to_rooms() {
                Request::Publish {
                    session,
                    cid: cid.clone(),
                    room: target,
                    data: write.data.clone(),
                }
            } else {
                Request::Send {
                    session,
                    cid: cid.clone(),
                    to: target,
                    data: write.data.clone(),
                }
            };
            if !port(request) {
                self.forget(id);
                return Err(queue_full());
            }
            self.wait_for((session.slot, cid), (id, i), &write.sender);
        }
        Ok(())
    }

    /// Starts `query` as call `id`: one request, answered by one event with `cid`. A query
    /// about a user goes through that user's server sender (see [`Query::user`]).
    pub fn start_query(
        &mut self,
        id: u64,
        query: Query,
        cid: Cid,
        now: Instant,
        timeout: Duration,
        port: Port<'_>,
    ) -> Result<(), ApiError> {
        let sender = Name::server_sender(query.user());
        let session = self.session_of(&sender, port).ok_or_else(queue_full)?;
        let (request, about) = match query {
            Query::History(q) => {
                let request = Request::History {
                    session,
                    cid: cid.clone(),
                    room: q.room,
                    since: q.since,
                    limit: q.limit,
                };
                (request, None)
            }
            Query::Presence { room, limit } => {
                let cid = cid.clone();
                let request = Request::Presence {
                    session,
                    cid,
                    room,
                    limit,
                };
                (request, None)
            }
            Query::Online { user } => {
                let cid = cid.clone();
                let about = Some(user.clone());
                (Request::Online { session, cid, user }, about)
            }
            Query::Disconnect {
                user,
                device,
                reason,
                ban_secs,
            } => {
                let kick = Kick {
                    cid: cid.clone(),
                    user,
                    device,
                    reason,
                    ban_secs,
                };
                let request = Request::Kick {
                    session,
                    kick: Box::new(kick),
                };
                (request, None)
            }
        };
        if !port(request) {
            return Err(queue_full());
        }
        let call = InFlight {
            work: Work::Query { about },
            sender: sender.clone(),
            deadline: now + timeout,
        };
        self.calls.insert(id, call);
        self.wait_for((session.slot, cid), (id, 0), &sender);
        Ok(())
    }

    /// Call `call`'s target waits for the answer to `(slot, cid)` on `sender`'s session.
    fn wait_for(&mut self, answer: (u32, Cid), call: (u64, usize), sender: &Name) {
        self.waiting.entry(answer).or_default().push(call);
        if let Some(s) = self.senders.get_mut(sender) {
            s.waiting += 1;
        }
    }

    /// The sender's session, attached now if it has none (making room first).
    fn session_of(&mut self, sender: &Name, port: Port<'_>) -> Option<SessionKey> {
        self.uses += 1;
        if let Some(s) = self.senders.get_mut(sender) {
            s.used = self.uses;
            return Some(s.session);
        }
        if self.senders.len() >= MAX_SENDERS {
            self.evict_one(port);
        }
        let session = SessionKey {
            worker: self.lane,
            slot: self.next_slot,
            generation: 0,
        };
        let attach = Request::Attach {
            session,
            user: sender.clone(),
            device: Name::parse("device", "api").expect("a valid name"),
        };
        if !port(attach) {
            return None;
        }
        self.next_slot = self.next_slot.wrapping_add(1);
        let entry = Sender {
            session,
            used: self.uses,
            waiting: 0,
        };
        self.senders.insert(sender.clone(), entry);
        self.slots.insert(session.slot, sender.clone());
        Some(session)
    }

    /// Detaches the least recently used sender with nothing waiting (if its Detach fits).
    fn evict_one(&mut self, port: Port<'_>) {
        let idle = self
            .senders
            .iter()
            .filter(|(_, s)| s.waiting == 0)
            .min_by_key(|(_, s)| s.used)
            .map(|(name, s)| (name.clone(), s.session));
        if let Some((name, session)) = idle {
            if port(Request::Detach { session }) {
                self.senders.remove(&name);
                self.slots.remove(&session.slot);
            }
        }
    }

    /// A broker delivery for one of the API's sessions; finished calls are pushed to `done`.
    pub fn handle(&mut self, delivery: Delivery, done: &mut Vec<(u64, Outcome)>) {
        let slot = delivery.session.slot;
        match delivery.event {
            Event::Sent { cid, id } => {
                let waiting = self.waiting.remove(&(slot, cid)).unwrap_or_default();
                self.release(slot, waiting.len());
                for (call, i) in waiting {
                    let Some(Work::Write(flight)) = self.calls.get_mut(&call).map(|c| &mut c.work)
                    else {
                        continue;
                    };
                    if flight.stored(i, id.clone()) {
                        let answer = flight.answer();
                        self.calls.remove(&call);
                        done.push((call, Ok(answer)));
                    }
                }
            }
            Event::Error {
                cid: Some(cid),
                code,
                message,
            } => {
                let waiting = self.waiting.remove(&(slot, cid)).unwrap_or_default();
                self.release(slot, waiting.len());
                for (call, _) in waiting {
                    if self.calls.contains_key(&call) {
                        self.forget(call);
                        done.push((call, Err(broker_error(code, &message))));
                    }
                }
            }
            Event::History {
                cid,
                recovered,
                frames,
                more,
            } => self.answer(slot, cid, done, |_| {
                history_answer(&frames, recovered, more)
            }),
            Event::Presence(p) => self.answer(slot, p.cid.clone(), done, |_| {
                let Presence {
                    room,
                    count,
                    members,
                    ..
                } = &*p;
                let members: Vec<serde_json::Value> = members
                    .iter()
                    .map(|(u, d)| serde_json::json!({"user": u.as_str(), "device": d.as_str()}))
                    .collect();
                serde_json::json!({"room": room.as_str(), "count": count, "members": members})
                    .to_string()
            }),
            Event::Online { cid, devices } => self.answer(slot, cid, done, |about| {
                let devices: Vec<&str> = devices.iter().map(Name::as_str).collect();
                let user = about.map_or("", Name::as_str);
                serde_json::json!({"user": user, "devices": devices}).to_string()
            }),
            Event::Disconnected { cid, count } => self.answer(slot, cid, done, |_| {
                serde_json::json!({ "disconnected": count }).to_string()
            }),
            Event::Overflow => {
                // The broker gave up on the session: forget it; its calls time out.
                if let Some(name) = self.slots.remove(&slot) {
                    self.senders.remove(&name);
                }
            }
            _ => {}
        }
    }

    /// The queries waiting for `(slot, cid)` are answered with what `body` makes of the event
    /// (given the user the query was about, if any).
    fn answer(
        &mut self,
        slot: u32,
        cid: Cid,
        done: &mut Vec<(u64, Outcome)>,
        body: impl Fn(Option<&Name>) -> String,
    ) {
        let waiting = self.waiting.remove(&(slot, cid)).unwrap_or_default();
        self.release(slot, waiting.len());
        for (call, _) in waiting {
            if let Some(c) = self.calls.remove(&call) {
                let about = match &c.work {
                    Work::Query { about } => about.as_ref(),
                    Work::Write(_) => None,
                };
                done.push((call, Ok(body(about))));
            }
        }
    }

    /// Calls past their deadline fail `unavailable` (their messages may yet be stored).
    pub fn expire(&mut self, now: Instant, done: &mut Vec<(u64, Outcome)>) {
        let late: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for call in late {
            self.forget(call);
            let message = "storage did not answer in time; retry with the same idempotency_key";
            done.push((call, Err(ApiError::new(503, "unavailable", message))));
        }
    }

    /// The earliest deadline of a call in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.calls.values().map(|c| c.deadline).min()
    }

    /// Detaches every sender session (at shutdown).
    pub fn detach_all(&mut self, port: Port<'_>) {
        self.slots.clear();
        for (_, s) in self.senders.drain() {
            port(Request::Detach { session: s.session });
        }
    }

    /// Drops call `id` and its waiting entries.
    fn forget(&mut self, id: u64) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        let Some(slot) = self.senders.get(&call.sender).map(|s| s.session.slot) else {
            return;
        };
        let mut released = 0;
        self.waiting.retain(|_, calls| {
            let before = calls.len();
            calls.retain(|(c, _)| *c != id);
            released += before - calls.len();
            !calls.is_empty()
        });
        self.release(slot, released);
    }

    fn release(&mut self, slot: u32, n: usize) {
        let sender = self.slots.get(&slot).and_then(|n| self.senders.get_mut(n));
        if let Some(s) = sender {
            s.waiting = s.waiting.saturating_sub(n);
        }
    }
}

/// The refusal of a call the broker's queue has no room for.
fn queue_full() -> ApiError {
    ApiError::new(503, "unavailable", "the broker's queue is full; retry")
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin
mod tests {
    use super::super::calls::{parse_call, BrokerCall, Call};
    use super::super::http::ApiRequest;
    use super::*;
    use hermod_core::ids::MsgId;
    use hermod_core::protocol::ErrorCode;

    /// The write `body` asks for; its n-th target gets the cid `{tag}{n}`.
    fn write(tag: &str, body: &str, path: &str) -> Write {
        let req = ApiRequest {
            method: "POST".to_owned(),
            path: path.to_owned(),
            query: String::new(),
            bearer: None,
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        };
        let mut n = 0;
        let mut fresh = || {
            n += 1;
            Cid::parse(&format!("{tag}{n}")).expect("a cid")
        };
        match parse_call(&req, 1024, &mut fresh) {
            Ok(Call::Broker(BrokerCall::Write(w))) => w,
            other => panic!("{other:?}"),
        }
    }

    fn sent(slot: u32, cid: &str, id: &str) -> Delivery {
        let session = SessionKey {
            worker: 9,
            slot,
            generation: 0,
        };
        let event = Event::Sent {
            cid: Cid::parse(cid).expect("a cid"),
            id: MsgId::new(id),
        };
        Delivery { session, event }
    }

    #[test]
    fn a_write_attaches_its_sender_once_and_answers_when_every_target_is_stored() {
        let mut d = Dispatcher::new(9);
        let mut sent_requests = Vec::new();
        let mut port = |r: Request| {
            sent_requests.push(r);
            true
        };
        let now = Instant::now();
        let w = write("a", r#"{"rooms":["a","b"],"data":1}"#, "/api/broadcast");
        d.start(1, w, now, Duration::from_secs(5), &mut port)
            .expect("started");
        let w = write("b", r#"{"room":"a","data":2}"#, "/api/publish");
        d.start(2, w, now, Duration::from_secs(5), &mut port)
            .expect("started");
        let attaches = sent_requests
            .iter()
            .filter(|r| matches!(r, Request::Attach { user, .. } if user.as_str() == "@"))
            .count();
        assert_eq!((attaches, sent_requests.len()), (1, 4));
        let mut done = Vec::new();
        d.handle(sent(0, "a1", "1-0"), &mut done);
        assert!(done.is_empty());
        d.handle(sent(0, "a2", "2-0"), &mut done);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, 1);
        assert_eq!(
            done[0].1.as_deref().ok(),
            Some(r#"{"ids":{"a":"1-0","b":"2-0"}}"#)
        );
        assert_eq!(d.in_flight(), 1);
    }

    #[test]
    fn errors_timeouts_and_a_full_queue_each_fail_the_call() {
        let mut d = Dispatcher::new(9);
        let now = Instant::now();
        let mut ok = |_: Request| true;
        let w = write("a", r#"{"to":["x","y"],"data":1}"#, "/api/send");
        d.start(1, w, now, Duration::from_secs(5), &mut ok)
            .expect("started");
        let mut done = Vec::new();
        let error = Event::Error {
            cid: Some(Cid::parse("a2").expect("a cid")),
            code: ErrorCode::Unavailable,
            message: "down".to_owned(),
        };
        let session = SessionKey {
            worker: 9,
            slot: 0,
            generation: 0,
        };
        d.handle(
            Delivery {
                session,
                event: error,
            },
            &mut done,
        );
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].1.as_ref().map_err(|e| e.status), Err(503));
        // A late answer for the failed call's other target finds nothing.
        d.handle(sent(0, "a1", "1-0"), &mut done);
        assert_eq!((done.len(), d.in_flight()), (1, 0));

        let w = write("b", r#"{"room":"r","data":1}"#, "/api/publish");
        d.start(2, w, now, Duration::from_secs(1), &mut ok)
            .expect("started");
        d.expire(now + Duration::from_millis(999), &mut done);
        assert_eq!(done.len(), 1);
        d.expire(now + Duration::from_secs(1), &mut done);
        assert_eq!(done.len(), 2);
        assert_eq!(done[1].1.as_ref().map_err(|e| e.code), Err("unavailable"));

        let mut full = |_: Request| false;
        let w = write("c", r#"{"room":"r","data":1}"#, "/api/publish");
        let mut fresh = Dispatcher::new(9);
        let refused = fresh.start(3, w, now, Duration::from_secs(1), &mut full);
        assert_eq!(refused.map_err(|e| e.status), Err(503));
        assert_eq!((fresh.in_flight(), fresh.senders()), (0, 0));
    }

    #[test]
    fn the_least_recently_used_idle_sender_makes_room() {
        let mut d = Dispatcher::new(9);
        let now = Instant::now();
        let mut requests = Vec::new();
        let mut port = |r: Request| {
            requests.push(r);
            true
        };
        for i in 0..=MAX_SENDERS {
            let body = format!(r#"{{"to":"x","from":"u{i}","data":1}}"#);
            d.start(
                i as u64,
                write(&format!("u{i}-"), &body, "/api/send"),
                now,
                Duration::from_secs(5),
                &mut port,
            )
            .expect("started");
            if i == 0 {
                // u0's write is answered, so u0 is idle and the least recently used.
                let mut done = Vec::new();
                d.handle(sent(0, "u0-1", "1-0"), &mut done);
                assert_eq!(done.len(), 1);
            }
        }
        assert_eq!(d.senders(), MAX_SENDERS);
        let detached: Vec<u32> = requests
            .iter()
            .filter_map(|r| match r {
                Request::Detach { session } => Some(session.slot),
                _ => None,
            })
            .collect();
        assert_eq!(detached, [0]);
    }
}
