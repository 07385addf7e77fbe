//! The commands the engine sends (FCALLs of `hermod.lua`) and the decoding of their replies.
//!
//! Keys of a channel share its hash tag (`{u:alice}` for an inbox, `{r:lobby}` for a room), so a
//! channel's keys live in one slot and the functions work unchanged on Redis Cluster.

use bytes::Bytes;
use serde_json::value::RawValue;

use hermod_core::ids::{MsgId, Name};
use hermod_core::protocol::{encode_direct_msg, encode_room_msg};
use hermod_core::resp::Value;

use super::gate::Queued;
use super::ids::{ClientId, StreamId};
use crate::engine::{Channel, Done, EngineError, Op, Page, Stored};
use crate::limits::Limits;

/// Most entries one read asks for, whatever the page size says (bounds the reply).
const MAX_READ_COUNT: usize = 10_000;

/// One command's arguments, built into a single reused buffer.
#[derive(Debug, Default)]
pub struct Args {
    /// The arguments' bytes, back to back.
    buf: Vec<u8>,
    /// Where each argument ends in `buf`.
    ends: Vec<usize>,
}

impl Args {
    /// Starts a new command.
    pub fn clear(&mut self) -> &mut Self {
        self.buf.clear();
        self.ends.clear();
        self
    }

    /// Appends one argument.
    pub fn arg(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        self.buf.extend_from_slice(bytes.as_ref());
        self.ends.push(self.buf.len());
        self
    }

    /// Appends one argument written with `format_args!` (numbers, composed keys).
    pub fn fmt(&mut self, args: std::fmt::Arguments<'_>) -> &mut Self {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = self.buf.write_fmt(args);
        self.ends.push(self.buf.len());
        self
    }

    /// The arguments as slices, for `ClientCore::send`.
    pub fn slices(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let s = &self.buf[start..end];
                start = end;
                s
            })
            .collect()
    }
}

/// The hash tag of a channel, `u:alice` or `r:lobby` (braces added by the key builders).
pub fn tag(channel: &Channel) -> (char, &Name) {
    match channel {
        Channel::Inbox(user) => ('u', user),
        Channel::Room(room) => ('r', room),
    }
}

/// `FCALL <function> <n> {T}:s {T}:m [...]`: the stream and meta keys every function takes.
pub fn fcall<'a>(
    args: &'a mut Args,
    function: &str,
    channel: &Channel,
    extra_keys: usize,
) -> &'a mut Args {
    let (kind, name) = tag(channel);
    args.clear()
        .arg("FCALL")
        .arg(function)
        .fmt(format_args!("{}", 2 + extra_keys))
        .fmt(format_args!("{{{kind}:{name}}}:s"))
        .fmt(format_args!("{{{kind}:{name}}}:m"))
}

/// The cursors key of an inbox.
pub fn cursors_key<'a>(args: &'a mut Args, user: &Name) -> &'a mut Args {
    args.fmt(format_args!("{{u:{user}}}:cur"))
}

/// The dedupe key of `(from, cid)` in a channel. The sender's name is length-prefixed: names
/// may contain `:`, cids anything.
pub fn dedupe_key<'a>(
    args: &'a mut Args,
    channel: &Channel,
    from: &Name,
    cid: &str,
) -> &'a mut Args {
    let (kind, name) = tag(channel);
    let from = from.as_str();
    args.fmt(format_args!(
        "{{{kind}:{name}}}:dd:{}:{from}:{cid}",
        from.len()
    ))
}

/// Most entries a stream may hold beyond its length limit before an append cuts it back (see
/// `hermod.lua`): a sixteenth of the limit, 1 to 64. Readers skip the excess, so what they see
/// is exactly the limit; the slack only spares appends the cut (one per `slack + 1` appends) and
/// bounds what a read fetches to find its floor.
pub fn slack(max_len: usize) -> usize {
    (max_len / 16).clamp(1, 64)
}

/// The length limit of a channel's stream.
pub fn max_len(limits: &Limits, channel: &Channel) -> usize {
    match channel {
        Channel::Inbox(_) => limits.inbox_max_len,
        Channel::Room(_) => limits.room_max_len,
    }
    .max(1)
}

