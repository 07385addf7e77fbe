//! What a worker reports: [`HookEvent`] (names are shared `Arc`s, nothing is formatted on a
//! worker), and the [`HookPort`] through which it reports it.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use hermod_core::bus::SessionKey;
use hermod_core::ids::Name;

pub use crate::settings::webhooks::EventKind;

/// What happened, with what only that kind carries.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl What {
    pub fn kind(&self) -> EventKind {
        match self {
            What::Connect => EventKind::Connect,
            What::Disconnect { .. } => EventKind::Disconnect,
            What::Join { .. } => EventKind::Join,
            What::Leave { .. } => EventKind::Leave,
        }
    }
}

/// One event of one session, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
