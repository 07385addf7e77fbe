//! Test harness: a broker driven by hand with a fake clock, on the memory engine or on the
//! Redis engine (a real redis-server per harness, the engine's I/O driven here until every
//! operation completed, so both engines answer each request before the test looks).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use hermod_broker::{
    Broker, Channel, Completion, Engine, EngineStats, Limits, Live, MemoryEngine, Op, RedisEngine,
    RedisEngineConfig, Token,
};
use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::protocol::ErrorCode;
use hermod_core::redis::{ClientConfig, ClientCore, RedisSockets, Target};
use hermod_core::resp::Value;
use hermod_core::testkit::RedisServer;
use serde_json::value::RawValue;

/// How long a Redis harness waits for an answer before failing the test.
const SETTLE: Duration = Duration::from_secs(30);

pub fn name(s: &str) -> Name {
    Name::parse("name", s).unwrap()
}

pub fn cid(s: &str) -> Cid {
    Cid::parse(s).unwrap()
}

pub fn data(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

pub fn key(slot: u32) -> SessionKey {
    SessionKey {
        worker: 0,
        slot,
        generation: 1,
    }
}

/// Which engine a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Redis,
}

/// Runs each named scenario `fn(Kind)` as two tests, `memory::NAME` and `redis::NAME`.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[test] fn $name() { super::$name(super::Kind::Memory) } )*
        }
        mod redis {
            $( #[test] fn $name() { super::$name(super::Kind::Redis) } )*
        }
    };
}

/// Either engine, so one harness type serves both.
#[derive(Debug)]
pub enum AnyEngine {
    Memory(Box<MemoryEngine>),
    /// The engine and its server's address (for introspection with plain commands).
    Redis(Box<RedisEngine>, String),
}

impl AnyEngine {
    fn memory(&self) -> &MemoryEngine {
        match self {
            AnyEngine::Memory(m) => m,
            AnyEngine::Redis(..) => panic!("memory engine only"),
        }
    }

    /// Messages held in `channel` (Redis: the stream's length).
    pub fn message_count(&self, channel: &Channel) -> usize {
        match self {
            AnyEngine::Memory(m) => m.message_count(channel),
            AnyEngine::Redis(_, addr) => {
                let key = match channel {
                    Channel::Inbox(u) => format!("{{u:{u}}}:s"),
                    Channel::Room(r) => format!("{{r:{r}}}:s"),
                };
                let v = hermod_core::testkit::command(addr, &["XLEN", &key]).unwrap();
                usize::try_from(v.as_int().unwrap()).unwrap()
            }
        }
    }

    pub fn channel_count(&self) -> usize {
        self.memory().channel_count()
    }

    pub fn dedupe_len(&self) -> usize {
        self.memory().dedupe_len()
    }

    /// Operations (and commands) not finished yet.
    pub fn in_flight(&self) -> usize {
        match self {
            AnyEngine::Memory(_) => 0,
            AnyEngine::Redis(r, _) => r.in_flight(),
        }
    }
}

