//! Tunnel routes (`--route PATH=ws://HOST:PORT[/path]`) and the HTTP they need, as pure functions.
//!
//! The worker peeks at a new connection's request head and asks [`classify`] what it is: a
//! request for one of the WebSocket endpoints this process terminates (tungstenite then reads the
//! same bytes), or a request for a route, rewritten for the upstream (request line path, `Host`,
//! the forwarding headers; every other header untouched), or a request to refuse.
//! [`parse_answer`] reads the upstream's response head; [`status_response`] makes the gateway's
//! own short answers (400, 405, 431, 502, 504). Nothing here touches a socket.
//!
//! Hygiene: only `GET` is routed (a WebSocket upgrade is a `GET`; anything else is 405), a
//! request with `Content-Length` or `Transfer-Encoding` is 400 (an upgrade has no body, and a
//! body-length header the upstream reads differently is how requests get smuggled), and the
//! client's `X-Forwarded-For`, `Forwarded` and `X-Real-IP` are replaced by the peer's address
//! unless the peer is a trusted front proxy (`--route-trusted-proxies`).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::IpAddr;

use crate::settings::routes::{Route, Upstream};

/// Largest request head (request line and headers) read from a client on a routed path, and
/// largest response head accepted from an upstream. Bigger: 431 (client) or 502 (upstream).
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers a routed request or an upstream response may have; more: 431 / 502.
const MAX_HEADERS: usize = 100;

/// What a client's request head (as far as it arrived) asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Not enough bytes yet to tell.
    Partial,
    /// Not a route: one of the endpoints this process terminates (or an error they answer).
    Local,
    /// For route number `route`: `len` bytes of input were the head; `request` is the head to
    /// send upstream.
    Tunnel {
        route: usize,
        len: usize,
        request: Vec<u8>,
    },
    /// A routed path with a head too large (431), malformed or with a body (400), or another
    /// method than `GET` (405).
    Refuse(u16),
}

/// Who the client is, for the forwarding headers of a routed request.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The connection's remote address.
    pub ip: IpAddr,
    /// `--route-trusted-proxies`: peers whose forwarding headers are kept.
    pub trusted: &'a [IpAddr],
}

/// Classifies the start of a connection's input. `full`: the input is all the gateway will look
/// at (it filled [`MAX_HEAD`]) so an unfinished head will stay unfinished. `peer` gives the
/// client's address for the forwarding headers (asked only for a routed request).
pub fn classify<'a>(
    input: &[u8],
    full: bool,
    routes: &[Route],
    peer: impl FnOnce() -> Peer<'a>,
) -> Head {
    let Some(path) = request_path(input) else {
        return if full { Head::Local } else { Head::Partial };
    };
    let Some(route) = routes.iter().position(|r| r.path.as_bytes() == path) else {
        return Head::Local;
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(input) {
        Ok(httparse::Status::Complete(_)) if req.method != Some("GET") => Head::Refuse(405),
        Ok(httparse::Status::Complete(_)) if has_body_length(req.headers) => Head::Refuse(400),
        Ok(httparse::Status::Complete(len)) => Head::Tunnel {
            route,
            len,
            request: rewrite(&req, &routes[route].upstream, peer()),
        },
        Ok(httparse::Status::Partial) if full => Head::Refuse(431),
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(httparse::Error::TooManyHeaders) => Head::Refuse(431),
        Err(_) => Head::Refuse(400),
    }
}

/// The path of the request line's target once it is known (ended by `?` or a space), `None`
/// before. Only origin-form targets (`/path?query`) can match a route.
fn request_path(input: &[u8]) -> Option<&[u8]> {
    let line_end = input
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(input.len());
    let line = &input[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = line.iter().position(|b| *b == b' ')? + 1;
    let target = &line[start..];
    let end = target.iter().position(|b| *b == b'?' || *b == b' ');
    match end {
        Some(end) => Some(&target[..end]),
        // The line ended without a version: a malformed line whose path is still all there.
        None if line_end < input.len() => Some(target),
        None => None,
    }
}

/// Whether the head announces a body (`Content-Length` or `Transfer-Encoding`, whatever value).
fn has_body_length(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
    })
}

