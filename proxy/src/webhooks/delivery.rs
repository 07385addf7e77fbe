//! [`Delivery`]: the webhook thread's decisions, without a clock or a socket. One batch at a
//! time, in order, retried until the receiver accepts it:
//!
//! ```text
//!            handle_events (up to --webhook-batch)
//!   Idle ───────────────────────────────────────────► Due ──poll: Post──► (the shell POSTs)
//!    ▲                                                 ▲                        │
//!    │ handle_outcome(Accepted)                        │ backoff elapsed        │
//!    └─────────────────────────────────────────────────┼────────────────────────┤
//!                                                      │                        │ handle_outcome(Failed)
//!                                               Backing off ◄───────────────────┘
//! ```
//!
//! The backoff after the n-th failure in a row is `first * 2^(n-1)`, at most `max`, of which a
//! random half is taken off (`jitter` in [0, 1) comes from the shell), so that gateways
//! restarted together do not retry in step. While a batch waits, new events stay in the
//! channel, which is bounded: past it they are dropped and counted by the workers.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::{Duration, Instant};

use super::payload::encode_batch;
use super::HookEvent;

/// How retries are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// 0.5 s doubling to 30 s.
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(30),
    };

    /// The wait after `failures` failures in a row (at least 1), `jitter` in [0, 1): between
    /// half the nominal wait and all of it.
    pub fn wait(&self, failures: u32, jitter: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let nominal = self.first.saturating_mul(1u32 << doublings).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        nominal.mul_f64(1.0 - jitter / 2.0)
    }
}

/// What the shell does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No batch: take up to `batch` events from the queue and [`Delivery::handle_events`].
    Take,
    /// POST [`Delivery::body`] now, then [`Delivery::handle_outcome`].
    Post,
    /// Backing off: nothing to do before this instant.
    Wait(Instant),
}

/// How a POST ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer: the batch is delivered.
    Accepted,
    /// No connection, a timeout, or an answer other than 2xx: the batch is retried.
    Failed,
}

/// The batch being delivered.
#[derive(Debug)]
struct Batch {
    /// The exact bytes POSTed, the same on every attempt.
    body: Vec<u8>,
    /// Events in it.
    events: usize,
    /// Failed attempts in a row.
    failures: u32,
    /// When the next attempt may go.
    due: Instant,
}

/// The webhook thread's state: the batch in flight and the next event's sequence number.
#[derive(Debug)]
pub struct Delivery {
    backoff: Backoff,
    batch: Option<Batch>,
    /// `seq` of the next event taken (from 1).
    next_seq: u64,
}

impl Delivery {
    pub fn new(backoff: Backoff) -> Self {
        Delivery {
            backoff,
            batch: None,
            next_seq: 1,
        }
    }

    /// What to do at `now`.
    pub fn poll(&self, now: Instant) -> Step {
        match &self.batch {
            None => Step::Take,
            Some(b) if now >= b.due => Step::Post,
            Some(b) => Step::Wait(b.due),
        }
    }

    /// The events taken from the queue become the next batch, due at once. Only when
    /// [`Step::Take`]; no events, no batch.
    pub fn handle_events(&mut self, events: &[HookEvent], now: Instant) {
        if self.batch.is_some() || events.is_empty() {
            return;
        }
        let body = encode_batch(events, self.next_seq);
        self.next_seq += events.len() as u64;
        self.batch = Some(Batch {
            body,
            events: events.len(),
            failures: 0,
            due: now,
        });
    }

    /// The body of the batch in flight.
    pub fn body(&self) -> Option<&[u8]> {
        self.batch.as_ref().map(|b| b.body.as_slice())
    }

    /// Events held here (the batch in flight), for the queue gauge.
    pub fn held(&self) -> usize {
        self.batch.as_ref().map_or(0, |b| b.events)
    }

