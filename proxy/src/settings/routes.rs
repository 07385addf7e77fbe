//! The tunnel settings: `--route PATH=ws://HOST:PORT[/path]` (repeatable; `HERMOD_ROUTE` as a
//! comma-separated list; `route = ["/t=ws://..."]` or one string in the file),
//! `--route-connect-timeout` and `--route-idle-timeout`. As for every setting, the first source
//! that sets `route` wins as a whole: flags are not merged with the environment or the file.
//!
//! A route's upstream host is resolved here, once at startup (as nginx resolves a `proxy_pass`
//! host): no DNS lookup ever blocks a reactor. This is the only step of settings resolution that
//! is not a pure function of its inputs.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use hermod_core::settings::{duration, env_name, Origin, SettingError as ConfigError, Sources};

use super::paths::{is_path, parse_path};
use super::resolve::RunArgs;
use super::Settings;

/// Routes one process may have (each is matched by a linear scan of short strings).
const MAX_ROUTES: usize = 64;

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
/// startup's one DNS lookup, [`lookup_host`]; tests pass their own).
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

/// Resolves `host` with the system resolver (blocking): called once per route while the settings
/// are resolved at startup, never on a reactor thread.
pub fn lookup_host(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
}

/// Resolves the routes and their timeouts into `s` (after `ws_path`/`echo_path`, which a route
/// must not shadow).
pub(super) fn resolve_routes(
    args: &RunArgs,
    src: &Sources<'_>,
    s: &mut Settings,
) -> Result<(), ConfigError> {
    let (raw, origin) = raw_routes(args, src)?;
    let error = |problem: String| ConfigError::new("route", origin.clone(), problem);
    if raw.len() > MAX_ROUTES {
        return Err(error(format!("at most {MAX_ROUTES} routes")));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for v in &raw {
        let route = parse_route(v.trim(), lookup_host).map_err(error)?;
        let taken = s.serves_path(&route.path) || routes.iter().any(|r| r.path == route.path);
        if taken {
            return Err(error(format!("path {} is already in use", route.path)));
        }
        routes.push(route);
    }
    s.routes = routes;
    src.set(&mut s.route_connect_timeout, "route_connect_timeout", |v| {
        duration(v, Duration::from_millis(10), Duration::from_secs(3600))
    })?;
    let idle = src.get("route_idle_timeout", |v| {
        duration(v, Duration::ZERO, Duration::from_secs(7 * 86_400))
    })?;
    if let Some(idle) = idle {
        s.route_idle_timeout = (!idle.is_zero()).then_some(idle);
    }
    Ok(())
}

/// The unparsed routes of the first source that has any, and where they came from.
fn raw_routes(args: &RunArgs, src: &Sources<'_>) -> Result<(Vec<String>, Origin), ConfigError> {
    if !args.route.is_empty() {
        return Ok((args.route.clone(), Origin::Flag));
    }
    let var = env_name("route");
    if let Some(v) = (src.env)(&var).filter(|v| !v.trim().is_empty()) {
        let list = v.split(',').map(str::to_owned).collect();
        return Ok((list, Origin::Env(var)));
    }
    let Some(file) = src.file else {
        return Ok((Vec::new(), Origin::Flag));
    };
    let origin = file.origin();
    let list = match file.value("route") {
        None => Vec::new(),
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| {
                ConfigError::new("route", origin.clone(), "must be an array of strings")
            })?,
        Some(_) => {
            let problem = "must be a string or an array of strings";
            return Err(ConfigError::new("route", origin, problem));
        }
    };
    Ok((list, origin))
}

#[cfg(test)]
mod tests {
    use super::super::resolve::{parse_cli, resolve, ConfigFile, Resolved, SETTING_KEYS};
    use super::*;
    use std::time::Duration;

    fn run(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> Result<Resolved, String> {
        let mut argv = vec!["hermod-proxy"];
        argv.extend_from_slice(args);
        let cli = parse_cli(argv).map_err(|e| e.to_string())?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let file = file
            .map(|text| ConfigFile::parse("f.toml", text, SETTING_KEYS))
            .transpose()
            .map_err(|e| e.to_string())?;
        resolve(&cli.run, &lookup, file.as_ref(), || "s".to_owned()).map_err(|e| e.to_string())
    }

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

    fn paths(r: &Resolved) -> Vec<String> {
        r.settings.routes.iter().map(|r| r.path.clone()).collect()
    }

    #[test]
    fn routes_come_from_flags_then_env_then_file() {
        let flags = [
            "--route",
            "/a=ws://127.0.0.1:1",
            "--route",
            "/b=ws://127.0.0.1:2/x",
        ];
        let env = [("HERMOD_ROUTE", "/e=ws://127.0.0.1:3, /f=ws://127.0.0.1:4")];
        let file = Some("route = [\"/g=ws://127.0.0.1:5\"]\n");
        let r = run(&flags, &env, file).expect("resolves");
        assert_eq!(paths(&r), ["/a", "/b"]);
        assert_eq!(r.settings.routes[1].upstream.path, "/x");
        assert_eq!(paths(&run(&[], &env, file).expect("env")), ["/e", "/f"]);
        assert_eq!(paths(&run(&[], &[], file).expect("file")), ["/g"]);
        let one = Some("route = \"/h=ws://127.0.0.1:6\"\n");
        assert_eq!(paths(&run(&[], &[], one).expect("string")), ["/h"]);
        assert!(run(&[], &[], None)
            .expect("none")
            .settings
            .routes
            .is_empty());
    }

    #[test]
    fn bad_routes_are_one_line_errors() {
        let e = run(&["--route", "/t=http://127.0.0.1:1"], &[], None).unwrap_err();
        assert!(e.starts_with("--route: `http://127.0.0.1:1`"), "{e}");
        let e = run(&["--route", "/ws=ws://127.0.0.1:1"], &[], None).unwrap_err();
        assert!(e.contains("already in use"), "{e}");
        let dup = [
            "--route",
            "/t=ws://127.0.0.1:1",
            "--route",
            "/t=ws://127.0.0.1:2",
        ];
        assert!(run(&dup, &[], None).unwrap_err().contains("already in use"));
        let echo = ["--echo-path", "/e", "--route", "/e=ws://127.0.0.1:1"];
        assert!(run(&echo, &[], None)
            .unwrap_err()
            .contains("already in use"));
        let e = run(&[], &[("HERMOD_ROUTE", "nope")], None).unwrap_err();
        assert!(e.starts_with("--route (from HERMOD_ROUTE): "), "{e}");
        let e = run(&[], &[], Some("route = [1]\n")).unwrap_err();
        assert!(e.starts_with("--route (from f.toml): "), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn route_timeouts() {
        let r = run(&[], &[], None).expect("defaults");
        assert_eq!(r.settings.route_connect_timeout, Duration::from_secs(5));
        assert_eq!(r.settings.route_idle_timeout, None);
        let args = [
            "--route-connect-timeout",
            "250ms",
            "--route-idle-timeout",
            "2m",
        ];
        let r = run(&args, &[], None).expect("set");
        assert_eq!(r.settings.route_connect_timeout, Duration::from_millis(250));
        assert_eq!(
            r.settings.route_idle_timeout,
            Some(Duration::from_secs(120))
        );
        let r = run(&["--route-idle-timeout", "0"], &[], None).expect("off");
        assert_eq!(r.settings.route_idle_timeout, None);
        assert!(run(&["--route-connect-timeout", "0"], &[], None).is_err());
    }
}
