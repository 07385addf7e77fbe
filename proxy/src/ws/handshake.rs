//! Routing and authentication at the WebSocket upgrade, as pure functions of the HTTP request.
//!
//! Two steps, both answering with a [`Refusal`] (an HTTP error, then the connection closes):
//! - [`precheck`] looks at the request head before tungstenite reads it and answers what is not a
//!   WebSocket upgrade at all, which tungstenite would drop without a word: 426 for a plain `GET`
//!   or `HEAD` of an endpoint, 405 for other methods, 404 for unknown paths, 400 for a malformed
//!   head or a broken upgrade (bad `Sec-WebSocket-Key`/`-Version`), 431 for too many headers.
//! - [`admit`] decides what an upgrade request gets: the client protocol (with an identity), the
//!   echo endpoint, or 403 origin not allowed (`--allowed-origins`, protocol path only), 401 bad
//!   token (bad grant patterns included), 400 bad identity, 404 unknown path. [`Gate`] plugs it into
//!   tungstenite's handshake callback and hands the outcome to the worker through a shared cell,
//!   because tungstenite consumes the callback; it also counts the session against its user's
//!   cap (`--max-sessions-per-user`), answering 429 past it.
//!
//! What a refusal answers (status, text, hint headers) is [`Refusal`], in `refusal.rs`.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::Arc;

use hermod_core::grants::TokenGrants;
use hermod_core::ids::Name;
use hermod_core::jwt;
use hermod_core::reactor::admission::{UserPermit, UserSessions};
use parking_lot::Mutex;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::handshake::headers::MAX_HEADERS;
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{create_response, Callback, ErrorResponse, Request, Response};
use tungstenite::http::{header, Method, StatusCode, Uri};

pub use super::refusal::{Hint, Refusal};
use crate::settings::origins::origin_allowed;
use crate::settings::Settings;

/// What an admitted upgrade leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The v1 client protocol for this identity. `claims`: the verified token's claims (room
    /// grants, expiry); `None` under `--auth none`.
    Client {
        user: Name,
        device: Name,
        claims: Option<Box<jwt::Claims>>,
    },
    /// The built-in echo endpoint.
    Echo,
}

/// Decides an upgrade request. `now_unix` is the time tokens are checked against.
pub fn admit(settings: &Settings, req: &Request, now_unix: u64) -> Result<Endpoint, Refusal> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    if settings.echo_path.as_deref() == Some(path) {
        return Ok(Endpoint::Echo);
    }
    if path != settings.ws_path {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "no such endpoint"));
    }
    check_origin(settings, req)?;
    let (user, claims) = if settings.auth.requires_token() {
        let token = match query_param(query, "token")? {
            Some(t) => t,
            None => bearer(req)?,
        };
        let claims = settings
            .auth
            .verify(&token, now_unix)
            .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, format!("bad token: {e}")))?;
        let user = Name::parse_user("user", &claims.sub).map_err(bad_request)?;
        // A token whose grant patterns break the syntax is refused whole: an issuer bug is
        // reported, never half-applied.
        TokenGrants::from_claims(&claims)
            .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, format!("bad token: {e}")))?;
        (user, Some(Box::new(claims)))
    } else {
        let user = query_param(query, "user")?
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "missing user parameter"))?;
        (Name::parse_user("user", &user).map_err(bad_request)?, None)
    };
    let device = query_param(query, "device")?.unwrap_or_else(|| "default".to_owned());
    let device = Name::parse("device", &device).map_err(bad_request)?;
    Ok(Endpoint::Client {
        user,
        device,
        claims,
    })
}

/// 403 when `--allowed-origins` is set and the request's `Origin` matches none of it. A request
/// without `Origin` (not a browser) passes: its token is what decides.
fn check_origin(settings: &Settings, req: &Request) -> Result<(), Refusal> {
    if settings.allowed_origins.is_empty() {
        return Ok(());
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    match origin.to_str() {
        Ok(origin) if origin_allowed(&settings.allowed_origins, origin) => Ok(()),
        _ => Err(Refusal::new(StatusCode::FORBIDDEN, "origin not allowed")),
    }
}

/// What a request head peeked before tungstenite reads it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precheck {
    /// The head has not fully arrived: look again when more bytes come.
    Partial,
    /// A WebSocket upgrade tungstenite will accept (or a head too large to judge here, which
    /// tungstenite reads under its own bound as before): its handshake runs, then [`admit`].
    Upgrade,
    /// Answered with this refusal and closed; `head_only` for `HEAD` (headers, no body).
    Refuse { refusal: Refusal, head_only: bool },
}

