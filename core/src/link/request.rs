//! Gateway commands: [`encode_request`] on the gateway, [`decode_request`] on the broker.

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;

use super::{byte_strings, put_bulk, put_header, shown, sid, text, SidText};
use super::{Credentials, LinkCommand, LinkError, MAX_DATA_LEN, MAX_PING_TEXT};
use crate::bus::Request;
use crate::ids::{Cid, MsgId, Name};
use crate::resp::Value;

/// Appends `request` as a link command (its `session` written as the sid).
pub fn encode_request(request: &Request, out: &mut BytesMut) {
    let sid_text = SidText::new(request.session());
    let sid = sid_text.as_bytes();
    match request {
        Request::Attach { user, device, .. } => command(
            out,
            &[
                b"ATTACH",
                sid,
                user.as_str().as_bytes(),
                device.as_str().as_bytes(),
            ],
        ),
        Request::Detach { .. } => command(out, &[b"DETACH", sid]),
        Request::Send { cid, to, data, .. } => command(
            out,
            &[
                b"SEND",
                sid,
                cid.as_str().as_bytes(),
                to.as_str().as_bytes(),
                data.get().as_bytes(),
            ],
        ),
        Request::Publish {
            cid, room, data, ..
        } => command(
            out,
            &[
                b"PUBLISH",
                sid,
                cid.as_str().as_bytes(),
                room.as_str().as_bytes(),
                data.get().as_bytes(),
            ],
        ),
        Request::Ack { id, .. } => command(out, &[b"ACK", sid, id.as_str().as_bytes()]),
        Request::Join { room, since, .. } => match since {
            Some(since) => command(
                out,
                &[
                    b"JOIN",
                    sid,
                    room.as_str().as_bytes(),
                    since.as_str().as_bytes(),
                ],
            ),
            None => command(out, &[b"JOIN", sid, room.as_str().as_bytes()]),
        },
        Request::Leave { room, .. } => command(out, &[b"LEAVE", sid, room.as_str().as_bytes()]),
        Request::ResumeReplay { .. } => command(out, &[b"RESUME", sid]),
        Request::History {
            cid,
            room,
            since,
            limit,
            ..
        } => {
            let limit = limit.to_string();
            let mut args: Vec<&[u8]> = vec![
                b"HISTORY",
                sid,
                cid.as_str().as_bytes(),
                room.as_str().as_bytes(),
                limit.as_bytes(),
            ];
            if let Some(since) = since {
                args.push(since.as_str().as_bytes());
            }
            command(out, &args);
        }
        Request::Presence {
            cid, room, limit, ..
        } => {
            let limit = limit.to_string();
            let cid = cid.as_str().as_bytes();
            command(
                out,
                &[
                    b"PRESENCE",
                    sid,
                    cid,
                    room.as_str().as_bytes(),
                    limit.as_bytes(),
                ],
            );
        }
        Request::Online { cid, user, .. } => command(
            out,
            &[
                b"ONLINE",
                sid,
                cid.as_str().as_bytes(),
                user.as_str().as_bytes(),
            ],
        ),
        Request::Kick { kick, .. } => {
            let crate::bus::Kick {
                cid,
                user,
                device,
                reason,
                ban_secs,
            } = &**kick;
            let ban = ban_secs.to_string();
            let device = device
                .as_ref()
                .map_or(ANY_DEVICE, |d| d.as_str().as_bytes());
            let args: [&[u8]; 7] = [
                b"KICK",
                sid,
                cid.as_str().as_bytes(),
                user.as_str().as_bytes(),
                device,
                reason.as_bytes(),
                ban.as_bytes(),
            ];
            command(out, &args);
        }
    }
}

/// The device argument of a `KICK` of every device (`*` is no valid device name).
const ANY_DEVICE: &[u8] = b"*";

fn number<T: TryFrom<u64>>(what: &'static str, b: &[u8]) -> Result<T, LinkError> {
    super::parse_decimal(b)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| LinkError::invalid(what, "not an integer"))
}

