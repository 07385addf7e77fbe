//! The server API's reads and disconnects: each one request to the broker, answered by one
//! event. A request's query string (`room=..&limit=..`) or body turned into a [`Query`], and a
//! history page's answer. Sans-io.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use hermod_core::ids::{MsgId, Name};
use serde::Deserialize;

use super::calls::{json, parse_user};
use super::http::ApiError;

/// A call answered by one broker event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `GET /api/history`: a page of a room's history.
    History(HistoryQuery),
    /// `GET /api/presence?room=R&limit=N`: who is in a room (`limit` 0: the count only).
    Presence { room: Name, limit: u16 },
    /// `GET /api/online?user=U`: the user's devices online.
    Online { user: Name },
    /// `POST /api/disconnect`: close a user's sessions, optionally refusing new ones a while.
    Disconnect {
        user: Name,
        device: Option<Name>,
        reason: String,
        ban_secs: u32,
    },
}

impl Query {
    /// The user a query is about: it goes through that user's own server sender (`@user`),
    /// which a broker tier places on the user's broker, where all the user's sessions are.
    pub fn user(&self) -> Option<&Name> {
        match self {
            Query::Online { user } | Query::Disconnect { user, .. } => Some(user),
            Query::History(_) | Query::Presence { .. } => None,
        }
    }
}

/// Members a presence call lists without `limit`.
pub const DEFAULT_PRESENCE_LIMIT: u16 = 100;
/// The reason a disconnected client is told when the call gives none.
pub const DEFAULT_DISCONNECT_REASON: &str = "disconnected by the server";

/// Most messages one history call answers, and how many without `limit`.
pub const MAX_HISTORY_LIMIT: u16 = hermod_core::link::MAX_HISTORY_FRAMES as u16;
pub const DEFAULT_HISTORY_LIMIT: u16 = 100;

/// `GET /api/history?room=R&since=ID&limit=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub room: Name,
    pub since: Option<MsgId>,
    pub limit: u16,
}

/// The decoded `key=value` pairs of a query string; a key outside `known` is refused.
fn query_pairs(query: &str, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&key) {
            return Err(ApiError::bad_request(format!("unknown parameter `{key}`")));
        }
        let value = crate::ws::handshake::percent_decode(value)
            .ok_or_else(|| ApiError::bad_request(format!("bad encoding of `{key}`")))?;
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

fn required<'a>(pairs: &'a [(String, String)], key: &str) -> Result<&'a str, ApiError> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| ApiError::bad_request(format!("missing parameter `{key}`")))
}

pub(super) fn presence(query: &str) -> Result<Query, ApiError> {
    let pairs = query_pairs(query, &["room", "limit"])?;
    let room = Name::parse("room", required(&pairs, "room")?)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let max = hermod_core::bus::MAX_PRESENCE_MEMBERS;
    let limit = match pairs.iter().find(|(k, _)| k == "limit") {
        None => DEFAULT_PRESENCE_LIMIT,
        Some((_, v)) => v.parse().ok().filter(|n| *n <= max).ok_or_else(|| {
            ApiError::bad_request(format!("`limit` must be 0 (the count only) to {max}"))
        })?,
    };
    Ok(Query::Presence { room, limit })
}

pub(super) fn online(query: &str) -> Result<Query, ApiError> {
    let pairs = query_pairs(query, &["user"])?;
    let user = parse_user("user", required(&pairs, "user")?)?;
    Ok(Query::Online { user })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
    device: Option<String>,
    reason: Option<String>,
    ban_seconds: Option<u32>,
}

