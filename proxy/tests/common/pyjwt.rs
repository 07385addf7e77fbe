//! Tokens, keys and JWKS documents made by PyJWT and `cryptography` (`tests/python/jwt_tool.py`),
//! a raw upgrade that returns the refusal's text, and a Python `http.server` serving a folder.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::tcp;

/// Runs `jwt_tool.py` with `args`; its stdout, trimmed. Panics with its output on failure (exit
/// 3: PyJWT or cryptography is missing).
pub fn jwt_tool(args: &[&str]) -> String {
    let script = format!("{}/tests/python/jwt_tool.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    assert!(
        out.status.success(),
        "jwt_tool.py {args:?} failed ({:?}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A PyJWT token: `alg` HS256 with a secret, or RS256/ES256 with a private key file.
pub fn pyjwt(alg: &str, key: &str, claims: &serde_json::Value, kid: Option<&str>) -> String {
    let claims = claims.to_string();
    let mut args = vec!["mint", alg, key, claims.as_str()];
    args.extend(kid);
    jwt_tool(&args)
}

/// A temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("hermod-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// The path of `file` in the folder, as a string.
    pub fn file(&self, file: &str) -> String {
        self.0.join(file).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A folder of fresh key pairs from `jwt_tool.py keys`: `rsa1`, `rsa2`, `ec1`, `ec2`, each as
/// `NAME.pem` (private) and `NAME.pub`.
pub fn key_pairs(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    jwt_tool(&["keys", &dir.file("")]);
    dir
}

/// Sends a WebSocket upgrade for `target` with `headers` and returns the whole response (status
/// line, head and body) as text: a refusal's reason is in its body.
pub fn raw_upgrade(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> String {
    let mut s = tcp(addr);
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write upgrade");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // A refusal closes the connection; an upgrade stays open: stop at the end of a 101 head.
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.starts_with(b"HTTP/1.1 101") && buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// [`raw_upgrade`] of `/ws?token=TOKEN`.
pub fn upgrade_with_token(addr: SocketAddr, token: &str) -> String {
    raw_upgrade(addr, &format!("/ws?token={token}"), &[])
}

/// The status code of a response from [`raw_upgrade`].
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// Python's `http.server` serving a folder on a loopback port; killed on drop.
pub struct FileServer {
    child: Child,
    pub addr: SocketAddr,
}

impl FileServer {
    pub fn start(dir: &Path) -> FileServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("http.server banner");
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in http.server's banner: {line:?}"));
        FileServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
