//! What a worker's session handlers borrow besides their slot: the worker's id, the settings,
//! the metrics and the [`BrokerPort`], the worker's end of the broker's request channel. Control
//! requests that must not be lost (Attach, Detach, ResumeReplay) are parked in order while that
//! channel is full ([`Backlog`]); client requests are refused meanwhile, so that none overtakes
//! its session's Attach.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hermod_core::bus::{Request, SessionKey};
use hermod_core::ids::Name;
use hermod_core::reactor::backlog::Backlog;
use hermod_core::reactor::mailbox::MailboxSender;
use hermod_core::reactor::slots::Key;

use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::webhooks::{HookEvent, HookPort, HookSender, What};
use crate::ws::protocol::{RequestPort, SessionCx};

/// What session handlers need besides their slot, kept apart from the slab so that both can be
/// borrowed at once.
pub struct WorkerContext {
    /// This worker's id, the `worker` of its sessions' keys.
    pub id: u16,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// The broker's bounded request channel; never blocked on.
    pub broker: BrokerPort,
    /// The webhook queue (bounded; never blocked on).
    pub hooks: HookSender,
    /// The wall clock in unix seconds at the current loop tick (token expiries speak it).
    pub now_unix: u64,
    /// When `now_unix` was last read from the clock (see [`WorkerContext::tick`]).
    unix_read_at: Instant,
}

/// How long `now_unix` may go without a fresh read: tokens speak whole seconds, and reading
/// the wall clock on every loop turn is measurable per message at low rates.
const UNIX_REREAD: Duration = Duration::from_millis(100);

impl WorkerContext {
    pub fn new(
        id: u16,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
        broker: BrokerPort,
    ) -> Self {
        WorkerContext {
            id,
            settings,
            hooks: HookSender::off(Arc::clone(&metrics)),
            metrics,
            broker,
            now_unix: unix_now(),
            unix_read_at: Instant::now(),
        }
    }

    /// The context with events reported to `hooks`.
    pub fn with_hooks(mut self, hooks: HookSender) -> Self {
        self.hooks = hooks;
        self
    }

    /// Reports `what` of the session in `key` to the webhook queue, if that kind is wanted.
    pub fn report(&self, what: What, user: &Name, device: &Name, key: Key) {
        if self.hooks.wants(what.kind()) {
            self.hooks.report(HookEvent {
                what,
                user: user.clone(),
                device: device.clone(),
                session: self.session_key(key),
                ts: self.now_unix,
            });
        }
    }

    /// A loop turn at `now`: `now_unix` follows the wall clock, read at most every
    /// [`UNIX_REREAD`].
    pub fn tick(&mut self, now: Instant) {
        if now.saturating_duration_since(self.unix_read_at) >= UNIX_REREAD {
            self.now_unix = unix_now();
            self.unix_read_at = now;
        }
    }

    pub fn session_key(&self, key: Key) -> SessionKey {
        SessionKey {
            worker: self.id,
            slot: key.slot,
            generation: key.generation,
        }
    }

    /// What the handlers of the session in `key` get for one call at `now`.
    pub fn session_cx(&self, key: Key, now: Instant) -> SessionCx<'_> {
        SessionCx {
            now,
            now_unix: self.now_unix,
            key: self.session_key(key),
            settings: &self.settings,
            metrics: &self.metrics,
            broker: &self.broker,
            hooks: &self.hooks,
        }
    }
}

/// The wall clock in unix seconds, which tokens are checked against (the loop reads it once per
/// tick and per handshake step; the handshake and the sessions read no clock).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The worker's end of the broker's bounded request channel, with the control requests parked
/// while it is full.
pub struct BrokerPort {
    tx: MailboxSender<Request>,
    /// Attach/Detach/ResumeReplay waiting for room in the channel, in order.
    control: Backlog<Request>,
}

impl RequestPort for BrokerPort {
    fn try_request(&self, request: Request) -> bool {
        self.control.is_empty() && self.tx.try_send(request).is_ok()
    }
}

impl BrokerPort {
    pub fn new(tx: MailboxSender<Request>) -> Self {
        BrokerPort {
            tx,
            control: Backlog::new(),
        }
    }

    /// Whether control requests wait for room (the loop then retries soon).
    pub fn has_parked(&self) -> bool {
        !self.control.is_empty()
    }

    /// Sends a control request (Attach, Detach, ResumeReplay), keeping order; a full channel
    /// parks them for a later turn.
    pub fn send_control(&mut self, req: Request) {
        if let Request::Detach { session } = req {
            if self.cancel_parked(session) {
                return;
            }
        }
        let tx = &self.tx;
        self.control.send(req, |r| tx.try_send(r));
    }

    /// Sends the parked control requests that fit now, in order.
    pub fn retry_parked(&mut self) {
        let tx = &self.tx;
        self.control.retry(|r| tx.try_send(r));
    }

    /// A session ends while its Attach is still parked: the broker never heard of it, so its
    /// parked requests are dropped rather than followed by a Detach. Without this, sessions
    /// churning while the broker channel is full would grow the backlog by two requests each.
    /// True when its Attach was parked.
    fn cancel_parked(&mut self, session: SessionKey) -> bool {
        let parked = self
            .control
            .iter()
            .any(|r| matches!(r, Request::Attach { session: s, .. } if *s == session));
        if parked {
            self.control.retain(|r| r.session() != session);
        }
        parked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermod_core::ids::Name;
    use hermod_core::reactor::mailbox::{mailbox, MailboxReceiver};

    /// A context whose broker channel holds `cap` requests (the Poll must outlive the sends).
    fn env(cap: usize) -> (mio::Poll, WorkerContext, MailboxReceiver<Request>) {
        let poll = mio::Poll::new().expect("poll");
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker");
        let (tx, rx) = mailbox(cap, Arc::new(waker));
        let env = WorkerContext::new(
            0,
            Arc::new(Settings::defaults()),
            Arc::new(Metrics::default()),
            BrokerPort::new(tx),
        );
        (poll, env, rx)
    }

    fn attach(env: &WorkerContext, slot: u32) -> Request {
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

    fn detach(env: &WorkerContext, slot: u32) -> Request {
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
        env.broker.send_control(attach(&env, 0));
        for slot in 1..1000 {
            env.broker.send_control(attach(&env, slot));
            env.broker.send_control(detach(&env, slot));
        }
        assert!(!env.broker.has_parked(), "{}", env.broker.control.len());
        // A session the broker knows must still be detached, in order.
        env.broker.send_control(attach(&env, 1000));
        env.broker.send_control(detach(&env, 0));
        assert_eq!(env.broker.control.len(), 2);
        let mut got = Vec::new();
        rx.drain(8, |r| got.push(r));
        env.broker.retry_parked();
        rx.drain(8, |r| got.push(r));
        env.broker.retry_parked();
        rx.drain(8, |r| got.push(r));
        let slots: Vec<(bool, u32)> = got
            .iter()
            .map(|r| (matches!(r, Request::Attach { .. }), r.session().slot))
            .collect();
        assert_eq!(slots, [(true, 0), (true, 1000), (false, 0)]);
    }
}
