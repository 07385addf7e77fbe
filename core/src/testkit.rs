//! Test harness (feature `testkit`): real `redis-server` processes and Sentinel topologies on
//! ephemeral loopback ports, each in its own temp dir, killed and cleaned up on drop.
//!
//! For tests only: it blocks, spawns processes and reads the clock.
//!
//! ```no_run
//! use hermod_core::testkit::{RedisServer, SentinelSet};
//! let redis = RedisServer::start(&["--requirepass", "pw"]).expect("redis-server");
//! let url = redis.url(); // redis://127.0.0.1:PORT
//! let mut set = SentinelSet::start("m", 1, 3).expect("topology");
//! set.wait_ready(std::time::Duration::from_secs(20)).expect("sentinels agree");
//! set.kill_master();
//! ```

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::resp::{encode_command, RespConn, RespEvent, RespLimits, Value};

/// How long a started process gets to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at finding a free port (another process may grab the one we picked).
const PORT_ATTEMPTS: usize = 5;

/// A free loopback port: bind port 0, note the port, release it.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fresh temp dir, removed by [`TempDir`]'s drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("hermod-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `redis-server` (or sentinel) process on `127.0.0.1:port`.
#[derive(Debug)]
pub struct RedisServer {
    /// The running process, if any.
    child: Option<Child>,
    /// Its port (kept across restarts).
    port: u16,
    /// Extra command-line config (`--requirepass pw`, `--replicaof ...`).
    args: Vec<String>,
    /// Sentinel config file, for sentinels (started with `FILE --sentinel`).
    sentinel_conf: Option<PathBuf>,
    /// Working dir: logs, config; removed on drop.
    dir: TempDir,
}

