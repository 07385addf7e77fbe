//! The Redis client against a real `redis-server` on an ephemeral loopback port.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{direct, Driver};
use hermod_core::redis::{ClientError, ClientEvent, CommandError};
use hermod_core::resp::Value;
use hermod_core::testkit::RedisServer;

const UP: Duration = Duration::from_secs(10);

fn reply(event: ClientEvent) -> Result<Value, CommandError> {
    match event {
        ClientEvent::Reply { result, .. } => result,
        other => panic!("not a reply: {other:?}"),
    }
}

#[test]
fn pipelines_ten_thousand_commands_in_order() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let mut d = Driver::new(direct(&redis.addr()));
    assert_eq!(d.up(UP), redis.addr());
    assert!(d.client.is_up());
    let now = Instant::now();
    for tag in 0..10_000u64 {
        d.client
            .send(0, &[b"INCR", b"counter"], tag, now)
            .expect("send");
    }
    assert_eq!(
        d.client.send(0, &[b"PING"], 99_999, now),
        Err(ClientError::Busy)
    );
    d.client
        .send(1, &[b"PING"], 20_000, now)
        .expect("lane 1 has room");
    assert_eq!(d.client.stats().in_flight, 10_001);
    let mut next = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while next < 10_000 && Instant::now() < deadline {
        for event in d.turn() {
            if let ClientEvent::Reply { tag, result } = event {
                if tag == 20_000 {
                    continue;
                }
                assert_eq!(tag, next, "replies in order");
                assert_eq!(result, Ok(Value::Int(tag as i64 + 1)));
                next += 1;
            }
        }
    }
    assert_eq!(next, 10_000);
    let stats = d.client.stats();
    assert!(stats.round_trips >= 10_000);
    assert_eq!(stats.reconnects, 0);
}

#[test]
fn server_errors_are_command_errors_and_the_connection_survives() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let mut d = Driver::new(direct(&redis.addr()));
    d.up(UP);
    let err = reply(d.call(0, &["NOSUCHCOMMAND", "x"], 1));
    match err {
        Err(CommandError::Server(msg)) => assert!(msg.starts_with("ERR unknown command"), "{msg}"),
        other => panic!("expected a server error, got {other:?}"),
    }
    assert_eq!(
        reply(d.call(0, &["SET", "k", "v"], 2)),
        Ok(Value::Simple(Bytes::from_static(b"OK")))
    );
    assert_eq!(
        reply(d.call(1, &["GET", "k"], 3)),
        Ok(Value::Bulk(Bytes::from_static(b"v")))
    );
    assert!(reply(d.call(0, &["HGETALL", "nothing"], 4)).is_ok());
}

#[test]
fn a_timed_out_reply_is_discarded_not_given_to_the_next_command() {
    let redis = RedisServer::start(&["--enable-debug-command", "local"]).expect("redis-server");
    let mut config = direct(&redis.addr());
    config.command_timeout = Duration::from_secs(1);
    let mut d = Driver::new(config);
    d.up(UP);
    let now = Instant::now();
    d.client
        .send(0, &[b"DEBUG", b"SLEEP", b"1.6"], 1, now)
        .expect("send");
    d.client.send(0, &[b"PING"], 2, now).expect("send");
    for tag in [1, 2] {
        let got = d.reply_for(tag, Duration::from_secs(5));
        assert_eq!(reply(got), Err(CommandError::Timeout));
    }
    // The late +OK and +PONG must not answer this one.
    let got = reply(d.call(0, &["ECHO", "mine"], 3));
    assert_eq!(got, Ok(Value::Bulk(Bytes::from_static(b"mine"))));
    assert!(d.client.is_up());
    assert_eq!(d.client.stats().timeouts, 2);
}

#[test]
fn restart_gives_down_then_up_with_backoff() {
    let mut redis = RedisServer::start(&[]).expect("redis-server");
    let mut d = Driver::new(direct(&redis.addr()));
    d.up(UP);
    d.client
        .send(0, &[b"BLPOP", b"nothing", b"0"], 7, Instant::now())
        .expect("send");
    d.run_for(Duration::from_millis(100));
    redis.kill();
    d.until(Duration::from_secs(5), |e| {
        matches!(e, ClientEvent::Down { .. })
    });
    let lost = d.reply_for(7, Duration::from_secs(5));
    assert_eq!(reply(lost), Err(CommandError::ConnectionLost));
    assert_eq!(
        d.client.send(0, &[b"PING"], 8, Instant::now()),
        Err(ClientError::NotConnected)
    );
    let before = d.client.stats().reconnects;
    d.run_for(Duration::from_millis(1500));
    let attempts = d.client.stats().reconnects - before;
    // Backoff 50 ms doubling to 400 ms: a handful of attempts, not a hot loop.
    assert!((2..=15).contains(&attempts), "{attempts} attempts in 1.5 s");
    let downs = d
        .seen
        .iter()
        .filter(|e| matches!(e, ClientEvent::Down { .. }))
        .count();
    assert_eq!(downs, 1, "one Down per outage: {:?}", d.seen);
    redis.restart().expect("restart");
    assert_eq!(d.up(UP), redis.addr());
    assert_eq!(
        reply(d.call(1, &["PING"], 9)),
        Ok(Value::Simple(Bytes::from_static(b"PONG")))
    );
    let lost_count = d
        .seen
        .iter()
        .filter(|e| matches!(e, ClientEvent::Reply { tag: 7, .. }))
        .count();
    assert_eq!(lost_count, 1);
}

