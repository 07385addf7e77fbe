//! Broker pushes: `encode_*` on the broker, [`decode_push`] on the gateway.

use bytes::{Bytes, BytesMut};

use super::request::{cid_arg, id_arg, name_arg};
use super::{byte_strings, put_bulk, put_header, shown, sid, text, SidText};
use super::{LinkError, LinkPush, MAX_ERROR_TEXT, MAX_FRAME_LEN, MAX_SIDS_PER_PUSH};

/// Most messages one history answer carries (a request's `limit` is capped to it).
pub const MAX_HISTORY_FRAMES: usize = 1000;
/// Most members of a presence answer, and devices of an online answer.
const MAX_LISTED: usize = crate::bus::MAX_PRESENCE_MEMBERS as usize;
use crate::bus::{Event, SessionKey};
use crate::ids::MsgId;
use crate::protocol::ErrorCode;
use crate::resp::Value;

/// Every error code, to map the text back.
const ERROR_CODES: [ErrorCode; 6] = [
    ErrorCode::BadRequest,
    ErrorCode::Forbidden,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::Unavailable,
    ErrorCode::NotJoined,
];

/// Appends any push.
pub fn encode_push(push: &LinkPush, out: &mut BytesMut) {
    match push {
        LinkPush::Event { sid, event } => encode_event(*sid, event, out),
        LinkPush::Message { id, frame, sids } => encode_message(id, frame, sids, out),
        LinkPush::Draining => encode_draining(out),
    }
}

/// Appends one event for one session. [`Event::Message`] becomes a `msg` push with one sid.
pub fn encode_event(session: SessionKey, event: &Event, out: &mut BytesMut) {
    let sid = SidText::new(session);
    let sid = sid.as_bytes();
    let fields: &[&[u8]] = match event {
        Event::Sent { cid, id } => &[b"sent", cid.as_str().as_bytes(), id.as_str().as_bytes()],
        Event::Joined { room, recovered } => &[
            b"joined",
            room.as_str().as_bytes(),
            if *recovered { b"1" } else { b"0" },
        ],
        Event::Left { room } => &[b"left", room.as_str().as_bytes()],
        Event::Error { cid, code, message } => {
            let cid = cid.as_ref().map_or(&b""[..], |c| c.as_str().as_bytes());
            let message = cut(message, MAX_ERROR_TEXT);
            return put_push(
                out,
                &[b"ev", sid, b"error", cid, code.as_str().as_bytes(), message],
            );
        }
        Event::Message { id, frame } => return encode_message(id, frame, &[session], out),
        Event::Overflow => &[b"overflow"],
        Event::ReplayPaused => &[b"paused"],
        Event::History {
            cid,
            recovered,
            frames,
            more,
        } => {
            let flag = |b: bool| if b { &b"1"[..] } else { &b"0"[..] };
            let mut items: Vec<&[u8]> = vec![
                b"ev",
                sid,
                b"history",
                cid.as_str().as_bytes(),
                flag(*recovered),
                flag(*more),
            ];
            items.extend(frames.iter().take(MAX_HISTORY_FRAMES).map(|f| &f[..]));
            return put_push(out, &items);
        }
        Event::Presence(presence) => {
            let crate::bus::Presence {
                cid,
                room,
                count,
                members,
            } = &**presence;
            let count = count.to_string();
            let mut items: Vec<&[u8]> = vec![
                b"ev",
                sid,
                b"presence",
                cid.as_str().as_bytes(),
                room.as_str().as_bytes(),
                count.as_bytes(),
            ];
            for (user, device) in members.iter().take(MAX_LISTED) {
                items.push(user.as_str().as_bytes());
                items.push(device.as_str().as_bytes());
            }
            return put_push(out, &items);
        }
        Event::Online { cid, devices } => {
            let mut items: Vec<&[u8]> = vec![b"ev", sid, b"online", cid.as_str().as_bytes()];
            items.extend(
                devices
                    .iter()
                    .take(MAX_LISTED)
                    .map(|d| d.as_str().as_bytes()),
            );
            return put_push(out, &items);
        }
        Event::Disconnected { cid, count } => {
            let count = count.to_string();
            let items: [&[u8]; 5] = [
                b"ev",
                sid,
                b"disconnected",
                cid.as_str().as_bytes(),
                count.as_bytes(),
            ];
            return put_push(out, &items);
        }
        Event::Kicked { reason } => {
            let reason = cut(reason, crate::bus::MAX_KICK_REASON);
            return put_push(out, &[b"ev", sid, b"kicked", reason]);
        }
    };
    put_header(out, b'>', fields.len() + 2);
    put_bulk(out, b"ev");
    put_bulk(out, sid);
    for f in fields {
        put_bulk(out, f);
    }
}

/// Appends one message frame for `sids` (at most [`MAX_SIDS_PER_PUSH`]: callers split larger
/// groups; extra sids are not written).
pub fn encode_message(id: &MsgId, frame: &[u8], sids: &[SessionKey], out: &mut BytesMut) {
    let sids = &sids[..sids.len().min(MAX_SIDS_PER_PUSH)];
    out.reserve(frame.len() + 32 + sids.len() * 24);
    put_header(out, b'>', 3 + sids.len());
    put_bulk(out, b"msg");
    put_bulk(out, id.as_str().as_bytes());
    put_bulk(out, frame);
    for key in sids {
        put_bulk(out, SidText::new(*key).as_bytes());
    }
}

