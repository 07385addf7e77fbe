//! Drives a `RedisClient` on its own mio `Poll`, as the broker's loop would.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use hermod_core::redis::{ClientConfig, ClientEvent, RedisClient, Target};
use mio::{Events, Poll};

/// A client and the loop that drives it.
pub struct Driver {
    pub poll: Poll,
    pub events: Events,
    pub client: RedisClient,
    /// Every client event seen, in order.
    pub seen: Vec<ClientEvent>,
}

/// A config with short backoffs and timeouts suited to tests on a loaded machine.
pub fn config(target: Target) -> ClientConfig {
    let mut config = ClientConfig::new(target);
    config.backoff_min = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(400);
    config.connect_timeout = Duration::from_secs(3);
    config
}

pub fn direct(addr: &str) -> ClientConfig {
    config(Target::Direct {
        addr: addr.to_owned(),
    })
}

impl Driver {
    pub fn new(config: ClientConfig) -> Driver {
        let poll = Poll::new().expect("poll");
        let client = RedisClient::new(config, 100, Instant::now());
        Driver {
            poll,
            events: Events::with_capacity(256),
            client,
            seen: Vec::new(),
        }
    }

    /// One loop turn: wait for I/O (at most until the client's deadline or 20 ms), dispatch,
    /// tick, flush, collect events. Returns the new events.
    pub fn turn(&mut self) -> Vec<ClientEvent> {
        let now = Instant::now();
        let wait = self
            .client
            .next_deadline()
            .map_or(Duration::from_millis(20), |d| {
                d.saturating_duration_since(now)
            })
            .min(Duration::from_millis(20));
        self.poll.poll(&mut self.events, Some(wait)).expect("poll");
        let registry = self.poll.registry();
        for event in self.events.iter() {
            assert!(self.client.owns(event.token()));
            self.client.on_event(registry, event, Instant::now());
        }
        self.client.on_tick(registry, Instant::now());
        self.client.flush(registry);
        let new: Vec<ClientEvent> = std::iter::from_fn(|| self.client.poll_event()).collect();
        self.seen.extend(new.iter().cloned());
        new
    }

    /// Runs turns until `pred` matches an event (returned) or `timeout` passes (panics).
    pub fn until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ClientEvent) -> bool,
    ) -> ClientEvent {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(found) = self.turn().into_iter().find(|e| pred(e)) {
                return found;
            }
        }
        panic!(
            "no matching event within {timeout:?}; seen: {:?}",
            self.seen
        );
    }

    /// Runs turns for `duration`, returning the events.
    pub fn run_for(&mut self, duration: Duration) -> Vec<ClientEvent> {
        let deadline = Instant::now() + duration;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            out.extend(self.turn());
        }
        out
    }

    /// The reply for `tag`, seen already or within `timeout`.
    pub fn reply_for(&mut self, tag: u64, timeout: Duration) -> ClientEvent {
        let find = |seen: &[ClientEvent]| {
            seen.iter()
                .find(|e| matches!(e, ClientEvent::Reply { tag: t, .. } if *t == tag))
                .cloned()
        };
        if let Some(found) = find(&self.seen) {
            return found;
        }
        self.until(
            timeout,
            |e| matches!(e, ClientEvent::Reply { tag: t, .. } if *t == tag),
        )
    }

    /// Waits for `Up` and returns the master.
    pub fn up(&mut self, timeout: Duration) -> String {
        match self.until(timeout, |e| matches!(e, ClientEvent::Up { .. })) {
            ClientEvent::Up { master } => master,
            _ => unreachable!(),
        }
    }

    /// Sends one command on `lane` and waits for its reply.
    pub fn call(&mut self, lane: usize, args: &[&str], tag: u64) -> ClientEvent {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.client
            .send(lane, &args, tag, Instant::now())
            .expect("send");
        self.until(
            Duration::from_secs(10),
            |e| matches!(e, ClientEvent::Reply { tag: t, .. } if *t == tag),
        )
    }
}
