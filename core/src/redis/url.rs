//! `redis://[[user]:password@]host[:port][/db]` into a [`ClientConfig`].

use super::{ClientConfig, Secret, Target};

/// Why a Redis URL was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `redis://...` (TLS `rediss://` is not supported).
    #[error("the scheme must be redis://")]
    Scheme,
    /// No host, or a malformed `host:port`.
    #[error("bad host or port")]
    HostPort,
    /// The path is not a database number.
    #[error("bad database number")]
    Db,
    /// A `%` escape in the user or password is malformed.
    #[error("bad percent-escape in the credentials")]
    Escape,
    /// Query strings and fragments are not supported.
    #[error("unexpected query or fragment")]
    Extra,
}

/// Parses a Redis URL. The port defaults to 6379 and the database to 0; user and password may
/// be percent-encoded; `redis://:pw@host` sets only a password.
pub fn parse_redis_url(url: &str) -> Result<ClientConfig, UrlError> {
    let rest = url.strip_prefix("redis://").ok_or(UrlError::Scheme)?;
    if rest.contains(['?', '#']) {
        return Err(UrlError::Extra);
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let addr = host_port(hostport)?;
    let db = match path {
        "" => 0,
        p => p.parse::<u32>().map_err(|_| UrlError::Db)?,
    };
    let mut config = ClientConfig::new(Target::Direct { addr });
    config.db = db;
    if let Some(info) = userinfo {
        let (user, pass) = match info.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (info, None),
        };
        config.username = Some(decode(user)?).filter(|u| !u.is_empty());
        config.password = pass.map(decode).transpose()?.map(Secret::new);
        if config.password.is_none() && config.username.is_some() {
            // `redis://secret@host` is the classic password-only form.
            config.password = config.username.take().map(Secret::new);
        }
    }
    Ok(config)
}

/// Checks `host[:port]` (`[v6]:port` too) and returns it with the port made explicit.
fn host_port(s: &str) -> Result<String, UrlError> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(UrlError::HostPort)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(UrlError::HostPort)?),
        };
        (format!("[{host}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (s.to_owned(), None),
        }
    };
    let bad_host = host.is_empty() || host.bytes().any(|b| !b.is_ascii_graphic() || b == b'@');
    if bad_host {
        return Err(UrlError::HostPort);
    }
    let port = match port {
        None => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or(UrlError::HostPort)?,
    };
    Ok(format!("{host}:{port}"))
}

/// Percent-decodes one URL component.
fn decode(s: &str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(UrlError::Escape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UrlError::Escape)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::Escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(c: &ClientConfig) -> &str {
        match &c.target {
            Target::Direct { addr } => addr,
            Target::Sentinel { .. } => "",
        }
    }

    #[test]
    fn forms() -> Result<(), UrlError> {
        let c = parse_redis_url("redis://127.0.0.1:6380/3")?;
        assert_eq!(
            (
                addr(&c),
                c.db,
                c.username.clone(),
                c.password.clone().map(|p| p.expose().to_owned())
            ),
            ("127.0.0.1:6380", 3, None, None)
        );
        let c = parse_redis_url("redis://localhost")?;
        assert_eq!((addr(&c), c.db), ("localhost:6379", 0));
        let c = parse_redis_url("redis://bob:p%40ss@h:1/")?;
        assert_eq!(
            (
                c.username.as_deref(),
                c.password.as_ref().map(Secret::expose)
            ),
            (Some("bob"), Some("p@ss"))
        );
        let c = parse_redis_url("redis://:secret@h:1")?;
        assert_eq!(
            (
                c.username.as_deref(),
                c.password.as_ref().map(Secret::expose)
            ),
            (None, Some("secret"))
        );
        let c = parse_redis_url("redis://secret@h")?;
        assert_eq!(
            (
                c.username.as_deref(),
                c.password.as_ref().map(Secret::expose)
            ),
            (None, Some("secret"))
        );
        let c = parse_redis_url("redis://[::1]:7000")?;
        assert_eq!(addr(&c), "[::1]:7000");
        Ok(())
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_redis_url("http://h").err(), Some(UrlError::Scheme));
        assert_eq!(parse_redis_url("rediss://h").err(), Some(UrlError::Scheme));
        assert_eq!(parse_redis_url("redis://").err(), Some(UrlError::HostPort));
        assert_eq!(
            parse_redis_url("redis://h:0").err(),
            Some(UrlError::HostPort)
        );
        assert_eq!(
            parse_redis_url("redis://h:99999").err(),
            Some(UrlError::HostPort)
        );
        assert_eq!(parse_redis_url("redis://h/x").err(), Some(UrlError::Db));
        assert_eq!(
            parse_redis_url("redis://a:%zz@h").err(),
            Some(UrlError::Escape)
        );
        assert_eq!(
            parse_redis_url("redis://h?x=1").err(),
            Some(UrlError::Extra)
        );
    }
}