/// Classifies the start of a connection's input. `full`: the input is all the caller looks at,
/// so an unfinished head stays unfinished (it is then left to tungstenite, which bounds it).
/// Pure: the checks on an upgrade are tungstenite's own ([`create_response`]), so
/// [`Precheck::Upgrade`] means tungstenite will get as far as [`Gate`].
pub fn precheck(input: &[u8], full: bool, settings: &Settings) -> Precheck {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let refuse = |refusal, head_only| Precheck::Refuse { refusal, head_only };
    match req.parse(input) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if full => return Precheck::Upgrade,
        Ok(httparse::Status::Partial) => return Precheck::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            return refuse(Refusal::new(status, "too many header fields"), false);
        }
        Err(e) => return refuse(bad_request(format!("malformed request: {e}")), false),
    }
    let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
    let head_only = method == Method::HEAD;
    let Ok(uri) = target.parse::<Uri>() else {
        return refuse(bad_request("malformed request target"), head_only);
    };
    let path = uri.path();
    if !settings.serves_path(path) {
        return refuse(
            Refusal::new(StatusCode::NOT_FOUND, "no such endpoint"),
            head_only,
        );
    }
    let upgrade = req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    if method == Method::HEAD || (method == Method::GET && !upgrade) {
        let reason = format!(
            "{path} is a WebSocket endpoint: connect with a WebSocket client \
             (GET with Upgrade: websocket)"
        );
        let refusal = Refusal::new(StatusCode::UPGRADE_REQUIRED, reason).hinted(Hint::Upgrade);
        return refuse(refusal, head_only);
    }
    if method != Method::GET {
        let reason = format!("{path} is a WebSocket endpoint: only GET upgrades it");
        let refusal = Refusal::new(StatusCode::METHOD_NOT_ALLOWED, reason).hinted(Hint::AllowGet);
        return refuse(refusal, false);
    }
    match upgrade_error(input) {
        None => Precheck::Upgrade,
        Some(refusal) => refuse(refusal, false),
    }
}

/// What tungstenite's server handshake would object to in a complete `GET` head, as a 400.
fn upgrade_error(input: &[u8]) -> Option<Refusal> {
    let request = match Request::try_parse(input) {
        Ok(Some((_, request))) => request,
        Ok(None) => return None,
        Err(e) => return Some(bad_request(format!("malformed request: {e}"))),
    };
    match create_response(&request) {
        Ok(_) => None,
        Err(WsError::Protocol(ProtocolError::MissingSecWebSocketVersionHeader)) => Some(
            bad_request("bad WebSocket upgrade: Sec-WebSocket-Version must be 13")
                .hinted(Hint::Version),
        ),
        Err(e) => Some(bad_request(format!("bad WebSocket upgrade: {e}"))),
    }
}

fn bad_request(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, e.to_string())
}

/// The token of an `Authorization: Bearer ...` header; 401 when there is none.
fn bearer(req: &Request) -> Result<String, Refusal> {
    let missing = || Refusal::new(StatusCode::UNAUTHORIZED, "missing token");
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing());
    }
    Ok(token.trim().to_owned())
}

/// The percent-decoded value of the first `name=` parameter of a query string. A parameter
/// present without `=` counts as empty. Undecodable values are 400.
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, Refusal> {
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key).as_deref() == Some(name) {
            return percent_decode(value).map(Some).ok_or_else(|| {
                Refusal::new(StatusCode::BAD_REQUEST, format!("bad encoding of {name}"))
            });
        }
    }
    Ok(None)
}

