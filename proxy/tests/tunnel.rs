//! Tunnel routes (`--route PATH=ws://HOST:PORT[/path]`) end to end, with real processes: a
//! `hermod-proxy --echo-path` as the WebSocket upstream, or a raw TCP upstream in the test where
//! the exact bytes matter (half-close, backpressure, request rewriting, garbage answers).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{handshake_status, python, set_timeouts, tcp, Proxy, TIMEOUT};
use tungstenite::Message;

/// The upgrade request a raw client sends (path and query given).
fn upgrade_request(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: front.example\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\nX-Custom: kept\r\n\r\n"
    )
}

const SWITCHING: &str =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

/// Reads up to and including the blank line that ends an HTTP head, byte by byte (so nothing
/// after it is consumed).
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => panic!("EOF inside a head: {:?}", String::from_utf8_lossy(&head)),
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!(
                "reading a head: {e}; so far {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A raw TCP upstream serving one connection on its own thread: `serve` gets the stream and the
/// request head it read.
fn raw_upstream<T: Send + 'static>(
    serve: impl FnOnce(TcpStream, String) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let handle = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("upstream accept");
        set_timeouts(&s);
        let head = read_head(&mut s);
        serve(s, head)
    });
    (addr, handle)
}

/// A front proxy routing `/t` to `ws://UPSTREAM/up`.
fn front(upstream: SocketAddr, extra: &[&str]) -> Proxy {
    let route = format!("/t=ws://{upstream}/up");
    let mut args = vec!["--route", route.as_str(), "--echo-path", "/local-echo"];
    args.extend_from_slice(extra);
    Proxy::start_open(&args)
}

/// An echo upstream (`hermod-proxy --echo-path /echo`) taking messages up to 2 MiB, and a front
/// routing `/t` to it.
fn echo_pair() -> (Proxy, Proxy) {
    let upstream = Proxy::start_open(&[
        "--echo-path",
        "/echo",
        "--max-message-size",
        "2097152",
        "--max-outbound-bytes",
        "8388608",
    ]);
    let route = format!("/t=ws://{}/echo", upstream.client);
    let front = Proxy::start_open(&["--route", route.as_str()]);
    (upstream, front)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS line")
}

fn wait_metric(proxy: &Proxy, parts: &[&str], want: f64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let v = proxy.metric_sum(parts).unwrap_or(f64::NAN);
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "{parts:?} = {v}, want {want}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_frame_size_crosses_the_tunnel_both_ways() {
    let (_upstream, front) = echo_pair();
    let url = format!("ws://{}/t?probe=1", front.client);
    let (mut ws, resp) = tungstenite::client::client(url.as_str(), tcp(front.client))
        .unwrap_or_else(|e| panic!("upgrade through the tunnel: {e}; log:\n{}", front.log()));
    assert_eq!(resp.status().as_u16(), 101);
    let mut total = 0u64;
    for size in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(payload.clone()))
            .expect("send binary");
        match ws.read().expect("echo") {
            Message::Binary(got) => assert!(got == payload, "binary of {size} bytes changed"),
            other => panic!("expected binary, got {other:?}"),
        }
        let text = "x".repeat(size);
        ws.send(Message::text(text.clone())).expect("send text");
        match ws.read().expect("echo") {
            Message::Text(got) => assert!(got.as_str() == text, "text of {size} bytes changed"),
            other => panic!("expected text, got {other:?}"),
        }
        total += 2 * size as u64;
    }
    ws.close(None).expect("close");
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("closing through the tunnel: {e}"),
        }
    }
    // The tunnel ends once both sides' EOFs crossed it: the client's comes with the drop.
    drop(ws);
    wait_metric(&front, &["hermod_tunnels_open"], 0.0);
    assert_eq!(front.metric_sum(&["hermod_tunnels_total"]), Some(1.0));
    for direction in ["up", "down"] {
        let bytes = front
            .metric_sum(&["hermod_tunnel_bytes_total", direction])
            .unwrap_or(0.0);
        assert!(bytes >= total as f64, "{direction}: {bytes} < {total}");
    }
}

#[test]
fn other_paths_are_still_served_with_routes_configured() {
    let (_upstream, front) = echo_pair();
    let mut client = front.connect("alice");
    client.send_json(&serde_json::json!({"op":"send","to":"bob","cid":"c1","data":1}));
    assert_eq!(client.recv_op("sent")["cid"], "c1");
    assert_eq!(
        handshake_status(&format!("ws://{}/nowhere", front.client), front.client),
        Err("404".to_owned())
    );
    assert_eq!(
        handshake_status(&format!("ws://{}/t/", front.client), front.client),
        Err("404".to_owned())
    );
}

