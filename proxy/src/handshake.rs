//! Routing and authentication at the WebSocket upgrade, as pure functions of the HTTP request.
//!
//! [`admit`] decides what an upgrade request gets: the client protocol (with an identity), the echo
//! endpoint, or an HTTP error before any upgrade (401 bad token, 400 bad identity, 404 unknown
//! path). [`Gate`] plugs it into tungstenite's handshake callback and hands the outcome to the
//! worker through a shared cell, because tungstenite consumes the callback.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hermod_core::ids::Name;
use hermod_core::jwt;
use parking_lot::Mutex;
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};
use tungstenite::http::{header, StatusCode};

use crate::settings::{AuthMode, Settings};

/// What an admitted upgrade leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The v1 client protocol for this identity.
    Client { user: Name, device: Name },
    /// The built-in echo endpoint.
    Echo,
}

/// An upgrade refused with an HTTP status and a short plain-text reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
        }
    }

    /// The HTTP response tungstenite writes instead of the 101.
    pub fn into_response(self) -> ErrorResponse {
        let body = format!("{}\n", self.reason);
        let mut resp = ErrorResponse::new(Some(body.clone()));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
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
    let user = match &settings.auth {
        AuthMode::Jwt { secret } => {
            let token = match query_param(query, "token")? {
                Some(t) => t,
                None => bearer(req)?,
            };
            let claims = jwt::verify(secret, &token, now_unix)
                .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, format!("bad token: {e}")))?;
            Name::parse("user", &claims.sub).map_err(bad_request)?
        }
        AuthMode::None => {
            let user = query_param(query, "user")?
                .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "missing user parameter"))?;
            Name::parse("user", &user).map_err(bad_request)?
        }
    };
    let device = query_param(query, "device")?.unwrap_or_else(|| "default".to_owned());
    let device = Name::parse("device", &device).map_err(bad_request)?;
    Ok(Endpoint::Client { user, device })
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

/// Where [`Gate`] leaves the admitted endpoint for the worker.
pub type Admission = Arc<Mutex<Option<Endpoint>>>;

/// tungstenite's handshake callback: runs [`admit`] on the request and stores the outcome.
#[derive(Debug)]
pub struct Gate {
    /// Routing and auth settings.
    pub settings: Arc<Settings>,
    /// Filled with the endpoint when the request is admitted; read by the worker after the upgrade.
    pub admission: Admission,
}

impl Callback for Gate {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match admit(&self.settings, request, now) {
            Ok(endpoint) => {
                *self.admission.lock() = Some(endpoint);
                Ok(response)
            }
            Err(refusal) => Err(refusal.into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";
    const NOW: u64 = 1_700_000_000;

    fn settings(auth: AuthMode) -> Settings {
        let mut s = Settings::defaults();
        s.auth = auth;
        s.echo_path = Some("/echo".to_owned());
        s
    }

    fn jwt_settings() -> Settings {
        settings(AuthMode::Jwt {
            secret: SECRET.to_vec(),
        })
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

    fn client(user: &str, device: &str) -> Endpoint {
        Endpoint::Client {
            user: Name::parse("user", user).expect("valid"),
            device: Name::parse("device", device).expect("valid"),
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
        assert_eq!(q, Ok(client("alice", "default")));
        let bearer = format!("Bearer {t}");
        let h = admit(&s, &request("/ws?device=phone", Some(&bearer)), NOW);
        assert_eq!(h, Ok(client("alice", "phone")));
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
            Ok(client("bob@example", "tab"))
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

    #[test]
    fn refusal_response_has_body_and_length() {
        let resp = Refusal::new(StatusCode::UNAUTHORIZED, "bad token").into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.body().as_deref(), Some("bad token\n"));
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "10");
    }
}