/// `FCALL hermod_append` for a batch of appends, to any channels (anything but appends in
/// `batch` is skipped); with `publish`, each message is also published on its channel's pub/sub
/// name (`{T}:pub`) for other brokers (cross-broker fan-out, issue 4).
pub fn appends(a: &mut Args, limits: &Limits, batch: &[Queued], publish: bool) {
    let messages = || {
        batch.iter().filter_map(|q| match &q.op {
            Op::Append {
                channel,
                from,
                cid,
                data,
            } => Some((channel, from, cid.as_str(), data, q.now_ms)),
            _ => None,
        })
    };
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    a.clear()
        .arg("FCALL")
        .arg("hermod_append")
        .fmt(format_args!("{}", 3 * messages().count()));
    for (channel, from, cid, _, _) in messages() {
        let (kind, name) = tag(channel);
        a.fmt(format_args!("{{{kind}:{name}}}:s"))
            .fmt(format_args!("{{{kind}:{name}}}:m"));
        dedupe_key(a, channel, from, cid);
    }
    a.fmt(format_args!("{}", ms(limits.dedupe_window)))
        .arg(if publish { "1" } else { "0" });
    for (channel, from, _, data, now_ms) in messages() {
        let ttl = match channel {
            Channel::Inbox(_) => limits.inbox_max_age,
            Channel::Room(_) => limits.room_max_age,
        };
        let max_len = max_len(limits, channel);
        a.fmt(format_args!("{now_ms}"))
            .arg(from.as_str())
            .arg(data.get())
            .fmt(format_args!("{max_len}"))
            .fmt(format_args!("{}", ms(ttl)))
            .fmt(format_args!("{}", slack(max_len)));
    }
}

/// Why a reply could not be used.
fn odd(what: &str) -> EngineError {
    EngineError::Unavailable(format!("unexpected reply from redis ({what})"))
}

/// One message's result from `hermod_append`: `{0, id}` (stored now), `{1, id[, fields]}` (a
/// duplicate; the stored entry's fields when still there: it is delivered again, since the
/// first attempt may have been applied without anyone delivering it) or `{2, error}` (this
/// message failed, e.g. a key of the wrong type: `Unavailable`).
pub fn appended(
    reply: &Value,
    channel: &Channel,
    from: &Name,
    data: &RawValue,
    ts_ms: u64,
) -> Result<(Done, Option<StreamId>), EngineError> {
    let items = reply.as_array().ok_or_else(|| odd("append"))?;
    let (dup, id, fields) = match items {
        [failed, message] if failed.as_int() == Some(2) => {
            let message = message.as_str().unwrap_or("error");
            return Err(EngineError::Unavailable(format!("redis: {message}")));
        }
        [dup, id] => (dup.as_int(), id.as_str(), None),
        [dup, id, fields] => (dup.as_int(), id.as_str(), Some(fields)),
        _ => return Err(odd("append")),
    };
    let id = MsgId::new(id.ok_or_else(|| odd("append id"))?);
    let stream = ClientId::parse(&id).ok_or_else(|| odd("append id"))?.stream;
    if dup == Some(1) {
        let fresh = fields.and_then(|f| rebuild(channel, id.clone(), f));
        return Ok((Done::Appended { id, fresh }, None));
    }
    let frame = frame(channel, &id, from, data, ts_ms);
    let fresh = Some(Stored {
        id: id.clone(),
        frame,
    });
    Ok((Done::Appended { id, fresh }, Some(stream)))
}

/// The `msg` frame of a message, exactly as the memory engine encodes it.
pub fn frame(channel: &Channel, id: &MsgId, from: &Name, data: &RawValue, ts_ms: u64) -> Bytes {
    Bytes::from(match channel {
        Channel::Inbox(to) => encode_direct_msg(id, from, to, data, ts_ms),
        Channel::Room(room) => encode_room_msg(id, from, room, data, ts_ms),
    })
}