fn command(out: &mut BytesMut, args: &[&[u8]]) {
    let body: usize = args.iter().map(|a| a.len() + 16).sum();
    out.reserve(body + 16);
    put_header(out, b'*', args.len());
    for arg in args {
        put_bulk(out, arg);
    }
}

/// Decodes one command a gateway (or `redis-cli`) sent. Never panics; every field is bounded.
pub fn decode_request(value: Value) -> Result<LinkCommand, LinkError> {
    let args = byte_strings(value)?;
    let Some((name, rest)) = args.split_first() else {
        return Err(LinkError::NotACommand);
    };
    let upper = name.to_ascii_uppercase();
    let cmd = match &upper[..] {
        b"PING" => ping(rest)?,
        b"HELLO" => hello(rest)?,
        b"AUTH" => auth(rest)?,
        b"INFO" => {
            arity("info", rest, 0, 1)?;
            LinkCommand::Info
        }
        _ => LinkCommand::Request(request(&upper, name, rest)?),
    };
    Ok(cmd)
}

fn ping(rest: &[Bytes]) -> Result<LinkCommand, LinkError> {
    arity("ping", rest, 0, 1)?;
    let message = rest.first().cloned();
    if message.as_ref().is_some_and(|m| m.len() > MAX_PING_TEXT) {
        return Err(LinkError::invalid("message", "too long"));
    }
    Ok(LinkCommand::Ping { message })
}

fn hello(rest: &[Bytes]) -> Result<LinkCommand, LinkError> {
    // `HELLO [protover [AUTH user pass] [SETNAME name]]`: AUTH is checked by the broker,
    // SETNAME accepted and ignored.
    if rest.len() > 6 {
        return Err(LinkError::WrongArity("hello"));
    }
    let proto = match rest.first() {
        None => None,
        Some(v) => Some(
            super::parse_decimal(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| LinkError::invalid("protover", "not an integer"))?,
        ),
    };
    let mut auth = None;
    let mut options = rest.iter().skip(1);
    while let Some(option) = options.next() {
        let mut value = || options.next().ok_or(LinkError::WrongArity("hello"));
        if option.eq_ignore_ascii_case(b"AUTH") {
            let user = value()?.clone();
            let pass = value()?.clone();
            auth = Some(Credentials { user, pass });
        } else if option.eq_ignore_ascii_case(b"SETNAME") {
            value()?;
        } else {
            return Err(LinkError::invalid("option", "expected AUTH or SETNAME"));
        }
    }
    Ok(LinkCommand::Hello { proto, auth })
}

fn auth(rest: &[Bytes]) -> Result<LinkCommand, LinkError> {
    arity("auth", rest, 1, 2)?;
    let credentials = match rest {
        [pass] => Credentials {
            user: Bytes::from_static(b"default"),
            pass: pass.clone(),
        },
        [user, pass] => Credentials {
            user: user.clone(),
            pass: pass.clone(),
        },
        _ => return Err(LinkError::WrongArity("auth")),
    };
    Ok(LinkCommand::Auth(credentials))
}

