//! The harness every end-to-end test shares: start the real `hermod-proxy` binary on ephemeral
//! loopback ports, talk to it with tungstenite's blocking *client* (code no one on this project
//! wrote), and read its frames as JSON.
//!
//! Every wait is bounded by [`TIMEOUT`]; nothing asserts on timing beyond "within the timeout".
//! A [`Proxy`] kills its child on drop, so a failing test never leaks a process.

#![allow(dead_code)]

pub mod broker;
pub mod python;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hermod_core::testkit::RedisServer;
use serde_json::{json, Value};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// Upper bound for every single wait in these tests (a loaded 2-core machine can be slow).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The HS256 secret the JWT-mode proxies are started with.
pub const SECRET: &str = "e2e-test-secret-0123456789";

/// The storage engine a test's proxy runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The embedded in-memory engine (no flags).
    Memory,
    /// The Redis engine on a `redis-server` of its own, started for the proxy and killed with it.
    Redis,
}

/// Generates, for each named `fn NAME(engine: Engine)`, the tests `memory::NAME` and
/// `redis::NAME`: the same scenario on both engines (`cargo test redis::` runs the Redis half).
#[allow(unused_macros)]
macro_rules! engine_tests {
    ($($name:ident),+ $(,)?) => {
        mod memory {
            $( #[test] fn $name() { super::$name($crate::common::Engine::Memory) } )+
        }
        mod redis {
            $( #[test] fn $name() { super::$name($crate::common::Engine::Redis) } )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use engine_tests;

/// A running `hermod-proxy` child process and the addresses it reported.
pub struct Proxy {
    /// The child; killed (SIGKILL) and reaped on drop unless it already exited.
    child: Child,
    /// Client listener, parsed from the `listening client=... admin=...` log line.
    pub client: SocketAddr,
    /// Admin HTTP listener, from the same line.
    pub admin: SocketAddr,
    /// Every stderr line so far, kept for failure messages; a thread keeps draining the pipe so
    /// the child never blocks on a full pipe.
    log: Arc<Mutex<Vec<String>>>,
    /// Whether clients authenticate with a JWT (else `?user=`).
    jwt: bool,
    /// Set once the child has been reaped, so drop does not kill a recycled pid.
    exited: Option<ExitStatus>,
    /// The proxy's own Redis for [`Engine::Redis`]; declared after `child` so it is dropped
    /// after the proxy is killed.
    redis: Option<RedisServer>,
}

/// Removes ANSI colour escapes (`ESC [ ... letter`) a log formatter may add.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads `key=ADDR` from a log line (the value may be quoted).
fn field_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = line[start..].trim_start_matches('"');
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl Proxy {
    /// Starts the proxy in JWT mode with [`SECRET`] and `extra` flags.
    pub fn start_jwt(extra: &[&str]) -> Proxy {
        Proxy::start_jwt_on(Engine::Memory, extra)
    }

    /// Starts the proxy with `--auth none` (identity from `?user=`) and `extra` flags.
    pub fn start_open(extra: &[&str]) -> Proxy {
        Proxy::start_open_on(Engine::Memory, extra)
    }

    /// [`Proxy::start_jwt`] on `engine`.
    pub fn start_jwt_on(engine: Engine, extra: &[&str]) -> Proxy {
        let mut args = vec!["--jwt-secret", SECRET];
        args.extend_from_slice(extra);
        Proxy::start_on(engine, &args, true)
    }

    /// [`Proxy::start_open`] on `engine`.
    pub fn start_open_on(engine: Engine, extra: &[&str]) -> Proxy {
        let mut args = vec!["--auth", "none"];
        args.extend_from_slice(extra);
        Proxy::start_on(engine, &args, false)
    }

    /// With [`Engine::Redis`]: starts a `redis-server` for this proxy, passes `--redis`, and
    /// waits until `/readyz` says the proxy reaches it.
    fn start_on(engine: Engine, args: &[&str], jwt: bool) -> Proxy {
        match engine {
            Engine::Memory => Proxy::spawn(args, jwt),
            Engine::Redis => {
                let server = RedisServer::start(&[]).expect("start redis-server");
                let url = server.url();
                let mut all = vec!["--redis", url.as_str()];
                all.extend_from_slice(args);
                let mut proxy = Proxy::spawn(&all, jwt);
                proxy.redis = Some(server);
                proxy.wait_ready(TIMEOUT);
                proxy
            }
        }
    }

    /// Waits until `/readyz` answers 200; panics with the log after `limit`.
    pub fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.admin_get("/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "not ready within {limit:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The proxy's own Redis ([`Engine::Redis`] only).
    pub fn redis(&mut self) -> Option<&mut RedisServer> {
        self.redis.as_mut()
    }

    /// Starts the proxy with exactly these flags (plus the harness's listen/admin/workers
    /// flags); `jwt` tells how clients authenticate.
    pub fn spawn(extra: &[&str], jwt: bool) -> Proxy {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hermod-proxy"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--workers",
            "2",
        ])
        .args(extra)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn hermod-proxy");
        let stderr = child.stderr.take().expect("child stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if line.contains("listening") {
                    if let (Some(c), Some(a)) =
                        (field_addr(&line, "client"), field_addr(&line, "admin"))
                    {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send((c, a));
                        }
                    }
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut proxy = Proxy {
            child,
            client: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            jwt,
            exited: None,
            redis: None,
        };
        match rx.recv_timeout(TIMEOUT) {
            Ok((c, a)) => {
                proxy.client = c;
                proxy.admin = a;
            }
            Err(_) => panic!(
                "hermod-proxy {extra:?} printed no `listening client=.. admin=..` line within \
                 {TIMEOUT:?}; stderr:\n{}",
                proxy.log()
            ),
        }
        proxy
    }

    /// Everything the child wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A valid token for `user` (one hour).
    pub fn token(&self, user: &str) -> String {
        mint(SECRET, user, now_unix() + 3600)
    }

    /// `ws://ADDR/ws?...` identifying `user` on `device` the way this proxy expects.
    pub fn ws_url(&self, user: &str, device: &str) -> String {
        let who = if self.jwt {
            format!("token={}", self.token(user))
        } else {
            format!("user={user}")
        };
        format!("ws://{}/ws?{who}&device={device}", self.client)
    }

    /// Connects `user` on device `default` and reads the welcome.
    pub fn connect(&self, user: &str) -> Client {
        self.connect_device(user, "default")
    }

    /// Connects `user` on `device` and reads the welcome.
    pub fn connect_device(&self, user: &str, device: &str) -> Client {
        let url = self.ws_url(user, device);
        let stream = tcp(self.client);
        let mut client = Client::handshake(&url, stream)
            .unwrap_or_else(|e| panic!("handshake {url}: {e}\nproxy log:\n{}", self.log()));
        client.expect_welcome(user, device);
        client
    }

    /// Sends SIGTERM to the child (through `kill(1)`: no unsafe code here).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `limit` for the child to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path` on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// The value of the first metric line (no `#`) whose name contains every part of `parts`, if
    /// any; summed over label sets.
    pub fn metric_sum(&self, parts: &[&str]) -> Option<f64> {
        let (status, body) = self.admin_get("/metrics");
        assert_eq!(status, 200, "/metrics status; body:\n{body}");
        let mut sum = None;
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if parts.iter().all(|p| name.contains(p)) {
                if let Ok(v) = value.trim().parse::<f64>() {
                    *sum.get_or_insert(0.0) += v;
                }
            }
        }
        sum
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// An HS256 token, minted by the project's own `hermod_core::jwt::mint`.
pub fn mint(secret: &str, sub: &str, exp: u64) -> String {
    hermod_core::jwt::mint(secret.as_bytes(), sub, exp)
}

/// A blocking loopback connection with read/write timeouts and no Nagle delay.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to proxy");
    set_timeouts(&stream);
    stream
}

/// Read and write timeouts so no test can hang on a socket.
pub fn set_timeouts(stream: &TcpStream) {
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
}

/// Client-side WebSocket config: a small read buffer so thousands of clients stay cheap.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// What the HTTP upgrade produced when it was refused: the status code, or an I/O-level failure.
pub fn handshake_status(url: &str, addr: SocketAddr) -> Result<(), String> {
    handshake_status_with(url, addr, &[])
}

/// Like [`handshake_status`], with extra request headers.
pub fn handshake_status_with(
    url: &str,
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<(), String> {
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("request");
    for (k, v) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    match tungstenite::client::client_with_config(request, tcp(addr), Some(client_config())) {
        Ok(_) => Ok(()),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(resp.status().as_u16().to_string())
        }
        Err(e) => Err(format!("handshake error: {e}")),
    }
}

/// One WebSocket client connection.
pub struct Client {
    /// The tungstenite client over a blocking std stream with read timeouts.
    pub ws: WebSocket<TcpStream>,
    /// The welcome frame the server sent first.
    pub welcome: Value,
}

/// How a connection ended, as seen by the client.
#[derive(Debug)]
pub enum Ending {
    /// A close frame with this code and reason.
    Close(u16, String),
    /// A close frame without a code.
    CloseNoCode,
    /// The connection ended without a close frame (EOF or reset): the error text.
    Dropped(String),
}

impl Client {
    /// Runs the client handshake over `stream`.
    pub fn handshake(url: &str, stream: TcpStream) -> Result<Client, String> {
        match tungstenite::client::client_with_config(url, stream, Some(client_config())) {
            Ok((ws, _)) => Ok(Client {
                ws,
                welcome: Value::Null,
            }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                Err(format!("HTTP {}", resp.status()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads the first frame and checks it is the welcome for `user`/`device`.
    pub fn expect_welcome(&mut self, user: &str, device: &str) {
        let w = self.recv();
        assert_eq!(w["op"], "welcome", "first frame: {w}");
        assert_eq!(w["user"], user, "welcome: {w}");
        assert_eq!(w["device"], device, "welcome: {w}");
        assert!(w.get("session").is_some(), "welcome without session: {w}");
        self.welcome = w;
    }

    /// Sends one JSON frame.
    pub fn send_json(&mut self, v: &Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .unwrap_or_else(|e| panic!("send {v}: {e}"));
    }

    /// Sends a raw text frame.
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .unwrap_or_else(|e| panic!("send text: {e}"));
    }

    /// The next data message, or how the connection ended; `None` after [`TIMEOUT`] of silence.
    pub fn next(&mut self, limit: Duration) -> Option<Result<Message, Ending>> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = self.ws.get_ref().set_read_timeout(Some(left));
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => {
                    return Some(Err(Ending::Close(u16::from(f.code), f.reason.to_string())))
                }
                Ok(Message::Close(None)) => return Some(Err(Ending::CloseNoCode)),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(m) => return Some(Ok(m)),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Some(Err(Ending::Dropped(e.to_string()))),
            }
        }
    }

    /// The next text frame as JSON; panics on timeout, close or a non-text message.
    pub fn recv(&mut self) -> Value {
        match self.next(TIMEOUT) {
            Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str())
                .unwrap_or_else(|e| panic!("server sent non-JSON text {t:?}: {e}")),
            Some(Ok(other)) => panic!("expected a text frame, got {other:?}"),
            Some(Err(end)) => panic!("expected a text frame, connection ended: {end:?}"),
            None => panic!("no frame within {TIMEOUT:?}"),
        }
    }

    /// The next frame, which must have this `op`.
    pub fn recv_op(&mut self, op: &str) -> Value {
        let v = self.recv();
        assert_eq!(v["op"], op, "expected op {op}, got {v}");
        v
    }

    /// Asserts nothing arrives for `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        if let Some(got) = self.next(quiet) {
            panic!("expected no frame, got {got:?}");
        }
    }

    /// Reads until the connection ends; data frames before the end are returned too.
    pub fn read_to_end(&mut self) -> (Vec<Value>, Ending) {
        let mut frames = Vec::new();
        loop {
            match self.next(TIMEOUT) {
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str(t.as_str()).expect("JSON frame"))
                }
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                Some(Err(end)) => return (frames, end),
                None => panic!(
                    "connection did not end within {TIMEOUT:?} (after {} frames)",
                    frames.len()
                ),
            }
        }
    }

    /// Waits for the close frame (skipping data) and returns its code and reason.
    pub fn expect_close(&mut self) -> (u16, String) {
        match self.read_to_end().1 {
            Ending::Close(code, reason) => (code, reason),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// `send` to `to`; returns the `sent` answer's id.
    pub fn send_to(&mut self, to: &str, cid: &str, data: Value) -> String {
        self.send_json(&json!({"op":"send","to":to,"cid":cid,"data":data}));
        let sent = self.recv_op("sent");
        assert_eq!(sent["cid"], cid, "sent answer: {sent}");
        id_of(&sent)
    }

    /// Reads `n` frames that must be direct messages.
    pub fn recv_msgs(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.recv_op("msg")).collect()
    }

    /// Acks `id`.
    pub fn ack(&mut self, id: &str) {
        self.send_json(&json!({"op":"ack","id":id}));
    }

    /// Closes cleanly and waits for the server's close reply (or the end of the stream).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(_) => return,
            }
        }
    }

    /// Round trip through the broker: a `send` to a user no test reads, whose `sent` answer
    /// means every request this session made before it has been taken (acks have no answer
    /// of their own). Returns the frames that arrived before the `sent`.
    pub fn barrier(&mut self, cid: &str) -> Vec<Value> {
        self.send_json(&json!({"op":"send","to":"barrier-sink","cid":cid,"data":"barrier"}));
        let mut others = Vec::new();
        loop {
            let v = self.recv();
            if v["op"] == "sent" && v["cid"] == cid {
                return others;
            }
            others.push(v);
        }
    }
}

/// The `id` field of a frame as a string.
pub fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("frame without string id: {v}"))
        .to_owned()
}

/// A minimal HTTP/1.1 GET: (status, body). Reads until EOF or Content-Length is satisfied.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tcp(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading {path}: {e} after {} bytes", buf.len()),
        }
        if let Some(done) = response_complete(&buf) {
            buf.truncate(done);
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response to {path}: {text:?}"));
    (status, body.to_owned())
}

/// Length of a complete response with a Content-Length, if `buf` holds one.
fn response_complete(buf: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(buf);
    let head_end = text.find("\r\n\r\n")? + 4;
    let len = text[..head_end].lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    })?;
    (buf.len() >= head_end + len).then_some(head_end + len)
}

/// A masked client frame: FIN set, `opcode`, `payload` (any length).
pub fn raw_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame_with(true, true, opcode, payload)
}

/// A client frame with the FIN and MASK bits as given (a client must mask: unmasked is a
/// protocol error).
pub fn raw_frame_with(fin: bool, masked: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}