/// The entries of an XRANGE reply (asked with [`read_count`]) as one page: the stored messages
/// the page admits and whether any remain after them.
pub fn page_of(
    channel: &Channel,
    epoch: &str,
    entries: &Value,
    page: Page,
) -> Result<(Vec<Stored>, bool), EngineError> {
    let entries = entries.as_array().ok_or_else(|| odd("entries"))?;
    let page = Page {
        max_messages: page.max_messages.min(MAX_READ_COUNT),
        ..page
    };
    let mut messages = Vec::new();
    let mut bytes = 0usize;
    for entry in entries {
        let Some(stored) = stored(channel, epoch, entry) else {
            tracing::warn!(%epoch, ?entry, "skipping an unreadable stream entry");
            continue;
        };
        if !page.admits(messages.len(), bytes, stored.frame.len()) {
            return Ok((messages, true));
        }
        bytes = bytes.saturating_add(stored.frame.len());
        messages.push(stored);
    }
    // Every entry fit: more remain only if the read came back full (entries were skipped).
    Ok((messages, entries.len() >= read_count(page)))
}

/// How many entries to ask for: one page and one more (to know whether more remain).
pub fn read_count(page: Page) -> usize {
    page.max_messages.clamp(1, MAX_READ_COUNT) + 1
}

/// One `[id, [field, value, ...]]` entry rebuilt into its stored message.
fn stored(channel: &Channel, epoch: &str, entry: &Value) -> Option<Stored> {
    let [sid, fields] = entry.as_array()? else {
        return None;
    };
    let id = MsgId::new(format!("{epoch}.{}", sid.as_str()?));
    rebuild(channel, id, fields)
}

/// The stored message `id` from its entry's fields `[f, from, d, data, t, ts]`.
fn rebuild(channel: &Channel, id: MsgId, fields: &Value) -> Option<Stored> {
    let (mut from, mut data, mut ts) = (None, None, None);
    for pair in fields.as_array()?.chunks(2) {
        if let [k, v] = pair {
            match k.as_bytes()?.as_ref() {
                b"f" => from = v.as_str(),
                b"d" => data = v.as_str(),
                b"t" => ts = v.as_int(),
                _ => {}
            }
        }
    }
    let from = Name::parse("from", from?).ok()?;
    let data = RawValue::from_string(data?.to_owned()).ok()?;
    let ts = u64::try_from(ts?).ok()?;
    let frame = frame(channel, &id, &from, &data, ts);
    Some(Stored { id, frame })
}

/// `hermod_read_inbox`'s `{1, epoch, entries}` or `{0}` (the `after` id's epoch is not current).
pub fn inbox_page(reply: &Value, channel: &Channel, page: Page) -> Result<Done, EngineError> {
    match reply.as_array().ok_or_else(|| odd("read_inbox"))? {
        [ok, epoch, entries] if ok.as_int() == Some(1) => {
            let epoch = epoch.as_str().ok_or_else(|| odd("epoch"))?;
            let (messages, more) = page_of(channel, epoch, entries, page)?;
            Ok(Done::Inbox { messages, more })
        }
        [not] if not.as_int() == Some(0) => Err(EngineError::UnknownId),
        _ => Err(odd("read_inbox")),
    }
}

/// `hermod_read_room`'s `{covered, epoch, entries}`.
pub fn room_page(reply: &Value, channel: &Channel, page: Page) -> Result<Done, EngineError> {
    match reply.as_array().ok_or_else(|| odd("read_room"))? {
        [covered, epoch, entries] => {
            let epoch = epoch.as_str().ok_or_else(|| odd("epoch"))?;
            let (messages, more) = page_of(channel, epoch, entries, page)?;
            Ok(Done::Room {
                recovered: covered.as_int() == Some(1),
                messages,
                more,
            })
        }
        _ => Err(odd("read_room")),
    }
}

/// `hermod_ack`'s `1` (applied or nothing to do) or `0` (foreign epoch).
pub fn acked(reply: &Value) -> Result<Done, EngineError> {
    match reply.as_int() {
        Some(1) => Ok(Done::Acked),
        Some(0) => Err(EngineError::UnknownId),
        _ => Err(odd("ack")),
    }
}
