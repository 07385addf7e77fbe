//! Issue 11, session fairness: one session cannot starve the others. A session flooding ops is
//! refused `rate_limited` and closed 1008 while another user's messages are all delivered and
//! answered; `data` nested past the depth limit is `bad_request` and never stored; a peer that
//! pings without reading pins no gateway memory, on `/ws` and on the echo path.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{id_of, raw_frame, set_timeouts, tcp, Client, Ending, Proxy, TIMEOUT};
use serde_json::{json, Value};
use tungstenite::Message;

/// The witness: alice sends `n` messages to bob, each answered `sent` (never an error), and bob
/// receives every one of them, in order.
fn witness_round(proxy: &Proxy, n: usize, tag: &str) {
    let mut alice = proxy.connect(&format!("alice-{tag}"));
    let bob_name = format!("bob-{tag}");
    let mut bob = proxy.connect(&bob_name);
    let mut ids = Vec::new();
    for i in 0..n {
        let id = alice.send_to(&bob_name, &format!("w{i}"), json!({ "i": i }));
        ids.push(id);
    }
    let got: Vec<String> = bob.recv_msgs(n).iter().map(id_of).collect();
    assert_eq!(got, ids, "bob got every message of alice, in order");
    for id in &ids {
        bob.ack(id);
    }
    bob.barrier("wb");
}

/// Sends `frame` as fast as the socket takes it, `count` times or until the server closes, then
/// reads everything the server said: the frames and how the connection ended.
fn flood(mut c: Client, frame: &str, count: usize) -> (Vec<Value>, Ending) {
    for _ in 0..count {
        if c.ws.write(Message::text(frame)).is_err() {
            break;
        }
    }
    let _ = c.ws.flush();
    c.read_to_end()
}

/// Acks one flooding session sends before reading: past the burst (4,000) and the refusals
/// that close it (1,000), well within what the server discards after its close frame.
const FLOOD_ACKS: usize = 8_000;

