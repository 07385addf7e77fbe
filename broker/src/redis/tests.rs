//! The engine against a scripted Redis (`hermod_core::redis::scripted`): no server, no socket,
//! the test owns the clock and answers every command, in any order across connections, with
//! any reply. Each test runs in milliseconds.

#![allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hermod_core::ids::{Cid, MsgId, Name};
use hermod_core::redis::scripted::{bulk, error, healthy, Command, ScriptedNet};
use hermod_core::redis::{ClientConfig, Target};
use hermod_core::resp::Value;
use serde_json::value::RawValue;

use super::*;
use crate::engine::{Done, Page};

const M1: &str = "10.0.0.1:6379";
const M2: &str = "10.0.0.2:6379";
const TIMEOUT: Duration = Duration::from_secs(5);

fn name(s: &str) -> Name {
    Name::parse("n", s).expect("name")
}

fn room(r: &str) -> Channel {
    Channel::Room(name(r))
}

fn append(to: &str, cid: &str) -> Op {
    Op::Append {
        channel: room(to),
        from: name("alice"),
        cid: Cid::parse(cid).expect("cid"),
        data: RawValue::from_string("1".into()).expect("json"),
    }
}

fn read(r: &str, since: &str) -> Op {
    Op::ReadRoom {
        room: name(r),
        since: Some(MsgId::new(since)),
        page: Page {
            max_messages: 10,
            max_bytes: 1 << 20,
        },
    }
}

fn client(target: Target) -> ClientConfig {
    let mut c = ClientConfig::new(target);
    c.command_timeout = TIMEOUT;
    c.connect_timeout = Duration::from_secs(2);
    c.backoff_min = Duration::from_millis(100);
    c.backoff_max = Duration::from_secs(1);
    c
}

fn direct() -> RedisEngineConfig {
    let c = client(Target::Direct { addr: M1.into() });
    RedisEngineConfig::new(c, Limits::default())
}

fn sentinels() -> RedisEngineConfig {
    let c = client(Target::Sentinel {
        sentinels: vec!["s1:26379".into(), "s2:26379".into()],
        master: "m".into(),
    });
    RedisEngineConfig::new(c, Limits::default())
}

/// One completion, when the test saw it.
type Seen = (Token, Result<Done, EngineError>, Instant);

/// A Redis that answers like a healthy master with the `hermod` library loaded: appends get
/// ids `7.<n>-0` in order, reads an empty page, checks "not rolled back", WAIT one replica.
#[derive(Default)]
struct FakeRedis {
    next_id: u64,
}

impl FakeRedis {
    fn answer(&mut self, c: &Command, master: &str) -> Option<Value> {
        if let Some(v) = healthy(c, master) {
            return Some(v);
        }
        match c.name().as_str() {
            "FUNCTION" => Some(bulk("hermod")),
            "WAIT" => Some(Value::Int(1)),
            "FCALL" if c.arg(1) == "hermod_append" => {
                let count = c.arg(2).parse::<usize>().unwrap_or(0) / 3;
                let ids = (0..count).map(|_| {
                    self.next_id += 1;
                    let id = format!("7.{}-0", self.next_id);
                    Value::Array(vec![Value::Int(0), bulk(&id)])
                });
                Some(Value::Array(ids.collect()))
            }
            "FCALL" if c.arg(1) == "hermod_check" => Some(Value::Int(0)),
            "FCALL" if c.arg(1) == "hermod_tip" => Some(Value::Array(Vec::new())),
            "FCALL" if c.arg(1).starts_with("hermod_read") => Some(Value::Array(vec![
                Value::Int(1),
                bulk("7"),
                Value::Array(Vec::new()),
            ])),
            _ => None,
        }
    }
}

/// The engine, its scripted network and the test's clock.
struct Rig {
    engine: RedisEngine,
    net: ScriptedNet,
    now: Instant,
    next_token: u64,
    /// Every completion so far.
    seen: Vec<Seen>,
    /// Submit time of every operation.
    submitted: HashMap<Token, Instant>,
}

impl Rig {
    fn new(config: RedisEngineConfig) -> Rig {
        let now = Instant::now();
        let mut rig = Rig {
            engine: RedisEngine::new(config, now),
            net: ScriptedNet::new(),
            now,
            next_token: 0,
            seen: Vec::new(),
            submitted: HashMap::new(),
        };
        rig.turn();
        rig
    }

