//! The one rule for the HTTP paths the gateway serves: the protocol path (`/ws`), the echo path
//! (`--echo-path`) and tunnel route paths (`--route PATH=...`, and the upstream's path): a path
//! starts with `/`, has at most [`MAX_PATH`] printable ASCII characters and no `?` or `#` (the
//! query is not part of it). Two endpoints never share a path.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

/// Longest path of an endpoint or route.
pub const MAX_PATH: usize = 256;

/// Whether `p` is a valid path.
pub fn is_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= MAX_PATH
        && p.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
}

/// `v` as a path, or the one-line problem.
pub fn parse_path(v: &str) -> Result<String, String> {
    if is_path(v) {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "`{v}` is not a path (starts with /, at most {MAX_PATH} printable characters, no ? \
             or #)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_start_with_a_slash_and_stop_before_the_query() {
        for ok in ["/", "/ws", "/a/b.c-d_e~f"] {
            assert_eq!(parse_path(ok).as_deref(), Ok(ok));
        }
        let long = format!("/{}", "x".repeat(MAX_PATH));
        for bad in ["", "ws", "/a?b", "/a#b", "/a b", "/\u{e9}", long.as_str()] {
            assert!(parse_path(bad).is_err(), "{bad:?}");
        }
    }
}
