//! The Redis engine: every operation is one FCALL of the `hermod` function library
//! (`hermod.lua`), pipelined on the lanes of a sans-io [`ClientCore`]. The engine reads no clock
//! and owns no socket: the broker loop (`BrokerLoop`, `embedded.rs`) owns the core's sockets
//! ([`RedisSockets`](hermod_core::redis::RedisSockets)), feeds it their input, calls
//! `handle_tick(now)` (the turn's clock) and `flush`, and carries out the core's actions. So the
//! whole engine runs against a scripted Redis in the unit tests (`tests.rs`).
//!
//! - Lanes: reads (and age trims) on lane 0; appends and acks on lane 1, followed, with
//!   [`Durability::Replica`], by one `WAIT 1 <timeout>` per loop turn covering every append sent
//!   in it. A per-channel gate (`gate.rs`) keeps a channel's reads and writes from being in
//!   flight together, so completions come out in the order Redis applied them.
//! - Appends: the appends admitted in a loop turn go out as one FCALL at the turn's flush
//!   (`batch.rs`); in Redis each costs an XADD and a `SET NX GET` (dedupe), and each channel of
//!   the batch one epoch read, one XLEN and one PTTL. Length retention is cut back in steps (the
//!   stream may hold a few entries beyond the limit; readers skip them, so what clients see is
//!   exactly the limit) and the keys' expiry is pushed out once per 1/32 of the age limit: see
//!   `hermod.lua`.
//! - Setup: on every `Up` the library is (re)loaded with `FUNCTION LOAD REPLACE`, and the
//!   channels written in the last minute are checked for a rollback (their stream now behind the
//!   highest id this engine issued: the channel gets a new epoch, so earlier positions come back
//!   `recovered:false`). Operations submitted meanwhile are held and sent once that is done.
//! - Down: operations in flight fail with `Unavailable` as the client reports them lost (or
//!   timed out), held and waiting ones at once, and new ones are refused at once until the client
//!   is up again and the setup is done.
//! - Deadlines: every operation accepted completes within the command timeout of its submit,
//!   whatever the phase, gate, batch, subscription or WAIT it waits in (`deadlines.rs`).
//! - Ids are `"<epoch>.<stream id>"` (`ids.rs`); message frames are rebuilt from the stored
//!   parts (`ops.rs`), byte for byte what the memory engine produces.
//! - Cross-broker live fan-out (`publish`, `live.rs`): appends PUBLISH what they store; the
//!   engine SUBSCRIBEs, on a lane of its own, to the channels the broker watches and reports
//!   every message stored in them (its own included) through `poll_live`.
//!
//! Files: `send.rs` (admitted operations to commands), `batch.rs`, `gate.rs`, `deadlines.rs`,
//! `replies.rs` (client events, setup, replies), `live.rs`, `ops.rs`, `ids.rs`.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod batch;
mod deadlines;
mod gate;
mod ids;
mod live;
mod ops;
mod replies;
mod send;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use hermod_core::ids::MsgId;
use hermod_core::redis::{ClientConfig, ClientCore, CommandError};

use crate::engine::{Channel, Completion, Done, Engine, EngineError, EngineStats, Live, Op, Token};
use crate::limits::Limits;
use batch::Batch;
use gate::{Class, Gates, Queued};
pub use ids::{ClientId, StreamId};
use ops::Args;

/// The function library, loaded at every connect.
pub const LIBRARY: &str = include_str!("hermod.lua");

/// Lane of reads and trims.
const READ_LANE: usize = 0;
/// Operations held while the library loads; beyond, new ones fail at once.
const MAX_HELD: usize = 100_000;
/// How long after a write its channel is checked for a rollback on reconnect: replication lag
/// (what a failover can lose) is far shorter.
const ROLLBACK_HORIZON_MS: u64 = 60_000;
/// Channels remembered for the rollback check (the most recently written).
const MAX_TIPS: usize = 4096;
/// Channels tracked for age trimming; beyond, only MAXLEN and key expiry bound the others.
const MAX_TRIMMED: usize = 100_000;
/// Pause before retrying a failed library load.
const RETRY_SETUP: Duration = Duration::from_secs(1);

