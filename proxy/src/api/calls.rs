//! The server API's calls: a request turned into a [`Call`] ([`parse_call`]), the broker
//! requests a write call needs ([`Write::targets`]), and the answers gathered into its JSON
//! answer ([`Flight`]). Sans-io. Reads and disconnects are parsed in `queries.rs`.
//!
//! A write is stored under a sender no client can be ([`Name::server_sender`]): `@` for the
//! server, `@alice` for a message sent in alice's name; its frames say `"server":true`. Each
//! target (room or user) is one `publish` or `send` of that sender with its own `cid`: with an
//! `idempotency_key` K the cid is `K~` and a hash of the target, so a retry of the call is
//! deduplicated per target exactly as a client's retried `cid` is; without one it is random.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;

use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::protocol::{nests_deeper_than, ErrorCode, MAX_DATA_DEPTH};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::{ApiError, ApiRequest};
use super::queries::{disconnect, history, online, presence, Query};

/// Most rooms of one broadcast, and users of one send.
pub const MAX_TARGETS: usize = 1000;
/// Longest idempotency key: with `~` and 16 hex digits it must fit a 64-byte cid.
pub const MAX_IDEMPOTENCY_KEY: usize = 40;

/// What a call asks.
#[derive(Debug)]
pub enum Call {
    /// Work for the broker.
    Broker(BrokerCall),
    /// `GET /api/info`, answered by the API thread itself.
    Info,
}

/// A call the broker answers.
#[derive(Debug)]
pub enum BrokerCall {
    /// Store `data` in every target, in the name of `sender`, and answer with the ids.
    Write(Write),
    /// One request answered by one event.
    Query(Query),
}

/// A publish, broadcast or send.
#[derive(Debug)]
pub struct Write {
    pub shape: Shape,
    pub sender: Name,
    pub data: Box<RawValue>,
    /// Rooms or users, distinct, with the cid of each.
    pub targets: Vec<(Name, Cid)>,
}

/// Where a write goes, and how its answer looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `POST /api/publish`: one room, answered `{"id":ID}`.
    Publish,
    /// `POST /api/broadcast`: rooms, answered `{"ids":{ROOM:ID,...}}`.
    Broadcast,
    /// `POST /api/send`: users, answered `{"ids":{USER:ID,...}}`.
    Send,
}

