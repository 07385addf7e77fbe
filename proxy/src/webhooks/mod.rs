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
//!   workers' end of the channel.

pub mod delivery;
pub mod event;
mod hooks_loop;
pub mod payload;

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{bounded, Sender};

pub use delivery::{Backoff, Delivery, Outcome, Step};
pub use event::{EventKind, HookEvent, HookPort, NoHooks, Published, What};
pub use hooks_loop::WebhookLoop;

use crate::metrics::Metrics;
use crate::settings::webhooks::EventSet;
use crate::settings::Settings;

/// The workers' end of the webhook queue (cloned into each); with webhooks off it wants
/// nothing.
#[derive(Debug, Clone)]
pub struct HookSender {
    /// `None`: webhooks off.
    tx: Option<Sender<HookEvent>>,
    events: EventSet,
    metrics: Arc<Metrics>,
}

impl HookSender {
    /// The sender of a gateway without webhooks.
    pub fn off(metrics: Arc<Metrics>) -> Self {
        HookSender {
            tx: None,
            events: EventSet::DEFAULT,
            metrics,
        }
    }
}

impl HookPort for HookSender {
    fn wants(&self, kind: EventKind) -> bool {
        self.tx.is_some() && self.events.contains(kind)
    }

    fn report(&self, event: HookEvent) {
        let Some(tx) = &self.tx else { return };
        // Full (the receiver is slow or down) or gone: the event is dropped, never waited for.
        if tx.try_send(event).is_err() {
            self.metrics.webhooks.events_dropped.fetch_add(1, Relaxed);
        }
    }
}

/// With `--webhook-url`: the bounded queue and the `hermod-webhooks` thread that drains it.
/// The thread lives as long as the process (events still queued when it exits are lost).
pub fn start(settings: &Settings, metrics: &Arc<Metrics>) -> io::Result<HookSender> {
    let Some(hooks) = &settings.webhooks else {
        return Ok(HookSender::off(Arc::clone(metrics)));
    };
    let (tx, rx) = bounded(hooks.queue);
    let runner = WebhookLoop::new(hooks.clone(), rx, Arc::clone(metrics));
    thread::Builder::new()
        .name("hermod-webhooks".to_owned())
        .spawn(move || runner.run())?;
    Ok(HookSender {
        tx: Some(tx),
        events: hooks.events,
        metrics: Arc::clone(metrics),
    })
}
