//! Reads that answer one request and change nothing: a room's history without joining it
//! (the server API's `GET /api/history`).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use hermod_core::bus::{Delivery, Event, SessionKey};
use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::link::MAX_HISTORY_FRAMES;

use super::{code_of, error, Broker, Pending};
use crate::engine::{Done, Engine, EngineError, Op, Page};

/// Most bytes of frames one history answer carries (it holds at least one message).
pub const MAX_HISTORY_BYTES: usize = 1 << 20;

/// A position no engine issues: a read after it starts at the oldest retained message (every
/// engine reads from there when `since` is not one of its positions).
const OLDEST: &str = "0";

impl<E: Engine> Broker<E> {
    /// `History`: one page of the room's history after `since` (without it, from the oldest
    /// retained message, answered `recovered`), answered to `session` with `cid` (the session
    /// need not be a member, nor attached).
    pub(super) fn history(
        &mut self,
        session: SessionKey,
        cid: Cid,
        room: Name,
        since: Option<MsgId>,
        limit: u32,
        now_ms: u64,
    ) {
        let max = usize::try_from(limit).unwrap_or(MAX_HISTORY_FRAMES);
        let page = Page {
            max_messages: max.clamp(1, MAX_HISTORY_FRAMES),
            max_bytes: MAX_HISTORY_BYTES,
        };
        let from_oldest = since.is_none();
        let since = Some(since.unwrap_or_else(|| MsgId::new(OLDEST)));
        let op = Op::ReadRoom { room, since, page };
        let pending = Pending::History {
            session,
            cid,
            from_oldest,
        };
        self.submit(pending, op, now_ms);
    }

    /// A history read finished.
    pub(super) fn complete_history(
        (session, cid, from_oldest): (SessionKey, Cid, bool),
        result: Result<Done, EngineError>,
        out: &mut Vec<Delivery>,
    ) {
        let event = match result {
            Ok(Done::Room {
                recovered,
                messages,
                more,
            }) => Event::History {
                cid,
                recovered: recovered || from_oldest,
                frames: messages.into_iter().map(|m| m.frame).collect(),
                more,
            },
            Ok(_) => {
                let err = EngineError::Unavailable("engine answered oddly".into());
                return out.push(error(session, Some(cid), code_of(&err), &err.to_string()));
            }
            Err(err) => {
                return out.push(error(session, Some(cid), code_of(&err), &err.to_string()));
            }
        };
        out.push(Delivery { session, event });
    }
}