/// Whether `name` is one of the headers that say who the client is.
fn is_forwarding(name: &str) -> bool {
    ["x-forwarded-for", "forwarded", "x-real-ip"]
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

/// The request head for the upstream: the client's, with the upstream's path (plus the client's
/// query) in the request line and the upstream's `Host`. From an untrusted peer its
/// `X-Forwarded-For`, `Forwarded` and `X-Real-IP` are dropped and replaced by the peer's address;
/// from a trusted proxy they are kept and the peer is appended to `X-Forwarded-For` and
/// `Forwarded`. Every other header goes as received, in order.
fn rewrite(req: &httparse::Request<'_, '_>, upstream: &Upstream, peer: Peer<'_>) -> Vec<u8> {
    let method = req.method.unwrap_or("GET");
    let target = req.path.unwrap_or("/");
    let query = target.find('?').map_or("", |i| &target[i..]);
    let minor = req.version.unwrap_or(1);
    let mut out = Vec::with_capacity(512);
    let line = format!(
        "{method} {}{query} HTTP/1.{minor}\r\nHost: {}\r\n",
        upstream.path, upstream.host
    );
    out.extend_from_slice(line.as_bytes());
    let trusted = peer.trusted.contains(&peer.ip);
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut fwd: Vec<&[u8]> = Vec::new();
    let mut real_ip: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            continue;
        }
        if is_forwarding(h.name) {
            if trusted {
                if h.name.eq_ignore_ascii_case("x-forwarded-for") {
                    xff.push(h.value);
                } else if h.name.eq_ignore_ascii_case("forwarded") {
                    fwd.push(h.value);
                } else {
                    real_ip = real_ip.or(Some(h.value));
                }
            }
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    let ip = peer.ip.to_string();
    let node = match peer.ip {
        IpAddr::V4(_) => ip.clone(),
        IpAddr::V6(_) => format!("\"[{ip}]\""),
    };
    let header = |out: &mut Vec<u8>, name: &[u8], earlier: &[&[u8]], last: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        for v in earlier {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(last);
        out.extend_from_slice(b"\r\n");
    };
    header(&mut out, b"X-Forwarded-For", &xff, ip.as_bytes());
    header(
        &mut out,
        b"Forwarded",
        &fwd,
        format!("for={node}").as_bytes(),
    );
    header(
        &mut out,
        b"X-Real-IP",
        &[],
        real_ip.unwrap_or(ip.as_bytes()),
    );
    out.extend_from_slice(b"\r\n");
    out
}

/// How much of a non-101 upstream answer follows its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Exactly this many bytes (`Content-Length`; 0 for 1xx, 204 and 304).
    Length(u64),
    /// Until the upstream closes (chunked, or no length given).
    UntilClose,
}

/// What the upstream's answer to the forwarded request is, as far as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// More bytes needed.
    Partial,
    /// Not HTTP, or a head over [`MAX_HEAD`]: the client gets 502.
    Invalid,
    /// A complete head of `len` bytes with this status and body.
    Complete { status: u16, len: usize, body: Body },
}

/// Reads the upstream's response head from `input` (everything received so far).
pub fn parse_answer(input: &[u8]) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(input) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => {
            let status = resp.code.unwrap_or(0);
            Answer::Complete {
                status,
                len,
                body: body_of(status, resp.headers),
            }
        }
        Ok(httparse::Status::Partial) if input.len() < MAX_HEAD => Answer::Partial,
        _ => Answer::Invalid,
    }
}

fn body_of(status: u16, headers: &[httparse::Header<'_>]) -> Body {
    if status < 200 || status == 204 || status == 304 {
        return Body::Length(0);
    }
    let chunked = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    if chunked {
        return Body::UntilClose;
    }
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Body::UntilClose, Body::Length)
}

