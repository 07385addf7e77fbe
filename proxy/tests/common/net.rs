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
