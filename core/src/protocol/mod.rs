//! The v1 client protocol (docs/protocol.md): JSON text frames in, JSON text frames out. Sans-io: text in,
//! typed frames out, and typed frames to text.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use serde_json::value::RawValue;

use crate::ids::{Cid, MsgId, Name};

mod depth;
pub use depth::{nests_deeper_than, MAX_DATA_DEPTH};

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Forbidden,
    TooLarge,
    RateLimited,
    Unavailable,
    NotJoined,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotJoined => "not_joined",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame a client sent, validated.
#[derive(Debug)]
pub enum ClientFrame {
    Send {
        to: Name,
        cid: Cid,
        data: Box<RawValue>,
    },
    Ack {
        id: MsgId,
    },
    Join {
        room: Name,
        since: Option<MsgId>,
    },
    Leave {
        room: Name,
    },
    Publish {
        room: Name,
        cid: Cid,
        data: Box<RawValue>,
    },
    /// A new token for the open session (at most [`crate::jwt::MAX_TOKEN_LEN`] bytes).
    Refresh {
        token: String,
    },
    /// Who is in a room the client may join.
    Presence {
        room: Name,
    },
}

/// Why a client frame was refused. Answered with `error`/`bad_request`; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadFrame {
    /// The frame's `cid`, when it had a readable one, so the client can match the error.
    pub cid: Option<Cid>,
    pub message: String,
    /// `data` nested deeper than [`MAX_DATA_DEPTH`] (counted apart in the metrics).
    pub too_deep: bool,
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Longest prefix of an unknown `op` quoted back in the error, so a peer cannot make us echo
/// kilobytes.
const MAX_QUOTED_OP: usize = 32;

/// The refusal of a `data` nested past [`MAX_DATA_DEPTH`].
const TOO_DEEP: &str = "`data` nests deeper than 64 levels";

/// Parses one client text frame (docs/protocol.md): a JSON object whose `op` is `send`, `ack`, `join`,
/// `leave`, `publish` or `refresh`.
///
/// Every refusal is a [`BadFrame`] with a one-line message and, when the frame had a readable,
/// valid `cid`, that `cid`, so the client can match the error to its request. Unknown extra fields
/// are ignored; a repeated field is refused. `since: null` counts as absent.
///
/// Bounds: the caller bounds the frame size (spec: 64 KiB); `data` may nest at most
/// [`MAX_DATA_DEPTH`] levels (checked by one byte scan, [`nests_deeper_than`]). Nesting depth costs no stack: the
/// object itself is the only level we descend into, and every value we do not read as a string
/// (`data`, unknown fields, wrongly typed fields) is skipped by serde_json's iterative scanner.
/// serde_json's recursion limit (128 levels) would stop any recursive descent added later.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, BadFrame> {
    let raw: Raw<'_> = serde_json::from_str(text).map_err(|e| {
        let message = match e.classify() {
            // Our visitors accept any value inside the object, so a type error can only mean
            // the frame itself is not an object. serde_json's message would quote the value.
            Category::Data => "a frame must be a JSON object".to_owned(),
            _ => format!("malformed JSON: {e}"),
        };
        BadFrame {
            cid: None,
            message,
            too_deep: false,
        }
    })?;
    raw.build().map_err(|message| BadFrame {
        cid: readable_cid(&raw.cid),
        too_deep: message == TOO_DEEP,
        message,
    })
}

/// The fields of a frame as read, before validation. Strings are borrowed from the frame unless
/// they contained escapes.
#[derive(Default)]
struct Raw<'a> {
    /// Which request this is; decides which other fields are required.
    op: Option<Field<'a>>,
    /// Recipient of a `send`.
    to: Option<Field<'a>>,
    /// The client's request id (`send`, `publish`); also echoed on errors for any op.
    cid: Option<Field<'a>>,
    /// Target room of `join`, `leave`, `publish`.
    room: Option<Field<'a>>,
    /// Message id acknowledged by `ack`.
    id: Option<Field<'a>>,
    /// Optional position for `join`.
    since: Option<Field<'a>>,
    /// The new token of `refresh`.
    token: Option<Field<'a>>,
    /// The opaque payload, kept verbatim: the server never looks inside it.
    data: Option<&'a RawValue>,
    /// The first field that appeared twice: refused, since two readers could disagree on it.
    duplicate: Option<&'static str>,
}

/// One field's value as the parser sees it: the string we want, or what came instead.
enum Field<'a> {
    Str(Cow<'a, str>),
    Null,
    /// Another JSON type, named for the error message ("a number", "an array", ...).
    Other(&'static str),
}

/// A map key: borrowed from the frame unless it contained escapes.
struct Key<'a>(Cow<'a, str>);

