//! The registry heartbeat: the broker announces itself in Redis so gateways (`hermod-proxy
//! --registry`) find it, on its own small thread with its own `Poll` and a one-lane
//! [`RedisClient`].
//!
//! Every `ttl / 3`, while the engine is ready:
//! `ZADD hermod:brokers <now + ttl, unix ms> <node-id>@<advertise>` and
//! `ZREMRANGEBYSCORE hermod:brokers -inf <now>` (entries of brokers that stopped renewing).
//! A broker whose engine is not ready stops renewing, so gateways drop it within `ttl`.
//! On [`Registry::leave`] (draining): `ZREM hermod:brokers <entry>`, then the thread ends.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hermod_core::link::REGISTRY_KEY;
use hermod_core::redis::{ClientConfig, ClientEvent, RedisClient};
use mio::{Events, Poll, Token, Waker};

use crate::metrics::Metrics;

/// The waker's token; the client's tokens follow.
const WAKE: Token = Token(0);
/// How long leaving waits for the `ZREM` to be answered.
const LEAVE_WAIT: Duration = Duration::from_secs(2);
/// Tag of the `ZREM`.
const LEAVE_TAG: u64 = u64::MAX;

/// The main thread's handle on the registry thread.
pub struct Registry {
    leave: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: JoinHandle<()>,
}

impl Registry {
    /// Starts announcing `entry` every `ttl / 3` while `ready()` says the engine can serve.
    pub fn spawn(
        mut redis: ClientConfig,
        entry: String,
        ttl: Duration,
        ready: Arc<dyn Fn() -> bool + Send + Sync>,
        metrics: Arc<Metrics>,
    ) -> io::Result<Registry> {
        redis.connections = 1;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let leave = Arc::new(AtomicBool::new(false));
        let beat = Heartbeat {
            client: RedisClient::new(redis, 1, Instant::now()),
            entry,
            ttl,
            ready,
            metrics,
            leave: Arc::clone(&leave),
            tag: 0,
        };
        let thread = std::thread::Builder::new()
            .name("hermod-registry".into())
            .spawn(move || beat.run(poll))?;
        Ok(Registry {
            leave,
            waker,
            thread,
        })
    }

    /// Removes the entry (best effort, bounded) and stops the thread.
    pub fn leave(self) {
        self.leave.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if self.thread.join().is_err() {
            tracing::error!("registry thread panicked");
        }
    }
}

/// The registry thread's state.
struct Heartbeat {
    client: RedisClient,
    /// `<node-id>@<advertise>`.
    entry: String,
    ttl: Duration,
    /// Whether the engine can serve: only then is the entry renewed.
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    metrics: Arc<Metrics>,
    leave: Arc<AtomicBool>,
    /// Tag of the last command sent.
    tag: u64,
}

impl Heartbeat {
    fn run(mut self, mut poll: Poll) {
        let mut events = Events::with_capacity(64);
        let period = self.ttl / 3;
        let mut next_beat = Instant::now();
        let mut leave_deadline: Option<Instant> = None;
        self.client.on_tick(poll.registry(), Instant::now());
        loop {
            let until = leave_deadline.unwrap_or(next_beat);
            let now = match self.client.turn(&mut poll, &mut events, until) {
                Ok(now) => now,
                Err(e) => {
                    tracing::error!(error = %e, "registry poll failed");
                    return;
                }
            };
            if self.take_events() {
                return; // the ZREM was answered
            }
            if self.leave.load(Ordering::Acquire) && leave_deadline.is_none() {
                leave_deadline = Some(now + LEAVE_WAIT);
                Metrics::set(&self.metrics.registered, 0);
                if self
                    .send(
                        &[
                            b"ZREM",
                            REGISTRY_KEY.as_bytes(),
                            self.entry.clone().as_bytes(),
                        ],
                        LEAVE_TAG,
                        now,
                    )
                    .is_err()
                {
                    return;
                }
            } else if leave_deadline.is_none() && now >= next_beat {
                // Not ready or not connected yet: try again soon rather than a period later.
                let retry = Duration::from_millis(100).min(period);
                next_beat = now + if self.beat(now) { period } else { retry };
            }
            self.client.flush(poll.registry());
            if leave_deadline.is_some_and(|d| now >= d) {
                tracing::warn!("registry: leaving timed out; the entry expires on its own");
                return;
            }
        }
    }

    /// Renews the entry and prunes expired ones; false when nothing could be sent.
    fn beat(&mut self, now: Instant) -> bool {
        if !(self.ready)() || !self.client.is_up() {
            Metrics::set(&self.metrics.registered, 0);
            return false;
        }
        let now_ms = unix_ms();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let expiry = now_ms.saturating_add(ttl_ms).to_string();
        let entry = self.entry.clone();
        self.tag += 1;
        let tag = self.tag;
        let zadd = self.send(
            &[
                b"ZADD",
                REGISTRY_KEY.as_bytes(),
                expiry.as_bytes(),
                entry.as_bytes(),
            ],
            tag,
            now,
        );
        let cutoff = now_ms.to_string();
        let prune = self.send(
            &[
                b"ZREMRANGEBYSCORE",
                REGISTRY_KEY.as_bytes(),
                b"-inf",
                cutoff.as_bytes(),
            ],
            0,
            now,
        );
        if zadd.is_err() || prune.is_err() {
            Metrics::set(&self.metrics.registered, 0);
            return false;
        }
        true
    }

    fn send(&mut self, args: &[&[u8]], tag: u64, now: Instant) -> Result<(), ()> {
        self.client.send(0, args, tag, now).map_err(|e| {
            tracing::debug!(error = %e, "registry command not sent");
        })
    }

    /// Handles the client's events; true once the `ZREM` was answered.
    fn take_events(&mut self) -> bool {
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Reply {
                    tag: LEAVE_TAG,
                    result,
                } => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "registry: leaving failed");
                    }
                    return true;
                }
                ClientEvent::Reply { tag, result } if tag != 0 => {
                    let ok = result.is_ok_and(|v| !v.is_error());
                    Metrics::set(&self.metrics.registered, u64::from(ok));
                }
                ClientEvent::Down { reason } => {
                    Metrics::set(&self.metrics.registered, 0);
                    tracing::warn!(%reason, "registry: Redis unreachable");
                }
                _ => {}
            }
        }
        false
    }
}

/// Wall-clock time in unix milliseconds: registry scores are compared across machines.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
