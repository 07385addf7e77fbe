//! A target URL: the template with its `{i}` placeholder, and the address it resolves to.

use std::net::{SocketAddr, ToSocketAddrs};

use tungstenite::http::Uri;

/// The placeholder replaced by the connection index.
const PLACEHOLDER: &str = "{i}";

/// One `--url`, parsed and resolved once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given; `{i}` is substituted per connection.
    template: String,
    /// The resolved address of the host: every connection to this target dials it.
    addr: SocketAddr,
}

impl Target {
    /// Parses and resolves a `ws://` URL (clap value parser; errors become exit code 2).
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url
            .replace(PLACEHOLDER, "0")
            .parse()
            .map_err(|e| format!("{url}: {e}"))?;
        if uri.scheme_str() != Some("ws") {
            return Err(format!("{url}: only ws:// URLs are supported"));
        }
        let authority = uri.authority().ok_or_else(|| format!("{url}: no host"))?;
        if url
            .split('/')
            .nth(2)
            .is_some_and(|a| a.contains(PLACEHOLDER))
        {
            return Err(format!(
                "{url}: {PLACEHOLDER} is allowed in the path and query only"
            ));
        }
        let port = authority.port_u16().unwrap_or(80);
        let addr = (authority.host().trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: resolves to no address"))?;
        Ok(Target {
            template: url.to_string(),
            addr,
        })
    }

    /// The URL for connection `index`.
    pub fn url_for(&self, index: u32) -> String {
        if self.template.contains(PLACEHOLDER) {
            self.template.replace(PLACEHOLDER, &index.to_string())
        } else {
            self.template.clone()
        }
    }

    /// The address to dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// How a connection proves who it is: nothing (echo endpoints), Hermod's development mode
/// (`?user=`), or a JWT minted per user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The URL as given.
    Plain,
    /// `user={prefix}{i}&device=D` (a Hermod proxy with `--auth none`).
    Query {
        /// User `i` is `{prefix}{i}`.
        prefix: String,
        /// The `device` parameter.
        device: String,
    },
    /// `token=JWT&device=D`, the token signed with `secret` for `{prefix}{i}`.
    Jwt {
        /// Room patterns the token grants joining and publishing to (`room` runs: the run's
        /// room prefix followed by `*`); empty for the other scenarios.
        room_grants: Vec<String>,
        /// HS256 secret shared with the proxy.
        secret: String,
        /// User `i` is `{prefix}{i}`.
        prefix: String,
        /// The `device` parameter.
        device: String,
        /// Expiry of the minted tokens, unix seconds.
        exp_unix: u64,
    },
}

impl Auth {
    /// `url` with the identity of connection `index` appended to its query.
    pub fn apply(&self, mut url: String, index: u32) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        match self {
            Auth::Plain => return url,
            Auth::Query { prefix, device } => {
                url.push(sep);
                url.push_str(&format!("user={prefix}{index}&device={device}"));
            }
            Auth::Jwt {
                room_grants,
                secret,
                prefix,
                device,
                exp_unix,
            } => {
                let claims = hermod_core::jwt::Claims {
                    rooms: room_grants.clone(),
                    publish: room_grants.clone(),
                    ..hermod_core::jwt::Claims::new(format!("{prefix}{index}"), *exp_unix)
                };
                let token = hermod_core::jwt::mint_claims(secret.as_bytes(), &claims);
                url.push(sep);
                url.push_str(&format!("token={token}&device={device}"));
            }
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_appends_the_identity() {
        let q = Auth::Query {
            prefix: "u".into(),
            device: "lg".into(),
        };
        assert_eq!(
            q.apply("ws://h:1/ws".into(), 7),
            "ws://h:1/ws?user=u7&device=lg"
        );
        assert_eq!(
            q.apply("ws://h:1/ws?x=1".into(), 7),
            "ws://h:1/ws?x=1&user=u7&device=lg"
        );
        // The token of connection 3 minted with these room grants.
        let token_of = |room_grants: Vec<String>| {
            let j = Auth::Jwt {
                room_grants,
                secret: "s".into(),
                prefix: "u".into(),
                device: "d".into(),
                exp_unix: 4_000_000_000,
            };
            let url = j.apply("ws://h:1/ws".into(), 3);
            url.strip_prefix("ws://h:1/ws?token=")
                .and_then(|t| t.strip_suffix("&device=d"))
                .map(str::to_owned)
                .unwrap()
        };
        assert_eq!(
            token_of(Vec::new()),
            hermod_core::jwt::mint(b"s", "u3", 4_000_000_000)
        );
        let granted = token_of(vec!["lgroom*".into()]);
        // Verified an hour before it expires: within the default maximum lifetime.
        let claims = hermod_core::jwt::verify(b"s", &granted, 4_000_000_000 - 3600).unwrap();
        let grants = vec!["lgroom*".to_string()];
        assert_eq!((claims.rooms, claims.publish), (grants.clone(), grants));
        assert_eq!(Auth::Plain.apply("ws://h/".into(), 1), "ws://h/");
    }

    #[test]
    fn placeholder_is_substituted() {
        let t = Target::parse("ws://127.0.0.1:9000/ws?user=u{i}").unwrap();
        assert_eq!(t.url_for(42), "ws://127.0.0.1:9000/ws?user=u42");
        assert_eq!(t.addr(), "127.0.0.1:9000".parse().unwrap());
        let plain = Target::parse("ws://127.0.0.1/echo").unwrap();
        assert_eq!(plain.url_for(3), "ws://127.0.0.1/echo");
        assert_eq!(plain.addr().port(), 80);
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(Target::parse("http://127.0.0.1/").is_err());
        assert!(Target::parse("wss://127.0.0.1/").is_err());
        assert!(Target::parse("ws://127.0.0.{i}:80/").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