impl<'a> Raw<'a> {
    /// Validates the fields for the op; the error is the message for [`BadFrame`].
    fn build(&self) -> Result<ClientFrame, String> {
        if let Some(field) = self.duplicate {
            return Err(format!("duplicate field `{field}`"));
        }
        match required_str("op", &self.op)? {
            "send" => Ok(ClientFrame::Send {
                to: user("to", &self.to)?,
                cid: cid(&self.cid)?,
                data: self.data()?,
            }),
            "ack" => Ok(ClientFrame::Ack {
                id: msg_id("id", &self.id)?,
            }),
            "join" => Ok(ClientFrame::Join {
                room: name("room", &self.room)?,
                since: match self.since {
                    None | Some(Field::Null) => None,
                    Some(_) => Some(msg_id("since", &self.since)?),
                },
            }),
            "leave" => Ok(ClientFrame::Leave {
                room: name("room", &self.room)?,
            }),
            "publish" => Ok(ClientFrame::Publish {
                room: name("room", &self.room)?,
                cid: cid(&self.cid)?,
                data: self.data()?,
            }),
            "refresh" => {
                let token = required_str("token", &self.token)?;
                if token.len() > crate::jwt::MAX_TOKEN_LEN {
                    let max = crate::jwt::MAX_TOKEN_LEN;
                    return Err(format!("`token` is longer than {max} bytes"));
                }
                Ok(ClientFrame::Refresh {
                    token: token.to_owned(),
                })
            }
            "presence" => Ok(ClientFrame::Presence {
                room: name("room", &self.room)?,
            }),
            other => Err(format!("unknown op `{}`", clip(other, MAX_QUOTED_OP))),
        }
    }

    /// The payload, refused when it nests deeper than [`MAX_DATA_DEPTH`] (one byte scan of the
    /// text serde_json already validated; no second parse).
    fn data(&self) -> Result<Box<RawValue>, String> {
        let data = self.data.ok_or_else(|| "missing field `data`".to_owned())?;
        if nests_deeper_than(data.get(), MAX_DATA_DEPTH) {
            return Err(TOO_DEEP.to_owned());
        }
        Ok(data.to_owned())
    }
}

fn required_str<'b>(field: &'static str, value: &'b Option<Field<'_>>) -> Result<&'b str, String> {
    match value {
        Some(Field::Str(s)) => Ok(s),
        None => Err(format!("missing field `{field}`")),
        Some(Field::Null) => Err(format!("`{field}` must be a string, not null")),
        Some(Field::Other(kind)) => Err(format!("`{field}` must be a string, not {kind}")),
    }
}

fn name(field: &'static str, value: &Option<Field<'_>>) -> Result<Name, String> {
    Name::parse(field, required_str(field, value)?).map_err(|e| e.to_string())
}

/// A recipient: a user id a client may name (never a server API sender).
fn user(field: &'static str, value: &Option<Field<'_>>) -> Result<Name, String> {
    Name::parse_user(field, required_str(field, value)?).map_err(|e| e.to_string())
}

fn cid(value: &Option<Field<'_>>) -> Result<Cid, String> {
    Cid::parse(required_str("cid", value)?).map_err(|e| e.to_string())
}

fn msg_id(field: &'static str, value: &Option<Field<'_>>) -> Result<MsgId, String> {
    MsgId::parse(required_str(field, value)?).map_err(|e| format!("`{field}`: {e}"))
}

