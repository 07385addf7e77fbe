//! Tunnel hygiene (issue 11, item 11), against real processes: a front `hermod-proxy` with
//! `--route`s to a raw recording upstream and to a real echo upstream (`hermod-proxy
//! --echo-path`). Each attack is refused or rewritten, and a well-behaved WebSocket client through
//! the same front still gets its messages echoed.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{set_timeouts, tcp, Proxy, TIMEOUT};
use tungstenite::Message;

const SWITCHING: &str =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

/// An upgrade request for `target` with `extra` header lines (each ending in `\r\n`).
fn request(method: &str, target: &str, extra: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: front.example\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "{other:?} inside a head: {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An upstream that accepts connections for ever, answers 101 and reports each request head.
fn recording_upstream() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            set_timeouts(&s);
            let head = read_head(&mut s);
            let _ = s.write_all(SWITCHING.as_bytes());
            if tx.send(head).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// A front routing `/rec` to the recording upstream and `/e` to a real echo upstream.
fn fronts(extra: &[&str]) -> (Proxy, Proxy, mpsc::Receiver<String>) {
    let echo = Proxy::start_open(&["--echo-path", "/echo", "--ping-interval", "200ms"]);
    let (rec, heads) = recording_upstream();
    let r1 = format!("/rec=ws://{rec}/up");
    let r2 = format!("/e=ws://{}/echo", echo.client);
    let mut args = vec!["--route", r1.as_str(), "--route", r2.as_str()];
    args.extend_from_slice(extra);
    (echo, Proxy::start_open(&args), heads)
}

/// The well-behaved client: through `/e`, its messages come back.
fn echo_works(front: &Proxy) {
    let url = format!("ws://{}/e", front.client);
    let (mut ws, _) = tungstenite::client::client(url.as_str(), tcp(front.client))
        .unwrap_or_else(|e| panic!("upgrade through the tunnel: {e}; log:\n{}", front.log()));
    for i in 0..20 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).expect("send");
        loop {
            match ws.read().expect("echo") {
                Message::Text(got) => {
                    assert_eq!(got.as_str(), text);
                    break;
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected the echo, got {other:?}"),
            }
        }
    }
}

/// Upgrades through the front proxy's `/rec` route with `extra` headers, and returns the request
/// head the recording upstream saw.
fn upgraded_head(front: &Proxy, heads: &mpsc::Receiver<String>, extra: &str) -> String {
    let mut c = tcp(front.client);
    c.write_all(request("GET", "/rec", extra).as_bytes())
        .expect("request");
    assert!(read_head(&mut c).starts_with("HTTP/1.1 101 "));
    heads
        .recv_timeout(TIMEOUT)
        .expect("upstream saw the request")
}

fn answer(front: &Proxy, raw: &str) -> String {
    let mut c = tcp(front.client);
    let _ = c.write_all(raw.as_bytes());
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text
}

#[test]
fn spoofed_forwarding_headers_are_replaced() {
    let (_echo, front, heads) = fronts(&[]);
    let spoof = "X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n";
    let head = upgraded_head(&front, &heads, spoof);
    assert!(
        !head.contains("6.6.6.6"),
        "spoofed value passed on:\n{head}"
    );
    for line in [
        "X-Forwarded-For: 127.0.0.1\r\n",
        "Forwarded: for=127.0.0.1\r\n",
        "X-Real-IP: 127.0.0.1\r\n",
    ] {
        assert!(head.contains(line), "missing {line:?} in\n{head}");
    }
    echo_works(&front);
}

#[test]
fn a_trusted_front_proxy_keeps_its_forwarding_headers() {
    let (_echo, front, heads) = fronts(&["--route-trusted-proxies", "127.0.0.1"]);
    let from_lb = "X-Forwarded-For: 203.0.113.9\r\nX-Real-IP: 203.0.113.9\r\n";
    let head = upgraded_head(&front, &heads, from_lb);
    assert!(
        head.contains("X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("X-Real-IP: 203.0.113.9\r\n"), "{head}");
    echo_works(&front);
}

#[test]
fn only_bodiless_get_upgrades_are_routed() {
    let (_echo, front, heads) = fronts(&[]);
    for method in ["POST", "PUT", "CONNECT", "OPTIONS"] {
        let text = answer(&front, &request(method, "/rec", ""));
        assert!(text.starts_with("HTTP/1.1 405 "), "{method}: {text:?}");
        assert!(text.contains("\r\nAllow: GET\r\n"), "{text:?}");
    }
    for body in [
        "Content-Length: 5\r\n",
        "Content-Length: 0\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let text = answer(&front, &format!("{}hello", request("GET", "/rec", body)));
        assert!(text.starts_with("HTTP/1.1 400 "), "{body:?}: {text:?}");
    }
    // None of them reached the upstream.
    assert!(heads.recv_timeout(Duration::from_millis(300)).is_err());
    let refused = |status: &str| {
        front
            .metric_sum(&["hermod_handshakes_rejected_total", status])
            .unwrap_or(0.0)
    };
    assert_eq!(refused("405"), 4.0);
    assert_eq!(refused("400"), 4.0);
    echo_works(&front);
}

#[test]
fn an_idle_tunnel_is_closed_but_a_pinging_websocket_is_not() {
    let (_echo, front, heads) = fronts(&["--route-idle-timeout", "1s"]);
    // Silent both ways (the recording upstream never pings): closed after about 1 s.
    let mut idle = tcp(front.client);
    idle.write_all(request("GET", "/rec", "").as_bytes())
        .expect("request");
    assert!(read_head(&mut idle).starts_with("HTTP/1.1 101 "));
    heads
        .recv_timeout(TIMEOUT)
        .expect("upstream saw the request");
    let started = Instant::now();
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).expect("closed by the proxy");
    assert!(started.elapsed() < TIMEOUT);

    // The echo upstream pings every 200 ms and tungstenite answers: alive well past 1 s.
    let url = format!("ws://{}/e", front.client);
    let (mut ws, _) = tungstenite::client::client(url.as_str(), tcp(front.client))
        .unwrap_or_else(|e| panic!("upgrade through the tunnel: {e}"));
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut pings = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("the pinging tunnel was closed: {e}"),
        }
    }
    assert!(pings >= 5, "only {pings} pings crossed the tunnel");
    set_timeouts(ws.get_ref());
    ws.send(Message::text("still here")).expect("send");
    loop {
        match ws.read().expect("echo") {
            Message::Text(t) => break assert_eq!(t.as_str(), "still here"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
}
