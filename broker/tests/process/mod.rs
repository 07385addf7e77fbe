//! Harness for tests of the `hermod-broker` binary: start it on an ephemeral loopback port
//! against a real redis-server, talk the link protocol to it with a tiny blocking RESP3 client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hermod_core::link::{decode_push, LinkPush};
use hermod_core::resp::{encode_command, RespConn, RespEvent, RespLimits, Value};

/// Generous: the machine is small and shared.
pub const WAIT: Duration = Duration::from_secs(30);

/// A running `hermod-broker`.
pub struct BrokerProc {
    child: Child,
    /// The link listener it reported.
    pub link: SocketAddr,
    /// The admin listener it reported, if on.
    pub admin: Option<SocketAddr>,
    /// Its stderr, line by line.
    pub stderr: Receiver<String>,
}

impl BrokerProc {
    /// Starts the broker with `--listen 127.0.0.1:0 --redis URL` and `args`; waits for its
    /// ready line. (The child is waited for by `Drop`; a failed start panics the test.)
    #[allow(clippy::zombie_processes)]
    pub fn start(redis_url: &str, args: &[&str]) -> BrokerProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hermod-broker"))
            .args(["--listen", "127.0.0.1:0", "--redis", redis_url])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hermod-broker");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[broker] {line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("ready line");
            if let Some(rest) = line.split_once(" listening ").map(|(_, r)| r) {
                let field = |name: &str| {
                    rest.split_whitespace()
                        .find_map(|f| f.strip_prefix(name))
                        .map(str::to_owned)
                };
                let link = field("link=").unwrap().parse().unwrap();
                let admin = field("admin=").and_then(|a| a.parse().ok());
                return BrokerProc {
                    child,
                    link,
                    admin,
                    stderr: rx,
                };
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A link to it, after `HELLO 3`, once its engine is ready (INFO says `redis_up:1`).
    pub fn ready_link(&self) -> Link {
        self.ready_link_hello(&["HELLO", "3"])
    }

    /// As [`Self::ready_link`], presenting the link secret (`HELLO 3 AUTH hermod <secret>`).
    pub fn ready_link_with(&self, secret: &str) -> Link {
        self.ready_link_hello(&["HELLO", "3", "AUTH", "hermod", secret])
    }

    fn ready_link_hello(&self, hello: &[&str]) -> Link {
        let mut link = Link::connect(self.link);
        let hello = link.command(hello);
        assert_eq!(
            hello.map_get("server").and_then(Value::as_str),
            Some("hermod-broker")
        );
        let deadline = Instant::now() + WAIT;
        while !link.info().contains("redis_up:1") {
            assert!(Instant::now() < deadline, "engine never ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        link
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking link client: commands answered in order, pushes kept apart.
pub struct Link {
    stream: TcpStream,
    conn: RespConn,
    next_tag: u64,
    /// Pushes received, not yet taken.
    pushes: VecDeque<LinkPush>,
    /// Replies received, not yet taken, with their tags.
    replies: VecDeque<(u64, Value)>,
}

impl Link {
    pub fn connect(addr: SocketAddr) -> Link {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Link {
            stream,
            conn: RespConn::new(RespLimits::default()),
            next_tag: 0,
            pushes: VecDeque::new(),
            replies: VecDeque::new(),
        }
    }

    /// Sends a command and waits for its reply.
    pub fn command(&mut self, args: &[&str]) -> Value {
        let tag = self.next_tag;
        self.next_tag += 1;
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.conn.queue(&args, tag);
        let out = self.conn.output().to_vec();
        self.conn.consume_output(out.len());
        self.stream.write_all(&out).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            while let Some((t, value)) = self.replies.pop_front() {
                if t == tag {
                    return value;
                }
            }
            assert!(Instant::now() < deadline, "no reply to {args:?}");
            assert!(self.read_some(), "link closed");
        }
    }

    pub fn info(&mut self) -> String {
        self.command(&["INFO"]).as_str().unwrap().to_owned()
    }

    /// Reads what is there (up to the read timeout); false when the broker closed the link.
    pub fn read_some(&mut self) -> bool {
        let mut buf = [0u8; 64 << 10];
        match self.stream.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.conn.handle_input(&buf[..n]).unwrap();
                while let Some(event) = self.conn.poll_event() {
                    match event {
                        RespEvent::Reply { tag, value } => self.replies.push_back((tag, value)),
                        RespEvent::Push(v) => self.pushes.push_back(decode_push(v).unwrap()),
                    }
                }
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(_) => false,
        }
    }

    /// The next push, waiting for it.
    pub fn next_push(&mut self) -> LinkPush {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(p) = self.pushes.pop_front() {
                return p;
            }
            assert!(Instant::now() < deadline, "no push");
            assert!(self.read_some(), "link closed while waiting for a push");
        }
    }

    /// Waits until the broker closes the link.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.read_some() {
                return true;
            }
        }
        false
    }

    /// Writes raw bytes (for malformed-input tests).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Writes raw bytes until done or the broker closes the socket; how many were written.
    pub fn write_until_closed(&mut self, bytes: &[u8]) -> usize {
        let mut written = 0;
        for chunk in bytes.chunks(64 << 10) {
            match self.stream.write_all(chunk) {
                Ok(()) => written += chunk.len(),
                Err(_) => break,
            }
        }
        written
    }
}

/// Encodes one command (for pipelining by hand).
pub fn encode(args: &[&str]) -> BytesMut {
    let mut out = BytesMut::new();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode_command(&mut out, &args);
    out
}