impl Shape {
    /// Whether the targets are rooms (else users' inboxes).
    pub fn to_rooms(self) -> bool {
        !matches!(self, Shape::Send)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: String,
    data: Box<RawValue>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    rooms: Vec<String>,
    data: Box<RawValue>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    to: OneOrMany,
    data: Box<RawValue>,
    from: Option<String>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The call `req` asks for, or why it is refused. `fresh_cid` makes the cid of a target
/// written without an idempotency key (random, so that no two calls anywhere share one).
pub fn parse_call(
    req: &ApiRequest,
    max_data: usize,
    fresh_cid: &mut dyn FnMut() -> Cid,
) -> Result<Call, ApiError> {
    let method = req.method.as_str();
    let mut post = |shape| {
        if method != "POST" {
            return Err(method_not_allowed("POST"));
        }
        let write = write(shape, &req.body, max_data, fresh_cid)?;
        Ok(Call::Broker(BrokerCall::Write(write)))
    };
    match req.path.as_str() {
        "/api/publish" => post(Shape::Publish),
        "/api/broadcast" => post(Shape::Broadcast),
        "/api/send" => post(Shape::Send),
        "/api/history" if method == "GET" => {
            let query = Query::History(history(&req.query)?);
            Ok(Call::Broker(BrokerCall::Query(query)))
        }
        "/api/presence" if method == "GET" => {
            Ok(Call::Broker(BrokerCall::Query(presence(&req.query)?)))
        }
        "/api/online" if method == "GET" => {
            Ok(Call::Broker(BrokerCall::Query(online(&req.query)?)))
        }
        "/api/disconnect" if method == "POST" => {
            Ok(Call::Broker(BrokerCall::Query(disconnect(&req.body)?)))
        }
        "/api/history" | "/api/presence" | "/api/online" => Err(method_not_allowed("GET")),
        "/api/disconnect" => Err(method_not_allowed("POST")),
        "/api/info" if method == "GET" => Ok(Call::Info),
        "/api/info" => Err(method_not_allowed("GET")),
        _ => Err(ApiError::new(404, "not_found", "no such call")),
    }
}

fn method_not_allowed(allowed: &'static str) -> ApiError {
    ApiError::new(
        405,
        "method_not_allowed",
        format!("this call takes {allowed}"),
    )
}

pub(super) fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad body: {e}")))
}

fn write(
    shape: Shape,
    body: &[u8],
    max_data: usize,
    fresh_cid: &mut dyn FnMut() -> Cid,
) -> Result<Write, ApiError> {
    let (names, data, from, key) = match shape {
        Shape::Publish => {
            let b: PublishBody = json(body)?;
            (vec![b.room], b.data, None, b.idempotency_key)
        }
        Shape::Broadcast => {
            let b: BroadcastBody = json(body)?;
            (b.rooms, b.data, None, b.idempotency_key)
        }
        Shape::Send => {
            let b: SendBody = json(body)?;
            let to = match b.to {
                OneOrMany::One(u) => vec![u],
                OneOrMany::Many(us) => us,
            };
            (to, b.data, b.from, b.idempotency_key)
        }
    };
    if data.get().len() > max_data {
        let message = format!("`data` over {max_data} bytes");
        return Err(ApiError::new(413, "too_large", message));
    }
    if nests_deeper_than(data.get(), MAX_DATA_DEPTH) {
        let message = format!("`data` nests deeper than {MAX_DATA_DEPTH} levels");
        return Err(ApiError::bad_request(message));
    }
    let what = if shape.to_rooms() { "room" } else { "user" };
    if names.is_empty() || names.len() > MAX_TARGETS {
        let message = format!("from 1 to {MAX_TARGETS} {what}s");
        return Err(ApiError::bad_request(message));
    }
    let sender = match from {
        None => Name::server_sender(None),
        Some(user) => Name::server_sender(Some(&parse_user("from", &user)?)),
    };
    let key = key.map(|k| idempotency_key(&k)).transpose()?;
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    let mut targets = Vec::with_capacity(names.len());
    for name in names {
        let target = if shape.to_rooms() {
            Name::parse("room", &name).map_err(|e| ApiError::bad_request(e.to_string()))?
        } else {
            parse_user("to", &name)?
        };
        if !seen.insert(target.clone()) {
            continue;
        }
        let cid = match &key {
            Some(k) => derived_cid(k, what, &target),
            None => fresh_cid(),
        };
        targets.push((target, cid));
    }
    Ok(Write {
        shape,
        sender,
        data,
        targets,
    })
}

pub(super) fn parse_user(field: &'static str, s: &str) -> Result<Name, ApiError> {
    Name::parse_user(field, s).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn idempotency_key(k: &str) -> Result<String, ApiError> {
    if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
        let message = format!("`idempotency_key` must be 1 to {MAX_IDEMPOTENCY_KEY} bytes");
        return Err(ApiError::bad_request(message));
    }
    Ok(k.to_owned())
}

/// `KEY~` and 16 hex digits of a hash of the target's kind and name: the same call retried
/// gets the same cid per target, two targets (or a room and a user of the same name) never one.
fn derived_cid(key: &str, kind: &str, target: &Name) -> Cid {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kind.bytes().chain([0]).chain(target.as_str().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Cid::parse(&format!("{key}~{h:016x}")).expect("a key of at most 40 bytes fits a cid")
}

/// A write waiting for the broker: the id of each target as its answer comes back.
#[derive(Debug)]
pub struct Flight {
    shape: Shape,
    targets: Vec<(Name, Cid)>,
    ids: Vec<Option<MsgId>>,
    missing: usize,
}

impl Flight {
    pub fn new(write: &Write) -> Self {
        Flight {
            shape: write.shape,
            targets: write.targets.clone(),
            ids: vec![None; write.targets.len()],
            missing: write.targets.len(),
        }
    }

    /// The target `i` is stored as `id`. True when every target is.
    pub fn stored(&mut self, i: usize, id: MsgId) -> bool {
        if let Some(slot) = self.ids.get_mut(i) {
            if slot.is_none() {
                self.missing -= 1;
            }
            *slot = Some(id);
        }
        self.missing == 0
    }

    /// The JSON answer once every target is stored.
    pub fn answer(&self) -> String {
        let ids = || -> BTreeMap<&str, &str> {
            self.targets
                .iter()
                .zip(&self.ids)
                .filter_map(|((t, _), id)| Some((t.as_str(), id.as_ref()?.as_str())))
                .collect()
        };
        match self.shape {
            Shape::Publish => {
                let id = self.ids.first().cloned().flatten();
                serde_json::json!({ "id": id.as_ref().map(MsgId::as_str) }).to_string()
            }
            Shape::Broadcast | Shape::Send => serde_json::json!({ "ids": ids() }).to_string(),
        }
    }
}

/// The HTTP refusal of a broker `error` answered to one of a write's targets.
pub fn broker_error(code: ErrorCode, message: &str) -> ApiError {
    let status = match code {
        ErrorCode::BadRequest | ErrorCode::NotJoined => 400,
        ErrorCode::Forbidden => 403,
        ErrorCode::TooLarge => 413,
        ErrorCode::RateLimited => 429,
        _ => 503,
    };
    ApiError::new(status, code.as_str(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(path: &str, body: &str) -> ApiRequest {
        ApiRequest {
            method: "POST".to_owned(),
            path: path.to_owned(),
            query: String::new(),
            bearer: None,
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        }
    }

    fn call(path: &str, body: &str) -> Result<Call, ApiError> {
        let mut n = 0;
        let mut fresh = || {
            n += 1;
            Cid::parse(&format!("fresh{n}")).unwrap()
        };
        parse_call(&post(path, body), 100, &mut fresh)
    }

    fn write(path: &str, body: &str) -> Write {
        match call(path, body) {
            Ok(Call::Broker(BrokerCall::Write(w))) => w,
            other => panic!("{other:?}"),
        }
    }

    fn status(path: &str, body: &str) -> u16 {
        call(path, body).unwrap_err().status
    }

    #[test]
    fn a_send_to_many_users_in_a_users_name() {
        let w = write(
            "/api/send",
            r#"{"to":["bob","carol","bob"],"from":"alice","data":{"x":1}}"#,
        );
        assert_eq!(w.shape, Shape::Send);
        assert_eq!(w.sender.as_str(), "@alice");
        let names: Vec<&str> = w.targets.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["bob", "carol"]);
        assert_eq!(w.targets[0].1.as_str(), "fresh1");
        assert_eq!(w.data.get(), r#"{"x":1}"#);
    }

    #[test]
    fn an_idempotency_key_gives_each_target_its_own_stable_cid() {
        let body = r#"{"rooms":["a","b"],"data":1,"idempotency_key":"k1"}"#;
        let first = write("/api/broadcast", body);
        let again = write("/api/broadcast", body);
        assert_eq!(first.sender.as_str(), "@");
        assert_eq!(first.targets[0].1, again.targets[0].1);
        assert_ne!(first.targets[0].1, first.targets[1].1);
        assert!(first.targets[0].1.as_str().starts_with("k1~"));
        let user = write("/api/send", r#"{"to":"a","data":1,"idempotency_key":"k1"}"#);
        assert_ne!(
            user.targets[0].1, first.targets[0].1,
            "a room and a user of one name"
        );
    }

    #[test]
    fn bad_calls_are_refused_clearly() {
        assert_eq!(status("/api/publish", "{"), 400);
        assert_eq!(status("/api/publish", r#"{"room":"r"}"#), 400);
        assert_eq!(
            status("/api/publish", r#"{"room":"r","data":1,"x":2}"#),
            400
        );
        assert_eq!(status("/api/publish", r#"{"room":"a b","data":1}"#), 400);
        let big = format!(r#"{{"room":"r","data":"{}"}}"#, "x".repeat(100));
        assert_eq!(status("/api/publish", &big), 413);
        assert_eq!(status("/api/send", r#"{"to":"@x","data":1}"#), 400);
        assert_eq!(status("/api/send", r#"{"to":[],"data":1}"#), 400);
        assert_eq!(
            status("/api/send", r#"{"to":"b","from":"@x","data":1}"#),
            400
        );
        let long_key = format!(
            r#"{{"room":"r","data":1,"idempotency_key":"{}"}}"#,
            "k".repeat(41)
        );
        assert_eq!(status("/api/publish", &long_key), 400);
        assert_eq!(status("/api/nothing", "{}"), 404);
        let mut get = post("/api/publish", "");
        get.method = "GET".to_owned();
        let refused = parse_call(&get, 100, &mut || unreachable!()).unwrap_err();
        assert_eq!(refused.status, 405);
    }

    #[test]
    fn a_flight_answers_once_every_target_is_stored() {
        let w = write("/api/broadcast", r#"{"rooms":["a","b"],"data":1}"#);
        let mut f = Flight::new(&w);
        assert!(!f.stored(1, MsgId::new("2-0")));
        assert!(f.stored(0, MsgId::new("1-0")));
        assert_eq!(f.answer(), r#"{"ids":{"a":"1-0","b":"2-0"}}"#);
        let p = write("/api/publish", r#"{"room":"a","data":1}"#);
        let mut f = Flight::new(&p);
        assert!(f.stored(0, MsgId::new("7-1")));
        assert_eq!(f.answer(), r#"{"id":"7-1"}"#);
    }
}