/// Appends `>["draining"]`.
pub fn encode_draining(out: &mut BytesMut) {
    put_push(out, &[b"draining"]);
}

fn put_push(out: &mut BytesMut, items: &[&[u8]]) {
    put_header(out, b'>', items.len());
    for item in items {
        put_bulk(out, item);
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> &[u8] {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

/// Decodes one push a broker sent (the elements of a `>` frame, as `RespConn` gives them).
/// Never panics; every field is bounded.
pub fn decode_push(value: Value) -> Result<LinkPush, LinkError> {
    let items = byte_strings(value)?;
    let Some((kind, rest)) = items.split_first() else {
        return Err(LinkError::UnknownPush(String::new()));
    };
    match &kind[..] {
        b"ev" => decode_event(rest),
        b"msg" => decode_message(rest),
        b"draining" if rest.is_empty() => Ok(LinkPush::Draining),
        _ => Err(LinkError::UnknownPush(shown(kind))),
    }
}

fn decode_event(rest: &[Bytes]) -> Result<LinkPush, LinkError> {
    let [sid_text, kind, fields @ ..] = rest else {
        return Err(LinkError::WrongArity("ev"));
    };
    let sid = sid(sid_text)?;
    let event = match (&kind[..], fields) {
        (b"sent", [cid, id]) => Event::Sent {
            cid: cid_arg(cid)?,
            id: id_arg("id", id)?,
        },
        (b"joined", [room, recovered]) => Event::Joined {
            room: name_arg("room", room)?,
            recovered: flag("recovered", recovered)?,
        },
        (b"left", [room]) => Event::Left {
            room: name_arg("room", room)?,
        },
        (b"error", [cid, code, message]) => decode_error(cid, code, message)?,
        (b"history", [cid, recovered, more, frames @ ..]) if frames.len() <= MAX_HISTORY_FRAMES => {
            Event::History {
                cid: cid_arg(cid)?,
                recovered: flag("recovered", recovered)?,
                more: flag("more", more)?,
                frames: frames.to_vec(),
            }
        }
        (b"overflow", []) => Event::Overflow,
        (b"paused", []) => Event::ReplayPaused,
        (b"presence", [cid, room, count, members @ ..])
            if members.len() % 2 == 0 && members.len() <= 2 * MAX_LISTED =>
        {
            Event::Presence(Box::new(crate::bus::Presence {
                cid: cid_arg(cid)?,
                room: name_arg("room", room)?,
                count: super::parse_decimal(count)
                    .ok_or_else(|| LinkError::invalid("count", "not an integer"))?,
                members: members
                    .chunks(2)
                    .map(|p| Ok((name_arg("user", &p[0])?, name_arg("device", &p[1])?)))
                    .collect::<Result<_, LinkError>>()?,
            }))
        }
        (b"online", [cid, devices @ ..]) if devices.len() <= MAX_LISTED => Event::Online {
            cid: cid_arg(cid)?,
            devices: devices
                .iter()
                .map(|d| name_arg("device", d))
                .collect::<Result<_, _>>()?,
        },
        (b"disconnected", [cid, count]) => Event::Disconnected {
            cid: cid_arg(cid)?,
            count: super::parse_decimal(count)
                .ok_or_else(|| LinkError::invalid("count", "not an integer"))?,
        },
        (b"kicked", [reason]) if reason.len() <= crate::bus::MAX_KICK_REASON => Event::Kicked {
            reason: text("reason", reason)?.to_owned(),
        },
        (
            b"sent" | b"joined" | b"left" | b"error" | b"overflow" | b"paused" | b"history"
            | b"presence" | b"online" | b"disconnected" | b"kicked",
            _,
        ) => return Err(LinkError::WrongArity("ev")),
        _ => return Err(LinkError::UnknownPush(format!("ev {}", shown(kind)))),
    };
    Ok(LinkPush::Event { sid, event })
}

fn flag(what: &'static str, b: &[u8]) -> Result<bool, LinkError> {
    match b {
        b"1" => Ok(true),
        b"0" => Ok(false),
        _ => Err(LinkError::invalid(what, "expected 0 or 1")),
    }
}

fn decode_error(cid: &[u8], code: &[u8], message: &[u8]) -> Result<Event, LinkError> {
    let cid = if cid.is_empty() {
        None
    } else {
        Some(cid_arg(cid)?)
    };
    let code = ERROR_CODES
        .into_iter()
        .find(|c| c.as_str().as_bytes() == code)
        .ok_or_else(|| LinkError::invalid("code", shown(code)))?;
    if message.len() > MAX_ERROR_TEXT {
        return Err(LinkError::invalid("message", "too long"));
    }
    Ok(Event::Error {
        cid,
        code,
        message: text("message", message)?.to_owned(),
    })
}

fn decode_message(rest: &[Bytes]) -> Result<LinkPush, LinkError> {
    let [id, frame, sids @ ..] = rest else {
        return Err(LinkError::WrongArity("msg"));
    };
    if sids.is_empty() || sids.len() > MAX_SIDS_PER_PUSH {
        return Err(LinkError::invalid("msg", "1 to 4096 sids expected"));
    }
    if frame.len() > MAX_FRAME_LEN {
        return Err(LinkError::invalid("frame", "too large"));
    }
    text("frame", frame)?;
    Ok(LinkPush::Message {
        id: id_arg("id", id)?,
        frame: frame.clone(),
        sids: sids.iter().map(|s| sid(s)).collect::<Result<_, _>>()?,
    })
}
