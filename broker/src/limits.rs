//! Retention, dedupe and replay-paging bounds of the broker (defaults: docs/protocol.md, "Guarantees").

use std::time::Duration;

/// How much the broker keeps, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Messages kept per inbox before the oldest are dropped (spec: 10,000).
    pub inbox_max_len: usize,
    /// Age after which inbox messages are dropped (spec: 7 days).
    pub inbox_max_age: Duration,
    /// Messages of room history kept for `since` (spec: 1,000).
    pub room_max_len: usize,
    /// Age after which room history is dropped (spec: 1 hour).
    pub room_max_age: Duration,
    /// How long a `(user, cid)` pair is remembered for dedupe (spec: 10 minutes).
    pub dedupe_window: Duration,
    /// Most messages in one page of a replay (inbox backlog on attach, room history after
    /// `since`). A replay is delivered a page at a time, each after the gateway asked for it with
    /// `ResumeReplay`, so a long backlog never lands in a session's outbound queue at once and
    /// trips its slow-consumer bound. Default 256. A page always holds at least one message.
    pub replay_page_messages: usize,
    /// Most bytes of `msg` frames in one page of a replay (default 256 KiB). The gateway sets it
    /// to a fraction of its per-session outbound bound, so one page always fits in the queue.
    /// A single message larger than this still makes a page of its own.
    pub replay_page_bytes: usize,
    /// In-memory engine only: most bytes the store may hold, messages, channels, cursors and
    /// dedupe entries together (`--memory-budget`, default 1 GiB). Past it writes are refused
    /// `unavailable`; nothing stored is evicted.
    pub memory_budget: u64,
    /// In-memory engine only: most bytes of stored messages (and of the channels they created)
    /// one sender may hold (`--memory-per-user`, default 64 MiB).
    pub memory_per_user: u64,
}

/// Default `--memory-budget`: 1 GiB.
pub const DEFAULT_MEMORY_BUDGET: u64 = 1 << 30;
/// Default `--memory-per-user`: 64 MiB.
pub const DEFAULT_MEMORY_PER_USER: u64 = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            inbox_max_len: 10_000,
            inbox_max_age: Duration::from_secs(7 * 24 * 3600),
            room_max_len: 1_000,
            room_max_age: Duration::from_secs(3600),
            dedupe_window: Duration::from_secs(600),
            replay_page_messages: 256,
            replay_page_bytes: 256 * 1024,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            memory_per_user: DEFAULT_MEMORY_PER_USER,
        }
    }
}
