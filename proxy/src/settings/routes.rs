//! A tunnel route, `--route PATH=ws://HOST:PORT[/path]`: [`Route`] and its parsing.
//!
//! Pure: a host name goes to the lookup the caller passes in. The settings stage passes the
//! system resolver (`resolve::lookup_host`), once per route at startup (as nginx resolves a
//! `proxy_pass` host): no DNS lookup ever blocks a reactor.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{IpAddr, SocketAddr};

use super::paths::{is_path, parse_path};

/// One `--route`: requests for `path` are tunnelled to `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The client-facing path, matched exactly against the request's path (query excluded).
    pub path: String,
    /// Where the matched requests go.
    pub upstream: Upstream,
}

/// A route's upstream WebSocket server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The address connected to for every tunnel; resolved once at startup, as nginx resolves a
    /// `proxy_pass` host, so no DNS lookup ever blocks a reactor.
    pub addr: SocketAddr,
    /// The `Host` header sent upstream: `HOST:PORT` as configured.
    pub host: String,
    /// The request line's path upstream (default `/`); the client's query string is appended.
    pub path: String,
}

/// Parses `PATH=ws://HOST:PORT[/path]`; a HOST that is no IP literal goes to `lookup` (the
/// startup's one DNS lookup, `resolve::lookup_host`; tests pass their own).
pub fn parse_route(
    v: &str,
    lookup: impl FnOnce(&str, u16) -> Option<SocketAddr>,
) -> Result<Route, String> {
    let (path, url) = v
        .split_once('=')
        .ok_or_else(|| format!("`{v}` is not PATH=ws://HOST:PORT[/path]"))?;
    parse_path(path)?;
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        format!("`{url}`: the upstream must be ws://HOST:PORT[/path] (wss is not supported)")
    })?;
    let (authority, upstream_path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if !is_path(upstream_path) {
        return Err(format!("`{url}`: bad upstream path `{upstream_path}`"));
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("`{url}`: the upstream needs HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{url}`: bad port `{port}`"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = match bare.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) if !bare.is_empty() && bare.bytes().all(is_host_byte) => {
            lookup(bare, port).ok_or_else(|| format!("`{url}`: cannot resolve `{bare}`"))?
        }
        Err(_) => return Err(format!("`{url}`: bad host `{host}`")),
    };
    Ok(Route {
        path: path.to_owned(),
        upstream: Upstream {
            addr,
            host: authority.to_owned(),
            path: upstream_path.to_owned(),
        },
    })
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_dns(_: &str, _: u16) -> Option<SocketAddr> {
        None
    }

    #[test]
    fn parses_routes() {
        let r = parse_route("/t=ws://127.0.0.1:9000/echo/x", no_dns).expect("valid");
        assert_eq!(r.path, "/t");
        assert_eq!(r.upstream.addr, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(r.upstream.host, "127.0.0.1:9000");
        assert_eq!(r.upstream.path, "/echo/x");
        let r = parse_route("/v6=ws://[::1]:80", no_dns).expect("valid");
        assert_eq!(r.upstream.addr, "[::1]:80".parse().expect("addr"));
        assert_eq!(r.upstream.path, "/");
        // A host name goes to the lookup (the real one: at startup, once); an IP literal does not.
        let local = |host: &str, port: u16| {
            (host == "localhost").then(|| SocketAddr::from(([127, 0, 0, 1], port)))
        };
        let r = parse_route("/l=ws://localhost:81/", local).expect("localhost resolves");
        assert_eq!(r.upstream.addr, "127.0.0.1:81".parse().expect("addr"));
        assert_eq!(r.upstream.host, "localhost:81");
        let e = parse_route("/n=ws://nowhere.invalid:81/", local).unwrap_err();
        assert!(e.contains("cannot resolve `nowhere.invalid`"), "{e}");
        for bad in [
            "/t",
            "t=ws://127.0.0.1:1",
            "/t?x=ws://127.0.0.1:1",
            "/t=http://127.0.0.1:1",
            "/t=wss://127.0.0.1:1",
            "/t=ws://127.0.0.1",
            "/t=ws://127.0.0.1:0",
            "/t=ws://127.0.0.1:99999",
            "/t=ws://:80",
            "/t=ws://a b:80",
            "/t=ws://127.0.0.1:80/x?y",
        ] {
            assert!(parse_route(bad, no_dns).is_err(), "{bad}");
        }
    }
}