/// When an append is answered `sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Once the master applied it.
    #[default]
    Leader,
    /// Once a replica also has it (`WAIT 1`); none in time: `unavailable` (the client retries
    /// with its cid, dedupe answers the same id).
    Replica,
}

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct RedisEngineConfig {
    /// Where Redis is and how to talk to it.
    pub client: ClientConfig,
    /// When an append counts as stored.
    pub durability: Durability,
    /// `WAIT`'s timeout with [`Durability::Replica`]; keep it under the command timeout.
    pub wait_timeout: Duration,
    /// Retention, dedupe and paging bounds.
    pub limits: Limits,
    /// Whether appends also PUBLISH the message for other brokers (cross-broker live fan-out,
    /// issue 4). Off by default: a lone broker delivers live itself, and a PUBLISH nobody
    /// listens to would cost every append.
    pub publish: bool,
}

impl RedisEngineConfig {
    /// Leader durability, a WAIT timeout of half the command timeout (at most 1 s).
    pub fn new(client: ClientConfig, limits: Limits) -> Self {
        let wait_timeout = (client.command_timeout / 2).min(Duration::from_secs(1));
        RedisEngineConfig {
            client,
            durability: Durability::Leader,
            wait_timeout,
            limits,
            publish: false,
        }
    }
}

/// Where the engine stands with Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not connected (or not registered yet): operations fail at once.
    Down,
    /// Connected; the library load and rollback checks (`outstanding` replies) are in flight.
    Loading { outstanding: usize },
    /// The library load failed: retried at `at`; operations fail at once.
    Retry { at: Instant },
    /// Serving.
    Ready,
}

/// A command in flight, by tag.
#[derive(Debug)]
enum Sent {
    /// A read or an ack.
    Op { q: Queued },
    /// A batch of appends (`batch.rs`); `wait` is the WAIT that makes them durable (replica
    /// durability).
    Appends {
        appends: Vec<Queued>,
        wait: Option<u64>,
    },
    /// `FUNCTION LOAD REPLACE`.
    Load,
    /// A rollback check of a channel.
    Check(Channel),
    /// An age trim.
    Trim,
    /// SUBSCRIBE to a watched channel (`live.rs`).
    Subscribe(Channel),
    /// UNSUBSCRIBE (its answer changes nothing).
    Unsubscribe,
    /// `hermod_tip` of a room just subscribed (`live.rs`).
    Tip(Channel),
    /// `WAIT 1` after these appends (their tags).
    Wait(Vec<u64>),
    /// A command whose operations were completed `Unavailable` at their deadline while it was
    /// still unanswered (`deadlines.rs`): its answer only releases these gate slots.
    Expired(Vec<(Channel, Class)>),
}

/// A replica append whose FCALL was answered, waiting for its WAIT.
type Parked = (Token, Channel, Result<Done, EngineError>);

/// Age trimming of one channel this engine writes.
#[derive(Debug, Clone, Copy)]
struct Trim {
    /// Last append (broker clock, ms): once older than the age limit the keys expire on their own.
    last_ms: u64,
    /// When to trim next (broker clock, ms).
    next_ms: u64,
}

/// The Redis engine. See the module doc.
pub struct RedisEngine {
    /// Settings.
    config: RedisEngineConfig,
    /// The sans-io client; the broker loop's sockets move its bytes.
    client: ClientCore,
    /// The loop turn's clock (`handle_tick`): operations submitted are dated by it.
    now: Instant,
    /// Lane of appends, acks and WAIT (1, or 0 with a single connection).
    write_lane: usize,
    /// Where the engine stands.
    phase: Phase,
    /// The next command tag.
    next_tag: u64,
    /// Commands in flight.
    sent: HashMap<u64, Sent>,
    /// Commands carrying operations (and replica appends parked on their WAIT, by their
    /// batch's tag), by the earliest deadline of those operations: whatever the client does,
    /// they complete `Unavailable` by then (`deadlines.rs`).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Per-channel ordering of reads and writes.
    gates: Gates,
    /// Operations submitted while loading, in order.
    held: VecDeque<Queued>,
    /// Finished operations for `poll_completion`.
    done: VecDeque<Completion>,
    /// Appends sent this loop turn, for the turn's WAIT.
    unwaited: Vec<u64>,
    /// Replica appends answered, by their batch's tag, until their WAIT answers.
    parked: HashMap<u64, Vec<Parked>>,
    /// Replica appends completed at their deadline before their WAIT answered, by their
    /// batch's tag: the WAIT's answer releases their gate slots.
    expired_parked: HashMap<u64, Vec<Channel>>,
    /// Appends admitted this loop turn, sent at the turn's flush as one command.
    batch: Batch,
    /// Channel -> highest stream id issued and when (ms): the rollback check's input.
    tips: HashMap<Channel, (StreamId, u64)>,
    /// Channels to trim by age.
    trims: HashMap<Channel, Trim>,
    /// Reused command buffer.
    args: Args,
    /// Operations just let through a gate, to send.
    work: Vec<Queued>,
    /// Operations answered `Unavailable` (metrics).
    unavailable: u64,
    /// Pub/sub subscriptions of watched channels and their reports (`live.rs`).
    subs: live::Subs,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("phase", &self.phase)
            .field("in_flight", &self.sent.len())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// An engine for `config`; its client connects at the first `handle_tick`.
    pub fn new(config: RedisEngineConfig, now: Instant) -> Self {
        let write_lane = usize::from(config.client.connections > 1);
        let mut subs = live::Subs::default();
        let client = ClientCore::new(live::client_config(&config, &mut subs), now);
        RedisEngine {
            config,
            client,
            now,
            write_lane,
            phase: Phase::Down,
            next_tag: 0,
            sent: HashMap::new(),
            deadlines: BinaryHeap::new(),
            gates: Gates::default(),
            held: VecDeque::new(),
            done: VecDeque::new(),
            unwaited: Vec::new(),
            parked: HashMap::new(),
            expired_parked: HashMap::new(),
            batch: Batch::default(),
            tips: HashMap::new(),
            trims: HashMap::new(),
            args: Args::default(),
            work: Vec::new(),
            unavailable: 0,
            subs,
        }
    }

