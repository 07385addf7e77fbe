//! The smallest HTTP client that fetches a JWKS: one blocking `GET` over plain TCP, bounded in
//! time and size, run only on the JWKS refresher's thread (and once at startup), never on a
//! reactor.
//!
//! It speaks HTTP/1.0, so the server answers with a `Content-Length` or closes the connection
//! after the body: no chunked transfer coding to decode. `http://` only: `https://` arrives with
//! TLS support.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response accepted (head and body). JWKS documents are a few KiB; the bound stops a
/// broken or hostile endpoint from filling our memory.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// An `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or address as written (IPv6 in brackets), sent as `Host`.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Why a fetch failed (logged; the previous key set stays in use).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connection to {0} failed: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("malformed HTTP response")]
    Malformed,
    #[error("HTTP status {0}")]
    Status(u16),
}

/// Parses an `http://` URL; `https://` and anything else is refused with a reason.
pub fn parse_http_url(v: &str) -> Result<HttpUrl, String> {
    if v.starts_with("https://") {
        return Err("https:// is not supported yet (it comes with TLS); use http://".to_owned());
    }
    let rest = v
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{v}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let bad = || format!("`{v}`: expected http://HOST[:PORT]/PATH");
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => {
            let port = authority[i + 1..].parse::<u16>().map_err(|_| bad())?;
            (&authority[..i], port)
        }
        _ => (authority, 80),
    };
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || "-._[]:".contains(c);
    if host.is_empty() || !host.chars().all(valid) || path.chars().any(|c| c.is_whitespace()) {
        return Err(bad());
    }
    Ok(HttpUrl {
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// `GET url` within `timeout` per step (connect, each read and write); the body of a 200.
pub fn get(url: &HttpUrl, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let addr = (host, url.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| FetchError::Resolve(url.host.clone()))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| FetchError::Connect(addr, e))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}:{}\r\nAccept: application/json\r\n\
         User-Agent: hermod-proxy\r\n\r\n",
        url.path, url.host, url.port
    );
    stream.write_all(request.as_bytes())?;
    // Read to EOF, or until a `Content-Length` body is complete (a server that keeps the
    // connection open despite HTTP/1.0 must not cost us the read timeout).
    let mut response = Vec::with_capacity(8 * 1024);
    let mut chunk = [0u8; 8 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if response.len() > MAX_RESPONSE_BYTES {
            return Err(FetchError::TooLarge);
        }
        if matches!(body_of(&response), Ok(_) | Err(FetchError::Status(_))) && has_length(&response)
        {
            break;
        }
    }
    body_of(&response)
}

/// Whether the response head (complete) carries a `Content-Length`.
fn has_length(response: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Response::new(&mut headers);
    matches!(head.parse(response), Ok(httparse::Status::Complete(_)))
        && head
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("content-length"))
}

/// The body of a complete `200` response, cut to its `Content-Length` when it has one.
fn body_of(response: &[u8]) -> Result<Vec<u8>, FetchError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Response::new(&mut headers);
    let body_start = match head.parse(response) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(FetchError::Malformed),
    };
    let status = head.code.ok_or(FetchError::Malformed)?;
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    let body = &response[body_start..];
    let length = head
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(FetchError::Malformed)
        })
        .transpose()?;
    match length {
        Some(n) if n > body.len() => Err(FetchError::Malformed),
        Some(n) => Ok(body[..n].to_vec()),
        None => Ok(body.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls_only() {
        let url = parse_http_url("http://127.0.0.1:8000/.well-known/jwks.json").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 8000));
        assert_eq!(url.path, "/.well-known/jwks.json");
        let url = parse_http_url("http://idp.example").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("idp.example", 80, "/")
        );
        let url = parse_http_url("http://[::1]:81/k").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("[::1]", 81));
        assert!(parse_http_url("https://idp.example/jwks")
            .unwrap_err()
            .contains("TLS"));
        for bad in [
            "ftp://x",
            "idp.example",
            "http://",
            "http://a:99999/",
            "http://a b/",
            "http://a:x/",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_the_body_of_a_200() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(body_of(ok).unwrap(), b"{}");
        let no_length = b"HTTP/1.1 200 OK\r\n\r\n{\"keys\":[]}";
        assert_eq!(body_of(no_length).unwrap(), b"{\"keys\":[]}");
        assert!(matches!(
            body_of(b"HTTP/1.0 404 Not Found\r\n\r\n"),
            Err(FetchError::Status(404))
        ));
        let short = b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n{}";
        assert!(matches!(body_of(short), Err(FetchError::Malformed)));
        assert!(matches!(
            body_of(b"HTTP/1.0 200"),
            Err(FetchError::Malformed)
        ));
    }

    /// Serves `response` once on a loopback port and keeps the connection open afterwards.
    fn serve_once(response: &'static [u8]) -> HttpUrl {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head);
            conn.write_all(response).unwrap();
            std::thread::sleep(Duration::from_secs(4));
        });
        parse_http_url(&format!("http://127.0.0.1:{port}/jwks.json")).unwrap()
    }

    #[test]
    fn get_stops_at_the_content_length_and_bounds_the_size() {
        let url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"keys\":[]}");
        // The server holds the connection past the read timeout: waiting for its close would
        // end in a timeout error, not the body.
        assert_eq!(get(&url, Duration::from_secs(1)).unwrap(), b"{\"keys\":[]}");
        let url = serve_once(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(
            get(&url, Duration::from_secs(2)),
            Err(FetchError::Status(503))
        ));
        static BIG: [u8; MAX_RESPONSE_BYTES + 100] = [b' '; MAX_RESPONSE_BYTES + 100];
        let url = serve_once(&BIG);
        assert!(matches!(
            get(&url, Duration::from_secs(2)),
            Err(FetchError::TooLarge)
        ));
    }
}