#[test]
fn request_is_rewritten_and_half_close_passes_eof_then_reply() {
    let (addr, upstream) = raw_upstream(|mut s, head| {
        s.write_all(SWITCHING.as_bytes()).expect("101");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to EOF");
        let reply = format!("got {} bytes", got.len());
        s.write_all(reply.as_bytes()).expect("reply");
        (head, got)
    });
    let front = front(addr, &[]);
    let mut c = tcp(front.client);
    c.write_all(upgrade_request("/t?room=a%20b&x=1").as_bytes())
        .expect("request");
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    c.write_all(&payload).expect("payload");
    c.shutdown(Shutdown::Write).expect("half-close");
    let mut reply = String::new();
    c.read_to_string(&mut reply).expect("reply after our EOF");
    assert_eq!(reply, "got 100000 bytes");

    let (up_head, got) = upstream.join().expect("upstream thread");
    assert!(got == payload, "payload changed on the way");
    let lines: Vec<&str> = up_head.split("\r\n").collect();
    assert_eq!(lines[0], "GET /up?room=a%20b&x=1 HTTP/1.1", "{up_head}");
    assert!(
        lines.contains(&format!("Host: {addr}").as_str()),
        "{up_head}"
    );
    for kept in [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: chat",
        "X-Custom: kept",
        "X-Forwarded-For: 127.0.0.1",
    ] {
        assert!(lines.contains(&kept), "missing {kept:?} in {up_head}");
    }
    assert!(!up_head.contains("front.example"), "{up_head}");
    wait_metric(&front, &["hermod_tunnels_open"], 0.0);
}

/// The bytes a flooding upstream sends: a pattern of period 251, so any loss, duplicate or
/// reordering shows.
fn pattern(offset: u64, len: usize, table: &[u8]) -> &[u8] {
    let start = (offset % 251) as usize;
    &table[start..start + len]
}

#[test]
fn a_slow_reader_holds_the_proxy_memory_bounded() {
    const TOTAL: u64 = 200 << 20;
    const CHUNK: usize = 64 * 1024;
    let table: Arc<Vec<u8>> = Arc::new((0..251 + CHUNK).map(|i| (i % 251) as u8).collect());
    let written = Arc::new(AtomicU64::new(0));
    let (up_table, up_written) = (Arc::clone(&table), Arc::clone(&written));
    let (addr, upstream) = raw_upstream(move |mut s, _| {
        s.set_write_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        s.write_all(SWITCHING.as_bytes()).expect("101");
        let mut offset = 0u64;
        while offset < TOTAL {
            let n = (TOTAL - offset).min(CHUNK as u64) as usize;
            s.write_all(pattern(offset, n, &up_table)).expect("flood");
            offset += n as u64;
            up_written.store(offset, Ordering::Relaxed);
        }
    });
    let front = front(addr, &[]);
    let before = rss_kib(front.pid());
    let mut c = tcp(front.client);
    c.write_all(upgrade_request("/t").as_bytes())
        .expect("request");
    assert!(read_head(&mut c).starts_with("HTTP/1.1 101 "));

    // Not reading: the upstream must stall once the socket buffers along the way are full.
    let mut last = u64::MAX;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        thread::sleep(Duration::from_millis(500));
        let now = written.load(Ordering::Relaxed);
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let stalled = written.load(Ordering::Relaxed);
    let during = rss_kib(front.pid());
    assert!(
        stalled < TOTAL / 4,
        "upstream was not held back: {stalled} bytes"
    );
    assert!(
        during < before + 20 * 1024,
        "proxy RSS grew from {before} KiB to {during} KiB with {stalled} bytes pushed"
    );

    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                assert!(
                    buf[..n] == *pattern(offset, n, &table),
                    "stream corrupted near byte {offset}"
                );
                offset += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the flood at byte {offset}: {e}"),
        }
    }
    upstream.join().expect("upstream thread");
    assert_eq!(offset, TOTAL);
    let after = rss_kib(front.pid());
    eprintln!(
        "RSS before {before} KiB, while stalled at {} MiB pushed {during} KiB, after {after} KiB",
        stalled >> 20
    );
    assert!(after < before + 20 * 1024, "RSS {before} -> {after} KiB");
}

