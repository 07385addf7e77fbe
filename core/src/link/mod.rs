//! The link protocol between a gateway (`hermod-proxy`) and a broker (`hermod-broker`): RESP3
//! over TCP, sans-io. The gateway sends commands (arrays of bulk strings), pipelined, and the
//! broker answers each in order (`+OK` means "accepted"); everything a session is told comes
//! back as RESP3 push frames. An operator can poke a broker with `redis-cli -p PORT`.
//!
//! ```text
//! HELLO [2|3] [AUTH hermod <secret>]        -> map: server, version, proto, node
//! AUTH hermod <secret>                      -> +OK | -WRONGPASS ... (then closed)
//! PING [msg]                                -> +PONG (or the message)
//! INFO [section]                            -> bulk text
//! ATTACH <sid> <user> <device>              -> +OK | -DRAINING ... | -ERR ...
//! DETACH <sid>                              -> +OK
//! SEND <sid> <cid> <to> <data-json>         -> +OK
//! PUBLISH <sid> <cid> <room> <data-json>    -> +OK
//! ACK <sid> <id>                            -> +OK
//! JOIN <sid> <room> [<since>]               -> +OK
//! LEAVE <sid> <room>                        -> +OK
//! RESUME <sid>                              -> +OK   (Request::ResumeReplay)
//!
//! >["ev", sid, "sent", cid, id]             >["ev", sid, "joined", room, "0"|"1"]
//! >["ev", sid, "left", room]                >["ev", sid, "error", cid|"", code, message]
//! >["ev", sid, "overflow"]                  >["ev", sid, "paused"]
//! >["msg", id, frame, sid, sid, ...]        one message frame for several sessions of a link
//! >["draining"]                             the broker is going away: re-home sessions now
//! ```
//!
//! `<sid>` is the gateway's [`SessionKey`] as text (`worker-slot-generation`). The codec
//! validates every field with the bounds of [`crate::ids`]; data is checked to be JSON and at
//! most [`MAX_DATA_LEN`] bytes. Decoding takes a [`Value`] (from [`crate::resp::RespReader`]
//! on the broker, [`crate::resp::RespConn`] pushes on the gateway) and never panics.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod auth;
mod push;
mod request;

use bytes::Bytes;

use crate::bus::{Event, Request, SessionKey};
use crate::ids::MsgId;
use crate::resp::{decimal, put_bulk, put_header, Value};

pub use auth::{
    command_limits, parse_link_secret, pre_auth_limits, LinkSecret, AUTH_USER, COMMAND_MARGIN,
    MAX_COMMAND_ARGS, MAX_SECRET_LEN, MIN_SECRET_LEN, PRE_AUTH_FRAME,
};
pub use push::{
    decode_push, encode_draining, encode_event, encode_message, encode_push, MAX_HISTORY_FRAMES,
};
pub use request::{decode_request, encode_request};

/// The Redis sorted set of live brokers, written by each `hermod-broker` (member
/// `<node-id>@<advertise host:port>`, score the entry's expiry in unix ms) and read by
/// `hermod-proxy --registry` to find them.
pub const REGISTRY_KEY: &str = "hermod:brokers";

/// Largest `data` of a SEND/PUBLISH: the largest message size the gateway can be configured to
/// accept (`--max-message-size` tops out at 64 MiB). Stops a peer from making us hold more.
pub const MAX_DATA_LEN: usize = 64 << 20;
/// Largest `msg` frame in a push: the data plus the frame's own fields (id, names, ts).
pub const MAX_FRAME_LEN: usize = MAX_DATA_LEN + 4096;
/// Most sessions one `msg` push may name; [`encode_message`] callers split larger groups.
pub const MAX_SIDS_PER_PUSH: usize = 4096;
/// Longest error message carried in an `ev error` push; longer ones are cut when encoded.
pub const MAX_ERROR_TEXT: usize = 1024;
/// Longest `PING` message echoed back.
pub const MAX_PING_TEXT: usize = 512;

/// Why a command or push could not be decoded. The connection stays usable (the frame was
/// whole); a server answers `-ERR <this>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not an array of bulk strings.
    #[error("Protocol error: expected an array of bulk strings")]
    NotACommand,
    /// A command name we do not serve (lossy, cut to 32 bytes).
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// The command has too few or too many arguments.
    #[error("wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    /// One field is malformed or out of bounds.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which field (`sid`, `user`, `data`, ...).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A push that is not `ev`, `msg` or `draining`, or an `ev` of an unknown kind.
    #[error("unknown push '{0}'")]
    UnknownPush(String),
}