    /// One loop turn at `self.now`, as `BrokerLoop` runs it (less the socket input).
    fn turn(&mut self) {
        self.engine.handle_tick(self.now);
        self.end_turn();
    }

    fn end_turn(&mut self) {
        self.engine.flush();
        self.net.pump(self.engine.core());
        while let Some((token, result)) = self.engine.poll_completion() {
            self.seen.push((token, result, self.now));
        }
    }

    /// Submits `op` in a turn of its own; returns its token.
    fn submit(&mut self, op: Op) -> Token {
        self.engine.handle_tick(self.now);
        let token = self.submit_in_turn(op);
        self.end_turn();
        token
    }

    /// Submits `op` in the current turn (several make one batch); `end_turn` ends it.
    fn submit_in_turn(&mut self, op: Op) -> Token {
        self.next_token += 1;
        let token = Token(self.next_token);
        self.submitted.insert(token, self.now);
        self.engine.submit(token, op, 1_000);
        token
    }

    /// Answers every command `server` has an answer for, then a turn.
    fn serve(&mut self, mut server: impl FnMut(&Command) -> Option<Value>) {
        self.net.serve(self.engine.core(), self.now, &mut server);
        self.turn();
    }

    /// Answers `command` (the oldest of its connection) with `value`, then a turn.
    fn answer(&mut self, command: &Command, value: Option<Value>) {
        let value = value.expect("an answer");
        self.net
            .answer(self.engine.core(), command.conn, &value, self.now);
        self.turn();
    }

    /// Accepts connects to `master` and serves it healthily until the engine is ready.
    fn ready_on(&mut self, master: &str, redis: &mut FakeRedis) {
        for _ in 0..10 {
            for (conn, addr) in self.net.opening() {
                if addr == master || addr.starts_with('s') {
                    self.net.accept(self.engine.core(), conn, self.now);
                }
            }
            self.serve(|c| redis.answer(c, master));
            if self.engine.is_ready() {
                return;
            }
        }
        panic!("not ready on {master}");
    }

    /// The outcome of `token` (exactly one).
    fn outcome(&self, token: Token) -> &Result<Done, EngineError> {
        let all: Vec<_> = self.seen.iter().filter(|(t, ..)| *t == token).collect();
        assert_eq!(all.len(), 1, "{token:?} completed {} times", all.len());
        &all[0].1
    }

    /// Tokens completed, in order.
    fn order(&self) -> Vec<Token> {
        self.seen.iter().map(|(t, ..)| *t).collect()
    }

    /// The unanswered command matching `pred`.
    fn command(&self, pred: impl Fn(&Command) -> bool) -> Command {
        let found = self.net.unanswered().into_iter().find(|c| pred(c));
        found.expect("command sent")
    }

    /// Lets time pass until `until`, turn by turn at the engine's deadlines (at most `step`
    /// apart), answering with `server` after each turn.
    fn run_until(&mut self, until: Instant, step: Duration, mut each: impl FnMut(&mut Rig)) {
        while self.now < until {
            let next = self
                .engine
                .next_deadline()
                .map_or(self.now + step, |d| d.min(self.now + step));
            self.now = next.max(self.now + Duration::from_millis(1)).min(until);
            self.turn();
            each(self);
        }
    }
}

fn unavailable(r: &Result<Done, EngineError>) -> bool {
    matches!(r, Err(EngineError::Unavailable(_)))
}