#[test]
fn auth_with_requirepass_and_a_clear_error_for_a_wrong_password() {
    let redis = RedisServer::start(&["--requirepass", "s3cret"]).expect("redis-server");
    let mut config = direct(&redis.addr());
    config.password = Some("s3cret".into());
    let mut d = Driver::new(config);
    d.up(UP);
    assert_eq!(
        reply(d.call(0, &["SET", "a", "1"], 1)),
        Ok(Value::Simple(Bytes::from_static(b"OK")))
    );

    let mut config = direct(&redis.addr());
    config.password = Some("wrong".into());
    let mut d = Driver::new(config);
    let down = d.until(UP, |e| matches!(e, ClientEvent::Down { .. }));
    let ClientEvent::Down { reason } = down else {
        unreachable!()
    };
    assert!(reason.contains("WRONGPASS"), "{reason}");
    d.run_for(Duration::from_millis(1200));
    assert!(!d.client.is_up());
    assert!(d.client.stats().reconnects <= 12, "backoff, no hot loop");
    assert_eq!(d.client.last_error(), Some(reason.as_str()));
    let downs = d
        .seen
        .iter()
        .filter(|e| matches!(e, ClientEvent::Down { .. }))
        .count();
    assert_eq!(downs, 1, "the same failure is reported once");
}

#[test]
fn select_db_and_url() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let config = hermod_core::redis::parse_redis_url(&format!("{}/3", redis.url())).expect("url");
    let mut d = Driver::new(common::config(config.target.clone()));
    d.client = hermod_core::redis::RedisClient::new(config, 100, Instant::now());
    d.up(UP);
    for lane in 0..2 {
        let info = reply(d.call(lane, &["CLIENT", "INFO"], lane as u64)).expect("client info");
        let text = info.as_str().unwrap_or_default().to_owned();
        assert!(text.contains(" db=3 "), "{text}");
    }
    reply(d.call(0, &["SET", "only-in-3", "x"], 5)).expect("set");
    assert_eq!(
        redis.command(&["GET", "only-in-3"]).expect("get"),
        Value::Nil
    );
}

#[test]
fn a_replica_fails_the_role_check() {
    let master = RedisServer::start(&[]).expect("redis-server");
    let port = master.port().to_string();
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &port]).expect("replica");
    let mut d = Driver::new(direct(&replica.addr()));
    let down = d.until(UP, |e| matches!(e, ClientEvent::Down { .. }));
    let ClientEvent::Down { reason } = down else {
        unreachable!()
    };
    assert!(reason.contains("not master"), "{reason}");
    assert!(!d.client.is_up());
}

#[test]
fn pushes_of_a_subscribed_lane_come_out_as_events() {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let mut d = Driver::new(direct(&redis.addr()));
    d.up(UP);
    // The confirmation answers the SUBSCRIBE's tag; the lane's other commands still work.
    let confirmed = reply(d.call(1, &["SUBSCRIBE", "{r:x}:pub"], 1)).expect("subscribed");
    assert_eq!(
        confirmed.as_array().and_then(|a| a.first()?.as_str()),
        Some("subscribe")
    );
    assert_eq!(
        reply(d.call(1, &["PING"], 2)),
        Ok(Value::Simple("PONG".into()))
    );
    assert_eq!(
        reply(d.call(0, &["PUBLISH", "{r:x}:pub", "hello"], 3)),
        Ok(Value::Int(1))
    );
    let is_push = |e: &ClientEvent| matches!(e, ClientEvent::Push { .. });
    let push = match d.seen.iter().find(|e| is_push(e)) {
        Some(seen) => seen.clone(),
        None => d.until(UP, is_push),
    };
    let ClientEvent::Push { lane, value } = push else {
        unreachable!()
    };
    assert_eq!(lane, 1);
    let items = value.as_array().expect("push elements");
    let text: Vec<Option<&str>> = items.iter().map(Value::as_str).collect();
    assert_eq!(text, [Some("message"), Some("{r:x}:pub"), Some("hello")]);
}
