//! Blocking loopback sockets, each bounded by [`TIMEOUT`], and a minimal HTTP/1.1 GET.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::TIMEOUT;

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

/// One server API request on a new connection: (status, JSON body). `key` goes in
/// `Authorization: Bearer`.
pub fn api_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut s = tcp(addr);
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write request");
    let (status, text) = read_response(&mut s, path);
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: answer is not JSON ({e}): {text:?}"));
    (status, value)
}

/// Reads one response with a Content-Length: (status, body). Reads a byte at a time, so that
/// a pipelined next answer stays in the socket for the next call.
pub fn read_response(s: &mut TcpStream, what: &str) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1];
    loop {
        if let Some(done) = response_complete(&buf) {
            let text = String::from_utf8_lossy(&buf[..done]).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            let status = status.unwrap_or_else(|| panic!("bad HTTP response to {what}: {text:?}"));
            buf.drain(..done);
            assert!(buf.is_empty(), "{what}: bytes after the answer");
            return (status, body.to_owned());
        }
        match s.read(&mut chunk) {
            Ok(0) => panic!("{what}: connection closed after {} bytes", buf.len()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading {what}: {e} after {} bytes", buf.len()),
        }
    }
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