#[test]
fn replies_reordered_across_lanes_keep_each_channels_completion_order() {
    let mut redis = FakeRedis::default();
    let mut rig = Rig::new(direct());
    rig.ready_on(M1, &mut redis);
    rig.engine.handle_tick(rig.now);
    let a1 = rig.submit_in_turn(append("r", "c1"));
    let r1 = rig.submit_in_turn(read("r", "7.1-0"));
    let a2 = rig.submit_in_turn(append("r", "c2"));
    let other = rig.submit_in_turn(read("q", "7.1-0"));
    rig.end_turn();
    // The read of `r` is held by the gate while the append is in flight; `q`'s read goes.
    let sent = rig.net.unanswered();
    assert_eq!(
        sent.iter()
            .filter(|c| c.is_fcall("hermod_read_room"))
            .count(),
        1
    );
    let read_q = rig.command(|c| c.is_fcall("hermod_read_room"));
    let write = rig.command(|c| c.is_fcall("hermod_append"));
    assert_ne!(
        read_q.conn, write.conn,
        "reads and writes on their own lanes"
    );
    // The read lane answers first.
    let reply = redis.answer(&read_q, M1);
    rig.answer(&read_q, reply);
    assert_eq!(rig.order(), [other]);
    let reply = redis.answer(&write, M1);
    rig.answer(&write, reply);
    // The read of `r` goes out only now, and the second append (queued behind it, in arrival
    // order) only once the read completed.
    assert_eq!(rig.order(), [other, a1]);
    let read_r = rig.command(|c| c.is_fcall("hermod_read_room"));
    assert!(rig
        .net
        .unanswered()
        .iter()
        .all(|c| !c.is_fcall("hermod_append")));
    let reply = redis.answer(&read_r, M1);
    rig.answer(&read_r, reply);
    rig.serve(|c| redis.answer(c, M1));
    assert_eq!(rig.order(), [other, a1, r1, a2]);
    assert!(rig.outcome(r1).is_ok());
    assert!(rig.outcome(a2).is_ok());
}

#[test]
fn a_connection_dropped_mid_batch_fails_every_op_once_and_later_ops_succeed() {
    let mut redis = FakeRedis::default();
    let mut rig = Rig::new(direct());
    rig.ready_on(M1, &mut redis);
    rig.engine.handle_tick(rig.now);
    let batch: Vec<Token> = (0..3)
        .map(|i| rig.submit_in_turn(append("r", &format!("c{i}"))))
        .collect();
    rig.end_turn();
    let write = rig.command(|c| c.is_fcall("hermod_append"));
    rig.net.drop_conn(rig.engine.core(), write.conn, rig.now);
    rig.turn();
    for t in &batch {
        assert!(unavailable(rig.outcome(*t)), "{t:?}");
    }
    assert!(!rig.engine.is_ready());
    let refused = rig.submit(append("r", "c9"));
    assert!(
        unavailable(rig.outcome(refused)),
        "refused at once while down"
    );
    rig.now += Duration::from_millis(100);
    rig.turn();
    rig.ready_on(M1, &mut redis);
    let later = rig.submit(append("r", "c0"));
    rig.serve(|c| redis.answer(c, M1));
    assert!(matches!(rig.outcome(later), Ok(Done::Appended { .. })));
    for t in &batch {
        rig.outcome(*t); // still exactly once
    }
}

#[test]
fn wait_answering_zero_with_replica_durability_fails_the_turns_appends() {
    let mut redis = FakeRedis::default();
    let mut config = direct();
    config.durability = Durability::Replica;
    let mut rig = Rig::new(config);
    rig.ready_on(M1, &mut redis);
    rig.engine.handle_tick(rig.now);
    let a = rig.submit_in_turn(append("r", "c1"));
    let b = rig.submit_in_turn(append("s", "c2"));
    rig.end_turn();
    let names: Vec<String> = rig.net.unanswered().iter().map(Command::name).collect();
    assert_eq!(names, ["FCALL", "WAIT"], "one WAIT after the turn's batch");
    rig.serve(|c| match c.name().as_str() {
        "WAIT" => Some(Value::Int(0)),
        _ => redis.answer(c, M1),
    });
    assert!(unavailable(rig.outcome(a)));
    assert!(unavailable(rig.outcome(b)));
}