/// RFC 3986 percent-decoding into UTF-8; `None` on a bad escape or invalid UTF-8. `+` stays `+`.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// What the worker and [`Gate`] share during one handshake: the worker puts in the time before
/// each step of tungstenite's handshake, the callback leaves the admitted endpoint.
#[derive(Debug, Default)]
pub struct AdmissionCell {
    /// Unix time (seconds) tokens are checked against, set by the worker before each step.
    pub now_unix: u64,
    /// The admitted endpoint, once the callback ran and admitted the request.
    pub endpoint: Option<Endpoint>,
    /// The admitted user's place under its session cap, for the worker to keep with the
    /// session (dropped with a handshake that fails after all).
    pub permit: Option<UserPermit>,
}

/// The cell shared by the worker and [`Gate`] (tungstenite consumes the callback).
pub type Admission = Arc<Mutex<AdmissionCell>>;

/// tungstenite's handshake callback: runs [`admit`] on the request and stores the outcome.
#[derive(Debug)]
pub struct Gate {
    /// Routing and auth settings.
    pub settings: Arc<Settings>,
    /// Where the time comes from and the endpoint goes; read by the worker after the upgrade.
    pub admission: Admission,
    /// Sessions per user, shared by every worker.
    pub users: Arc<UserSessions>,
}

