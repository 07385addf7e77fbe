//! Messages stored per second through the Redis engine: `N` room appends with `WINDOW` kept in
//! flight, spread round-robin over `ROOMS` rooms (default 1), driven on one mio Poll like the
//! broker loop (`BrokerLoop`) does (one flush per loop turn). The appends of one room admitted in a turn go
//! out as one `FCALL hermod_append` (dedupe + XADD per message, up to 64 messages per call):
//! with one room and a window of 256 that is about 1/64 command per message; with as many
//! rooms as the window, about one command per message.
//!
//! ```text
//! cargo run --release -p hermod-broker --example redis_append_rate -- 127.0.0.1:6379 200000 256 [ROOMS]
//! ```
//! Compare with `redis-benchmark -h 127.0.0.1 -p 6379 -P 64 -n 200000 -q XADD bench MAXLEN 1000 '*'
//! f alice d '{"text":"hello"}' t 1718000000000` in the same run (docs/benchmarks.md).

use std::time::{Duration, Instant};

use hermod_broker::{Channel, Engine, Limits, Op, RedisEngine, RedisEngineConfig, Token};
use hermod_core::ids::{Cid, Name};
use hermod_core::redis::{ClientConfig, RedisSockets, Target};
use serde_json::value::RawValue;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:6379".into());
    let n: u64 = args.next().map_or(Ok(200_000), |s| s.parse())?;
    let window: u64 = args.next().map_or(Ok(256), |s| s.parse())?;
    let rooms: u64 = args.next().map_or(Ok(1), |s| s.parse())?;
    let config = RedisEngineConfig::new(
        ClientConfig::new(Target::Direct { addr }),
        Limits::default(),
    );
    let mut engine = RedisEngine::new(config, Instant::now());
    let mut poll = mio::Poll::new()?;
    let mut events = mio::Events::with_capacity(1024);
    let mut io = Io {
        poll: &mut poll,
        events: &mut events,
        sockets: RedisSockets::new(1),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !engine.is_ready() {
        turn(&mut engine, &mut io)?;
        if Instant::now() > deadline {
            return Err("redis engine not ready".into());
        }
    }
    let from = Name::parse("user", "alice")?;
    let rooms: Vec<Channel> = (0..rooms.max(1))
        .map(|i| Name::parse("room", &format!("bench{i}")).map(Channel::Room))
        .collect::<Result<_, _>>()?;
    let data = RawValue::from_string("{\"text\":\"hello\"}".into())?;
    let run = format!("{:x}", rand_tag());
    let (mut submitted, mut done, mut failed) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let trips_before = engine.stats().round_trips;
    let mut max_depth = 0;
    while done < n {
        while submitted < n && submitted - done < window {
            let op = Op::Append {
                channel: rooms[submitted as usize % rooms.len()].clone(),
                from: from.clone(),
                cid: Cid::parse(&format!("{run}-{submitted}"))?,
                data: data.clone(),
            };
            engine.submit(Token(submitted), op, unix_ms());
            submitted += 1;
        }
        max_depth = max_depth.max(engine.stats().pending_ops);
        turn(&mut engine, &mut io)?;
        while let Some((_, result)) = engine.poll_completion() {
            done += 1;
            failed += u64::from(result.is_err());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let trips = engine.stats().round_trips - trips_before;
    println!(
        "{n} appends to {} room(s) in {secs:.2} s: {:.0} msg/s, {failed} failed, {:.3} redis commands per message, up to {max_depth} in flight",
        rooms.len(),
        n as f64 / secs,
        trips as f64 / n as f64
    );
    Ok(())
}

/// The loop's side: the Poll and the engine's sockets.
struct Io<'a> {
    poll: &'a mut mio::Poll,
    events: &'a mut mio::Events,
    sockets: RedisSockets,
}

/// One loop turn: flush, write, wait, feed the input, tick.
fn turn(engine: &mut RedisEngine, io: &mut Io<'_>) -> std::io::Result<()> {
    engine.flush();
    io.sockets
        .run(engine.core(), io.poll.registry(), Instant::now());
    io.poll.poll(io.events, Some(Duration::from_millis(10)))?;
    let now = Instant::now();
    for event in io.events.iter() {
        io.sockets
            .handle_event(engine.core(), io.poll.registry(), event, now);
    }
    engine.handle_tick(now);
    Ok(())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A per-run cid prefix, so reruns against the same Redis are not deduplicated.
fn rand_tag() -> u64 {
    unix_ms()
}
