use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::*;

fn state(ready: Arc<AtomicBool>) -> AdminState {
    AdminState {
        ready: Box::new(move || ready.load(Ordering::Relaxed)),
        render_metrics: Box::new(|out| {
            out.push_str("hermod_test_total 7\n");
            render_process(out);
        }),
    }
}

fn start(ready: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    spawn(listener, state(ready)).unwrap();
    addr
}

fn start_within(limit: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    spawn_within(listener, state(Arc::new(AtomicBool::new(true))), limit).unwrap();
    addr
}

#[test]
fn a_dribbled_head_is_cut_off_at_the_limit() {
    let addr = start_within(Duration::from_millis(300));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_nonblocking(true).unwrap();
    let started = Instant::now();
    // One byte every 50 ms: each read is well inside the limit, the whole head never is.
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nX-Slow: "
        .iter()
        .cycle()
        .take(200)
    {
        if client.write_all(&[*b]).is_err() || !open_and_quiet(&client) {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(closed, "never closed");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Whether `client` (nonblocking) is still open with nothing to read.
fn open_and_quiet(client: &TcpStream) -> bool {
    let mut one = [0u8; 1];
    matches!(client.peek(&mut one), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let addr = start_within(Duration::from_secs(20));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let answers: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{out}");
    assert!(
        answers[0].starts_with("200 ")
            && answers[0].contains("Connection: keep-alive\r\n")
            && answers[0].ends_with("ok\n"),
        "{out}"
    );
    assert!(
        answers[1].starts_with("200 ") && answers[1].ends_with("ready\n"),
        "{out}"
    );
    assert!(
        answers[2].starts_with("404 ") && answers[2].contains("Connection: close\r\n"),
        "{out}"
    );
}

#[test]
fn idle_connections_past_the_table_do_not_starve_a_probe() {
    let addr = start_within(Duration::from_secs(30));
    // More idle connections than the table holds, some with half a head.
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 44)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                s.write_all(b"GET /healthz HTTP/1.1\r\nX-Half: ").unwrap();
            }
            s
        })
        .collect();
    for _ in 0..20 {
        assert!(get(addr, "/healthz").ends_with("ok\n"));
    }
    drop(idle);
}

fn request(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn get(addr: SocketAddr, path: &str) -> String {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn endpoints_over_loopback() {
    let ready = Arc::new(AtomicBool::new(true));
    let addr = start(Arc::clone(&ready));

    let r = get(addr, "/healthz");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("Connection: close\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\nok\n"), "{r}");

    assert!(get(addr, "/readyz").ends_with("ready\n"));
    ready.store(false, Ordering::Relaxed);
    assert!(get(addr, "/readyz").starts_with("HTTP/1.1 503 "));

    let m = get(addr, "/metrics?x=1");
    assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
    assert!(m.contains("text/plain; version=0.0.4"), "{m}");
    assert!(m.contains("\nhermod_test_total 7\n"), "{m}");
    assert!(m.contains("\nhermod_process_resident_memory_bytes "), "{m}");
    assert!(m.contains("\nhermod_process_open_fds "), "{m}");
    assert!(m.contains("hermod_build_info{version=\""), "{m}");

    assert!(get(addr, "/nope").starts_with("HTTP/1.1 404 "));
    let post = request(addr, b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("Allow: GET, HEAD\r\n"), "{post}");
    let head = request(addr, b"HEAD /healthz HTTP/1.0\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 ") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
}

#[test]
fn bad_and_oversized_heads_are_refused() {
    let addr = start(Arc::new(AtomicBool::new(true)));
    assert!(request(addr, b"\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
    // Exactly 8 KiB and still no end of head: 431 (sized so the server reads every byte
    // and closes cleanly instead of resetting).
    let mut big = b"GET /healthz HTTP/1.1\r\nX-Pad: ".to_vec();
    big.resize(MAX_HEAD, b'a');
    let out = request(addr, &big);
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    // A client that leaves early gets nothing and takes nothing down.
    let s = TcpStream::connect(addr).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(get(addr, "/healthz").ends_with("ok\n"));
}

#[test]
fn process_figures_are_valid_prometheus_text_of_the_table() {
    let mut out = String::new();
    render_process(&mut out);
    let families = crate::metrics::check(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert!(families.contains(&"hermod_build_info"), "{out}");
}

#[test]
fn proc_parsers() {
    let status = "Name:\tx\nVmRSS:\t  1234 kB\nThreads:\t3\n";
    assert_eq!(status_field(status, "VmRSS:"), Some(1234));
    assert_eq!(status_field(status, "Threads:"), Some(3));
    assert_eq!(status_field(status, "VmSwap:"), None);
    let limits = "Limit Soft Hard Units\nMax open files            20000                20000                files\n";
    assert_eq!(max_open_files(limits), Some(20000));
}
