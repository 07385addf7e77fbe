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
            if let Request::Detach { session } = req {
                if self.cancel_parked(session) {
                    return;
                }
            }
            self.backlog.push_back(req);
            return;
        }
        match self.broker.try_send(req) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(req)) => self.backlog.push_back(req),
        }
    }

    /// A session ends while its Attach is still parked: the broker never heard of it, so its
    /// parked requests are dropped rather than followed by a Detach. Without this, sessions
    /// churning while the broker channel is full would grow the backlog by two requests each.
    /// True when its Attach was parked.
    fn cancel_parked(&mut self, session: SessionKey) -> bool {
        let parked = self
            .backlog
            .iter()
            .any(|r| matches!(r, Request::Attach { session: s, .. } if *s == session));
        if parked {
            self.backlog.retain(|r| r.session() != session);
        }
        parked
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

#[cfg(test)]
mod tests {
    use super::*;
    use hermod_core::ids::Name;
    use hermod_core::reactor::mailbox::{mailbox, MailboxReceiver};

    /// An `Env` whose broker channel holds `cap` requests (the Poll must outlive the sends).
    fn env(cap: usize) -> (mio::Poll, Env, MailboxReceiver<Request>) {
        let poll = mio::Poll::new().expect("poll");
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker");
        let (tx, rx) = mailbox(cap, Arc::new(waker));
        let env = Env {
            id: 0,
            settings: Arc::new(Settings::defaults()),
            metrics: Arc::new(Metrics::default()),
            broker: tx,
            backlog: VecDeque::new(),
        };
        (poll, env, rx)
    }

    fn attach(env: &Env, slot: u32) -> Request {
        let name = Name::parse("user", "alice").expect("valid");
        Request::Attach {
            session: env.session_key(Key {
                slot,
                generation: 0,
            }),
            user: name.clone(),
            device: name,
        }
    }

    fn detach(env: &Env, slot: u32) -> Request {
        let session = env.session_key(Key {
            slot,
            generation: 0,
        });
        Request::Detach { session }
    }

    #[test]
    fn churn_while_the_broker_is_full_does_not_grow_the_backlog() {
        let (_poll, mut env, rx) = env(1);
        // Session 0 got through; the channel is now full.
        env.send_control(attach(&env, 0));
        for slot in 1..1000 {
            env.send_control(attach(&env, slot));
            env.send_control(detach(&env, slot));
        }
        assert!(env.backlog.is_empty(), "{}", env.backlog.len());
        // A session the broker knows must still be detached, in order.
        env.send_control(attach(&env, 1000));
        env.send_control(detach(&env, 0));
        assert_eq!(env.backlog.len(), 2);
        let mut got = Vec::new();
        rx.drain(8, |r| got.push(r));
        env.retry_backlog();
        rx.drain(8, |r| got.push(r));
        env.retry_backlog();
        rx.drain(8, |r| got.push(r));
        let slots: Vec<(bool, u32)> = got
            .iter()
            .map(|r| (matches!(r, Request::Attach { .. }), r.session().slot))
            .collect();
        assert_eq!(slots, [(true, 0), (true, 1000), (false, 0)]);
    }
}