    /// The sans-io client core, for the shell that moves its bytes (also [`Engine::redis`]).
    pub fn core(&mut self) -> &mut ClientCore {
        &mut self.client
    }

    /// Operations accepted and not completed yet (tests drive the loop until this is 0).
    pub fn pending(&self) -> usize {
        let sent: usize = self
            .sent
            .values()
            .map(|s| match s {
                Sent::Op { .. } => 1,
                Sent::Appends { appends, .. } => appends.len(),
                _ => 0,
            })
            .sum();
        self.held.len()
            + self.gates.waiting()
            + self.parked_len()
            + self.batch.len()
            + self.subs.parked()
            + sent
    }

    /// Replica appends answered and waiting for their WAIT.
    fn parked_len(&self) -> usize {
        self.parked.values().map(Vec::len).sum()
    }

    /// Everything not finished: operations, and also setup, trim and WAIT commands in flight
    /// (tests drive the I/O until this is 0).
    pub fn in_flight(&self) -> usize {
        self.sent.len()
            + self.held.len()
            + self.gates.waiting()
            + self.parked_len()
            + self.batch.len()
            + self.subs.parked()
    }

    fn tag(&mut self) -> u64 {
        self.next_tag = self.next_tag.wrapping_add(1);
        self.next_tag
    }

    /// Sends the command in `self.args` on `lane`; `false` when the client refused it.
    fn send(&mut self, lane: usize, sent: Sent, now: Instant) -> bool {
        match self.send_args(lane, now) {
            Some(tag) => {
                self.track(tag, sent);
                true
            }
            None => false,
        }
    }

    /// Sends the command in `self.args` on `lane`: its tag, or `None` when the client refused it.
    fn send_args(&mut self, lane: usize, now: Instant) -> Option<u64> {
        let tag = self.tag();
        match self.client.send(lane, &self.args.slices(), tag, now) {
            Ok(()) => Some(tag),
            Err(e) => {
                tracing::debug!(error = %e, "redis command not sent");
                None
            }
        }
    }

    /// Records a finished operation.
    fn finish(&mut self, token: Token, result: Result<Done, EngineError>) {
        if matches!(result, Err(EngineError::Unavailable(_))) {
            self.unavailable += 1;
        }
        self.done.push_back((token, result));
    }

    /// Records a finished operation that had passed its channel's gate; what the gate lets
    /// through now goes to `self.work`, for [`RedisEngine::dispatch`].
    fn finish_gated(
        &mut self,
        token: Token,
        channel: &Channel,
        class: Class,
        result: Result<Done, EngineError>,
    ) {
        self.finish(token, result);
        self.gates.finish(channel, class, &mut self.work);
    }