/// The gateway's own answer with this status: a short plain-text body, then the connection
/// closes.
pub fn status_response(status: u16) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{}\n", reason.to_ascii_lowercase());
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         {allow}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::settings::routes::parse_route;

    fn no_dns(_: &str, _: u16) -> Option<std::net::SocketAddr> {
        None
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
    const PEER: Peer<'static> = Peer {
        ip: IP,
        trusted: &[],
    };

    fn routes() -> Vec<Route> {
        vec![
            parse_route("/a=ws://127.0.0.1:9001", no_dns).expect("route a"),
            parse_route("/t=ws://127.0.0.1:9000/echo", no_dns).expect("route t"),
        ]
    }

    fn tunnel(input: &[u8]) -> (usize, usize, String) {
        match classify(input, false, &routes(), || PEER) {
            Head::Tunnel {
                route,
                len,
                request,
            } => (route, len, String::from_utf8(request).expect("utf-8")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routed_request_is_rewritten() {
        let input = b"GET /t?room=1&x=%20 HTTP/1.1\r\nHost: front:80\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Key: abc==\r\n\
                      Sec-WebSocket-Protocol: chat\r\n\r\nEARLY";
        let (route, len, req) = tunnel(input);
        assert_eq!(route, 1);
        assert_eq!(len, input.len() - "EARLY".len());
        assert_eq!(
            req,
            "GET /echo?room=1&x=%20 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: abc==\r\nSec-WebSocket-Protocol: chat\r\n\
             X-Forwarded-For: 10.0.0.7\r\nForwarded: for=10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\n\r\n"
        );
    }

    const SPOOFED: &[u8] =
        b"GET /a HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\n\
        Forwarded: for=9.9.9.9\r\nX-Real-IP: 8.8.8.8\r\n\r\n";

    #[test]
    fn forwarding_headers_from_a_client_are_replaced() {
        let (route, _, req) = tunnel(SPOOFED);
        assert_eq!(route, 0);
        assert_eq!(
            req,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n\
             X-Forwarded-For: 10.0.0.7\r\nForwarded: for=10.0.0.7\r\nX-Real-IP: 10.0.0.7\r\n\r\n"
        );
    }

    #[test]
    fn forwarding_headers_from_a_trusted_proxy_are_kept_and_appended_to() {
        let trusted = [IP];
        let peer = || Peer {
            ip: IP,
            trusted: &trusted,
        };
        let Head::Tunnel { request, .. } = classify(SPOOFED, false, &routes(), peer) else {
            panic!("not routed");
        };
        assert_eq!(
            String::from_utf8(request).expect("utf-8"),
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n\
             X-Forwarded-For: 1.2.3.4, 5.6.7.8, 10.0.0.7\r\n\
             Forwarded: for=9.9.9.9, for=10.0.0.7\r\nX-Real-IP: 8.8.8.8\r\n\r\n"
        );
        let v6 = Peer {
            ip: "::1".parse().expect("ip"),
            trusted: &[],
        };
        let Head::Tunnel { request, .. } = classify(SPOOFED, false, &routes(), || v6) else {
            panic!("not routed");
        };
        let request = String::from_utf8(request).expect("utf-8");
        assert!(
            request.contains("Forwarded: for=\"[::1]\"\r\n"),
            "{request}"
        );
    }

    #[test]
    fn only_bodiless_gets_are_routed() {
        let r = routes();
        let head = |input: &[u8]| classify(input, false, &r, || PEER);
        assert_eq!(
            head(b"POST /t HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            Head::Refuse(405)
        );
        assert_eq!(head(b"get /t HTTP/1.1\r\n\r\n"), Head::Refuse(405));
        assert_eq!(
            head(b"GET /t HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Head::Refuse(400)
        );
        assert_eq!(
            head(b"GET /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Head::Refuse(400)
        );
        let r405 = String::from_utf8(status_response(405)).expect("utf-8");
        assert!(r405.contains("\r\nAllow: GET\r\n"), "{r405}");
    }

    #[test]
    fn other_paths_are_local_and_partial_waits() {
        let r = routes();
        let local = |input: &[u8]| classify(input, false, &r, || PEER);
        assert_eq!(local(b"GET /ws?token=x HTTP/1.1\r\n\r\n"), Head::Local);
        assert_eq!(local(b"GET /tt HTTP/1.1\r\n"), Head::Local);
        assert_eq!(local(b"GET /t/ HTTP/1.1\r\n"), Head::Local);
        assert_eq!(local(b"GET /t"), Head::Partial);
        assert_eq!(local(b"GE"), Head::Partial);
        assert_eq!(local(b"GET /t HTTP/1.1\r\nHost: x\r\n"), Head::Partial);
        assert_eq!(local(b"GET /t?"), Head::Partial);
        assert_eq!(classify(b"GET /tttt", true, &r, || PEER), Head::Local);
    }

    #[test]
    fn bad_routed_heads_are_refused() {
        let r = routes();
        let mut big = b"GET /t HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(classify(&big, true, &r, || PEER), Head::Refuse(431));
        let mut many = b"GET /t HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(classify(&many, false, &r, || PEER), Head::Refuse(431));
        assert_eq!(
            classify(b"GET /t HTTP/1.1\r\nbad header\r\n\r\n", false, &r, || PEER),
            Head::Refuse(400)
        );
        assert_eq!(
            classify(b"GET /t\r\n\r\n", false, &r, || PEER),
            Head::Refuse(400)
        );
    }

    #[test]
    fn upstream_answers() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00";
        assert_eq!(
            parse_answer(ok),
            Answer::Complete {
                status: 101,
                len: ok.len() - 2,
                body: Body::Length(0)
            }
        );
        let nf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\n";
        assert!(matches!(
            parse_answer(nf),
            Answer::Complete {
                status: 404,
                body: Body::Length(5),
                ..
            }
        ));
        let chunked = b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            parse_answer(chunked),
            Answer::Complete {
                body: Body::UntilClose,
                ..
            }
        ));
        assert_eq!(parse_answer(b"HTTP/1.1 101 Swi"), Answer::Partial);
        assert_eq!(parse_answer(b"garbage\r\n\r\n"), Answer::Invalid);
        let mut big = b"HTTP/1.1 101 OK\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(parse_answer(&big), Answer::Invalid);
    }

    #[test]
    fn own_responses_have_length() {
        let r = String::from_utf8(status_response(502)).expect("utf-8");
        assert!(r.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nbad gateway\n"), "{r}");
        assert!(r.contains("Content-Length: 12\r\n"), "{r}");
    }
}
