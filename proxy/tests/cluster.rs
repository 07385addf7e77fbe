//! A small cluster end to end: one `redis-server`, two `hermod-broker`s, two `hermod-proxy`
//! gateways linked to both (`--brokers`), real processes and blocking WebSocket clients. The
//! users talking are chosen so that the gateways' placement homes them on *different* brokers:
//! what one broker stores reaches the other's sessions by the brokers' cross-broker fan-out
//! (Redis pub/sub, `broker/src/redis/live.rs`).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::broker::{broker_gauge, wait_for, Broker, LINK_SECRET};
use common::{Client, Proxy, TIMEOUT};
use hermod_core::testkit::RedisServer;
use hermod_proxy::brokers::placement;
use serde_json::{json, Value};

/// The cluster: Redis, two brokers, two gateways linked to both.
struct Cluster {
    gateways: Vec<Proxy>,
    brokers: Vec<Broker>,
    /// The brokers' placement names (their link addresses, as listed with `--brokers`).
    names: Vec<String>,
    _redis: RedisServer,
}

impl Cluster {
    fn start() -> Cluster {
        let redis = RedisServer::start(&[]).expect("redis-server");
        let brokers = vec![
            Broker::start(&redis, "c1", &["--link-secret", LINK_SECRET]),
            Broker::start(&redis, "c2", &["--link-secret", LINK_SECRET]),
        ];
        let names: Vec<String> = brokers.iter().map(|b| b.addr.to_string()).collect();
        let list = names.join(",");
        let gateways: Vec<Proxy> = (0..2)
            .map(|_| {
                let args = [
                    "--auth",
                    "none",
                    "--link-secret",
                    LINK_SECRET,
                    "--brokers",
                    &list,
                ];
                Proxy::spawn(&args, false)
            })
            .collect();
        for gw in &gateways {
            wait_for(gw, TIMEOUT, "both broker links up", || {
                gw.metric_sum(&["hermod_broker_links_up"]) == Some(2.0)
            });
        }
        Cluster {
            gateways,
            brokers,
            names,
            _redis: redis,
        }
    }

    /// A user name (`prefix` + number) that placement homes on broker `i`.
    fn user_on(&self, i: usize, prefix: &str) -> String {
        let broker = &self.names[i];
        (0..10_000)
            .map(|n| format!("{prefix}{n}"))
            .find(|u| {
                let names = self.names.iter().map(|b| (b.as_str(), b.as_str()));
                placement::pick(u, names) == Some(broker.as_str())
            })
            .expect("a user for each broker")
    }

    /// Every process's log, for failure messages.
    fn logs(&self) -> String {
        let gateways = self.gateways.iter().map(Proxy::log);
        let brokers = self.brokers.iter().map(Broker::log);
        gateways.chain(brokers).collect::<Vec<_>>().join("\n----\n")
    }
}

/// Sessions the gateway has on broker `name`.
fn sessions_on(proxy: &Proxy, name: &str) -> f64 {
    broker_gauge(proxy, "hermod_broker_link_sessions", name).unwrap_or(0.0)
}

/// Reads frames until `msgs` messages and `sents` `sent` answers arrived: the message ids in
/// order of arrival, and the sent ids in order.
fn collect(client: &mut Client, msgs: usize, sents: usize) -> (Vec<String>, Vec<String>) {
    let (mut got, mut sent) = (Vec::new(), Vec::new());
    while got.len() < msgs || sent.len() < sents {
        let frame: Value = client.recv();
        match frame["op"].as_str() {
            Some("msg") => got.push(common::id_of(&frame)),
            Some("sent") => sent.push(common::id_of(&frame)),
            _ => panic!("unexpected frame {frame}"),
        }
    }
    (got, sent)
}