#[test]
fn a_failover_rollback_is_checked_before_any_op_and_gives_a_new_epoch() {
    let mut redis = FakeRedis::default();
    let mut rig = Rig::new(direct());
    rig.ready_on(M1, &mut redis);
    let a = rig.submit(append("r", "c1"));
    rig.serve(|c| redis.answer(c, M1));
    let Ok(Done::Appended { id, .. }) = rig.outcome(a) else {
        panic!("appended");
    };
    let id = id.clone();
    assert_eq!(id.as_str(), "7.1-0");
    // The master dies; the replica promoted lacks the write.
    for conn in rig.net.open_to(M1) {
        rig.net.drop_conn(rig.engine.core(), conn, rig.now);
    }
    rig.now += Duration::from_millis(100);
    rig.turn();
    for (conn, _) in rig.net.opening() {
        rig.net.accept(rig.engine.core(), conn, rig.now);
    }
    rig.serve(|c| healthy(c, M1));
    rig.serve(|c| (c.name() == "FUNCTION").then(|| bulk("hermod")));
    let check = rig.command(|c| c.is_fcall("hermod_check"));
    assert_eq!(
        check.arg(5),
        "1-0",
        "the highest stream id issued in the channel"
    );
    // Operations wait for the check.
    let since = rig.submit(read("r", id.as_str()));
    assert!(!rig.engine.is_ready());
    assert!(rig
        .net
        .unanswered()
        .iter()
        .all(|c| !c.is_fcall("hermod_read_room")));
    rig.answer(&check, Some(Value::Int(1)));
    assert!(rig.engine.is_ready());
    // The Lua side bumped the epoch: a position of epoch 7 is not covered any more.
    let read_cmd = rig.command(|c| c.is_fcall("hermod_read_room"));
    assert_eq!((read_cmd.arg(5), read_cmd.arg(6)), ("7", "1-0"));
    rig.serve(|_| {
        Some(Value::Array(vec![
            Value::Int(0),
            bulk("8"),
            Value::Array(Vec::new()),
        ]))
    });
    assert!(matches!(
        rig.outcome(since),
        Ok(Done::Room {
            recovered: false,
            ..
        })
    ));
}

/// Brings a Sentinel engine up on `master` through the first sentinel.
fn sentinel_rig(master: &str, redis: &mut FakeRedis) -> Rig {
    let mut rig = Rig::new(sentinels());
    rig.ready_on(master, redis);
    rig
}

#[test]
fn readonly_on_a_write_re_resolves_and_the_next_op_goes_to_the_new_master() {
    let mut redis = FakeRedis::default();
    let mut rig = sentinel_rig(M1, &mut redis);
    let a = rig.submit(append("r", "c1"));
    rig.serve(|c| {
        c.is_fcall("hermod_append")
            .then(|| error("READONLY You can't write against a read only replica."))
    });
    assert!(unavailable(rig.outcome(a)));
    // The sentinels are asked again, on the watching connection.
    let ask = rig.command(|c| c.name() == "SENTINEL");
    assert_eq!(rig.net.addr(ask.conn), Some("s1:26379"));
    rig.serve(|c| healthy(c, M2));
    assert!(rig.net.open_to(M1).is_empty(), "lanes left the old master");
    rig.ready_on(M2, &mut redis);
    let b = rig.submit(append("r", "c2"));
    let write = rig.command(|c| c.is_fcall("hermod_append"));
    assert_eq!(rig.net.addr(write.conn), Some(M2));
    rig.serve(|c| redis.answer(c, M2));
    assert!(rig.outcome(b).is_ok());
}

#[test]
fn an_unanswered_command_fails_within_the_timeout() {
    let mut redis = FakeRedis::default();
    let mut rig = Rig::new(direct());
    rig.ready_on(M1, &mut redis);
    let start = rig.now;
    let r = rig.submit(read("r", "7.1-0"));
    rig.run_until(start + TIMEOUT * 2, Duration::from_millis(250), |_| {});
    assert!(unavailable(rig.outcome(r)));
    let at = rig.seen.iter().find(|(t, ..)| *t == r).map(|s| s.2);
    assert_eq!(at, Some(start + TIMEOUT));
}

/// Every op completed exactly once, none later than the timeout after its submit.
fn assert_never_late(rig: &Rig) {
    let mut late = Vec::new();
    for (token, submitted) in &rig.submitted {
        let done: Vec<&Seen> = rig.seen.iter().filter(|(t, ..)| t == token).collect();
        assert_eq!(done.len(), 1, "{token:?} completed {} times", done.len());
        let waited = done[0].2 - *submitted;
        if waited > TIMEOUT {
            late.push((*token, waited));
        }
    }
    assert!(late.is_empty(), "answered later than the timeout: {late:?}");
}

#[test]
fn a_slow_promotion_never_leaves_an_op_unanswered_past_the_timeout() {
    slow_promotion(false);
}

#[test]
fn a_slow_promotion_with_live_subscriptions_never_leaves_an_op_unanswered() {
    slow_promotion(true);
}

