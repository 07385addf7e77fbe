//! The storage interface: the [`Broker`](crate::Broker) submits operations, the engine completes
//! them, possibly later.
//!
//! The split is: the broker owns sessions, subscriptions and fan-out (who gets what, live); the
//! engine owns storage (inboxes, room histories, per-device cursors, dedupe, retention) and message
//! ids. An operation goes in with [`Engine::submit`] under a [`Token`]; its result comes out of
//! [`Engine::poll_completion`] under the same token.
//!
//! The in-memory engine completes every operation inside `submit`. The Redis engine pipelines the
//! operation to Redis and completes it when the reply arrives (or `Unavailable` within the
//! command timeout of its submit, whatever happens); the broker keeps per-token context, buffers
//! live messages for a session whose replay read is still in flight, and requires only that
//! completions of one channel come out in the order the engine applied them. Replays are read a
//! [`Page`] at a time.
//!
//! The trait holds no I/O type: an engine that talks to Redis exposes its sans-io client core
//! ([`Engine::redis`]), and the broker loop (`embedded.rs`, `BrokerLoop`) owns the sockets and
//! pumps them: socket input into the core, then [`Engine::handle_tick`], the turn's
//! requests, [`Engine::flush`], then the core's actions out to the sockets.
//!
//! An engine shared by several brokers (Redis with `publish`) also reports the messages other
//! brokers store in the channels this broker's sessions watch ([`Engine::watch`],
//! [`Engine::poll_live`]); see `broker/live.rs` for how they reach sessions exactly once.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;

use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::redis::ClientCore;

/// Matches a completion to the operation the broker submitted. Unique per broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// A place messages are stored in order: a user's inbox or a room's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The direct messages for one user (all devices share it; each device has a cursor).
    Inbox(Name),
    /// The history of one room.
    Room(Name),
}

/// A stored message, as replay and fan-out hand it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The id the engine gave the message; unique and ordered within its channel.
    pub id: MsgId,
    /// The JSON text of the `msg` frame, encoded once when stored and shared afterwards.
    pub frame: Bytes,
}

/// How much one replay read returns: the first messages after the position, as many as fit.
/// A page ends at `max_messages` messages, or before the message that would take its frames past
/// `max_bytes`; it always holds at least one message when any is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Most messages (`Limits::replay_page_messages`).
    pub max_messages: usize,
    /// Most bytes of frames (`Limits::replay_page_bytes`).
    pub max_bytes: usize,
}

impl Page {
    /// Whether a page holding `count` messages of `bytes` bytes takes one more of `len` bytes.
    /// Every engine pages with this rule, so pages look the same whatever the storage.
    pub fn admits(&self, count: usize, bytes: usize, len: usize) -> bool {
        count == 0 || (count < self.max_messages && bytes.saturating_add(len) <= self.max_bytes)
    }
}

/// Work for the engine.
#[derive(Debug)]
pub enum Op {
    /// Store a message unless `(from, cid)` was stored inside the dedupe window.
    Append {
        /// Where to store it.
        channel: Channel,
        /// The sending user: goes into the frame and keys the dedupe.
        from: Name,
        /// The client's request id: keys the dedupe with `from`.
        cid: Cid,
        /// The payload, copied into the frame as it came.
        data: Box<RawValue>,
    },
    /// One page of `user`'s inbox, oldest first: the messages after `after` when given (a
    /// replay's later pages continue from the last id delivered, wherever the cursor is), else
    /// after `device`'s cursor (the first page of an attach).
    ReadInbox {
        user: Name,
        device: Name,
        after: Option<MsgId>,
        page: Page,
    },
    /// Move `device`'s cursor in `user`'s inbox forward to `id` (never backwards).
    Ack { user: Name, device: Name, id: MsgId },
    /// One page of the room's history after `since` (from its oldest retained message when
    /// `since` is not a position in it). A replay's later pages pass the last id delivered as
    /// `since`.
    ReadRoom {
        room: Name,
        since: Option<MsgId>,
        page: Page,
    },
}

