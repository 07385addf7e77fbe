//! 2,000 concurrent clients exchanging messages, every one delivered (issue 2, "What must be
//! shown"). One test thread: open all, send all, then read each socket until its message came.

mod common;

use common::{engine_tests, Engine};

use std::time::Instant;

use common::{id_of, Client, Proxy};
use serde_json::json;

const CLIENTS: usize = 2000;

fn two_thousand_clients_in_a_ring_every_message_delivered(engine: Engine) {
    let proxy = Proxy::start_open_on(engine, &[]);
    let started = Instant::now();
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| proxy.connect(&format!("u{i}")))
        .collect();
    let connected = started.elapsed();

    for (i, c) in clients.iter_mut().enumerate() {
        let to = format!("u{}", (i + 1) % CLIENTS);
        c.send_json(&json!({"op":"send","to":to,"cid":format!("r{i}"),"data":i}));
    }

    // Each client must see its own `sent` and the message from its left neighbour, with the id
    // that neighbour was given.
    let mut sent_ids = vec![String::new(); CLIENTS];
    let mut got = vec![None; CLIENTS];
    for (i, c) in clients.iter_mut().enumerate() {
        while sent_ids[i].is_empty() || got[i].is_none() {
            let v = c.recv();
            match v["op"].as_str() {
                Some("sent") => {
                    assert_eq!(v["cid"], format!("r{i}"), "{v}");
                    sent_ids[i] = id_of(&v);
                }
                Some("msg") => {
                    let from = (i + CLIENTS - 1) % CLIENTS;
                    assert_eq!(v["from"], format!("u{from}"), "client {i}: {v}");
                    assert_eq!(v["data"], from, "client {i}: {v}");
                    assert!(got[i].is_none(), "client {i} got a second message: {v}");
                    got[i] = Some(id_of(&v));
                }
                _ => panic!("client {i}: unexpected {v}"),
            }
        }
    }
    for (i, got) in got.iter().enumerate() {
        let from = (i + CLIENTS - 1) % CLIENTS;
        assert_eq!(got.as_deref(), Some(sent_ids[from].as_str()), "client {i}");
    }
    eprintln!(
        "{CLIENTS} clients: connected in {connected:?}, all delivered after {:?}",
        started.elapsed()
    );
    let connections = proxy.metric_sum(&["hermod_", "connection"]);
    eprintln!("connection metrics sum: {connections:?}");
}

engine_tests!(two_thousand_clients_in_a_ring_every_message_delivered,);
