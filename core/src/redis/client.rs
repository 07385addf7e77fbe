//! [`RedisClient`]: lanes, phases, timeouts, reconnects. See the module docs of `redis`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Registry, Token};

use super::conn::{Conn, READ_CHUNK};
use super::sentinel::Discovery;
use super::{ClientConfig, ClientError, ClientEvent, ClientStats, CommandError, Target};

/// Most lanes a client opens.
const MAX_LANES: usize = 16;
/// Token slots per generation: a token is `first + generation * SLOTS + slot`.
const SLOTS: usize = 32;
/// A connection silent this many command timeouts while commands wait is reset.
pub(super) const STALL_FACTOR: u32 = 3;

/// Handshake steps, each awaiting one reply, in the order they were pipelined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Hello,
    Select,
    Role,
}

/// A lane's connection progress.
#[derive(Debug)]
pub(super) enum LaneState {
    /// TCP connect in progress.
    Connecting,
    /// Handshake commands sent; their replies are due in this order.
    Handshake(VecDeque<Step>),
    /// Serving user commands.
    Ready,
}

/// One long-lived pipelined connection.
#[derive(Debug)]
pub(super) struct Lane {
    /// Socket and protocol state.
    pub(super) conn: Conn,
    /// How far the connection got.
    pub(super) state: LaneState,
    /// User commands awaiting a reply (not timed out), FIFO like the replies: tag and send time.
    pub(super) sent: VecDeque<(u64, Instant)>,
    /// Last time bytes arrived, or a command was sent to an idle lane: stall detection.
    pub(super) last_progress: Instant,
}

/// The client's phase; every lane follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Nothing open (but maybe the sentinel watch); connect at `until` (backoff).
    Waiting { until: Instant },
    /// Asking the sentinels where the master is.
    Resolving,
    /// Lanes connecting to `master`; give up at `deadline`.
    Connecting { master: String, deadline: Instant },
    /// Every lane ready on `master`.
    Up { master: String },
}

/// The sentinel connection the discovery machine drives.
#[derive(Debug)]
pub(super) struct SentinelConn {
    /// Socket and protocol state.
    pub(super) conn: Conn,
    /// Tag for the next command (replies all go to the machine; tags only keep FIFO).
    pub(super) next_tag: u64,
    /// Since when an answer (or the connect) has been awaited.
    pub(super) since: Instant,
}

/// A Redis client on the caller's mio `Poll`. See the module docs of `redis`.
#[derive(Debug)]
pub struct RedisClient {
    /// Settings.
    pub(super) config: ClientConfig,
    /// First of our `TOKEN_SPAN` tokens.
    first_token: usize,
    /// Bumped on every connection opened, so a stale event never reaches its successor.
    generation: usize,
    /// The lanes; empty unless connecting or up.
    pub(super) lanes: Vec<Lane>,
    /// Where the client is.
    pub(super) phase: Phase,
    /// The master lanes last connected to: to notice a change.
    pub(super) master: Option<String>,
    /// Failed attempts in a row: the backoff exponent.
    pub(super) attempts: u32,
    /// Whether any attempt was made (the next ones count as reconnects).
    started: bool,
    /// Sentinel discovery (Sentinel targets only).
    pub(super) discovery: Option<Discovery>,
    /// The discovery machine's connection.
    pub(super) sentinel: Option<SentinelConn>,
    /// When to retry a lost sentinel watch while the lanes are fine.
    pub(super) sentinel_retry: Option<Instant>,
    /// Events not yet pulled.
    pub(super) events: VecDeque<ClientEvent>,
    /// Counters.
    pub(super) stats: ClientStats,
    /// The reason of the last failure (also of attempts that emit no `Down`).
    pub(super) last_down: Option<String>,
    /// Whether this outage's `Down` went out: one per outage, not one per failed attempt.
    pub(super) down_reported: bool,
    /// The latest `now` handed in: `flush` gets none, and this shell reads no clock.
    pub(super) now: Instant,
    /// Read buffer shared by every connection.
    pub(super) scratch: Vec<u8>,
}

impl RedisClient {
    /// Tokens a client uses: `[first_token, first_token + TOKEN_SPAN)`.
    pub const TOKEN_SPAN: usize = 1024;