/// What an operation produced.
#[derive(Debug)]
pub enum Done {
    /// An `Append` went through. `fresh` is the stored message for the broker to fan out, or
    /// `None` when `(from, cid)` was a duplicate (then `id` is the id stored the first time and
    /// nothing new was stored), or when the engine reports it through [`Engine::poll_live`]
    /// (an engine shared by several brokers: every copy comes the same way, in order).
    Appended { id: MsgId, fresh: Option<Stored> },
    /// A `ReadInbox` page. `more`: messages remain after the page's last one.
    Inbox { messages: Vec<Stored>, more: bool },
    /// An `Ack` was applied (or was a no-op because the cursor was already there).
    Acked,
    /// A `ReadRoom` page. `recovered` is false when the history does not cover `since`;
    /// `more`: messages remain after the page's last one.
    Room {
        recovered: bool,
        messages: Vec<Stored>,
        more: bool,
    },
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A client-supplied id that this engine did not issue (unparsable, or another epoch).
    #[error("unknown message id")]
    UnknownId,
    /// The storage could not be reached or did not answer in time.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The in-memory engine's storage budget refused the write (`--memory-budget`,
    /// `--memory-per-user`); clients see `unavailable` and may retry later with the same `cid`.
    #[error("storage full: {0}; retry later")]
    Full(&'static str),
}

/// One completed operation.
pub type Completion = (Token, Result<Done, EngineError>);

/// What an engine shared by several brokers reports about the channels the broker watches
/// ([`Engine::watch`]), pulled with [`Engine::poll_live`].
#[derive(Debug)]
pub enum Live {
    /// A message stored in a watched channel, by this broker or another. Messages of one
    /// channel come out in the order they were stored. A watching session may have had it from
    /// a replay page already: the broker delivers it only if [`Engine::is_after`] its
    /// session's last id.
    Message { channel: Channel, msg: Stored },
    /// The engine's subscription to `channel` was lost (a reconnect, a failover) and is back:
    /// messages stored meanwhile were not reported. Each watching session is read again from
    /// the last id it got (a catch-up read); one that got nothing yet reads from `since`, the
    /// newest position the engine knew in the channel before the loss (`None`: unknown).
    Resumed {
        channel: Channel,
        since: Option<MsgId>,
    },
}

/// Counters an engine exposes for metrics (the Redis engine's; the memory engine fills only the
/// `store_*` ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Commands answered by the store since start (each pipelined command counts once).
    pub round_trips: u64,
    /// Commands sent and not yet answered, right now: how deep the pipeline runs.
    pub pipeline_depth: u64,
    /// Master changes (failovers) the engine followed.
    pub failovers_seen: u64,
    /// Connections (re)established to the store.
    pub reconnects: u64,
    /// Operations answered `Unavailable`.
    pub unavailable: u64,
    /// Operations accepted and not yet completed (held, queued behind a channel, or sent).
    pub pending_ops: u64,
    /// Memory engine: bytes its storage budget counts as held.
    pub store_bytes: u64,
    /// Memory engine: the storage budget (`--memory-budget`).
    pub store_budget: u64,
    /// Memory engine: writes refused because the store was at its budget.
    pub store_refused_budget: u64,
    /// Memory engine: writes refused because the sender was at its quota.
    pub store_refused_quota: u64,
}

/// A storage engine. Sans-io from the broker's point of view: no call blocks.
pub trait Engine {
    /// Starts `op`; its result comes out of [`Engine::poll_completion`] under `token`.
    /// `now_ms` (unix milliseconds) stamps stored messages and dates dedupe entries.
    fn submit(&mut self, token: Token, op: Op, now_ms: u64);

    /// The next finished operation, if any. Completions that touch the same channel come out in
    /// the order the engine applied them. (That is what lets the broker order live messages
    /// after a replay: an append applied before a read completes before it, so the broker holds
    /// it back until the read's result is out, and drops it if the read already contained it.)
    fn poll_completion(&mut self) -> Option<Completion>;

    /// Drops what retention and the dedupe window allow at `now_ms`, and channels that are empty
    /// and not `in_use` (no session subscribed), so storage follows what is live.
    fn sweep(&mut self, now_ms: u64, in_use: &dyn Fn(&Channel) -> bool);

    /// The sans-io Redis client the engine drives, if it talks to Redis: the broker loop's
    /// socket shell ([`RedisSockets`](hermod_core::redis::RedisSockets)) feeds it what the
    /// sockets did and carries out its actions. `None` for in-process engines.
    fn redis(&mut self) -> Option<&mut ClientCore> {
        None
    }

    /// Called once per loop turn, after the turn's socket input was fed to [`Engine::redis`]
    /// and before the turn's requests are submitted: client events, timeouts, retries. `now`
    /// is the turn's clock; operations submitted in this turn are dated by it.
    fn handle_tick(&mut self, _now: Instant) {}

    /// End of the loop turn: queue what the turn gathered (batched appends, the WAIT) on the
    /// client; the loop then has the sockets written (one write per socket per turn).
    fn flush(&mut self) {}

    /// When [`Engine::handle_tick`] next has something to do, if ever.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Whether the engine can serve operations now (`/readyz`).
    fn is_ready(&self) -> bool {
        true
    }

    /// Counters for metrics.
    fn stats(&self) -> EngineStats {
        EngineStats::default()
    }

    /// The broker has a session on `channel` now (the first one): report what anyone stores in
    /// it through [`Engine::poll_live`], from before any read of the channel submitted after
    /// this call. A no-op for an engine only this broker writes to (in-process): the broker
    /// fans out its own appends (`Done::Appended::fresh`).
    fn watch(&mut self, _channel: &Channel) {}

    /// The broker's last session on `channel` is gone: stop reporting it.
    fn unwatch(&mut self, _channel: &Channel) {}

    /// The next report about a watched channel, if any.
    fn poll_live(&mut self) -> Option<Live> {
        None
    }

    /// Whether `id` was stored after `mark` in their channel (a later epoch counts as after).
    /// Asked only about messages from [`Engine::poll_live`].
    fn is_after(&self, _id: &MsgId, _mark: &MsgId) -> bool {
        true
    }
}
