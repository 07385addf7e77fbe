//! The `hermod-proxy` child process: [`Proxy`] starts the real binary on ephemeral loopback
//! ports, reads the addresses it reports, keeps its log, and kills it on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hermod_core::testkit::RedisServer;

use super::{http_get, now_unix, tcp, Client, Engine, SECRET, TIMEOUT};

/// A running `hermod-proxy` child process and the addresses it reported.
pub struct Proxy {
    /// The child; killed (SIGKILL) and reaped on drop unless it already exited.
    child: Child,
    /// Client listener, parsed from the `listening client=... admin=...` log line.
    pub client: SocketAddr,
    /// Admin HTTP listener, from the same line.
    pub admin: SocketAddr,
    /// Server API listener, from the same line (`None`: `api=off`).
    pub api: Option<SocketAddr>,
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
                            let _ = tx.send((c, a, field_addr(&line, "api")));
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
            api: None,
            log,
            jwt,
            exited: None,
            redis: None,
        };
        match rx.recv_timeout(TIMEOUT) {
            Ok((c, a, api)) => {
                proxy.client = c;
                proxy.admin = a;
                proxy.api = api;
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

    /// A valid token for `user` (one hour) that grants joining and publishing to every room
    /// (`"*"`): the harness's tests are about other things. Tests of permissions mint their own
    /// grants ([`mint_claims`](super::mint_claims)) and connect with [`Proxy::connect_token`].
    pub fn token(&self, user: &str) -> String {
        let claims = hermod_core::jwt::Claims {
            rooms: vec!["*".into()],
            publish: vec!["*".into()],
            ..hermod_core::jwt::Claims::new(user, now_unix() + 3600)
        };
        super::mint_claims(SECRET, &claims)
    }

    /// Connects with `token` on `device` and reads the welcome of `user`.
    pub fn connect_token(&self, token: &str, user: &str, device: &str) -> Client {
        let url = format!("ws://{}/ws?token={token}&device={device}", self.client);
        let stream = tcp(self.client);
        let mut client = Client::handshake(&url, stream)
            .unwrap_or_else(|e| panic!("handshake {url}: {e}\nproxy log:\n{}", self.log()));
        client.expect_welcome(user, device);
        client
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