fn request(upper: &[u8], name: &[u8], rest: &[Bytes]) -> Result<Request, LinkError> {
    Ok(match upper {
        b"ATTACH" => {
            arity("attach", rest, 3, 3)?;
            Request::Attach {
                session: sid(&rest[0])?,
                user: name_arg("user", &rest[1])?,
                device: name_arg("device", &rest[2])?,
            }
        }
        b"DETACH" => {
            arity("detach", rest, 1, 1)?;
            Request::Detach {
                session: sid(&rest[0])?,
            }
        }
        b"SEND" => {
            arity("send", rest, 4, 4)?;
            Request::Send {
                session: sid(&rest[0])?,
                cid: cid_arg(&rest[1])?,
                to: name_arg("to", &rest[2])?,
                data: data_arg(&rest[3])?,
            }
        }
        b"PUBLISH" => {
            arity("publish", rest, 4, 4)?;
            Request::Publish {
                session: sid(&rest[0])?,
                cid: cid_arg(&rest[1])?,
                room: name_arg("room", &rest[2])?,
                data: data_arg(&rest[3])?,
            }
        }
        b"ACK" => {
            arity("ack", rest, 2, 2)?;
            Request::Ack {
                session: sid(&rest[0])?,
                id: id_arg("id", &rest[1])?,
            }
        }
        b"JOIN" => {
            arity("join", rest, 2, 3)?;
            Request::Join {
                session: sid(&rest[0])?,
                room: name_arg("room", &rest[1])?,
                since: rest.get(2).map(|s| id_arg("since", s)).transpose()?,
            }
        }
        b"LEAVE" => {
            arity("leave", rest, 2, 2)?;
            Request::Leave {
                session: sid(&rest[0])?,
                room: name_arg("room", &rest[1])?,
            }
        }
        b"RESUME" => {
            arity("resume", rest, 1, 1)?;
            Request::ResumeReplay {
                session: sid(&rest[0])?,
            }
        }
        b"HISTORY" => {
            arity("history", rest, 4, 5)?;
            Request::History {
                session: sid(&rest[0])?,
                cid: cid_arg(&rest[1])?,
                room: name_arg("room", &rest[2])?,
                limit: number("limit", &rest[3])?,
                since: rest.get(4).map(|s| id_arg("since", s)).transpose()?,
            }
        }
        b"PRESENCE" => {
            arity("presence", rest, 4, 4)?;
            Request::Presence {
                session: sid(&rest[0])?,
                cid: cid_arg(&rest[1])?,
                room: name_arg("room", &rest[2])?,
                limit: number("limit", &rest[3])?,
            }
        }
        b"ONLINE" => {
            arity("online", rest, 3, 3)?;
            Request::Online {
                session: sid(&rest[0])?,
                cid: cid_arg(&rest[1])?,
                user: name_arg("user", &rest[2])?,
            }
        }
        b"KICK" => {
            arity("kick", rest, 6, 6)?;
            let reason = text("reason", &rest[4])?;
            if reason.len() > crate::bus::MAX_KICK_REASON {
                return Err(LinkError::invalid("reason", "too long"));
            }
            let kick = crate::bus::Kick {
                cid: cid_arg(&rest[1])?,
                user: name_arg("user", &rest[2])?,
                device: match &rest[3][..] {
                    ANY_DEVICE => None,
                    device => Some(name_arg("device", device)?),
                },
                reason: reason.to_owned(),
                ban_secs: number::<u32>("ban", &rest[5])?.min(crate::bus::MAX_BAN_SECS),
            };
            Request::Kick {
                session: sid(&rest[0])?,
                kick: Box::new(kick),
            }
        }
        _ => return Err(LinkError::UnknownCommand(shown(name))),
    })
}

fn arity(cmd: &'static str, rest: &[Bytes], min: usize, max: usize) -> Result<(), LinkError> {
    if rest.len() < min || rest.len() > max {
        return Err(LinkError::WrongArity(cmd));
    }
    Ok(())
}

pub(super) fn name_arg(what: &'static str, b: &[u8]) -> Result<Name, LinkError> {
    Name::parse(what, text(what, b)?).map_err(|e| LinkError::invalid(what, e))
}

pub(super) fn cid_arg(b: &[u8]) -> Result<Cid, LinkError> {
    Cid::parse(text("cid", b)?).map_err(|e| LinkError::invalid("cid", e))
}

pub(super) fn id_arg(what: &'static str, b: &[u8]) -> Result<MsgId, LinkError> {
    MsgId::parse(text(what, b)?).map_err(|e| LinkError::invalid(what, e))
}

fn data_arg(b: &[u8]) -> Result<Box<RawValue>, LinkError> {
    if b.len() > MAX_DATA_LEN {
        return Err(LinkError::invalid("data", "too large"));
    }
    let json = text("data", b)?;
    serde_json::from_str::<Box<RawValue>>(json).map_err(|e| LinkError::invalid("data", e))
}
