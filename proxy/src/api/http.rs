//! The server API's HTTP/1.1 layer: one request parsed from the bytes a connection received
//! ([`parse_request`]), and an answer encoded ([`Answer::encode`]). Sans-io and pure: the API's
//! only parser of peer input, and a fuzz target.
//!
//! Bodies need `Content-Length` (a chunked request body is refused 501: every HTTP client sends
//! a length for a JSON body); heads are bounded by [`MAX_HEAD`], bodies by the caller's limit.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

/// Largest request head accepted (request line plus headers); larger is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers parsed in a request head; more is answered 431.
const MAX_HEADERS: usize = 32;

/// One request, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// The path without its query.
    pub path: String,
    /// The query string after `?` (empty when none).
    pub query: String,
    /// The credentials of `Authorization: Bearer CREDENTIALS`.
    pub bearer: Option<String>,
    pub body: Vec<u8>,
    /// The connection may carry another request: HTTP/1.1 and no `Connection: close`.
    pub keep_alive: bool,
}

/// A refusal: the HTTP status, the error code and the message of the JSON body
/// `{"error":CODE,"message":TEXT}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "bad_request", message)
    }

    /// The answer carrying this error.
    pub fn answer(&self) -> Answer {
        let body = serde_json::json!({"error": self.code, "message": self.message}).to_string();
        let extra = match self.status {
            401 => "WWW-Authenticate: Bearer\r\n",
            _ => "",
        };
        Answer {
            status: self.status,
            body,
            extra_headers: extra,
        }
    }
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request, and how many bytes of the buffer it took.
    Complete(ApiRequest, usize),
    /// Not a whole request yet.
    Partial,
    /// A request that cannot be served: answer the error and close the connection (its end in
    /// the byte stream is unknown or the peer is misbehaving).
    Refused(ApiError),
}

/// Parses the request at the start of `buf`, whose body may be at most `max_body` bytes.
pub fn parse_request(buf: &[u8], max_body: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refused(ApiError::new(431, "bad_request", "request head too large"))
        }
        Err(e) => return Parsed::Refused(ApiError::bad_request(format!("malformed request: {e}"))),
    };
    if head_len > MAX_HEAD {
        return Parsed::Refused(ApiError::new(431, "bad_request", "request head too large"));
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Parsed::Refused(ApiError::bad_request("malformed request line"));
    };
    let mut length: Option<usize> = None;
    let mut bearer = None;
    let mut close = req.version != Some(1);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (parsed, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Parsed::Refused(ApiError::bad_request("bad Content-Length")),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let message = "chunked request bodies are not supported: send Content-Length";
            return Parsed::Refused(ApiError::new(501, "not_implemented", message));
        } else if name.eq_ignore_ascii_case("authorization") {
            bearer = std::str::from_utf8(h.value).ok().and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_owned())
            });
        } else if name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                close = true;
            }
        }
    }
    let length = length.unwrap_or(0);
    if length > max_body {
        let message = format!("request body over {max_body} bytes");
        return Parsed::Refused(ApiError::new(413, "too_large", message));
    }
    let end = head_len + length;
    if buf.len() < end {
        return Parsed::Partial;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = ApiRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        bearer,
        body: buf[head_len..end].to_vec(),
        keep_alive: !close,
    };
    Parsed::Complete(request, end)
}

/// An answer before it is written: a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// Extra header lines, each ending in CRLF.
    pub extra_headers: &'static str,
}

impl Answer {
    pub fn ok(body: String) -> Self {
        Answer {
            status: 200,
            body,
            extra_headers: "",
        }
    }

    /// The bytes on the wire; `keep_alive` says whether the connection stays open.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\
             Connection: {connection}\r\n\r\n",
            self.status,
            reason(self.status),
            self.body.len(),
            self.extra_headers,
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(bytes: &[u8]) -> (ApiRequest, usize) {
        match parse_request(bytes, 1024) {
            Parsed::Complete(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    fn refused(bytes: &[u8]) -> u16 {
        match parse_request(bytes, 16) {
            Parsed::Refused(e) => e.status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_with_a_body_and_a_pipelined_one() {
        let two = b"POST /api/publish?x=1 HTTP/1.1\r\nAuthorization: Bearer k1\r\n\
            Content-Length: 2\r\n\r\n{}GET /api/info HTTP/1.1\r\n\r\n";
        let (first, n) = complete(two);
        assert_eq!(first.method, "POST");
        assert_eq!(first.path, "/api/publish");
        assert_eq!(first.query, "x=1");
        assert_eq!(first.bearer.as_deref(), Some("k1"));
        assert_eq!(first.body, b"{}");
        assert!(first.keep_alive);
        let (second, m) = complete(&two[n..]);
        assert_eq!(second.path, "/api/info");
        assert_eq!(n + m, two.len());
    }

    #[test]
    fn partial_until_the_body_is_whole() {
        let req = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n{}";
        assert_eq!(parse_request(req, 1024), Parsed::Partial);
        assert_eq!(parse_request(b"GET / HT", 1024), Parsed::Partial);
    }

    #[test]
    fn bad_requests_are_refused_with_a_status() {
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n"),
            413
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        let twice = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(refused(twice), 400);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(chunked), 501);
        assert_eq!(refused(b"\x00\x01 / HTTP/1.1\r\n\r\n"), 400);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(refused(long.as_bytes()), 431);
    }

    #[test]
    fn close_is_honoured() {
        let (r, _) = complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
    }

    #[test]
    fn errors_are_json_with_a_code() {
        let bytes = ApiError::new(401, "unauthorized", "no key")
            .answer()
            .encode(true);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("WWW-Authenticate: Bearer\r\n"));
        assert!(text.ends_with(r#"{"error":"unauthorized","message":"no key"}"#));
    }
}
