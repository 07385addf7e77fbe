//! The client core against a scripted network: no sockets, the test owns the clock.

#![allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin

use std::time::{Duration, Instant};

use super::*;
use crate::redis::scripted::{bulk, error, healthy, ok, ScriptedNet};
use crate::redis::{ClientEvent, CommandError, Secret};
use crate::resp::Value;

const MASTER: &str = "10.0.0.1:6379";

fn config(target: Target) -> ClientConfig {
    let mut c = ClientConfig::new(target);
    c.backoff_min = Duration::from_millis(100);
    c.backoff_max = Duration::from_secs(2);
    c
}

fn direct() -> ClientConfig {
    config(Target::Direct {
        addr: MASTER.into(),
    })
}

fn events(core: &mut ClientCore) -> Vec<ClientEvent> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

/// A core and its network, started at `t0`.
fn start(config: ClientConfig) -> (ClientCore, ScriptedNet, Instant) {
    let t0 = Instant::now();
    let mut core = ClientCore::new(config, t0);
    let mut net = ScriptedNet::new();
    core.handle_timeout(t0);
    net.pump(&mut core);
    (core, net, t0)
}

/// Accepts every connect and answers the handshakes as a healthy `master`.
fn come_up(core: &mut ClientCore, net: &mut ScriptedNet, master: &str, now: Instant) {
    for (conn, _) in net.opening() {
        net.accept(core, conn, now);
    }
    net.serve(core, now, |c| healthy(c, master));
    assert!(core.is_up(), "{:?}", core.last_error());
}

#[test]
fn handshake_is_hello_select_role_on_every_lane() {
    let mut c = direct();
    c.db = 3;
    c.password = Some(Secret::new("pw"));
    let (mut core, mut net, t0) = start(c);
    let opening = net.opening();
    assert_eq!(opening.len(), 2, "two lanes");
    assert!(opening.iter().all(|(_, addr)| addr == MASTER));
    for (conn, _) in &opening {
        net.accept(&mut core, *conn, t0);
    }
    let names: Vec<Vec<String>> = opening
        .iter()
        .map(|(conn, _)| {
            let mut names = Vec::new();
            while let Some(cmd) = net.next_command(*conn).cloned() {
                names.push(
                    cmd.args
                        .iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<String>>()
                        .join(" "),
                );
                let value = healthy(&cmd, MASTER).expect("handshake");
                net.answer(&mut core, *conn, &value, t0);
            }
            names
        })
        .next()
        .into_iter()
        .collect();
    assert_eq!(
        names[0],
        ["HELLO 3 AUTH default pw SETNAME hermod", "SELECT 3", "ROLE"]
    );
    assert!(!core.is_up(), "the second lane is not ready yet");
    net.serve(&mut core, t0, |c| healthy(c, MASTER));
    assert!(core.is_up());
    assert_eq!(
        events(&mut core),
        [ClientEvent::Up {
            master: MASTER.into()
        }]
    );
}

#[test]
fn a_replica_or_a_refused_hello_is_not_up() {
    let (mut core, mut net, t0) = start(direct());
    for (conn, _) in net.opening() {
        net.accept(&mut core, conn, t0);
    }
    net.serve(&mut core, t0, |c| match c.name().as_str() {
        "ROLE" => Some(Value::Array(vec![bulk("slave")])),
        _ => healthy(c, MASTER),
    });
    assert!(!core.is_up());
    let down = events(&mut core);
    assert!(
        matches!(&down[..], [ClientEvent::Down { reason }] if reason.contains("ROLE says slave")),
        "{down:?}"
    );
    // Next attempt after the backoff: the HELLO is refused.
    core.handle_timeout(t0 + Duration::from_millis(100));
    net.pump(&mut core);
    for (conn, _) in net.opening() {
        net.accept(&mut core, conn, t0);
    }
    net.serve(&mut core, t0, |c| match c.name().as_str() {
        "HELLO" => Some(error("WRONGPASS invalid username-password pair")),
        _ => None,
    });
    assert!(!core.is_up());
    assert!(core
        .last_error()
        .is_some_and(|e| e.contains("HELLO 3 / AUTH refused")));
    assert!(events(&mut core).is_empty(), "one Down per outage");
}