impl Callback for Gate {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        let mut cell = self.admission.lock();
        let admitted = admit(&self.settings, request, cell.now_unix).and_then(|endpoint| {
            let permit = match &endpoint {
                Endpoint::Client { user, .. } => self
                    .users
                    .try_take(user)
                    .map_err(|_| Refusal::user_sessions())?,
                Endpoint::Echo => None,
            };
            Ok((endpoint, permit))
        });
        match admitted {
            Ok((endpoint, permit)) => {
                cell.endpoint = Some(endpoint);
                cell.permit = permit;
                Ok(response)
            }
            Err(refusal) => Err(refusal.into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenVerifier;
    use crate::settings::AuthMode;

    const SECRET: &[u8] = b"test-secret";
    const NOW: u64 = 1_700_000_000;

    fn settings(auth: AuthMode) -> Settings {
        let mut s = Settings::defaults();
        s.auth = auth;
        s.echo_path = Some("/echo".to_owned());
        s
    }

    fn jwt_settings() -> Settings {
        settings(AuthMode::Tokens(Arc::new(TokenVerifier::hs256(
            SECRET.to_vec(),
        ))))
    }

    fn request(uri: &str, auth: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(uri);
        if let Some(a) = auth {
            builder = builder.header("Authorization", a);
        }
        builder.body(()).expect("valid test request")
    }

    fn token(sub: &str, exp: u64) -> String {
        jwt::mint(SECRET, sub, exp)
    }

    /// The endpoint of an admitted client; `exp`: the expiry of its token, `None` without one.
    fn client(user: &str, device: &str, exp: Option<u64>) -> Endpoint {
        Endpoint::Client {
            user: Name::parse("user", user).expect("valid"),
            device: Name::parse("device", device).expect("valid"),
            claims: exp.map(|exp| Box::new(jwt::Claims::new(user, exp))),
        }
    }

    fn status(r: Result<Endpoint, Refusal>) -> u16 {
        r.map_or_else(|e| e.status.as_u16(), |_| 101)
    }

    #[test]
    fn routes_by_path() {
        let s = jwt_settings();
        assert_eq!(admit(&s, &request("/echo", None), NOW), Ok(Endpoint::Echo));
        assert_eq!(status(admit(&s, &request("/other", None), NOW)), 404);
        assert_eq!(status(admit(&s, &request("/ws/x", None), NOW)), 404);
        let off = Settings::defaults();
        assert_eq!(status(admit(&off, &request("/echo", None), NOW)), 404);
    }

    #[test]
    fn jwt_from_query_or_bearer() {
        let s = jwt_settings();
        let t = token("alice", NOW + 60);
        let q = admit(&s, &request(&format!("/ws?token={t}"), None), NOW);
        assert_eq!(q, Ok(client("alice", "default", Some(NOW + 60))));
        let bearer = format!("Bearer {t}");
        let h = admit(&s, &request("/ws?device=phone", Some(&bearer)), NOW);
        assert_eq!(h, Ok(client("alice", "phone", Some(NOW + 60))));
    }

    #[test]
    fn bad_tokens_are_401() {
        let s = jwt_settings();
        assert_eq!(status(admit(&s, &request("/ws", None), NOW)), 401);
        assert_eq!(status(admit(&s, &request("/ws?token=abc", None), NOW)), 401);
        let expired = token("alice", NOW - 1);
        assert_eq!(
            status(admit(
                &s,
                &request(&format!("/ws?token={expired}"), None),
                NOW
            )),
            401
        );
        let forged = jwt::mint(b"other", "alice", NOW + 60);
        assert_eq!(
            status(admit(
                &s,
                &request(&format!("/ws?token={forged}"), None),
                NOW
            )),
            401
        );
        assert_eq!(
            status(admit(&s, &request("/ws", Some("Basic abc")), NOW)),
            401
        );
    }

    #[test]
    fn tokens_with_bad_grant_patterns_are_401() {
        let s = jwt_settings();
        let secret = SECRET;
        let mut claims = jwt::Claims::new("alice", NOW + 60);
        claims.publish = vec!["team.*.x".into()];
        let t = jwt::mint_claims(secret, &claims);
        let refused = admit(&s, &request(&format!("/ws?token={t}"), None), NOW);
        assert_eq!(status(refused.clone()), 401);
        assert!(format!("{:?}", refused).contains("publish"), "{refused:?}");
        claims.publish = vec!["team.*".into()];
        let t = jwt::mint_claims(secret, &claims);
        assert!(admit(&s, &request(&format!("/ws?token={t}"), None), NOW).is_ok());
    }

    #[test]
    fn origins_outside_the_allow_list_are_403_on_the_protocol_path() {
        let mut s = jwt_settings();
        s.allowed_origins = vec!["https://*.example.com".to_owned()];
        let t = token("alice", NOW + 60);
        let with_origin = |path: &str, origin: Option<&str>| {
            let mut b = Request::builder().uri(path.replace("TOKEN", &t));
            if let Some(o) = origin {
                b = b.header("Origin", o);
            }
            status(admit(&s, &b.body(()).expect("request"), NOW))
        };
        assert_eq!(
            with_origin("/ws?token=TOKEN", Some("https://app.example.com")),
            101
        );
        assert_eq!(
            with_origin("/ws?token=TOKEN", Some("https://evil.net")),
            403
        );
        assert_eq!(with_origin("/ws?token=bad", Some("https://evil.net")), 403);
        assert_eq!(
            with_origin("/ws?token=TOKEN", None),
            101,
            "no Origin: not a browser"
        );
        assert_eq!(
            with_origin("/echo", Some("https://evil.net")),
            101,
            "echo: no check"
        );
    }

    #[test]
    fn bad_identities_are_400() {
        let s = jwt_settings();
        let bad_sub = token("a b", NOW + 60);
        assert_eq!(
            status(admit(
                &s,
                &request(&format!("/ws?token={bad_sub}"), None),
                NOW
            )),
            400
        );
        let t = token("alice", NOW + 60);
        let uri = format!("/ws?token={t}&device=%20x");
        assert_eq!(status(admit(&s, &request(&uri, None), NOW)), 400);
        let uri = format!("/ws?token={t}&device=%zz");
        assert_eq!(status(admit(&s, &request(&uri, None), NOW)), 400);
    }

    #[test]
    fn auth_none_takes_user_param() {
        let s = settings(AuthMode::None);
        assert_eq!(
            admit(&s, &request("/ws?user=bob%40example&device=tab", None), NOW),
            Ok(client("bob@example", "tab", None))
        );
        assert_eq!(status(admit(&s, &request("/ws", None), NOW)), 400);
        assert_eq!(status(admit(&s, &request("/ws?user=", None), NOW)), 400);
        assert_eq!(
            status(admit(&s, &request("/ws?user=%C3%A9", None), NOW)),
            400
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%41%2b+").as_deref(), Some("aA++"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(query_param("a=1&b&c=3", "b"), Ok(Some(String::new())));
        assert_eq!(query_param("a=1&a=2", "a"), Ok(Some("1".to_owned())));
        assert_eq!(query_param("", "a"), Ok(None));
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade_head(path: &str, version: &str, key: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: {version}\r\n\
             Sec-WebSocket-Key: {key}\r\n\r\n"
        )
    }

    /// Status, hint and head-only flag of a refusal; 101 for an upgrade, 0 for partial.
    fn pre(input: &str, full: bool) -> (u16, Hint, bool) {
        match precheck(input.as_bytes(), full, &jwt_settings()) {
            Precheck::Partial => (0, Hint::None, false),
            Precheck::Upgrade => (101, Hint::None, false),
            Precheck::Refuse { refusal, head_only } => {
                (refusal.status.as_u16(), refusal.hint, head_only)
            }
        }
    }

    #[test]
    fn upgrades_pass_and_partial_heads_wait() {
        assert_eq!(pre(&upgrade_head("/ws?token=x", "13", KEY), false).0, 101);
        assert_eq!(pre(&upgrade_head("/echo", "13", KEY), false).0, 101);
        let head = upgrade_head("/ws", "13", KEY);
        for cut in [1, 5, 20, head.len() - 1] {
            assert_eq!(pre(&head[..cut], false).0, 0, "cut at {cut}");
        }
        // A head bigger than the peek is left to tungstenite's own bound.
        assert_eq!(pre(&head[..20], true).0, 101);
    }

    #[test]
    fn plain_requests_get_426_405_404() {
        let get = "GET /ws HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(pre(get, false), (426, Hint::Upgrade, false));
        let head = "HEAD /echo?x=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(pre(head, false), (426, Hint::Upgrade, true));
        let post = "POST /ws HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(pre(post, false), (405, Hint::AllowGet, false));
        let nope = "GET /nope HTTP/1.1\r\n\r\n";
        assert_eq!(pre(nope, false), (404, Hint::None, false));
        let head_nope = "HEAD /nope HTTP/1.1\r\n\r\n";
        assert_eq!(pre(head_nope, false), (404, Hint::None, true));
        assert_eq!(pre(&upgrade_head("/nope", "13", KEY), false).0, 404);
        let absolute = "GET http://h/ws HTTP/1.1\r\n\r\n";
        assert_eq!(pre(absolute, false).0, 426);
    }

    #[test]
    fn broken_heads_and_upgrades_are_400() {
        assert_eq!(pre("\x16\x03\x01\x02\x00garbage\r\n\r\n", false).0, 400);
        assert_eq!(pre("GET /ws HTTP/1.1\r\nbad header\r\n\r\n", false).0, 400);
        assert_eq!(pre("GET /ws HTTP/1.1\r\nbad header", false).0, 400);
        assert_eq!(
            pre(&upgrade_head("/ws", "8", KEY), false),
            (400, Hint::Version, false)
        );
        assert_eq!(pre(&upgrade_head("/ws", "13", "short"), false).0, 400);
        let no_key = upgrade_head("/ws", "13", KEY).replace("Sec-WebSocket-Key", "X-Key");
        assert_eq!(pre(&no_key, false).0, 400);
        let no_conn = upgrade_head("/ws", "13", KEY).replace("keep-alive, Upgrade", "close");
        assert_eq!(pre(&no_conn, false).0, 400);
        let http10 = upgrade_head("/ws", "13", KEY).replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(pre(&http10, false).0, 400);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert_eq!(
            pre(&format!("GET /ws HTTP/1.1\r\n{many}\r\n"), false).0,
            431
        );
    }

    #[test]
    fn refusals_render_with_hints_and_head_only() {
        let text = |r: &Refusal, head_only| {
            String::from_utf8(r.to_http(head_only).expect("renders")).expect("ascii")
        };
        let r = Refusal::new(StatusCode::UPGRADE_REQUIRED, "use ws").hinted(Hint::Upgrade);
        let full = text(&r, false);
        assert!(
            full.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{full}"
        );
        assert!(full.contains("upgrade: websocket\r\n"), "{full}");
        assert!(full.contains("sec-websocket-version: 13\r\n"), "{full}");
        assert!(full.contains("connection: close\r\n"), "{full}");
        assert!(full.ends_with("\r\n\r\nuse ws\n"), "{full}");
        let head = text(&r, true);
        assert!(head.contains("content-length: 7\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let r = Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "get").hinted(Hint::AllowGet);
        assert!(text(&r, false).contains("allow: GET\r\n"));
    }

    #[test]
    fn refusal_response_has_body_and_length() {
        let resp = Refusal::new(StatusCode::UNAUTHORIZED, "bad token").into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.body().as_deref(), Some("bad token\n"));
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "10");
    }
}