impl RedisServer {
    /// Starts a `redis-server` with no persistence on a free port, plus `args`.
    pub fn start(args: &[&str]) -> io::Result<RedisServer> {
        let mut last = io::Error::other("no attempt");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match Self::start_on(port, args) {
                Ok(server) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Starts a `redis-server` on `port`.
    pub fn start_on(port: u16, args: &[&str]) -> io::Result<RedisServer> {
        let mut server = RedisServer {
            child: None,
            port,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            sentinel_conf: None,
            dir: TempDir::new("redis")?,
        };
        server.restart()?;
        Ok(server)
    }

    /// Starts a sentinel watching `master_port` under `name` (quorum `quorum`).
    fn start_sentinel(name: &str, master_port: u16, quorum: usize) -> io::Result<RedisServer> {
        Self::start_sentinel_with(name, master_port, quorum, "")
    }

    /// Starts a sentinel like [`SentinelSet`]'s, with `extra` appended to its config file
    /// (after the `sentinel monitor` line), e.g. `requirepass S\nsentinel auth-pass NAME M\n`.
    pub fn start_sentinel_with(
        name: &str,
        master_port: u16,
        quorum: usize,
        extra: &str,
    ) -> io::Result<RedisServer> {
        let mut last = io::Error::other("no attempt");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let dir = TempDir::new("sentinel")?;
            let conf = dir.0.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 5000\n\
                     sentinel parallel-syncs {name} 1\n{extra}",
                    dir = dir.0.display()
                ),
            )?;
            let mut server = RedisServer {
                child: None,
                port,
                args: Vec::new(),
                sentinel_conf: Some(conf),
                dir,
            };
            match server.restart() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// The process's working dir (its log is `server.log` there).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILLs the process (no-op if stopped) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the process on the same port with the same config, and waits for PING.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let log = self.dir.0.join("server.log");
        let mut cmd = Command::new("redis-server");
        if let Some(conf) = &self.sentinel_conf {
            cmd.arg(conf).arg("--sentinel");
        } else {
            cmd.args(["--save", "", "--appendonly", "no"]);
            cmd.arg("--dir").arg(&self.dir.0);
        }
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn()?);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if !self.is_running() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(io::Error::other(format!("redis-server exited: {log}")));
            }
            if ping(&self.addr()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "redis-server did not answer PING",
        ))
    }

    /// Runs one command (RESP3, no AUTH) and returns its reply; blocking, for tests.
    pub fn command(&self, args: &[&str]) -> io::Result<Value> {
        command(&self.addr(), args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether something on `addr` answers a RESP command (any reply, even an error).
fn ping(addr: &str) -> bool {
    command(addr, &["PING"]).is_ok()
}

/// Sends `HELLO 3` and one command to `addr`, blocking; returns the command's reply.
pub fn command(addr: &str, args: &[&str]) -> io::Result<Value> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = BytesMut::new();
    encode_command(&mut out, &[b"HELLO", b"3"]);
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode_command(&mut out, &args);
    stream.write_all(&out)?;
    let mut conn = RespConn::new(RespLimits::default());
    conn.queue(&[b"HELLO"], 0);
    conn.queue(&[b"X"], 1);
    let mut buf = [0u8; 16 << 10];
    loop {
        while let Some(event) = conn.poll_event() {
            if let RespEvent::Reply { tag: 1, value } = event {
                return Ok(value);
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        conn.handle_input(&buf[..n]).map_err(io::Error::other)?;
    }
}

/// A master, its replicas and its sentinels, all on loopback.
#[derive(Debug)]
pub struct SentinelSet {
    /// The master's name in the sentinels' config.
    name: String,
    /// The initial master.
    pub master: RedisServer,
    /// Its replicas.
    pub replicas: Vec<RedisServer>,
    /// The sentinels (quorum: a majority).
    pub sentinels: Vec<RedisServer>,
}

impl SentinelSet {
    /// Starts a master, `replicas` replicas of it, and `sentinels` sentinels monitoring it as
    /// `name` (down-after 1 s, failover-timeout 5 s). Call [`SentinelSet::wait_ready`] before
    /// killing anything.
    pub fn start(name: &str, replicas: usize, sentinels: usize) -> io::Result<SentinelSet> {
        let master = RedisServer::start(&[])?;
        let replica_of = master.port().to_string();
        let replicas = (0..replicas)
            .map(|_| RedisServer::start(&["--replicaof", "127.0.0.1", &replica_of]))
            .collect::<io::Result<Vec<_>>>()?;
        let quorum = sentinels / 2 + 1;
        let sentinels = (0..sentinels)
            .map(|_| RedisServer::start_sentinel(name, master.port(), quorum))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(SentinelSet {
            name: name.to_owned(),
            master,
            replicas,
            sentinels,
        })
    }

    /// The master's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sentinels' `host:port`s.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::addr).collect()
    }

    /// Waits until every sentinel knows every replica and the other sentinels (so a failover
    /// can happen), and the replicas are in sync.
    pub fn wait_ready(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "sentinels not ready",
        ))
    }

    fn is_ready(&self) -> bool {
        let count = |s: &RedisServer, what: &str| {
            s.command(&["SENTINEL", what, &self.name])
                .ok()
                .and_then(|v| v.as_array().map(<[Value]>::len))
                .unwrap_or(0)
        };
        let synced = self.replicas.iter().all(|r| {
            r.command(&["INFO", "replication"])
                .ok()
                .and_then(|v| v.as_str().map(|s| s.contains("master_link_status:up")))
                .unwrap_or(false)
        });
        synced
            && self.sentinels.iter().all(|s| {
                count(s, "replicas") >= self.replicas.len()
                    && count(s, "sentinels") + 1 >= self.sentinels.len()
            })
    }

    /// SIGKILLs the current initial master.
    pub fn kill_master(&mut self) {
        self.master.kill();
    }

    /// What the first answering sentinel says the master is (`host:port`).
    pub fn current_master(&self) -> Option<String> {
        self.sentinels.iter().find_map(|s| {
            let reply = s
                .command(&["SENTINEL", "get-master-addr-by-name", &self.name])
                .ok()?;
            match reply.as_array()? {
                [host, port] => Some(format!("{}:{}", host.as_str()?, port.as_str()?)),
                _ => None,
            }
        })
    }
}

/// Builds binary `bin` of workspace package `package` with the cargo running the tests (cargo
/// only hands a test the binaries of its own package, `CARGO_BIN_EXE_*`) and returns its path.
/// `manifest_dir` is the calling crate's `CARGO_MANIFEST_DIR`; the workspace is its parent.
/// Panics when the build fails: the test cannot run without the binary.
pub fn workspace_binary(manifest_dir: &str, package: &str, bin: &str) -> PathBuf {
    let workspace = Path::new(manifest_dir)
        .parent()
        .expect("a workspace crate's manifest dir has a parent")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(["build", "-p", package, "--bin", bin])
        .current_dir(&workspace)
        .status()
        .unwrap_or_else(|e| panic!("running `{cargo} build -p {package}`: {e}"));
    assert!(
        status.success(),
        "`cargo build -p {package}` failed: the test needs {bin}"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let path = target.join("debug").join(bin);
    assert!(path.exists(), "no {bin} binary at {}", path.display());
    path
}