#[test]
fn users_on_two_gateways_and_two_brokers_exchange_direct_and_room_messages() {
    let cluster = Cluster::start();
    let (east, west) = (cluster.user_on(0, "east"), cluster.user_on(1, "west"));
    let (gw1, gw2) = (&cluster.gateways[0], &cluster.gateways[1]);
    let mut c1 = gw1.connect(&east);
    let mut c2 = gw2.connect(&west);
    // The two sessions are homed on different brokers.
    wait_for(gw1, TIMEOUT, "east's session on broker 1", || {
        sessions_on(gw1, &cluster.names[0]) >= 1.0
    });
    wait_for(gw2, TIMEOUT, "west's session on broker 2", || {
        sessions_on(gw2, &cluster.names[1]) >= 1.0
    });

    // Direct, both ways.
    let to_west: Vec<String> = (0..10)
        .map(|i| c1.send_to(&west, &format!("e{i}"), json!(i)))
        .collect();
    let (got, _) = collect(&mut c2, 10, 0);
    assert_eq!(got, to_west, "east -> west in order\n{}", cluster.logs());
    let to_east: Vec<String> = (0..10)
        .map(|i| c2.send_to(&east, &format!("w{i}"), json!(i)))
        .collect();
    let (got, _) = collect(&mut c1, 10, 0);
    assert_eq!(got, to_east, "west -> east in order\n{}", cluster.logs());

    // A room with a member on each side; both publish, interleaved.
    for c in [&mut c1, &mut c2] {
        c.send_json(&json!({"op":"join","room":"plaza"}));
        assert_eq!(c.recv_op("joined")["room"], "plaza");
    }
    for i in 0..8 {
        c1.send_json(&json!({"op":"publish","room":"plaza","cid":format!("pe{i}"),"data":i}));
        c2.send_json(&json!({"op":"publish","room":"plaza","cid":format!("pw{i}"),"data":i}));
    }
    let (seen1, sent1) = collect(&mut c1, 16, 8);
    let (seen2, sent2) = collect(&mut c2, 16, 8);
    assert_eq!(
        seen1,
        seen2,
        "both members see one order\n{}",
        cluster.logs()
    );
    let all: HashSet<&String> = sent1.iter().chain(&sent2).collect();
    assert_eq!(
        seen1.iter().collect::<HashSet<_>>(),
        all,
        "each publish once"
    );
    for sent in [&sent1, &sent2] {
        let order: Vec<&String> = seen1.iter().filter(|id| sent.contains(id)).collect();
        assert_eq!(
            order,
            sent.iter().collect::<Vec<_>>(),
            "a sender's order kept"
        );
    }
    c1.expect_silence(Duration::from_millis(300));
    c2.expect_silence(Duration::from_millis(300));
}

#[test]
fn clients_of_a_killed_gateway_reconnect_to_the_other_and_get_every_unacked_message() {
    let mut cluster = Cluster::start();
    // On the gateway to be killed: one user homed on each broker. Their senders on the other.
    let receivers = [cluster.user_on(0, "rcv-a"), cluster.user_on(1, "rcv-b")];
    let senders = [cluster.user_on(1, "snd-a"), cluster.user_on(0, "snd-b")];
    let mut at_risk: Vec<Client> = receivers
        .iter()
        .map(|r| cluster.gateways[0].connect(r))
        .collect();
    let mut talking: Vec<Client> = senders
        .iter()
        .map(|s| cluster.gateways[1].connect(s))
        .collect();
    let mut sent: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    for i in 0..10 {
        for (k, s) in talking.iter_mut().enumerate() {
            sent[k].push(s.send_to(&receivers[k], &format!("m{i}"), json!(i)));
        }
    }
    // Each receiver gets all ten and acks the first four (the barrier's `sent` means the
    // broker has applied the acks).
    for (k, r) in at_risk.iter_mut().enumerate() {
        let (got, _) = collect(r, 10, 0);
        assert_eq!(got, sent[k], "live before the kill\n{}", cluster.logs());
        r.ack(&sent[k][3]);
        r.barrier(&format!("acked-{k}"));
    }
    // SIGKILL of the gateway (the harness's drop); its clients see their connections end.
    drop(cluster.gateways.remove(0));
    for r in &mut at_risk {
        match r.next(TIMEOUT) {
            Some(Err(_)) => {}
            other => panic!("expected the connection to end, got {other:?}"),
        }
    }
    drop(at_risk);
    // More is sent while they are away.
    for i in 10..15 {
        for (k, s) in talking.iter_mut().enumerate() {
            sent[k].push(s.send_to(&receivers[k], &format!("m{i}"), json!(i)));
        }
    }
    let survivor = &cluster.gateways[0];
    for (k, r) in receivers.iter().enumerate() {
        let mut again = survivor.connect(r);
        let (got, _) = collect(&mut again, 11, 0);
        assert_eq!(
            got,
            sent[k][4..],
            "{r}: every unacked message, in order, after reconnecting\n{}",
            cluster.logs()
        );
        // and live again, across brokers
        let id = talking[k].send_to(r, "after", json!("after"));
        assert_eq!(common::id_of(&again.recv_op("msg")), id);
    }
}
