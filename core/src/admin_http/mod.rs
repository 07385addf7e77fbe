//! The admin HTTP listener of both server binaries: `GET /healthz` (200 while the process
//! runs), `/readyz` (200 when it can serve, else 503) and `/metrics` (Prometheus text); what
//! `/readyz` and `/metrics` report comes from the binary ([`AdminState`]). docs/operations.md,
//! "Health endpoints", says what each answer means for each binary.
//!
//! One small HTTP/1.1 server on mio ([`server::AdminLoop`], thread `hermod-admin`): httparse
//! for heads, keep-alive, pipelining (answered in order, one at a time), bounded heads
//! ([`MAX_HEAD`]) and per-connection deadlines ([`IO_TIMEOUT`]). No peer can hold it: idle or
//! dribbling connections cost a slot of [`server::MAX_CONNECTIONS`] until their deadline, and a
//! full table closes the connection nearest its deadline to make room, so `/healthz` is served
//! whatever other admin clients do. Connections closed by a limit are counted in
//! `hermod_admin_connections_closed_total{reason}` ([`render_process`]).
//!
//! - `server.rs`: the mio loop and one connection's buffers.
//! - This file: parsing a head and routing it to an answer.

mod server;
#[cfg(test)]
mod tests;

use std::io;
use std::net::TcpListener;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::metrics::{names, Exposition};

/// Largest request head accepted (request line plus headers); larger is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers parsed in a request head; more is answered 431.
const MAX_HEADERS: usize = 32;
/// How long a client may take to send a whole request head (from its connect, or from the end of
/// the previous answer on a kept-alive connection), or to take an answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub use server::MAX_CONNECTIONS;

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

    /// The bytes on the wire; `head_only` for `HEAD` (same headers, no body); `keep_alive`
    /// says whether the connection stays open for another request.
    pub fn encode(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: {connection}\r\n\r\n",
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
    spawn_within(listener, state, IO_TIMEOUT)
}

/// [`spawn`] with `limit` as the per-connection deadline.
fn spawn_within(
    listener: TcpListener,
    state: AdminState,
    limit: Duration,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let admin = server::AdminLoop::new(mio::net::TcpListener::from_std(listener), state, limit)?;
    thread::Builder::new()
        .name("hermod-admin".to_owned())
        .spawn(move || admin.run())
}

fn too_large() -> Response {
    Response::text(
        (431, "Request Header Fields Too Large"),
        "request head too large",
    )
}

/// The outcome of parsing the bytes an admin connection received so far ([`parse_head`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    Complete {
        method: String,
        path: String,
        /// Bytes of the head, consumed from the buffer.
        len: usize,
        /// The connection may carry another request: HTTP/1.1, no `Connection: close`, and no
        /// body (a request with one is answered and closed, its body never read).
        keep_alive: bool,
    },
    Partial,
    TooLarge,
    Bad,
}

/// Parses the request head at the start of `bytes` (at most 32 headers; the server holds at
/// most [`MAX_HEAD`] bytes). Pure: the admin server's only parser of peer input, and a fuzz
/// target (`proxy/fuzz`, `admin_head`).
pub fn parse_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => match (req.method, req.path) {
            (Some(m), Some(p)) => {
                let keep_alive = req.version == Some(1)
                    && req.headers.iter().all(|h| {
                        let name = h.name;
                        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                        !(name.eq_ignore_ascii_case("connection") && value.contains("close")
                            || name.eq_ignore_ascii_case("transfer-encoding")
                            || name.eq_ignore_ascii_case("content-length") && value.trim() != "0")
                    });
                Head::Complete {
                    method: m.to_owned(),
                    path: p.to_owned(),
                    len,
                    keep_alive,
                }
            }
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
    let closed = &names::ADMIN_CONNECTIONS_CLOSED;
    w.header(closed);
    for (reason, n) in server::CLOSED_REASONS.iter().zip(&server::CLOSED) {
        w.sample(
            closed,
            &[reason],
            n.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
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
