//! Plain HTTP on the WebSocket endpoints, end to end: what `curl`, a load balancer's probe or a
//! browser typing the URL gets instead of an upgrade. The requests are made by `curl` when it is
//! installed, else by Python's standard `http.client` (clients no one on this project wrote);
//! garbage and broken upgrades go over a raw socket. Afterwards the same server still serves the
//! Python `websockets` client.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{python, tcp, Proxy, SECRET};

/// One HTTP answer as a client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names lowercased, values trimmed, in order.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    /// Parses `HTTP/1.1 NNN Reason\r\nName: value\r\n...\r\n\r\nbody`.
    fn parse(raw: &str) -> Answer {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {raw:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn curl_installed() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes one request with `curl` (or, without curl, Python's `http.client`).
fn request(proxy: &Proxy, method: &str, path: &str) -> Answer {
    let url = format!("http://{}{path}", proxy.client);
    let out = if curl_installed() {
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--max-time", "10"]);
        match method {
            // `-X HEAD` would wait for a body: `--head` knows there is none.
            "HEAD" => cmd.arg("--head"),
            "GET" => cmd.arg("--include"),
            other => cmd.args(["--include", "--data", "ping", "-X", other]),
        };
        cmd.arg(&url).output()
    } else {
        Command::new("python3")
            .args(["-c", PY_REQUEST, &proxy.client.to_string(), method, path])
            .output()
    };
    let out = out.unwrap_or_else(|e| panic!("cannot run the HTTP client: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{method} {url} failed ({:?}): {stdout}\n{}\nproxy log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    Answer::parse(&stdout)
}

/// `python3 -c PY_REQUEST HOST:PORT METHOD PATH`: the answer printed as it came on the wire.
const PY_REQUEST: &str = r#"
import http.client, sys
host, port = sys.argv[1].rsplit(":", 1)
method, path = sys.argv[2], sys.argv[3]
conn = http.client.HTTPConnection(host, int(port), timeout=10)
conn.request(method, path, body=None if method in ("GET", "HEAD") else b"ping")
r = conn.getresponse()
head = "HTTP/1.1 %d %s\r\n" % (r.status, r.reason)
head += "".join("%s: %s\r\n" % kv for kv in r.getheaders())
sys.stdout.write(head + "\r\n" + r.read().decode())
"#;

/// Sends `bytes` on a raw connection and reads until the proxy closes it.
fn raw(proxy: &Proxy, bytes: &[u8]) -> Answer {
    let mut stream = tcp(proxy.client);
    stream.write_all(bytes).expect("send");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("no answer and close: {e}; log:\n{}", proxy.log()));
    Answer::parse(&String::from_utf8_lossy(&answer))
}

fn assert_426(a: &Answer) {
    assert_eq!(a.status, 426, "{a:?}");
    assert_eq!(a.header("upgrade"), Some("websocket"), "{a:?}");
    assert_eq!(a.header("connection"), Some("close"), "{a:?}");
    assert_eq!(a.header("sec-websocket-version"), Some("13"), "{a:?}");
}

#[test]
fn plain_requests_get_http_answers_and_websockets_still_work() {
    let proxy = Proxy::start_jwt(&["--echo-path", "/echo"]);

    let get = request(&proxy, "GET", "/ws");
    assert_426(&get);
    assert!(get.body.contains("/ws"), "{get:?}");
    assert_eq!(
        get.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    let echo = request(&proxy, "GET", "/echo?x=1");
    assert_426(&echo);
    assert!(echo.body.contains("/echo"), "{echo:?}");

    let head = request(&proxy, "HEAD", "/ws");
    assert_426(&head);
    assert_eq!(head.body, "", "{head:?}");

    let post = request(&proxy, "POST", "/ws");
    assert_eq!(post.status, 405, "{post:?}");
    assert_eq!(post.header("allow"), Some("GET"), "{post:?}");

    let nope = request(&proxy, "GET", "/nope");
    assert_eq!(nope.status, 404, "{nope:?}");

    // Each answer is counted under its own status.
    let metrics = proxy.admin_get("/metrics").1;
    for (status, n) in [("426", 3), ("405", 1), ("404", 1)] {
        let line = format!("hermod_handshakes_rejected_total{{status=\"{status}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line}{metrics}");
    }

    // The same server still upgrades a client no one here wrote, and the harness's client.
    python::run_check("ws_check.py", &[&proxy.client.to_string(), SECRET], &proxy);
    proxy.connect("alice").close();
}

#[test]
fn garbage_and_broken_upgrades_get_400() {
    let proxy = Proxy::start_jwt(&[]);

    let garbage = raw(&proxy, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n");
    assert_eq!(garbage.status, 400, "{garbage:?}");
    assert!(garbage.body.contains("malformed"), "{garbage:?}");

    let upgrade = |version: &str, key: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        )
    };
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let version = raw(&proxy, upgrade("8", key).as_bytes());
    assert_eq!(version.status, 400, "{version:?}");
    assert_eq!(version.header("sec-websocket-version"), Some("13"));
    assert!(
        version.body.contains("Sec-WebSocket-Version"),
        "{version:?}"
    );
    let bad_key = raw(&proxy, upgrade("13", "not-a-key").as_bytes());
    assert_eq!(bad_key.status, 400, "{bad_key:?}");
    assert!(bad_key.body.contains("Sec-WebSocket-Key"), "{bad_key:?}");

    // A well-formed upgrade still reaches authentication: 401 without a token.
    let no_token = raw(&proxy, upgrade("13", key).as_bytes());
    assert_eq!(no_token.status, 401, "{no_token:?}");
    proxy.connect("bob").close();
}

#[test]
fn plain_requests_are_answered_with_routes_configured_too() {
    // The upstream is never contacted: only local paths are requested.
    let proxy = Proxy::start_open(&["--route", "/t=ws://127.0.0.1:9/up"]);
    assert_426(&request(&proxy, "GET", "/ws"));
    assert_eq!(request(&proxy, "POST", "/ws").status, 405);
    assert_eq!(request(&proxy, "GET", "/nope").status, 404);
    assert_eq!(raw(&proxy, b"\x16\x03\x01garbage\r\n\r\n").status, 400);
    proxy.connect("carol").close();
}