#[test]
fn an_ack_flood_is_refused_and_closed_while_others_are_served() {
    let proxy = Proxy::start_jwt(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Mallory floods acks at the highest rate her socket takes, reconnecting each time she is
    // closed, for as long as the witness runs.
    let flooder = {
        let stop = std::sync::Arc::clone(&stop);
        let url = proxy.ws_url("mallory", "default");
        let addr = proxy.client;
        std::thread::spawn(move || {
            let mut endings = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || endings.is_empty() {
                let c = Client::handshake(&url, tcp(addr)).expect("mallory connects");
                endings.push(flood(c, r#"{"op":"ack","id":"1-0"}"#, FLOOD_ACKS));
            }
            endings
        })
    };
    witness_round(&proxy, 300, "during");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let endings = flooder.join().expect("flooder");
    for (i, (frames, end)) in endings.iter().enumerate() {
        let welcome = frames.first().map(|f| f["op"].clone());
        assert_eq!(welcome, Some(json!("welcome")));
        let rest = &frames[1..];
        // The first session is refused before it is closed; a reconnect inherits its debt
        // (no fresh burst) and may be closed at its first ack.
        assert!(
            i > 0 || rest.iter().any(|f| f["code"] == "rate_limited"),
            "no rate_limited answer: {:?}",
            rest.first()
        );
        assert!(
            rest.iter()
                .all(|f| f["op"] == "error" && f.get("cid").is_none()),
            "only rate_limited errors, without cid (acks have none)"
        );
        match end {
            Ending::Close(1008, reason) => assert_eq!(reason, "rate limit exceeded"),
            other => panic!("expected close 1008, got {other:?}; log:\n{}", proxy.log()),
        }
    }
    witness_round(&proxy, 50, "after");
    let m = |parts: &[&str]| proxy.metric_sum(parts).unwrap_or(0.0);
    assert!(m(&["hermod_rate_limited_total", "messages"]) > 0.0);
    assert_eq!(m(&["hermod_rate_limit_closes_total"]), endings.len() as f64);
    assert_eq!(m(&["hermod_broker_queue_full_total"]), 0.0);
}

#[test]
fn requests_over_the_limit_get_rate_limited_with_their_cid() {
    let proxy = Proxy::start_jwt(&["--session-rate", "5", "--session-burst", "5"]);
    let mut alice = proxy.connect("alice");
    for i in 0..20 {
        alice.send_json(&json!({"op":"send","to":"bob","cid":format!("c{i}"),"data":i}));
    }
    let answers: Vec<Value> = (0..20).map(|_| alice.recv()).collect();
    let mut cids: Vec<String> = answers
        .iter()
        .map(|a| a["cid"].as_str().expect("answer with cid").to_owned())
        .collect();
    cids.sort();
    cids.dedup();
    assert_eq!(cids.len(), 20, "every request answered once: {answers:?}");
    let sent = answers.iter().filter(|a| a["op"] == "sent").count();
    let limited = answers
        .iter()
        .filter(|a| a["op"] == "error" && a["code"] == "rate_limited")
        .count();
    assert_eq!(sent + limited, 20, "{answers:?}");
    assert!((5..20).contains(&sent), "{sent} sent: {answers:?}");
    // Refused requests were not stored: bob gets exactly the sent ones.
    let mut bob = proxy.connect("bob");
    let got = bob.recv_msgs(sent);
    assert_eq!(got.len(), sent);
    bob.expect_silence(Duration::from_millis(200));
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn data_nested_too_deep_is_refused_and_not_stored() {
    let proxy = Proxy::start_jwt(&[]);
    let mut alice = proxy.connect("alice");
    let deep = format!(
        r#"{{"op":"send","to":"bob","cid":"deep","data":{}}}"#,
        nested(30_000)
    );
    alice.send_text(&deep);
    let e = alice.recv_op("error");
    assert_eq!(
        (e["cid"].as_str(), e["code"].as_str()),
        (Some("deep"), Some("bad_request"))
    );
    let room = format!(
        r#"{{"op":"publish","room":"r","cid":"deep2","data":{}}}"#,
        nested(65)
    );
    alice.send_text(&room);
    assert_eq!(alice.recv_op("error")["code"], "bad_request");
    // 64 levels are fine, and the connection stayed open.
    let ok = format!(
        r#"{{"op":"send","to":"bob","cid":"ok","data":{}}}"#,
        nested(64)
    );
    alice.send_text(&ok);
    let sent = alice.recv_op("sent");
    let mut bob = proxy.connect("bob");
    let m = bob.recv_op("msg");
    assert_eq!(id_of(&m), id_of(&sent));
    assert_eq!(m["data"].to_string(), nested(64));
    bob.expect_silence(Duration::from_millis(200));
    assert_eq!(proxy.metric_sum(&["hermod_data_too_deep_total"]), Some(2.0));
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A connection whose receive buffer is as small as the kernel allows, so that a peer that
/// does not read pushes back on the server at once (as over a slow link) instead of after
/// megabytes of loopback buffering.
fn tiny_window(proxy: &Proxy) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sock.connect_timeout(&proxy.client.into(), TIMEOUT)
        .expect("connect");
    let stream: TcpStream = sock.into();
    set_timeouts(&stream);
    stream
}

/// Opens `n` WebSocket connections to `url` and returns their raw sockets, non-blocking.
fn open_raw(proxy: &Proxy, url: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let c = Client::handshake(url, tiny_window(proxy)).expect("handshake");
            let stream = c.ws.into_inner();
            stream.set_nonblocking(true).expect("nonblocking");
            stream
        })
        .collect()
}

/// Each socket sends masked pings (125-byte payloads) and never reads, for `run`; returns how
/// many pings went out in all.
fn ping_flood(socks: &mut [TcpStream], run: Duration) -> usize {
    let frame = raw_frame(0x9, &[b'p'; 125]);
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 64)
        .collect();
    let mut pings = 0;
    let end = Instant::now() + run;
    while Instant::now() < end {
        for s in socks.iter_mut() {
            match s.write(&batch) {
                // Partial writes split a frame: count whole frames only, and stop this socket
                // (the next batch would start mid-frame).
                Ok(n) if n == batch.len() => pings += 64,
                Ok(n) => {
                    pings += n / frame.len();
                    let rest = &batch[n..];
                    let _ = s.set_nonblocking(false);
                    set_timeouts(s);
                    let _ = s.set_write_timeout(Some(Duration::from_millis(50)));
                    let _ = s.write_all(rest);
                    let _ = s.set_nonblocking(true);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    pings
}

/// CPU ticks (utime + stime) of `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}

/// Waits until `pid` used no CPU for 300 ms (it has read everything it will read), or 30 s.
fn wait_idle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = cpu_ticks(pid);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = cpu_ticks(pid);
        if now == last {
            return;
        }
        last = now;
    }
}

const FLOODERS: usize = 50;
/// The goal of issue 11: a ping-flooding connection that never reads pins less than this.
const MAX_GROWTH_PER_CONN_KIB: u64 = 64;

fn ping_flood_is_bounded(path: &str) {
    let proxy = Proxy::start_open(&["--echo-path", "/echo"]);
    let url = match path {
        "/echo" => format!("ws://{}/echo", proxy.client),
        _ => proxy.ws_url("pinger", "default"),
    };
    let mut socks = open_raw(&proxy, &url, FLOODERS);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(proxy.pid());
    let pings = ping_flood(&mut socks, Duration::from_secs(5));
    // Let the gateway take in what the kernel buffered: once the server's socket send buffer
    // (up to 4 MiB, tcp_wmem) is full, every ping read while the peer is not reading would
    // leave a pong in tungstenite's write buffer, were reading not paused.
    wait_idle(proxy.pid());
    let after = rss_kib(proxy.pid());
    let growth = after.saturating_sub(before) / FLOODERS as u64;
    eprintln!(
        "{path}: RSS {before} -> {after} KiB after {pings} pings; reads paused {:?}, closed {:?}",
        proxy.metric_sum(&["hermod_reads_paused_total"]),
        proxy.metric_sum(&["hermod_sessions_closed_total"]),
    );
    assert!(
        growth < MAX_GROWTH_PER_CONN_KIB,
        "{path}: RSS {before} -> {after} KiB, {growth} KiB per connection after {pings} pings"
    );
    assert!(pings > FLOODERS * 1000, "the flood ran: {pings} pings");
    // A well-behaved client on the same server is unaffected.
    if path == "/echo" {
        let mut c = Client::handshake(&url, tcp(proxy.client)).expect("handshake");
        c.ws.send(Message::text("hello")).expect("send");
        match c.next(TIMEOUT) {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "hello"),
            other => panic!("echo: {other:?}"),
        }
    } else {
        witness_round(&proxy, 50, "pings");
    }
    drop(socks);
}

#[test]
fn a_non_reading_ping_flood_is_bounded_on_ws() {
    ping_flood_is_bounded("/ws");
}

#[test]
fn a_non_reading_ping_flood_is_bounded_on_echo() {
    ping_flood_is_bounded("/echo");
}