pub(super) fn disconnect(body: &[u8]) -> Result<Query, ApiError> {
    let b: DisconnectBody = json(body)?;
    let user = parse_user("user", &b.user)?;
    let device = b
        .device
        .map(|d| Name::parse("device", &d).map_err(|e| ApiError::bad_request(e.to_string())))
        .transpose()?;
    let reason = b
        .reason
        .unwrap_or_else(|| DEFAULT_DISCONNECT_REASON.to_owned());
    let max = hermod_core::bus::MAX_KICK_REASON;
    if reason.len() > max {
        return Err(ApiError::bad_request(format!("`reason` over {max} bytes")));
    }
    let ban_secs = b.ban_seconds.unwrap_or(0);
    let max_ban = hermod_core::bus::MAX_BAN_SECS;
    if ban_secs > max_ban {
        return Err(ApiError::bad_request(format!(
            "`ban_seconds` over {max_ban}"
        )));
    }
    Ok(Query::Disconnect {
        user,
        device,
        reason,
        ban_secs,
    })
}

pub(super) fn history(query: &str) -> Result<HistoryQuery, ApiError> {
    let mut room = None;
    let mut since = None;
    let mut limit = DEFAULT_HISTORY_LIMIT;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = crate::ws::handshake::percent_decode(value)
            .ok_or_else(|| ApiError::bad_request(format!("bad encoding of `{key}`")))?;
        match key {
            "room" => {
                let name = Name::parse("room", &value);
                room = Some(name.map_err(|e| ApiError::bad_request(e.to_string()))?);
            }
            "since" if !value.is_empty() => {
                let id = MsgId::parse(&value);
                since = Some(id.map_err(|e| ApiError::bad_request(format!("since: {e}")))?);
            }
            "since" => {}
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_HISTORY_LIMIT).contains(n))
                    .ok_or_else(|| {
                        let message = format!("`limit` must be 1 to {MAX_HISTORY_LIMIT}");
                        ApiError::bad_request(message)
                    })?;
            }
            _ => return Err(ApiError::bad_request(format!("unknown parameter `{key}`"))),
        }
    }
    let room = room.ok_or_else(|| ApiError::bad_request("missing parameter `room`"))?;
    Ok(HistoryQuery { room, since, limit })
}

/// The answer to a history call: the `msg` frames as they are (JSON objects already).
pub fn history_answer(frames: &[bytes::Bytes], recovered: bool, more: bool) -> String {
    let len: usize = frames.iter().map(|f| f.len() + 1).sum();
    let mut out = String::with_capacity(len + 48);
    out.push_str("{\"messages\":[");
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Frames are the broker's own JSON text, always UTF-8.
        out.push_str(&String::from_utf8_lossy(frame));
    }
    out.push_str(&format!("],\"recovered\":{recovered},\"more\":{more}}}"));
    out
}

#[cfg(test)]
mod tests {
    use super::super::calls::{parse_call, BrokerCall, Call};
    use super::super::http::ApiRequest;
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

    #[test]
    fn history_queries_are_checked() {
        let get = |query: &str| {
            let mut req = post("/api/history", "");
            req.method = "GET".to_owned();
            req.query = query.to_owned();
            parse_call(&req, 100, &mut || unreachable!())
        };
        match get("room=a%3Ab&since=1-0&limit=5") {
            Ok(Call::Broker(BrokerCall::Query(Query::History(q)))) => {
                assert_eq!(q.room.as_str(), "a:b");
                assert_eq!(q.since.as_ref().map(MsgId::as_str), Some("1-0"));
                assert_eq!(q.limit, 5);
            }
            other => panic!("{other:?}"),
        }
        match get("room=r") {
            Ok(Call::Broker(BrokerCall::Query(Query::History(q)))) => {
                assert_eq!((q.since, q.limit), (None, DEFAULT_HISTORY_LIMIT))
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            "room=a%20b",
            "room=r&limit=0",
            "room=r&limit=1001",
            "room=r&x=1",
            "room=%zz",
        ] {
            assert_eq!(get(bad).unwrap_err().status, 400, "{bad}");
        }
        let frame = bytes::Bytes::from_static(br#"{"op":"msg"}"#);
        let frames = [frame.clone(), frame];
        assert_eq!(
            history_answer(&frames, true, false),
            r#"{"messages":[{"op":"msg"},{"op":"msg"}],"recovered":true,"more":false}"#
        );
    }
}
