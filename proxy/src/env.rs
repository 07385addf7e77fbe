//! A worker's link to the broker and the settings its sessions share: builds each handler's
//! [`Ctx`] and sends the control requests that must not be lost (Attach, Detach, ResumeReplay),
//! parking them in order while the broker's channel is full.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use hermod_core::bus::{Request, SessionKey};
use hermod_core::reactor::mailbox::{MailboxSender, TrySendError};
use hermod_core::reactor::slots::Key;

use crate::client::Ctx;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// What session handlers need besides their slot, kept apart from the slab so that both can be
/// borrowed at once.
pub struct Env {
    /// This worker's id, the `worker` of its sessions' keys.
    pub id: u16,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// The broker's bounded request channel; never blocked on.
    pub broker: MailboxSender<Request>,
    /// Attach/Detach/ResumeReplay waiting for room in the broker channel, in order.
    pub backlog: VecDeque<Request>,
}

impl Env {
    pub fn session_key(&self, key: Key) -> SessionKey {
        SessionKey {
            worker: self.id,
            slot: key.slot,
            generation: key.generation,
        }
    }

    pub fn ctx(&self, key: Key, now: Instant) -> Ctx<'_> {
        Ctx {
            now,
            key: self.session_key(key),
            settings: &self.settings,
            metrics: &self.metrics,
            broker: &self.broker,
            broker_backlog: !self.backlog.is_empty(),
        }
    }

    /// Sends a control request (Attach, Detach, ResumeReplay), keeping order; a full channel parks them for the next tick.
    pub fn send_control(&mut self, req: Request) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(req);
            return;
        }
        match self.broker.try_send(req) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(req)) => self.backlog.push_back(req),
        }
    }

    pub fn retry_backlog(&mut self) {
        while let Some(req) = self.backlog.pop_front() {
            match self.broker.try_send(req) {
                Ok(()) => {}
                Err(TrySendError::Disconnected(_)) => self.backlog.clear(),
                Err(TrySendError::Full(req)) => {
                    self.backlog.push_front(req);
                    return;
                }
            }
        }
    }
}
