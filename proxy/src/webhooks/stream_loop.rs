//! [`StreamLoop`], the `hermod-events-stream` thread: takes events off its bounded queue and
//! appends the batches [`Appender`] makes to the Redis stream, through a one-lane
//! [`RedisClient`] (hermod-core's client: the engine's target, direct or through Sentinel, with
//! its AUTH, reconnect backoff and command timeout) on a `Poll` of its own. It never touches a
//! worker: while Redis is slow, down or refusing the XADDs, only this thread waits, the queue
//! fills up to its bound and the workers drop what does not fit.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use hermod_core::redis::{ClientConfig, ClientEvent, RedisClient};
use mio::{Events, Poll};

use super::delivery::Backoff;
use super::stream::{Appender, Progress, Step, BATCH};
use super::HookEvent;
use crate::metrics::Metrics;
use crate::settings::events_stream::EventsStreamSettings;

/// How often the queue is looked at while the thread has nothing else to wake it: the most an
/// event waits on an idle gateway before its batch goes out (workers never wake this thread).
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// The stream thread's state.
pub struct StreamLoop {
    rx: Receiver<HookEvent>,
    metrics: Arc<Metrics>,
    client: RedisClient,
    appender: Appender,
    /// Events taken off the queue for the next batch (reused).
    taken: Vec<HookEvent>,
    /// Whether the current problem was logged (one warning until the next success).
    warned: bool,
}

impl StreamLoop {
    /// The loop and the `Poll` it runs on; `redis` is the engine's client settings (one lane
    /// is used).
    pub fn new(
        settings: &EventsStreamSettings,
        mut redis: ClientConfig,
        rx: Receiver<HookEvent>,
        metrics: Arc<Metrics>,
    ) -> io::Result<(Self, Poll)> {
        redis.connections = 1;
        let poll = Poll::new()?;
        let runner = StreamLoop {
            rx,
            metrics,
            client: RedisClient::new(redis, 0, Instant::now()),
            appender: Appender::new(&settings.key, settings.maxlen, Backoff::DEFAULT),
            taken: Vec::with_capacity(BATCH),
            warned: false,
        };
        Ok((runner, poll))
    }

    /// Runs until every worker's sender is gone and the queue is empty.
    pub fn run(mut self, mut poll: Poll) {
        let mut events = Events::with_capacity(64);
        self.client.on_tick(poll.registry(), Instant::now());
        loop {
            let now = Instant::now();
            let mut until = now + LOOK_EVERY;
            if let Step::Wait(due) = self.appender.poll(now) {
                until = until.min(due);
            }
            let now = match self.client.turn(&mut poll, &mut events, until) {
                Ok(now) => now,
                Err(e) => {
                    tracing::error!(error = %e, "events stream poll failed; no more events appended");
                    return;
                }
            };
            self.take_replies(now);
            if self.appender.poll(now) == Step::Take && !self.take(now) {
                return;
            }
            if self.appender.poll(now) == Step::Send && self.client.is_up() {
                self.send(now);
            }
            self.client.flush(poll.registry());
            let waiting = self.rx.len() + self.appender.held();
            self.metrics
                .events_stream
                .queued
                .store(waiting as u64, Relaxed);
        }
    }

    /// Hands the client's replies to the appender.
    fn take_replies(&mut self, now: Instant) {
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Reply { tag, result } => {
                    if let Err(e) = &result {
                        self.warn(&e.to_string());
                    }
                    let jitter: f64 = rand::random();
                    let progress = self.appender.handle_reply(tag, result.is_ok(), now, jitter);
                    self.count(progress);
                }
                ClientEvent::Down { reason } => self.warn(&reason),
                _ => {}
            }
        }
    }

    /// Takes up to a batch of events already queued. False once the senders are gone and
    /// nothing is left.
    fn take(&mut self, now: Instant) -> bool {
        while self.taken.len() < BATCH {
            match self.rx.try_recv() {
                Ok(event) => self.taken.push(event),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if self.taken.is_empty() => return false,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        self.appender.handle_events(&self.taken, now);
        self.taken.clear();
        true
    }

    /// Pipelines the batch's XADDs on the client's lane.
    fn send(&mut self, now: Instant) {
        let Some((first_tag, commands)) = self.appender.start() else {
            return;
        };
        let mut sent = 0;
        let mut refused = None;
        for (tag, command) in (first_tag..).zip(commands) {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            if let Err(e) = self.client.send(0, &args, tag, now) {
                refused = Some(e);
                break;
            }
            sent += 1;
        }
        if let Some(e) = refused {
            self.warn(&e.to_string());
            let progress = self.appender.handle_unsent(sent, now, rand::random());
            self.count(progress);
        }
    }

    fn count(&mut self, progress: Progress) {
        let m = &self.metrics.events_stream;
        match progress {
            Progress::Pending => {}
            Progress::Appended(n) => {
                m.appended.fetch_add(n as u64, Relaxed);
                self.warned = false;
            }
            Progress::Failed => {
                m.failures.fetch_add(1, Relaxed);
            }
        }
    }

    fn warn(&mut self, problem: &str) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                problem,
                "cannot append events to the Redis stream; retrying"
            );
        }
    }
}
