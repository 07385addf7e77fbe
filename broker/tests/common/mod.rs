//! Test harness: a broker on the memory engine driven by hand, with a fake clock.
#![allow(dead_code, clippy::unwrap_used)]

use hermod_broker::{Broker, Limits, MemoryEngine};
use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::protocol::ErrorCode;
use serde_json::value::RawValue;

pub fn name(s: &str) -> Name {
    Name::parse("name", s).unwrap()
}

pub fn cid(s: &str) -> Cid {
    Cid::parse(s).unwrap()
}

pub fn data(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

pub fn key(slot: u32) -> SessionKey {
    SessionKey {
        worker: 0,
        slot,
        generation: 1,
    }
}

pub struct Harness {
    pub broker: Broker<MemoryEngine>,
    pub now: u64,
}

impl Harness {
    pub fn new() -> Self {
        Harness::with_limits(Limits::default(), 0x1234)
    }

    pub fn with_limits(limits: Limits, epoch: u32) -> Self {
        let engine = MemoryEngine::with_epoch(&limits, epoch);
        Harness {
            broker: Broker::new(engine, limits),
            now: 1_000_000,
        }
    }

    /// A harness whose replays go out in pages of `messages` messages and `bytes` bytes.
    pub fn paged(messages: usize, bytes: usize) -> Self {
        let limits = Limits {
            replay_page_messages: messages,
            replay_page_bytes: bytes,
            ..Limits::default()
        };
        Harness::with_limits(limits, 0x1234)
    }

    pub fn resume(&mut self, s: SessionKey) -> Vec<Delivery> {
        self.req(Request::ResumeReplay { session: s })
    }

    pub fn req(&mut self, req: Request) -> Vec<Delivery> {
        let mut out = Vec::new();
        self.broker.handle(req, self.now, &mut out);
        out
    }

    pub fn attach(&mut self, s: SessionKey, user: &str, device: &str) -> Vec<Delivery> {
        self.req(Request::Attach {
            session: s,
            user: name(user),
            device: name(device),
        })
    }

    pub fn detach(&mut self, s: SessionKey) -> Vec<Delivery> {
        self.req(Request::Detach { session: s })
    }

    pub fn send(&mut self, s: SessionKey, c: &str, to: &str, json: &str) -> Vec<Delivery> {
        self.req(Request::Send {
            session: s,
            cid: cid(c),
            to: name(to),
            data: data(json),
        })
    }

    pub fn publish(&mut self, s: SessionKey, c: &str, room: &str, json: &str) -> Vec<Delivery> {
        self.req(Request::Publish {
            session: s,
            cid: cid(c),
            room: name(room),
            data: data(json),
        })
    }

    pub fn ack(&mut self, s: SessionKey, id: &MsgId) -> Vec<Delivery> {
        self.req(Request::Ack {
            session: s,
            id: id.clone(),
        })
    }

    pub fn join(&mut self, s: SessionKey, room: &str, since: Option<&MsgId>) -> Vec<Delivery> {
        self.req(Request::Join {
            session: s,
            room: name(room),
            since: since.cloned(),
        })
    }

    pub fn leave(&mut self, s: SessionKey, room: &str) -> Vec<Delivery> {
        self.req(Request::Leave {
            session: s,
            room: name(room),
        })
    }
}

/// The id answered by a `Sent` in `out` (exactly one expected).
pub fn sent_id(out: &[Delivery]) -> MsgId {
    let ids: Vec<MsgId> = out
        .iter()
        .filter_map(|d| match &d.event {
            Event::Sent { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "expected one Sent in {out:?}");
    ids[0].clone()
}

/// The `data` of every message delivered to `s`, in order, as JSON text.
pub fn datas(out: &[Delivery], s: SessionKey) -> Vec<String> {
    msgs(out, s)
        .into_iter()
        .map(|(_, v)| v["data"].to_string())
        .collect()
}

/// Every message delivered to `s`, in order: id and parsed frame.
pub fn msgs(out: &[Delivery], s: SessionKey) -> Vec<(MsgId, serde_json::Value)> {
    out.iter()
        .filter(|d| d.session == s)
        .filter_map(|d| match &d.event {
            Event::Message { id, frame } => {
                let v: serde_json::Value = serde_json::from_slice(frame).unwrap();
                assert_eq!(v["id"].as_str(), Some(id.as_str()));
                Some((id.clone(), v))
            }
            _ => None,
        })
        .collect()
}

/// The error codes delivered to `s`, with their cids.
pub fn errors(out: &[Delivery], s: SessionKey) -> Vec<(Option<Cid>, ErrorCode)> {
    out.iter()
        .filter(|d| d.session == s)
        .filter_map(|d| match &d.event {
            Event::Error { cid, code, .. } => Some((cid.clone(), *code)),
            _ => None,
        })
        .collect()
}

/// The `recovered` of the single `Joined` delivered to `s`.
pub fn joined(out: &[Delivery], s: SessionKey) -> bool {
    let j: Vec<bool> = out
        .iter()
        .filter(|d| d.session == s)
        .filter_map(|d| match &d.event {
            Event::Joined { recovered, .. } => Some(*recovered),
            _ => None,
        })
        .collect();
    assert_eq!(j.len(), 1, "expected one Joined in {out:?}");
    j[0]
}

/// How many `ReplayPaused` were delivered to `s`.
pub fn pauses(out: &[Delivery], s: SessionKey) -> usize {
    out.iter()
        .filter(|d| d.session == s && matches!(d.event, Event::ReplayPaused))
        .count()
}

/// [`pauses`], for the output of a single request: also asserts that no message of `s` follows
/// a `ReplayPaused` (the pause ends its page). Several requests in one batch may legitimately
/// put another replay's first page after a pause.
pub fn paused(out: &[Delivery], s: SessionKey) -> usize {
    let mine: Vec<&Event> = out
        .iter()
        .filter(|d| d.session == s)
        .map(|d| &d.event)
        .collect();
    if let Some(at) = mine.iter().position(|e| matches!(e, Event::ReplayPaused)) {
        assert!(
            !mine[at..]
                .iter()
                .any(|e| matches!(e, Event::Message { .. })),
            "a message after ReplayPaused in {out:?}"
        );
    }
    pauses(out, s)
}
