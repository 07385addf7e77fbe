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

#[cfg(test)]
mod tests {
    use super::*;

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
