//! The HTTP answer a connection gets when it is refused before its WebSocket upgrade: a status,
//! one line of plain text, the headers that tell the client what to do instead, and
//! `Connection: close`. The checks that decide are in `handshake.rs` (and, for the limits at
//! accept, in the worker); this is only what they answer.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use hermod_core::reactor::admission::AddressRefusal;
use tungstenite::error::Error as WsError;
use tungstenite::handshake::server::{write_response, ErrorResponse};
use tungstenite::http::{header, StatusCode};

/// The 503 written to a connection shed at accept because the process is out of file
/// descriptors (no allocation, no fd: see `hermod_core::reactor::listener::Acceptor`).
pub const SHED_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: text/plain\r\ncontent-length: 30\r\nretry-after: 1\r\n\
    connection: close\r\n\r\nout of resources, retry later\n";

/// An upgrade refused with an HTTP status and a short plain-text reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The response status (4xx).
    pub status: StatusCode,
    /// One line for a human (curl, a browser, a log), sent as the body.
    pub reason: String,
    /// The headers that tell the client how to do better.
    pub hint: Hint,
}

/// Headers a [`Refusal`] adds to say what the client should send instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    None,
    /// 426: `Upgrade: websocket` and `Sec-WebSocket-Version: 13` (RFC 7231, "426 Upgrade
    /// Required"; RFC 6455).
    Upgrade,
    /// 405: `Allow: GET`, the only method a WebSocket endpoint takes (RFC 7231, "405 Method Not
    /// Allowed").
    AllowGet,
    /// A version other than 13: `Sec-WebSocket-Version: 13` (RFC 6455, "Supporting Multiple
    /// Versions of WebSocket Protocol").
    Version,
    /// 503 and 429: `Retry-After: 1` (RFC 7231, "Retry-After"; RFC 6585, "429 Too Many
    /// Requests").
    RetryAfter,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            hint: Hint::None,
        }
    }

    pub(crate) fn hinted(mut self, hint: Hint) -> Self {
        self.hint = hint;
        self
    }

    /// 503 to a connection accepted past `--max-connections`.
    pub fn server_full() -> Self {
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "server full, retry later")
            .hinted(Hint::RetryAfter)
    }

    /// 503 to a connection from an address over one of its limits.
    pub fn address_limit(why: AddressRefusal) -> Self {
        let reason = match why {
            AddressRefusal::Connections => "too many connections from this address",
            AddressRefusal::Rate => "connecting too fast from this address",
        };
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason).hinted(Hint::RetryAfter)
    }

    /// 429 to a handshake of a user who has `--max-sessions-per-user` sessions already.
    pub fn user_sessions() -> Self {
        Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many sessions for this user",
        )
        .hinted(Hint::RetryAfter)
    }

    /// The response bytes when the refusal is written before tungstenite's handshake ran:
    /// tungstenite's own response writer on [`Refusal::into_response`], then the body unless
    /// `head_only` (a `HEAD` request gets the same headers, `Content-Length` included).
    pub fn to_http(&self, head_only: bool) -> Result<Vec<u8>, WsError> {
        let resp = self.clone().into_response();
        let mut out = Vec::with_capacity(256);
        write_response(&mut out, &resp)?;
        if let (false, Some(body)) = (head_only, resp.body()) {
            out.extend_from_slice(body.as_bytes());
        }
        Ok(out)
    }

    /// The HTTP response tungstenite writes instead of the 101.
    pub fn into_response(self) -> ErrorResponse {
        let body = format!("{}\n", self.reason);
        let mut resp = ErrorResponse::new(Some(body.clone()));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        let version = || header::HeaderValue::from_static("13");
        match self.hint {
            Hint::None => {}
            Hint::Upgrade => {
                headers.insert(
                    header::UPGRADE,
                    header::HeaderValue::from_static("websocket"),
                );
                headers.insert(header::SEC_WEBSOCKET_VERSION, version());
            }
            Hint::AllowGet => {
                headers.insert(header::ALLOW, header::HeaderValue::from_static("GET"));
            }
            Hint::Version => {
                headers.insert(header::SEC_WEBSOCKET_VERSION, version());
            }
            Hint::RetryAfter => {
                headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        headers.insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from(body.len()),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shed_answer_is_a_whole_503() {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = resp.parse(SHED_ANSWER) else {
            panic!("not a whole head");
        };
        assert_eq!(resp.code, Some(503));
        let length = resp.headers.iter().find(|h| h.name == "content-length");
        let length = std::str::from_utf8(length.expect("content-length").value).unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), SHED_ANSWER.len() - len);
    }

    #[test]
    fn limit_refusals_say_retry_after_and_close() {
        let answer = Refusal::address_limit(AddressRefusal::Rate)
            .to_http(false)
            .unwrap();
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("retry-after: 1\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        let user = Refusal::user_sessions().to_http(false).unwrap();
        assert!(user.starts_with(b"HTTP/1.1 429 "));
    }
}