    /// Fails held and gate-waiting operations whose deadline passed; retries a failed setup.
    fn expire(&mut self, now: Instant) {
        let mut failed = Vec::new();
        while self.held.front().is_some_and(|q| q.deadline <= now) {
            failed.extend(self.held.pop_front());
        }
        self.gates.expire(now, &mut failed);
        for q in failed {
            self.finish(
                q.token,
                Err(EngineError::Unavailable(
                    "redis did not answer in time".into(),
                )),
            );
        }
        self.expire_sent(now);
        self.expire_parked_reads(now);
        if let Phase::Retry { at } = self.phase {
            if at <= now && self.client.is_up() {
                self.start_setup(now);
            }
        }
    }
}

impl Engine for RedisEngine {
    fn submit(&mut self, token: Token, op: Op, now_ms: u64) {
        let now = self.now;
        let q = Queued {
            token,
            op,
            now_ms,
            deadline: now + self.config.client.command_timeout,
        };
        let foreign = matches!(q.op, Op::Ack { .. } | Op::ReadInbox { after: Some(_), .. })
            && q.position().and_then(ClientId::parse).is_none();
        if foreign {
            return self.finish(token, Err(EngineError::UnknownId));
        }
        match self.phase {
            Phase::Ready => self.admit(q, now),
            Phase::Loading { .. } if self.held.len() < MAX_HELD => self.held.push_back(q),
            Phase::Loading { .. } => self.finish(
                token,
                Err(EngineError::Unavailable("redis engine busy".into())),
            ),
            Phase::Down | Phase::Retry { .. } => {
                self.finish(
                    token,
                    Err(EngineError::Unavailable("redis not connected".into())),
                );
            }
        }
    }

    fn poll_completion(&mut self) -> Option<Completion> {
        self.done.pop_front()
    }

    fn sweep(&mut self, now_ms: u64, _in_use: &dyn Fn(&Channel) -> bool) {
        self.tips
            .retain(|_, (_, at)| at.saturating_add(ROLLBACK_HORIZON_MS) >= now_ms);
        if self.phase != Phase::Ready {
            return;
        }
        let now = self.now;
        let due: Vec<Channel> = self
            .trims
            .iter()
            .filter(|(_, t)| t.next_ms <= now_ms)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in due {
            let age = self.max_age_ms(&channel);
            let interval = self.trim_interval(&channel);
            if let Some(cutoff) = now_ms.checked_sub(age) {
                ops::fcall(&mut self.args, "hermod_trim", &channel, 0)
                    .fmt(format_args!("{cutoff}"));
                self.send(READ_LANE, Sent::Trim, now);
            }
            let keep = match self.trims.get_mut(&channel) {
                Some(t) => {
                    t.next_ms = now_ms.saturating_add(interval);
                    t.last_ms.saturating_add(age) >= now_ms
                }
                None => false,
            };
            if !keep {
                // Everything in it is past the age limit: the keys' expiry removes them.
                self.trims.remove(&channel);
            }
        }
    }

    fn redis(&mut self) -> Option<&mut ClientCore> {
        Some(&mut self.client)
    }

    fn handle_tick(&mut self, now: Instant) {
        self.now = now;
        self.client.handle_timeout(now);
        self.pump(now);
        self.expire(now);
        self.retry_subscriptions(now);
        self.dispatch(now);
    }

    fn flush(&mut self) {
        let now = self.now;
        self.send_batch_now(now);
        self.send_wait(now);
        self.client.flush();
    }

    fn next_deadline(&self) -> Option<Instant> {
        if !self.done.is_empty() {
            return Some(self.now); // completions made at the flush: route them now
        }
        let retry = match self.phase {
            Phase::Retry { at } => Some(at),
            _ => None,
        };
        [
            self.client.next_deadline(),
            self.held.front().map(|q| q.deadline),
            self.gates.next_deadline(),
            retry,
            self.subs.next_deadline(),
            self.deadlines.peek().map(|Reverse((at, _))| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    fn watch(&mut self, channel: &Channel) {
        self.watch_channel(channel);
    }

    fn unwatch(&mut self, channel: &Channel) {
        self.unwatch_channel(channel);
    }

    fn poll_live(&mut self) -> Option<Live> {
        self.subs.poll()
    }

    fn is_after(&self, id: &MsgId, mark: &MsgId) -> bool {
        live::is_after(id, mark)
    }

    fn stats(&self) -> EngineStats {
        let client = self.client.stats();
        EngineStats {
            round_trips: client.round_trips,
            pipeline_depth: client.in_flight as u64,
            failovers_seen: client.failovers_seen,
            reconnects: client.reconnects,
            unavailable: self.unavailable,
            pending_ops: self.pending() as u64,
            ..EngineStats::default()
        }
    }
}

fn unavailable(e: &CommandError) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
