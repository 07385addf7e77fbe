//! Events to the application backend by webhook (docs/api.md, "Webhooks").
//!
//! Workers report what happens to their sessions (connect, disconnect, join, leave, and opt-in
//! every room message a client publishes) through a [`HookPort`]: a non-blocking push onto one
//! bounded channel, dropped and counted when full, so a slow or dead receiver never slows a
//! worker. The `hermod-webhooks` thread drains it:
//!
//! ```text
//!  worker ──HookEvent (try_send)──► bounded channel (--webhook-queue) ──► WebhookLoop
//!                                                                          │ Delivery (sans-io):
//!                                                                          │ batch, retry, backoff
//!                                                                          ▼
//!                                        POST --webhook-url, signed (payload.rs), until 2xx
//! ```
//!
//! - `event.rs`: [`HookEvent`] and the [`HookPort`] workers report through (sans-io).
//! - `payload.rs`: a batch's JSON body and its signature (sans-io).
//! - `delivery.rs`: [`Delivery`], what to POST when, retries and backoff (sans-io).
//! - `hooks_loop.rs`: [`WebhookLoop`], the thread; this file: [`start`] and [`HookSender`], the
//!   workers' end of the channels.
//!
//! With `--events-stream` (Redis storage only) the same events also go, through a second
//! bounded channel of their own (`--events-stream-queue`), to the `hermod-events-stream`
//! thread, which appends each to a Redis stream with `XADD` (docs/api.md, "Redis stream"):
//!
//! - `stream.rs`: [`Appender`], the `XADD`s of a batch, retries and backoff (sans-io).
//! - `stream_loop.rs`: [`StreamLoop`], the thread, on hermod-core's `RedisClient`.

pub mod delivery;
pub mod event;
mod hooks_loop;
pub mod payload;
pub mod stream;
mod stream_loop;

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{bounded, Sender};

pub use delivery::{Backoff, Delivery, Outcome, Step};
pub use event::{EventKind, HookEvent, HookPort, NoHooks, Published, What};
pub use hooks_loop::WebhookLoop;
pub use stream::Appender;
pub use stream_loop::StreamLoop;

use crate::metrics::Metrics;
use crate::settings::webhooks::EventSet;
use crate::settings::{Settings, Storage};

/// The workers' end of the webhook queue and of the events stream's (cloned into each); with
/// both off it wants nothing.
#[derive(Debug, Clone)]
pub struct HookSender {
    /// `None`: webhooks off.
    tx: Option<Sender<HookEvent>>,
    /// `None`: the events stream off.
    stream: Option<Sender<HookEvent>>,
    /// The kinds reported (`--webhook-events`), to either.
    events: EventSet,
    metrics: Arc<Metrics>,
}

impl HookSender {
    /// The sender of a gateway without webhooks or events stream.
    pub fn off(metrics: Arc<Metrics>) -> Self {
        HookSender {
            tx: None,
            stream: None,
            events: EventSet::DEFAULT,
            metrics,
        }
    }
}

impl HookPort for HookSender {
    fn wants(&self, kind: EventKind) -> bool {
        (self.tx.is_some() || self.stream.is_some()) && self.events.contains(kind)
    }

    fn report(&self, event: HookEvent) {
        // Full (the receiver or Redis is slow or down) or gone: the event is dropped, never
        // waited for.
        let (hook, stream) = match (&self.tx, &self.stream) {
            (Some(tx), Some(stream)) => (Some((tx, event.clone())), Some((stream, event))),
            (Some(tx), None) => (Some((tx, event)), None),
            (None, Some(stream)) => (None, Some((stream, event))),
            (None, None) => return,
        };
        if let Some((tx, event)) = hook {
            if tx.try_send(event).is_err() {
                self.metrics.webhooks.events_dropped.fetch_add(1, Relaxed);
            }
        }
        if let Some((tx, event)) = stream {
            if tx.try_send(event).is_err() {
                self.metrics.events_stream.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// With `--webhook-url`: the bounded queue and the `hermod-webhooks` thread that drains it;
/// with `--events-stream`: another, and the `hermod-events-stream` thread. The threads live as
/// long as the process (events still queued when it exits are lost).
pub fn start(settings: &Settings, metrics: &Arc<Metrics>) -> io::Result<HookSender> {
    let mut sender = HookSender::off(Arc::clone(metrics));
    if let Some(hooks) = &settings.webhooks {
        let (tx, rx) = bounded(hooks.queue);
        let runner = WebhookLoop::new(hooks.clone(), rx, Arc::clone(metrics));
        thread::Builder::new()
            .name("hermod-webhooks".to_owned())
            .spawn(move || runner.run())?;
        sender.tx = Some(tx);
        sender.events = hooks.events;
    }
    if let (Some(stream), Storage::Redis { client, .. }) =
        (&settings.events_stream, &settings.storage)
    {
        let (tx, rx) = bounded(stream.queue);
        let config = (**client).clone();
        let (runner, poll) = StreamLoop::new(stream, config, rx, Arc::clone(metrics))?;
        thread::Builder::new()
            .name("hermod-events-stream".to_owned())
            .spawn(move || runner.run(poll))?;
        sender.stream = Some(tx);
        sender.events = stream.events;
    }
    Ok(sender)
}
