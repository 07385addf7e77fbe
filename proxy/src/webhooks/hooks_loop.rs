//! [`WebhookLoop`], the `hermod-webhooks` thread: takes events off the bounded queue, and POSTs
//! the batches [`Delivery`] makes, when it says, with `ureq` (blocking, bounded by
//! `--webhook-timeout`). It never touches a worker: a receiver that hangs or fails only makes
//! this thread wait, while the queue fills up to its bound and the workers drop what does not
//! fit.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::delivery::{Backoff, Delivery, Outcome, Step};
use super::payload::signature;
use super::HookEvent;
use crate::metrics::Metrics;
use crate::settings::webhooks::WebhookSettings;

/// How long the thread waits (for a first event, or in a backoff) before it refreshes the
/// queue gauge.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// The webhook thread's state.
pub struct WebhookLoop {
    settings: WebhookSettings,
    rx: Receiver<HookEvent>,
    metrics: Arc<Metrics>,
    /// Plain HTTP/1.1 with keep-alive; no proxy from the environment, no redirects.
    agent: ureq::Agent,
    delivery: Delivery,
    /// Events taken off the queue for the next batch (reused).
    taken: Vec<HookEvent>,
}

impl WebhookLoop {
    pub fn new(settings: WebhookSettings, rx: Receiver<HookEvent>, metrics: Arc<Metrics>) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .build()
            .into();
        WebhookLoop {
            taken: Vec::with_capacity(settings.batch),
            settings,
            rx,
            metrics,
            agent,
            delivery: Delivery::new(Backoff::DEFAULT),
        }
    }

    /// Runs until every worker's sender is gone and the queue is empty.
    pub fn run(mut self) {
        loop {
            let now = Instant::now();
            match self.delivery.poll(now) {
                Step::Take => {
                    if !self.take() {
                        return;
                    }
                }
                Step::Post => {
                    let outcome = self.post();
                    let jitter: f64 = rand::random();
                    let sent = self
                        .delivery
                        .handle_outcome(outcome, Instant::now(), jitter);
                    if let Some(n) = sent {
                        self.metrics
                            .webhooks
                            .events_sent
                            .fetch_add(n as u64, Relaxed);
                    }
                }
                // In steps of at most a second, so that the queue gauge stays fresh.
                Step::Wait(until) => {
                    std::thread::sleep(until.saturating_duration_since(now).min(IDLE_WAIT));
                }
            }
            let waiting = self.rx.len() + self.delivery.held();
            self.metrics.webhooks.queued.store(waiting as u64, Relaxed);
        }
    }

    /// Takes up to a batch of events: waits for the first, then takes what is already queued.
    /// False once the senders are gone and nothing is left.
    fn take(&mut self) -> bool {
        match self.rx.recv_timeout(IDLE_WAIT) {
            Ok(first) => self.taken.push(first),
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
        while self.taken.len() < self.settings.batch {
            match self.rx.try_recv() {
                Ok(event) => self.taken.push(event),
                Err(_) => break,
            }
        }
        self.delivery.handle_events(&self.taken, Instant::now());
        self.taken.clear();
        true
    }

    /// One POST of the batch in flight.
    fn post(&mut self) -> Outcome {
        let Some(body) = self.delivery.body() else {
            return Outcome::Failed;
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signed = signature(self.settings.secret.as_bytes(), ts, body);
        self.metrics.webhooks.posts.fetch_add(1, Relaxed);
        let answer = self
            .agent
            .post(&self.settings.url)
            .header("Content-Type", "application/json")
            .header("X-Hermod-Timestamp", ts.to_string())
            .header("X-Hermod-Signature", signed)
            .send(body);
        match answer {
            Ok(response) if response.status().is_success() => Outcome::Accepted,
            Ok(response) => {
                tracing::debug!(status = %response.status(), "webhook POST refused; retrying");
                self.metrics.webhooks.post_failures.fetch_add(1, Relaxed);
                Outcome::Failed
            }
            Err(e) => {
                tracing::debug!("webhook POST failed ({e}); retrying");
                self.metrics.webhooks.post_failures.fetch_add(1, Relaxed);
                Outcome::Failed
            }
        }
    }
}