#[test]
fn an_upstream_that_does_not_read_holds_the_client_back() {
    const TOTAL: u64 = 100 << 20;
    const CHUNK: usize = 64 * 1024;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (addr, upstream) = raw_upstream(move |mut s, _| {
        s.write_all(SWITCHING.as_bytes()).expect("101");
        go_rx.recv().expect("go");
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n as u64,
                Err(e) => panic!("upstream read at {total}: {e}"),
            }
        }
    });
    let front = front(addr, &[]);
    let before = rss_kib(front.pid());
    let mut c = tcp(front.client);
    c.write_all(upgrade_request("/t").as_bytes())
        .expect("request");
    assert!(read_head(&mut c).starts_with("HTTP/1.1 101 "));
    let written = Arc::new(AtomicU64::new(0));
    let progress = Arc::clone(&written);
    let writer = thread::spawn(move || {
        c.set_write_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let chunk = vec![0x5au8; CHUNK];
        let mut offset = 0u64;
        while offset < TOTAL {
            c.write_all(&chunk).expect("client flood");
            offset += CHUNK as u64;
            progress.store(offset, Ordering::Relaxed);
        }
        c.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut last = u64::MAX;
    let deadline = Instant::now() + TIMEOUT;
    while written.load(Ordering::Relaxed) != last && Instant::now() < deadline {
        last = written.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(500));
    }
    let during = rss_kib(front.pid());
    assert!(last < TOTAL / 4, "client was not held back: {last} bytes");
    assert!(during < before + 20 * 1024, "RSS {before} -> {during} KiB");
    go_tx.send(()).expect("go");
    writer.join().expect("writer");
    assert_eq!(upstream.join().expect("upstream"), TOTAL);
}

fn http_status_of(front: &Proxy, target: &str) -> (String, String) {
    let mut c = tcp(front.client);
    c.write_all(upgrade_request(target).as_bytes())
        .expect("request");
    let mut text = String::new();
    c.read_to_string(&mut text).expect("answer, then EOF");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

#[test]
fn upstream_down_or_garbage_gives_502() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let front = front(addr, &[]);
    let (head, body) = http_status_of(&front, "/t");
    assert!(head.starts_with("HTTP/1.1 502 Bad Gateway"), "{head}");
    assert_eq!(body, "bad gateway\n");

    let (addr, upstream) = raw_upstream(|mut s, _| {
        s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").expect("garbage");
    });
    let front = self::front(addr, &[]);
    let (head, _) = http_status_of(&front, "/t");
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    upstream.join().expect("upstream thread");
    assert_eq!(
        front.metric_sum(&["hermod_tunnel_upstream_failures_total"]),
        Some(1.0)
    );
}

#[test]
fn upstream_connect_timeout_gives_502() {
    // A listener with a backlog of one that never accepts: once its queue is full, further SYNs
    // are dropped and a connect hangs.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&bind.into()).expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let fillers: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
        .collect();
    let front = front(addr, &["--route-connect-timeout", "300ms"]);
    let started = Instant::now();
    let (head, _) = http_status_of(&front, "/t");
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert!(started.elapsed() >= Duration::from_millis(250), "too early");
    drop(fillers);
}

#[test]
fn a_non_101_answer_is_relayed_then_closed() {
    let upstream = Proxy::start_open(&["--echo-path", "/echo"]);
    let route = format!("/t=ws://{}/nope", upstream.client);
    let front = Proxy::start_open(&["--route", route.as_str()]);
    let (head, body) = http_status_of(&front, "/t");
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    assert_eq!(body, "no such endpoint\n");
}

#[test]
fn oversized_routed_head_is_431() {
    let (_upstream, front) = echo_pair();
    let mut c = tcp(front.client);
    let mut req = upgrade_request("/t").replace("\r\n\r\n", "\r\n");
    req.push_str(&format!("X-Big: {}\r\n\r\n", "a".repeat(9000)));
    // The proxy may close while we still write: only the answer matters.
    let _ = c.write_all(req.as_bytes());
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text:?}");
}

#[test]
fn python_websockets_client_through_the_tunnel() {
    let (_upstream, front) = echo_pair();
    let url = format!("ws://{}/t", front.client);
    python::run_check("tunnel_check.py", &[&url], &front);
}

#[test]
fn idle_tunnels_close_after_the_idle_timeout() {
    let (tx, rx) = mpsc::channel();
    let (addr, upstream) = raw_upstream(move |mut s, _| {
        s.write_all(SWITCHING.as_bytes()).expect("101");
        let mut rest = Vec::new();
        let r = s.read_to_end(&mut rest);
        let _ = tx.send(r.is_ok());
    });
    let front = front(addr, &["--route-idle-timeout", "300ms"]);
    let mut c = tcp(front.client);
    c.write_all(upgrade_request("/t").as_bytes())
        .expect("request");
    assert!(read_head(&mut c).starts_with("HTTP/1.1 101 "));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("closed by the proxy");
    assert!(rest.is_empty());
    assert!(rx.recv_timeout(TIMEOUT).is_ok(), "upstream side not closed");
    upstream.join().expect("upstream thread");
    wait_metric(&front, &["hermod_tunnels_open"], 0.0);
}
