//! What a worker reports: [`HookEvent`] (names are shared `Arc`s, nothing is formatted on a
//! worker), and the [`HookPort`] through which it reports it.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use hermod_core::bus::SessionKey;
use hermod_core::ids::{MsgId, Name};
use serde_json::value::RawValue;

pub use crate::settings::webhooks::EventKind;

/// What happened, with what only that kind carries.
#[derive(Debug, Clone)]
pub enum What {
    Connect,
    /// The close code of the session (1006 when it ended without a close handshake).
    Disconnect {
        code: u16,
    },
    Join {
        room: Name,
    },
    Leave {
        room: Name,
    },
    /// Boxed: the rarest and largest, it should not size every event in the queue.
    Publish(Box<Published>),
}

/// A room message a client published, once stored.
#[derive(Debug, Clone)]
pub struct Published {
    pub room: Name,
    /// The id the broker gave it (the one its `msg` frames carry).
    pub id: MsgId,
    /// Its `data`, as the client sent it.
    pub data: Box<RawValue>,
}

impl What {
    pub fn kind(&self) -> EventKind {
        match self {
            What::Connect => EventKind::Connect,
            What::Disconnect { .. } => EventKind::Disconnect,
            What::Join { .. } => EventKind::Join,
            What::Leave { .. } => EventKind::Leave,
            What::Publish(_) => EventKind::Publish,
        }
    }
}

/// One event of one session, as a worker reports it.
#[derive(Debug, Clone)]
pub struct HookEvent {
    pub what: What,
    pub user: Name,
    pub device: Name,
    /// The session, as its `welcome` frame names it.
    pub session: SessionKey,
    /// When, in unix seconds (the worker's clock of that loop turn).
    pub ts: u64,
}

/// Where a worker reports events: the bounded channel to the webhook thread. Never blocks.
pub trait HookPort {
    /// Whether events of `kind` are reported (webhooks on, and the kind chosen): ask first, so
    /// that nothing is cloned for an event nobody wants.
    fn wants(&self, kind: EventKind) -> bool;
    /// Hands `event` over; when the queue is full it is dropped and counted.
    fn report(&self, event: HookEvent);
}

/// The port of a gateway without webhooks (and of tests): wants nothing.
pub struct NoHooks;

impl HookPort for NoHooks {
    fn wants(&self, _: EventKind) -> bool {
        false
    }
    fn report(&self, _: HookEvent) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--webhook-queue` reserves one slot of this size per event (docs/operations.md says
    /// about 100 bytes): a publish's room, id and data stay behind a pointer.
    #[test]
    fn an_event_is_small() {
        assert!(std::mem::size_of::<HookEvent>() <= 96);
        assert!(std::mem::size_of::<What>() <= 24);
    }
}