    /// The POST of the batch ended at `now`: accepted, the batch is done and its event count
    /// returned; failed, it is due again after the backoff (`jitter` in [0, 1)).
    pub fn handle_outcome(&mut self, outcome: Outcome, now: Instant, jitter: f64) -> Option<usize> {
        let batch = self.batch.as_mut()?;
        match outcome {
            Outcome::Accepted => self.batch.take().map(|b| b.events),
            Outcome::Failed => {
                batch.failures = batch.failures.saturating_add(1);
                batch.due = now + self.backoff.wait(batch.failures, jitter);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin

    use super::*;
    use crate::webhooks::What;
    use hermod_core::bus::SessionKey;
    use hermod_core::ids::Name;

    fn events(n: usize) -> Vec<HookEvent> {
        let name = Name::parse("user", "alice").expect("valid");
        (0..n)
            .map(|i| HookEvent {
                what: What::Connect,
                user: name.clone(),
                device: name.clone(),
                session: SessionKey {
                    worker: 0,
                    slot: i as u32,
                    generation: 0,
                },
                ts: 1,
            })
            .collect()
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_with_at_most_half_taken_off() {
        let b = Backoff::DEFAULT;
        let ms = |f, j| b.wait(f, j).as_millis();
        assert_eq!(
            [ms(1, 0.0), ms(2, 0.0), ms(3, 0.0), ms(7, 0.0)],
            [500, 1000, 2000, 30_000]
        );
        assert_eq!(ms(u32::MAX, 0.0), 30_000);
        assert_eq!(ms(1, 0.999_999), 250);
        assert_eq!(ms(8, 0.5), 22_500);
        // Out-of-range jitter is clamped, never a panic.
        assert_eq!(ms(1, -3.0), 500);
        assert_eq!(ms(1, 7.0), 250);
    }

    #[test]
    fn a_batch_is_retried_with_the_same_body_until_accepted() {
        let t0 = Instant::now();
        let mut d = Delivery::new(Backoff::DEFAULT);
        assert_eq!(d.poll(t0), Step::Take);
        d.handle_events(&[], t0);
        assert_eq!(d.poll(t0), Step::Take, "no events, no batch");
        d.handle_events(&events(3), t0);
        assert_eq!(d.poll(t0), Step::Post);
        assert_eq!(d.held(), 3);
        let body = d.body().expect("a batch").to_vec();
        assert!(String::from_utf8_lossy(&body).contains(r#""seq":3"#));

        assert_eq!(d.handle_outcome(Outcome::Failed, t0, 0.0), None);
        let retry = t0 + Duration::from_millis(500);
        assert_eq!(d.poll(t0), Step::Wait(retry));
        // Another batch cannot overtake the one waiting.
        d.handle_events(&events(1), t0);
        assert_eq!(d.held(), 3);
        assert_eq!(d.poll(retry), Step::Post);
        assert_eq!(d.handle_outcome(Outcome::Failed, retry, 0.0), None);
        assert_eq!(d.poll(retry), Step::Wait(retry + Duration::from_secs(1)));
        assert_eq!(d.body(), Some(body.as_slice()));

        let t = retry + Duration::from_secs(1);
        assert_eq!(d.handle_outcome(Outcome::Accepted, t, 0.0), Some(3));
        assert_eq!(d.poll(t), Step::Take);
        assert_eq!(d.held(), 0);
        // Numbering goes on where the delivered batch ended; backoff starts afresh.
        d.handle_events(&events(2), t);
        let next = String::from_utf8(d.body().expect("a batch").to_vec()).expect("utf-8");
        assert!(
            next.contains(r#""seq":4"#) && next.contains(r#""seq":5"#),
            "{next}"
        );
        d.handle_outcome(Outcome::Failed, t, 0.0);
        assert_eq!(d.poll(t), Step::Wait(t + Duration::from_millis(500)));
    }

    #[test]
    fn an_outcome_without_a_batch_is_ignored() {
        let t0 = Instant::now();
        let mut d = Delivery::new(Backoff::DEFAULT);
        assert_eq!(d.handle_outcome(Outcome::Accepted, t0, 0.0), None);
        assert_eq!(d.handle_outcome(Outcome::Failed, t0, 0.0), None);
        assert_eq!(d.poll(t0), Step::Take);
    }
}