#[test]
fn backoff_doubles_per_failed_attempt_up_to_the_max() {
    let (mut core, mut net, t0) = start(direct());
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..7 {
        let opening = net.opening();
        assert_eq!(opening.len(), 2, "an attempt opens every lane");
        net.refuse(&mut core, opening[0].0, now);
        assert!(net.opening().is_empty(), "the other lane is closed too");
        events(&mut core);
        let next = core.next_deadline().expect("a retry is due");
        delays.push(next - now);
        core.handle_timeout(next - Duration::from_millis(1));
        net.pump(&mut core);
        assert!(net.opening().is_empty(), "not before the backoff");
        now = next;
        core.handle_timeout(now);
        net.pump(&mut core);
    }
    let ms = Duration::from_millis;
    assert_eq!(
        delays,
        [
            ms(100),
            ms(200),
            ms(400),
            ms(800),
            ms(1600),
            ms(2000),
            ms(2000)
        ]
    );
    assert_eq!(core.stats().reconnects, 7);
    come_up(&mut core, &mut net, MASTER, now);
    assert_eq!(core.attempts, 0, "reset once up");
}

#[test]
fn a_silent_lane_times_commands_out_then_is_reset_as_stalled() {
    let (mut core, mut net, t0) = start(direct());
    come_up(&mut core, &mut net, MASTER, t0);
    events(&mut core);
    core.send(0, &[b"GET", b"k"], 7, t0).expect("send");
    net.pump(&mut core);
    let timeout = core.config().command_timeout;
    assert_eq!(core.next_deadline(), Some(t0 + timeout));
    core.handle_timeout(t0 + timeout);
    assert_eq!(
        events(&mut core),
        [ClientEvent::Reply {
            tag: 7,
            result: Err(CommandError::Timeout)
        }]
    );
    assert!(core.is_up(), "a timeout alone does not reset");
    // The abandoned reply is still due: silence for 3 timeouts resets the lanes.
    core.handle_timeout(t0 + timeout * 3);
    net.pump(&mut core);
    assert!(!core.is_up());
    let down = events(&mut core);
    assert!(
        matches!(&down[..], [ClientEvent::Down { reason }] if reason.contains("no reply for")),
        "{down:?}"
    );
}

#[test]
fn in_flight_commands_fail_connection_lost_exactly_once() {
    let (mut core, mut net, t0) = start(direct());
    come_up(&mut core, &mut net, MASTER, t0);
    events(&mut core);
    for tag in 1..=3 {
        core.send(tag as usize % 2, &[b"PING"], tag, t0)
            .expect("send");
    }
    net.pump(&mut core);
    let conn = net.open_to(MASTER)[0];
    net.answer(&mut core, conn, &ok(), t0);
    net.drop_conn(&mut core, conn, t0);
    let later = t0 + Duration::from_secs(60);
    core.handle_timeout(later);
    net.pump(&mut core);
    let seen = events(&mut core);
    let replies: Vec<(u64, bool)> = seen
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Reply { tag, result } => Some((*tag, result.is_ok())),
            _ => None,
        })
        .collect();
    let mut tags: Vec<u64> = replies.iter().map(|(t, _)| *t).collect();
    tags.sort_unstable();
    assert_eq!(tags, [1, 2, 3], "one outcome per command: {seen:?}");
    assert_eq!(replies.iter().filter(|(_, ok)| *ok).count(), 1);
    assert_eq!(
        seen.iter()
            .filter(|e| matches!(e, ClientEvent::Down { .. }))
            .count(),
        1
    );
    assert_eq!(
        core.send(0, &[b"PING"], 9, later),
        Err(ClientError::NotConnected)
    );
}

fn sentinels() -> ClientConfig {
    config(Target::Sentinel {
        sentinels: vec!["s1:1".into(), "s2:2".into()],
        master: "m".into(),
    })
}

