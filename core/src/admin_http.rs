//! The admin HTTP listener of both server binaries: `GET /healthz` (200 while the process
//! runs), `/readyz` (200 when it can serve, else 503) and `/metrics` (Prometheus text); what
//! `/readyz` and `/metrics` report comes from the binary ([`AdminState`]). docs/operations.md,
//! "Health endpoints", says what each answer means for each binary.
//!
//! Not the hot path, so it is plain blocking `std::net` on its own thread: one request per
//! connection, `Connection: close`. What a peer controls is bounded: the request head (8 KiB),
//! the time to send it and to read the answer (5 s each), and the connections served at once
//! ([`MAX_CONCURRENT`]; more are answered 503 at once and closed).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::metrics::{names, Exposition};

/// Largest request head accepted (request line plus headers); larger is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers parsed in a request head; more is answered 431.
const MAX_HEADERS: usize = 32;
/// How long a client may take to send its request head, or to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections handled at once. A scraper and a probe or two need no more; a flood of slow
/// clients must not pin threads.
pub const MAX_CONCURRENT: usize = 4;

/// What the admin endpoints report, supplied by the binary.
pub struct AdminState {
    /// `/readyz`: whether the process can serve now (e.g. storage reachable, not stopping).
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
    /// `/metrics`: appends the binary's figures in Prometheus text format (with
    /// [`render_process`] for the process's own, if it wants them).
    pub render_metrics: Box<dyn Fn(&mut String) + Send + Sync>,
}

/// An HTTP answer before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code and reason phrase, e.g. `(200, "OK")`.
    pub status: (u16, &'static str),
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// Extra header lines (each ending in CRLF), e.g. `Allow` on a 405.
    pub extra_headers: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: (u16, &'static str), body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            extra_headers: "",
            body: format!("{body}\n"),
        }
    }

    /// The bytes on the wire; `head_only` for `HEAD` (same headers, no body).
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status.0,
            self.status.1,
            self.content_type,
            self.body.len(),
            self.extra_headers,
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Starts the admin listener on its own thread (`hermod-admin`). It runs until the process exits.
pub fn spawn(listener: TcpListener, state: AdminState) -> io::Result<JoinHandle<()>> {
    let state = Arc::new(state);
    thread::Builder::new()
        .name("hermod-admin".to_owned())
        .spawn(move || accept_loop(&listener, &state))
}

fn accept_loop(listener: &TcpListener, state: &Arc<AdminState>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays.
                tracing::warn!(error = %e, "admin accept failed");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONCURRENT {
            active.fetch_sub(1, Ordering::AcqRel);
            let busy = Response::text((503, "Service Unavailable"), "busy");
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = (&stream).write_all(&busy.encode(false));
            continue;
        }
        let guard = ActiveGuard(Arc::clone(&active));
        let state = Arc::clone(state);
        let spawned = thread::Builder::new()
            .name("hermod-admin-conn".to_owned())
            .spawn(move || {
                let _guard = guard;
                if let Err(e) = serve(stream, &state) {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start an admin connection thread");
        }
    }
}

/// Counts a connection being served; dropping it (even on panic) frees the slot.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one request head from `stream`, answers it, closes.
pub fn serve(stream: TcpStream, state: &AdminState) -> io::Result<()> {
    serve_within(stream, state, IO_TIMEOUT)
}

/// [`serve`] with `limit` for the whole request head (not per read: a client dribbling a byte
/// at a time must not hold one of the [`MAX_CONCURRENT`] slots for hours) and for the answer.
fn serve_within(mut stream: TcpStream, state: &AdminState, limit: Duration) -> io::Result<()> {
    stream.set_write_timeout(Some(limit))?;
    let deadline = std::time::Instant::now() + limit;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    let (response, head_only) = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(()); // closed before a whole request: nothing to answer
        }
        filled += n;
        match parse_head(&buf[..filled]) {
            Head::Complete { method, path } => {
                break (respond(&method, &path, state), method == "HEAD")
            }
            Head::Partial if filled < buf.len() => continue,
            Head::Partial | Head::TooLarge => {
                break (too_large(), false);
            }
            Head::Bad => break (Response::text((400, "Bad Request"), "bad request"), false),
        }
    };
    stream.write_all(&response.encode(head_only))?;
    stream.flush()
}

fn too_large() -> Response {
    Response::text(
        (431, "Request Header Fields Too Large"),
        "request head too large",
    )
}

/// The outcome of parsing the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Complete { method: String, path: String },
    Partial,
    TooLarge,
    Bad,
}

fn parse_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => match (req.method, req.path) {
            (Some(m), Some(p)) => Head::Complete {
                method: m.to_owned(),
                path: p.to_owned(),
            },
            _ => Head::Bad,
        },
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(httparse::Error::TooManyHeaders) => Head::TooLarge,
        Err(_) => Head::Bad,
    }
}

/// Routes one request. `path` may carry a query string, which is ignored.
pub fn respond(method: &str, path: &str, state: &AdminState) -> Response {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let known = matches!(path, "/healthz" | "/readyz" | "/metrics");
    if !known {
        return Response::text((404, "Not Found"), "not found");
    }
    if method != "GET" && method != "HEAD" {
        let mut r = Response::text((405, "Method Not Allowed"), "method not allowed");
        r.extra_headers = "Allow: GET, HEAD\r\n";
        return r;
    }
    match path {
        "/healthz" => Response::text((200, "OK"), "ok"),
        "/readyz" if (state.ready)() => Response::text((200, "OK"), "ready"),
        "/readyz" => Response::text((503, "Service Unavailable"), "not ready"),
        _ => {
            let mut body = String::with_capacity(4096);
            (state.render_metrics)(&mut body);
            Response {
                status: (200, "OK"),
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                extra_headers: "",
                body,
            }
        }
    }
}

/// Appends process figures read from /proc (absent where /proc is not there) and build info.
pub fn render_process(out: &mut String) {
    let mut w = Exposition::new(out);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status_field(&status, "VmRSS:") {
        w.gauge(&names::PROCESS_RESIDENT_MEMORY, kib.saturating_mul(1024));
    }
    if let Some(threads) = status_field(&status, "Threads:") {
        w.gauge(&names::PROCESS_THREADS, threads);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // Minus the descriptor read_dir itself holds open while listing.
        let open = (dir.count() as u64).saturating_sub(1);
        w.gauge(&names::PROCESS_OPEN_FDS, open);
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let Some(max) = max_open_files(&limits) {
        w.gauge(&names::PROCESS_MAX_FDS, max);
    }
    w.header(&names::BUILD_INFO);
    w.sample(&names::BUILD_INFO, &[&env!("CARGO_PKG_VERSION")], 1);
}

/// The first number after `key` in /proc/self/status (e.g. `VmRSS:   1234 kB` → 1234).
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The soft limit in the `Max open files` line of /proc/self/limits.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use std::net::{Shutdown, SocketAddr};
    use std::sync::atomic::AtomicBool;

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

    #[test]
    fn a_dribbled_head_is_cut_off_at_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let state = state(Arc::new(AtomicBool::new(true)));
            let started = std::time::Instant::now();
            let result = serve_within(stream, &state, Duration::from_millis(300));
            (result, started.elapsed())
        });
        let mut client = TcpStream::connect(addr).unwrap();
        // One byte every 50 ms: each read is well inside the limit, the whole head never is.
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: "
            .iter()
            .cycle()
            .take(200)
        {
            if client.write_all(&[*b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
            if server.is_finished() {
                break;
            }
        }
        let (result, took) = server.join().unwrap();
        assert!(result.is_err(), "{result:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
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
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
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
        let head = request(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n");
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
}