/// A promotion that takes 20 s under a steady load of appends and reads of two rooms (watched
/// through pub/sub with `publish`): every op completes, none later than the timeout.
fn slow_promotion(publish: bool) {
    let mut redis = FakeRedis::default();
    let mut config = sentinels();
    config.publish = publish;
    let mut rig = Rig::new(config);
    rig.ready_on(M1, &mut redis);
    for r in ["r", "s"] {
        rig.engine.watch(&room(r));
    }
    rig.turn();
    rig.serve(|c| redis.answer(c, M1));
    let t0 = rig.now;
    let promoted = t0 + Duration::from_secs(20);
    let hung_until = t0 + Duration::from_secs(8);
    let nil_from = t0 + Duration::from_secs(14);
    let mut i = 0u64;
    // M1 hangs (accepts, never answers) for 8 s, then is gone (connects refused); the
    // sentinels keep naming M1, then no master from 14 s, until the promotion of M2 at 20 s.
    rig.run_until(
        promoted + Duration::from_secs(10),
        Duration::from_millis(100),
        |rig| {
            i += 1;
            let channel = ["r", "s"][(i % 2) as usize];
            let op = if i % 3 == 0 {
                read(channel, "7.1-0")
            } else {
                append(channel, &format!("c{i}"))
            };
            rig.submit(op);
            let now = rig.now;
            let master = if now < promoted { M1 } else { M2 };
            if now >= hung_until {
                for conn in rig.net.open_to(M1) {
                    rig.net.drop_conn(rig.engine.core(), conn, now);
                }
            }
            for (conn, addr) in rig.net.opening() {
                let up = addr.starts_with('s') || (addr == M2 && now >= promoted);
                if up {
                    rig.net.accept(rig.engine.core(), conn, now);
                } else if addr != M1 || now >= hung_until {
                    rig.net.refuse(rig.engine.core(), conn, now);
                }
            }
            let hung = if now < hung_until {
                rig.net.open_to(M1)
            } else {
                Vec::new()
            };
            let no_master = (nil_from..promoted).contains(&now);
            rig.serve(|c| match hung.contains(&c.conn) {
                true => None,
                false if no_master && c.name() == "SENTINEL" => Some(Value::Nil),
                false => redis.answer(c, master),
            });
        },
    );
    assert_never_late(&rig);
    let last = rig.submit(append("r", "end"));
    rig.serve(|c| redis.answer(c, M2));
    assert!(rig.outcome(last).is_ok(), "served by the new master");
}

#[test]
fn an_op_queued_behind_its_channels_other_class_is_never_late() {
    let mut redis = FakeRedis::default();
    let mut rig = Rig::new(direct());
    rig.ready_on(M1, &mut redis);
    let start = rig.now;
    rig.submit(read("r", "7.1-0"));
    rig.now += TIMEOUT / 5;
    rig.submit(append("r", "c1"));
    // Redis never answers.
    rig.run_until(start + TIMEOUT * 3, Duration::from_millis(500), |_| {});
    assert_never_late(&rig);
}

#[test]
fn an_op_held_while_the_library_loads_is_never_late() {
    let mut redis = FakeRedis::default();
    let mut rig = Rig::new(direct());
    for (conn, _) in rig.net.opening() {
        rig.net.accept(rig.engine.core(), conn, rig.now);
    }
    rig.serve(|c| healthy(c, M1));
    assert!(!rig.engine.is_ready(), "FUNCTION LOAD unanswered");
    let start = rig.now;
    rig.now += TIMEOUT / 10;
    rig.submit(append("r", "c1"));
    rig.run_until(start + TIMEOUT * 8 / 10, Duration::from_millis(100), |_| {});
    rig.serve(|c| (c.name() == "FUNCTION").then(|| bulk("hermod")));
    assert!(rig.engine.is_ready());
    // The append goes out now, and is never answered.
    rig.run_until(start + TIMEOUT * 3, Duration::from_millis(500), |_| {});
    assert_never_late(&rig);
    let _ = &mut redis;
}

#[test]
fn a_replica_append_whose_wait_is_silent_is_never_late() {
    let mut redis = FakeRedis::default();
    let mut config = direct();
    config.durability = Durability::Replica;
    let mut rig = Rig::new(config);
    rig.ready_on(M1, &mut redis);
    let start = rig.now;
    rig.submit(append("r", "c1"));
    rig.serve(|c| {
        c.is_fcall("hermod_append")
            .then(|| redis.answer(c, M1))
            .flatten()
    });
    rig.run_until(start + TIMEOUT * 3, Duration::from_millis(500), |_| {});
    assert_never_late(&rig);
}