impl Engine for AnyEngine {
    fn submit(&mut self, token: Token, op: Op, now_ms: u64) {
        match self {
            AnyEngine::Memory(e) => e.submit(token, op, now_ms),
            AnyEngine::Redis(e, _) => e.submit(token, op, now_ms),
        }
    }
    fn poll_completion(&mut self) -> Option<Completion> {
        match self {
            AnyEngine::Memory(e) => e.poll_completion(),
            AnyEngine::Redis(e, _) => e.poll_completion(),
        }
    }
    fn sweep(&mut self, now_ms: u64, in_use: &dyn Fn(&Channel) -> bool) {
        match self {
            AnyEngine::Memory(e) => e.sweep(now_ms, in_use),
            AnyEngine::Redis(e, _) => e.sweep(now_ms, in_use),
        }
    }
    fn redis(&mut self) -> Option<&mut ClientCore> {
        match self {
            AnyEngine::Memory(e) => e.redis(),
            AnyEngine::Redis(e, _) => e.redis(),
        }
    }
    fn handle_tick(&mut self, now: Instant) {
        match self {
            AnyEngine::Memory(e) => e.handle_tick(now),
            AnyEngine::Redis(e, _) => e.handle_tick(now),
        }
    }
    fn flush(&mut self) {
        match self {
            AnyEngine::Memory(e) => e.flush(),
            AnyEngine::Redis(e, _) => e.flush(),
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        match self {
            AnyEngine::Memory(e) => e.next_deadline(),
            AnyEngine::Redis(e, _) => e.next_deadline(),
        }
    }
    fn is_ready(&self) -> bool {
        match self {
            AnyEngine::Memory(e) => e.is_ready(),
            AnyEngine::Redis(e, _) => e.is_ready(),
        }
    }
    fn stats(&self) -> EngineStats {
        match self {
            AnyEngine::Memory(e) => e.stats(),
            AnyEngine::Redis(e, _) => e.stats(),
        }
    }
    fn watch(&mut self, channel: &Channel) {
        match self {
            AnyEngine::Memory(e) => e.watch(channel),
            AnyEngine::Redis(e, _) => e.watch(channel),
        }
    }
    fn unwatch(&mut self, channel: &Channel) {
        match self {
            AnyEngine::Memory(e) => e.unwatch(channel),
            AnyEngine::Redis(e, _) => e.unwatch(channel),
        }
    }
    fn poll_live(&mut self) -> Option<Live> {
        match self {
            AnyEngine::Memory(e) => e.poll_live(),
            AnyEngine::Redis(e, _) => e.poll_live(),
        }
    }
    fn is_after(&self, id: &MsgId, mark: &MsgId) -> bool {
        match self {
            AnyEngine::Memory(e) => e.is_after(id, mark),
            AnyEngine::Redis(e, _) => e.is_after(id, mark),
        }
    }
}

/// With `HERMOD_TEST_SHARED` set, the Redis scenarios run on an engine shared by several
/// brokers (`publish`: live messages come back through pub/sub, `cross_broker.rs`), to check
/// that the replay, hold-back and paging guarantees hold there too.
pub fn shared() -> bool {
    std::env::var_os("HERMOD_TEST_SHARED").is_some()
}

/// The Redis side of a harness: the Poll the engine runs on, and the server.
pub struct Io {
    pub poll: mio::Poll,
    /// The engine's Redis sockets, as the broker loop owns them.
    sockets: RedisSockets,
    events: mio::Events,
    pub server: RedisServer,
}

/// A client config for `server` with test-friendly timeouts.
pub fn client_config(server: &RedisServer) -> ClientConfig {
    let mut c = ClientConfig::new(Target::Direct {
        addr: server.addr(),
    });
    c.command_timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(1);
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

pub struct Harness {
    pub broker: Broker<AnyEngine>,
    pub now: u64,
    pub io: Option<Io>,
}

impl Harness {
    pub fn new() -> Self {
        Harness::with_limits(Limits::default(), 0x1234)
    }

    pub fn with_limits(limits: Limits, epoch: u32) -> Self {
        Harness::of_with(Kind::Memory, limits, epoch)
    }

    /// A harness whose replays go out in pages of `messages` messages and `bytes` bytes.
    pub fn paged(messages: usize, bytes: usize) -> Self {
        Harness::paged_on(Kind::Memory, messages, bytes)
    }

    pub fn of(kind: Kind) -> Self {
        Harness::of_with(kind, Limits::default(), 0x1234)
    }

    pub fn paged_on(kind: Kind, messages: usize, bytes: usize) -> Self {
        let limits = Limits {
            replay_page_messages: messages,
            replay_page_bytes: bytes,
            ..Limits::default()
        };
        Harness::of_with(kind, limits, 0x1234)
    }

    /// A harness on `kind`; `epoch` is the memory engine's.
    pub fn of_with(kind: Kind, limits: Limits, epoch: u32) -> Self {
        match kind {
            Kind::Memory => {
                let engine = AnyEngine::Memory(Box::new(MemoryEngine::with_epoch(&limits, epoch)));
                Harness {
                    broker: Broker::new(engine, limits),
                    now: 1_000_000,
                    io: None,
                }
            }
            Kind::Redis => {
                let server = RedisServer::start(&[]).expect("redis-server starts");
                let mut config = RedisEngineConfig::new(client_config(&server), limits);
                config.publish = shared();
                Harness::on_redis(server, config)
            }
        }
    }

    /// A harness on a Redis engine built from `config`, talking to `server`.
    pub fn on_redis(server: RedisServer, config: RedisEngineConfig) -> Self {
        let poll = mio::Poll::new().unwrap();
        let limits = config.limits.clone();
        let engine = RedisEngine::new(config, Instant::now());
        let engine = AnyEngine::Redis(Box::new(engine), server.addr());
        let mut h = Harness {
            broker: Broker::new(engine, limits),
            now: 1_000_000,
            io: Some(Io {
                poll,
                sockets: RedisSockets::new(1),
                events: mio::Events::with_capacity(256),
                server,
            }),
        };
        h.wait_ready();
        h
    }

    /// A new broker and engine on the same server (a broker restart): sessions are gone.
    pub fn restart_broker(&mut self, config: RedisEngineConfig) {
        let io = self.io.take().expect("a redis harness");
        let now = self.now;
        *self = Harness::on_redis(io.server, config);
        self.now = now;
    }

    /// The Redis server of a Redis harness.
    pub fn server(&mut self) -> &mut RedisServer {
        &mut self.io.as_mut().expect("a redis harness").server
    }

    /// Runs one command on the Redis server (blocking, on its own connection).
    pub fn redis(&mut self, args: &[&str]) -> Value {
        self.server().command(args).unwrap()
    }

    /// Drives the engine's I/O for one short turn; completions go to `out`.
    pub fn turn(&mut self, out: &mut Vec<Delivery>) {
        let Some(io) = self.io.as_mut() else {
            return;
        };
        let engine = self.broker.engine_mut();
        engine.flush();
        if let Some(core) = engine.redis() {
            io.sockets.run(core, io.poll.registry(), Instant::now());
        }
        io.poll
            .poll(&mut io.events, Some(Duration::from_millis(5)))
            .unwrap();
        let now = Instant::now();
        for event in io.events.iter() {
            if let Some(core) = engine.redis() {
                io.sockets
                    .handle_event(core, io.poll.registry(), event, now);
            }
        }
        engine.handle_tick(now);
        engine.flush();
        if let Some(core) = engine.redis() {
            io.sockets.run(core, io.poll.registry(), now);
        }
        self.broker.poll_completions(out);
    }

    /// Drives the engine until everything submitted completed.
    pub fn settle(&mut self, out: &mut Vec<Delivery>) {
        let deadline = Instant::now() + SETTLE;
        self.broker.poll_completions(out);
        while self.broker.engine().in_flight() > 0 {
            assert!(Instant::now() < deadline, "the engine did not settle");
            self.turn(out);
        }
        if shared() && self.io.is_some() {
            // Live messages come on the subscription's own connection: wait until it is quiet.
            let mut quiet = Instant::now() + Duration::from_millis(30);
            while Instant::now() < quiet {
                let before = out.len();
                self.turn(out);
                if out.len() > before || self.broker.engine().in_flight() > 0 {
                    quiet = Instant::now() + Duration::from_millis(30);
                }
                assert!(Instant::now() < deadline, "the engine did not settle");
            }
        }
    }

    /// Drives the engine until it is ready (connected, library loaded).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + SETTLE;
        let mut out = Vec::new();
        while !self.broker.engine().is_ready() {
            assert!(Instant::now() < deadline, "the engine did not get ready");
            self.turn(&mut out);
        }
    }

    /// Drives the engine until it reconnected (more reconnects than `before`) and is ready.
    pub fn wait_reconnected(&mut self, before: u64) {
        let deadline = Instant::now() + SETTLE;
        let mut out = Vec::new();
        while self.broker.engine().stats().reconnects <= before || !self.broker.engine().is_ready()
        {
            assert!(Instant::now() < deadline, "the engine did not reconnect");
            self.turn(&mut out);
        }
    }

    /// Retention and dedupe expiry (and retried reads) at the harness's clock, settled.
    pub fn sweep(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        self.broker.sweep(self.now);
        self.settle(&mut out);
        out
    }

    pub fn resume(&mut self, s: SessionKey) -> Vec<Delivery> {
        self.req(Request::ResumeReplay { session: s })
    }

    pub fn req(&mut self, req: Request) -> Vec<Delivery> {
        let mut out = Vec::new();
        self.broker.handle(req, self.now, &mut out);
        self.settle(&mut out);
        out
    }

    pub fn attach(&mut self, s: SessionKey, user: &str, device: &str) -> Vec<Delivery> {
        self.req(Request::Attach {
            session: s,
            user: name(user),
            device: name(device),
        })
    }

    pub fn detach(&mut self, s: SessionKey) -> Vec<Delivery> {
        self.req(Request::Detach { session: s })
    }

    pub fn send(&mut self, s: SessionKey, c: &str, to: &str, json: &str) -> Vec<Delivery> {
        self.req(Request::Send {
            session: s,
            cid: cid(c),
            to: name(to),
            data: data(json),
        })
    }

    pub fn publish(&mut self, s: SessionKey, c: &str, room: &str, json: &str) -> Vec<Delivery> {
        self.req(Request::Publish {
            session: s,
            cid: cid(c),
            room: name(room),
            data: data(json),
        })
    }

    pub fn ack(&mut self, s: SessionKey, id: &MsgId) -> Vec<Delivery> {
        self.req(Request::Ack {
            session: s,
            id: id.clone(),
        })
    }

    pub fn join(&mut self, s: SessionKey, room: &str, since: Option<&MsgId>) -> Vec<Delivery> {
        self.req(Request::Join {
            session: s,
            room: name(room),
            since: since.cloned(),
        })
    }

    pub fn leave(&mut self, s: SessionKey, room: &str) -> Vec<Delivery> {
        self.req(Request::Leave {
            session: s,
            room: name(room),
        })
    }
}

/// The id answered by a `Sent` in `out` (exactly one expected).
pub fn sent_id(out: &[Delivery]) -> MsgId {
    let ids: Vec<MsgId> = out
        .iter()
        .filter_map(|d| match &d.event {
            Event::Sent { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "expected one Sent in {out:?}");
    ids[0].clone()
}

/// The `data` of every message delivered to `s`, in order, as JSON text.
pub fn datas(out: &[Delivery], s: SessionKey) -> Vec<String> {
    msgs(out, s)
        .into_iter()
        .map(|(_, v)| v["data"].to_string())
        .collect()
}

/// Every message delivered to `s`, in order: id and parsed frame.
pub fn msgs(out: &[Delivery], s: SessionKey) -> Vec<(MsgId, serde_json::Value)> {
    out.iter()
        .filter(|d| d.session == s)
        .filter_map(|d| match &d.event {
            Event::Message { id, frame } => {
                let v: serde_json::Value = serde_json::from_slice(frame).unwrap();
                assert_eq!(v["id"].as_str(), Some(id.as_str()));
                Some((id.clone(), v))
            }
            _ => None,
        })
        .collect()
}

/// The error codes delivered to `s`, with their cids.
pub fn errors(out: &[Delivery], s: SessionKey) -> Vec<(Option<Cid>, ErrorCode)> {
    out.iter()
        .filter(|d| d.session == s)
        .filter_map(|d| match &d.event {
            Event::Error { cid, code, .. } => Some((cid.clone(), *code)),
            _ => None,
        })
        .collect()
}

/// The `recovered` of the single `Joined` delivered to `s`.
pub fn joined(out: &[Delivery], s: SessionKey) -> bool {
    let j: Vec<bool> = out
        .iter()
        .filter(|d| d.session == s)
        .filter_map(|d| match &d.event {
            Event::Joined { recovered, .. } => Some(*recovered),
            _ => None,
        })
        .collect();
    assert_eq!(j.len(), 1, "expected one Joined in {out:?}");
    j[0]
}

/// How many `ReplayPaused` were delivered to `s`.
pub fn pauses(out: &[Delivery], s: SessionKey) -> usize {
    out.iter()
        .filter(|d| d.session == s && matches!(d.event, Event::ReplayPaused))
        .count()
}

/// [`pauses`], for the output of a single request: also asserts that no message of `s` follows
/// a `ReplayPaused` (the pause ends its page). Several requests in one batch may legitimately
/// put another replay's first page after a pause.
pub fn paused(out: &[Delivery], s: SessionKey) -> usize {
    let mine: Vec<&Event> = out
        .iter()
        .filter(|d| d.session == s)
        .map(|d| &d.event)
        .collect();
    if let Some(at) = mine.iter().position(|e| matches!(e, Event::ReplayPaused)) {
        assert!(
            !mine[at..]
                .iter()
                .any(|e| matches!(e, Event::Message { .. })),
            "a message after ReplayPaused in {out:?}"
        );
    }
    pauses(out, s)
}