    /// A client that connects at the first [`RedisClient::on_tick`].
    pub fn new(mut config: ClientConfig, first_token: usize, now: Instant) -> Self {
        config.connections = config.connections.clamp(1, MAX_LANES);
        let discovery = match &config.target {
            Target::Sentinel { sentinels, master } => Some(Discovery::new(
                sentinels.clone(),
                master.clone(),
                config.sentinel_password.clone(),
            )),
            Target::Direct { .. } => None,
        };
        RedisClient {
            config,
            first_token,
            generation: 0,
            lanes: Vec::new(),
            phase: Phase::Waiting { until: now },
            master: None,
            attempts: 0,
            started: false,
            discovery,
            sentinel: None,
            sentinel_retry: None,
            events: VecDeque::new(),
            stats: ClientStats::default(),
            last_down: None,
            down_reported: false,
            now,
            scratch: vec![0; READ_CHUNK],
        }
    }

    /// Whether `token` is one of ours.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.first_token && token.0 - self.first_token < Self::TOKEN_SPAN
    }

    /// Handles a readiness event for one of our tokens (stale ones are ignored).
    pub fn on_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        self.now = now;
        let token = event.token();
        if self
            .sentinel
            .as_ref()
            .is_some_and(|s| s.conn.token == token)
        {
            self.on_sentinel_event(registry, event, now);
        } else if let Some(i) = self.lanes.iter().position(|l| l.conn.token == token) {
            self.on_lane_event(registry, i, event, now);
        }
    }

    /// Timeouts, connects, reconnects, sentinel retries. Call when `next_deadline` passes (and
    /// at start).
    pub fn on_tick(&mut self, registry: &Registry, now: Instant) {
        self.now = now;
        self.expire_commands(now);
        if let Some(reason) = self.stalled_lane(now) {
            self.fail(registry, reason, now);
        }
        match &self.phase {
            Phase::Waiting { until } if now >= *until => self.start_attempt(registry, now),
            Phase::Connecting { master, deadline } if now >= *deadline => {
                let reason = format!("connecting to {master} timed out");
                self.fail(registry, reason, now);
            }
            _ => {}
        }
        self.tick_sentinel(registry, now);
    }

    /// The earliest instant `on_tick` has work at.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.config.command_timeout;
        let phase = match &self.phase {
            Phase::Waiting { until } => Some(*until),
            Phase::Connecting { deadline, .. } => Some(*deadline),
            Phase::Resolving | Phase::Up { .. } => None,
        };
        let lanes = self.lanes.iter().flat_map(|lane| {
            let command = lane.sent.front().map(|(_, sent)| *sent + timeout);
            let stall = (lane.conn.resp.in_flight() > 0)
                .then(|| lane.last_progress + timeout * STALL_FACTOR);
            [command, stall]
        });
        let sentinel = self.sentinel_deadline();
        [phase, sentinel, self.sentinel_retry]
            .into_iter()
            .chain(lanes)
            .flatten()
            .min()
    }

    /// Queues a command on `lane` (modulo the lane count). Its outcome comes back as exactly one
    /// [`ClientEvent::Reply`] with `tag`. Fails at once when not up or the lane is full.
    pub fn send(
        &mut self,
        lane: usize,
        args: &[&[u8]],
        tag: u64,
        now: Instant,
    ) -> Result<(), ClientError> {
        self.now = now;
        if !self.is_up() || self.lanes.is_empty() {
            return Err(ClientError::NotConnected);
        }
        let count = self.lanes.len();
        let max = self.config.max_in_flight;
        let lane = &mut self.lanes[lane % count];
        if lane.conn.resp.in_flight() >= max {
            return Err(ClientError::Busy);
        }
        if lane.conn.resp.in_flight() == 0 {
            lane.last_progress = now;
        }
        lane.conn.resp.queue(args, tag);
        lane.sent.push_back((tag, now));
        Ok(())
    }

    /// Writes what each connection has queued: one `write()` per connection.
    pub fn flush(&mut self, registry: &Registry) {
        let failed = self
            .lanes
            .iter_mut()
            .find_map(|lane| lane.conn.flush().err());
        if let Some(reason) = failed {
            self.fail(registry, reason, self.now);
        }
        let sentinel_failed = self.sentinel.as_mut().and_then(|s| s.conn.flush().err());
        if let Some(reason) = sentinel_failed {
            self.sentinel_lost(registry, &reason, self.now);
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Whether every lane is connected to a verified master.
    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up { .. })
    }

    /// The master the lanes are connected (or connecting) to.
    pub fn master(&self) -> Option<&str> {
        self.master.as_deref()
    }

    /// The reason of the last failure, while not up.
    pub fn last_error(&self) -> Option<&str> {
        self.last_down.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            in_flight: self.lanes.iter().map(|l| l.sent.len()).sum(),
            ..self.stats.clone()
        }
    }

    /// The token for `slot` of a new connection.
    pub(super) fn next_token(&mut self, slot: usize) -> Token {
        self.generation = (self.generation + 1) % (Self::TOKEN_SPAN / SLOTS);
        Token(self.first_token + self.generation * SLOTS + slot)
    }

    /// A connection attempt: resolve (Sentinel) or connect the lanes (direct).
    fn start_attempt(&mut self, registry: &Registry, now: Instant) {
        if self.started {
            self.stats.reconnects += 1;
        }
        self.started = true;
        match &self.config.target {
            Target::Direct { addr } => {
                let addr = addr.clone();
                self.connect_lanes(registry, &addr, now);
            }
            Target::Sentinel { .. } => {
                self.phase = Phase::Resolving;
                if let Some(d) = self.discovery.as_mut() {
                    d.resolve();
                }
                self.run_discovery(registry, now);
            }
        }
    }

    /// Opens every lane to `master`.
    pub(super) fn connect_lanes(&mut self, registry: &Registry, master: &str, now: Instant) {
        if let Some(old) = self.master.replace(master.to_owned()) {
            if old != master {
                self.stats.failovers_seen += 1;
                self.events.push_back(ClientEvent::MasterChanged {
                    from: old,
                    to: master.to_owned(),
                });
            }
        }
        for slot in 0..self.config.connections {
            let token = self.next_token(slot);
            match Conn::open(master, token, registry, self.config.limits.clone()) {
                Ok(conn) => self.lanes.push(Lane {
                    conn,
                    state: LaneState::Connecting,
                    sent: VecDeque::new(),
                    last_progress: now,
                }),
                Err(e) => {
                    self.fail(registry, format!("connect to {master}: {e}"), now);
                    return;
                }
            }
        }
        self.phase = Phase::Connecting {
            master: master.to_owned(),
            deadline: now + self.config.connect_timeout,
        };
    }

    /// Closes every lane: `Down` if we were up, every in-flight tag fails with ConnectionLost.
    pub(super) fn teardown(&mut self, registry: &Registry, reason: &str) {
        if self.is_up() || !self.down_reported {
            self.events.push_back(ClientEvent::Down {
                reason: reason.to_owned(),
            });
            self.down_reported = true;
        }
        self.last_down = Some(reason.to_owned());
        for lane in self.lanes.drain(..) {
            for (tag, _) in lane.sent {
                self.events.push_back(ClientEvent::Reply {
                    tag,
                    result: Err(CommandError::ConnectionLost),
                });
            }
            lane.conn.close(registry);
        }
    }

    /// Teardown, then wait out the backoff before the next attempt.
    pub(super) fn fail(&mut self, registry: &Registry, reason: String, now: Instant) {
        self.teardown(registry, &reason);
        let delay = backoff(
            self.config.backoff_min,
            self.config.backoff_max,
            self.attempts,
        );
        self.attempts = self.attempts.saturating_add(1);
        self.phase = Phase::Waiting { until: now + delay };
    }

    pub(super) fn master_name(&self) -> &str {
        self.master.as_deref().unwrap_or("redis")
    }
}

/// `min * 2^attempts`, at most `max`.
fn backoff(min: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max).max(min.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(ms(100), ms(1000), 0), ms(100));
        assert_eq!(backoff(ms(100), ms(1000), 1), ms(200));
        assert_eq!(backoff(ms(100), ms(1000), 3), ms(800));
        assert_eq!(backoff(ms(100), ms(1000), 4), ms(1000));
        assert_eq!(backoff(ms(100), ms(1000), 400), ms(1000));
    }
}