/// Brings a Sentinel client up on `master` via sentinel s1; returns the sentinel connection.
fn sentinel_up(core: &mut ClientCore, net: &mut ScriptedNet, master: &str, now: Instant) -> ConnId {
    let (s, addr) = net.opening()[0].clone();
    assert_eq!(addr, "s1:1");
    net.accept(core, s, now);
    net.serve(core, now, |c| healthy(c, master));
    come_up(core, net, master, now);
    events(core);
    s
}

#[test]
fn readonly_makes_the_sentinels_be_asked_again_and_lanes_move() {
    let (mut core, mut net, t0) = start(sentinels());
    let s = sentinel_up(&mut core, &mut net, MASTER, t0);
    core.send(1, &[b"SET", b"k", b"v"], 5, t0).expect("send");
    net.pump(&mut core);
    let lane = net
        .unanswered()
        .into_iter()
        .find(|c| c.name() == "SET")
        .expect("sent")
        .conn;
    net.answer(
        &mut core,
        lane,
        &error("READONLY You can't write against a read only replica."),
        t0,
    );
    let seen = events(&mut core);
    assert!(matches!(
        &seen[..],
        [ClientEvent::Reply { tag: 5, result: Err(CommandError::Server(m)) }] if m.starts_with("READONLY")
    ));
    core.handle_timeout(t0);
    net.pump(&mut core);
    let asked = net
        .next_command(s)
        .expect("asked again on the watching connection");
    assert_eq!(asked.name(), "SENTINEL");
    net.serve(&mut core, t0, |c| healthy(c, "10.0.0.2:6379"));
    let seen = events(&mut core);
    assert!(seen.contains(&ClientEvent::MasterChanged {
        from: MASTER.into(),
        to: "10.0.0.2:6379".into()
    }));
    assert!(net.opening().iter().all(|(_, a)| a == "10.0.0.2:6379"));
    come_up(&mut core, &mut net, "10.0.0.2:6379", t0);
}

#[test]
fn switch_master_moves_every_lane_at_once() {
    let (mut core, mut net, t0) = start(sentinels());
    let s = sentinel_up(&mut core, &mut net, MASTER, t0);
    let payload = "m 10.0.0.1 6379 10.0.0.3 6379";
    net.push(
        &mut core,
        s,
        &[bulk("message"), bulk("+switch-master"), bulk(payload)],
        t0,
    );
    assert!(!core.is_up());
    assert!(net.open_to(MASTER).is_empty(), "old lanes closed");
    assert_eq!(net.opening().len(), 2);
    come_up(&mut core, &mut net, "10.0.0.3:6379", t0);
    assert_eq!(core.stats().failovers_seen, 1);
}

#[test]
fn a_silent_sentinel_is_given_up_after_the_connect_timeout() {
    let (mut core, mut net, t0) = start(sentinels());
    let (s1, _) = net.opening()[0].clone();
    net.accept(&mut core, s1, t0);
    let t = t0 + core.config().connect_timeout;
    assert_eq!(core.next_deadline(), Some(t));
    core.handle_timeout(t);
    net.pump(&mut core);
    assert_eq!(net.opening().first().map(|(_, a)| a.as_str()), Some("s2:2"));
}

#[test]
fn input_for_a_closed_connection_is_ignored() {
    let (mut core, mut net, t0) = start(direct());
    come_up(&mut core, &mut net, MASTER, t0);
    events(&mut core);
    let old = net.open_to(MASTER)[0];
    net.drop_conn(&mut core, old, t0);
    let later = t0 + Duration::from_millis(100);
    core.handle_timeout(later);
    net.pump(&mut core);
    come_up(&mut core, &mut net, MASTER, later);
    events(&mut core);
    core.send(0, &[b"PING"], 1, later).expect("send");
    // A late reply, connect or close from the old connection changes nothing.
    core.handle_input(old, b"+PONG\r\n", later);
    core.handle_connected(old, later);
    core.handle_closed(old, Closed::Read("gone".into()), later);
    assert!(core.is_up());
    assert!(events(&mut core).is_empty());
    assert_eq!(core.stats().in_flight, 1);
}