fn readable_cid(value: &Option<Field<'_>>) -> Option<Cid> {
    match value {
        Some(Field::Str(s)) => Cid::parse(s).ok(),
        _ => None,
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let mut raw = Raw::default();
        while let Some(Key(key)) = map.next_key()? {
            let (field, slot) = match &*key {
                "op" => ("op", &mut raw.op),
                "to" => ("to", &mut raw.to),
                "cid" => ("cid", &mut raw.cid),
                "room" => ("room", &mut raw.room),
                "id" => ("id", &mut raw.id),
                "since" => ("since", &mut raw.since),
                "token" => ("token", &mut raw.token),
                "data" => {
                    let data: &'de RawValue = map.next_value()?;
                    if raw.data.replace(data).is_some() {
                        raw.duplicate.get_or_insert("data");
                    }
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.replace(map.next_value()?).is_some() {
                raw.duplicate.get_or_insert(field);
            }
        }
        Ok(raw)
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Field<'de>, E> {
        Ok(Field::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Field<'de>, E> {
        Ok(Field::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other("a number"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Other("an object"))
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// `{"op":"welcome","user":U,"device":D,"session":ID}`: the first frame of every session.
pub fn encode_welcome(user: &Name, device: &Name, session: &str) -> String {
    let len = user.as_str().len() + device.as_str().len() + session.len();
    Obj::new("welcome", len)
        .str("user", user.as_str())
        .str("device", device.as_str())
        .str("session", session)
        .finish()
}

/// `{"op":"sent","cid":C,"id":ID}`: a `send` or `publish` is stored.
pub fn encode_sent(cid: &Cid, id: &MsgId) -> String {
    Obj::new("sent", cid.as_str().len() + id.as_str().len())
        .str("cid", cid.as_str())
        .str("id", id.as_str())
        .finish()
}

/// `{"op":"joined","room":R,"recovered":BOOL}`.
pub fn encode_joined(room: &Name, recovered: bool) -> String {
    Obj::new("joined", room.as_str().len())
        .str("room", room.as_str())
        .bool("recovered", recovered)
        .finish()
}

/// `{"op":"left","room":R}`.
pub fn encode_left(room: &Name) -> String {
    Obj::new("left", room.as_str().len())
        .str("room", room.as_str())
        .finish()
}

/// `{"op":"presence","room":R,"count":N,"members":[{"user":U,"device":D},...]}`: `count`
/// sessions are in the room; `members` lists the (user, device) of some of them.
pub fn encode_presence(room: &Name, count: u64, members: &[(Name, Name)]) -> String {
    let members: Vec<serde_json::Value> = members
        .iter()
        .map(|(u, d)| serde_json::json!({"user": u.as_str(), "device": d.as_str()}))
        .collect();
    let body = serde_json::json!({"room": room.as_str(), "count": count, "members": members});
    let mut out = String::from(r#"{"op":"presence","#);
    let text = body.to_string();
    out.push_str(&text[1..]);
    out
}

/// `{"op":"disconnect","reason":TEXT}`: the server closes this session (4002 follows).
pub fn encode_disconnect(reason: &str) -> String {
    Obj::new("disconnect", reason.len())
        .str("reason", reason)
        .finish()
}

/// `{"op":"refreshed","exp":UNIX}`: the session's token was replaced; it now expires at `exp`.
pub fn encode_refreshed(exp: u64) -> String {
    Obj::new("refreshed", 20).uint("exp", exp).finish()
}

/// `{"op":"expiring","exp":UNIX}`: the session's token expires at `exp`; send `refresh`.
pub fn encode_expiring(exp: u64) -> String {
    Obj::new("expiring", 20).uint("exp", exp).finish()
}

/// `{"op":"error","cid":C,"code":CODE,"message":TEXT}`; `cid` is left out when there is none.
pub fn encode_error(cid: Option<&Cid>, code: ErrorCode, message: &str) -> String {
    let cid_len = cid.map_or(0, |c| c.as_str().len());
    let mut obj = Obj::new("error", cid_len + message.len());
    if let Some(cid) = cid {
        obj = obj.str("cid", cid.as_str());
    }
    obj.str("code", code.as_str())
        .str("message", message)
        .finish()
}

/// `{"op":"msg","id":ID,"from":U,"to":U,"data":ANY,"ts":MS}`: a direct message.
pub fn encode_direct_msg(
    id: &MsgId,
    from: &Name,
    to: &Name,
    data: &RawValue,
    ts_ms: u64,
) -> String {
    msg(id, from, ("to", to), data, ts_ms)
}

/// `{"op":"msg","id":ID,"from":U,"room":R,"data":ANY,"ts":MS}`: a room message.
pub fn encode_room_msg(
    id: &MsgId,
    from: &Name,
    room: &Name,
    data: &RawValue,
    ts_ms: u64,
) -> String {
    msg(id, from, ("room", room), data, ts_ms)
}

/// A message from a server API sender ([`Name::server_sender`]) says `"server":true` and shows
/// the user it was sent in the name of, if any, as `from`; `data` is the only field a client
/// controls, so no client can forge the mark.
fn msg(id: &MsgId, from: &Name, target: (&str, &Name), data: &RawValue, ts_ms: u64) -> String {
    let len = id.as_str().len() + from.as_str().len() + target.1.as_str().len() + data.get().len();
    let obj = Obj::new("msg", len).str("id", id.as_str());
    let obj = match from.as_str().strip_prefix(crate::ids::SERVER_MARK) {
        None => obj.str("from", from.as_str()),
        Some("") => obj.bool("server", true),
        Some(user) => obj.str("from", user).bool("server", true),
    };
    obj.str(target.0, target.1.as_str())
        .raw("data", data)
        .uint("ts", ts_ms)
        .finish()
}

/// Writes one JSON object into a single, pre-sized buffer. Keys are our own constants (plain
/// ASCII, no escaping needed); string values are escaped.
struct Obj {
    /// The text so far: `{"op":"..."` plus the fields added.
    out: String,
}

impl Obj {
    /// Starts an object with `op` first; `payload_len` is the total length of the values to
    /// come, so the buffer is allocated once in the common case (values without escapes).
    fn new(op: &str, payload_len: usize) -> Self {
        let mut out = String::with_capacity(payload_len + 80);
        out.push_str("{\"op\":\"");
        out.push_str(op);
        out.push('"');
        Obj { out }
    }

    fn key(&mut self, key: &str) {
        self.out.push_str(",\"");
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_json_str(&mut self.out, value);
        self
    }

    fn raw(mut self, key: &str, value: &RawValue) -> Self {
        self.key(key);
        self.out.push_str(value.get());
        self
    }

    fn bool(mut self, key: &str, value: bool) -> Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    fn uint(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        // Writing to a String cannot fail.
        let _ = write!(self.out, "{value}");
        self
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Appends `s` as a JSON string literal, escaped as serde_json does: `"` `\` and control
/// characters; everything else (including non-ASCII) verbatim.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is the index of an ASCII byte, so always a character boundary.
        out.push_str(&s[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests;