impl LinkError {
    fn invalid(what: &'static str, reason: impl ToString) -> Self {
        LinkError::Invalid {
            what,
            reason: reason.to_string(),
        }
    }
}

/// One decoded gateway command. Requests carry the gateway's session key (its `sid`); the
/// broker maps it to its own.
#[derive(Debug)]
pub enum LinkCommand {
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`: the protocol version asked for, if
    /// any, and the credentials presented, if any.
    Hello {
        proto: Option<u32>,
        auth: Option<Credentials>,
    },
    /// `AUTH [user] pass` (a lone password is user `default`, as in Redis).
    Auth(Credentials),
    /// `PING [message]`: the heartbeat; answered `+PONG` or with the message.
    Ping { message: Option<Bytes> },
    /// `INFO [section]`: operator text.
    Info,
    /// Work for the broker, `session` being the gateway's sid.
    Request(Request),
}

/// A user name and password presented by a link. `Debug` hides the password.
#[derive(Clone)]
pub struct Credentials {
    pub user: Bytes,
    pub pass: Bytes,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("pass", &"***")
            .finish()
    }
}

/// One decoded broker push.
#[derive(Debug, Clone)]
pub enum LinkPush {
    /// An event for one session (never [`Event::Message`]: messages travel as `Message`).
    Event { sid: SessionKey, event: Event },
    /// One message frame for each of `sids` (a room fan-out crosses the link once).
    Message {
        id: MsgId,
        frame: Bytes,
        sids: Vec<SessionKey>,
    },
    /// The broker is going away: re-home its sessions.
    Draining,
}

/// Parses a sid (`worker-slot-generation`, decimal) as [`SessionKey`]'s `Display` writes it.
pub fn parse_sid(text: &[u8]) -> Option<SessionKey> {
    let mut parts = text.split(|b| *b == b'-');
    let worker = parse_decimal(parts.next()?)?;
    let slot = parse_decimal(parts.next()?)?;
    let generation = parse_decimal(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some(SessionKey {
        worker: u16::try_from(worker).ok()?,
        slot: u32::try_from(slot).ok()?,
        generation: u32::try_from(generation).ok()?,
    })
}

/// Digits only (no sign, no spaces), at most 10 of them.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Appends `key` as a sid (`worker-slot-generation`).
pub fn write_sid(out: &mut Vec<u8>, key: SessionKey) {
    out.extend_from_slice(SidText::new(key).as_bytes());
}

/// A sid (`worker-slot-generation`) formatted on the stack: the encoders write one per command
/// and per push, so it must not allocate.
pub struct SidText {
    buf: [u8; 32],
    len: usize,
}

impl SidText {
    pub fn new(key: SessionKey) -> Self {
        let mut text = SidText {
            buf: [0; 32],
            len: 0,
        };
        text.push(u64::from(key.worker));
        text.buf[text.len] = b'-';
        text.len += 1;
        text.push(u64::from(key.slot));
        text.buf[text.len] = b'-';
        text.len += 1;
        text.push(u64::from(key.generation));
        text
    }

    /// At most 5 + 1 + 10 + 1 + 10 = 27 bytes: always fits.
    fn push(&mut self, n: u64) {
        let mut scratch = [0u8; 20];
        let digits = decimal(n, &mut scratch);
        let end = self.len + digits.len();
        self.buf[self.len..end].copy_from_slice(digits);
        self.len = end;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The elements of a command or push as byte strings, or [`LinkError::NotACommand`].
fn byte_strings(value: Value) -> Result<Vec<Bytes>, LinkError> {
    let items = value.into_array().ok_or(LinkError::NotACommand)?;
    items
        .into_iter()
        .map(|v| match v {
            Value::Bulk(b) | Value::Simple(b) => Ok(b),
            _ => Err(LinkError::NotACommand),
        })
        .collect()
}

/// A field as UTF-8 text.
fn text<'a>(what: &'static str, b: &'a [u8]) -> Result<&'a str, LinkError> {
    std::str::from_utf8(b).map_err(|_| LinkError::invalid(what, "not UTF-8"))
}

/// A sid field.
fn sid(b: &[u8]) -> Result<SessionKey, LinkError> {
    parse_sid(b).ok_or_else(|| LinkError::invalid("sid", "expected worker-slot-generation"))
}

/// Lossy, bounded text of a name we refuse, for an error message.
fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(32)]).into_owned()
}

#[cfg(test)]
mod tests;
