//! `--allowed-origins`: the browser origins allowed to open `/ws`, as patterns where `*` stands
//! for any run of characters (`https://*.example.com`, `http://localhost:*`, or `*` alone).
//!
//! Browsers send `Origin` on every WebSocket upgrade and scripts cannot forge it, so the list
//! stops a page on another site from opening sessions with a user's cookies or stored token
//! (cross-site WebSocket hijacking). Non-browser clients usually send none, and could send any
//! value: an upgrade without `Origin` is let through, and the token decides.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

/// Patterns one list may hold; each is matched by a linear scan of short strings.
const MAX_ORIGINS: usize = 64;
/// Longest pattern, in bytes.
const MAX_PATTERN_LEN: usize = 256;

/// Parses a comma-separated list (empty: no check). Patterns are compared ASCII
/// case-insensitively, as scheme and host are.
pub fn parse_origins(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if out.len() == MAX_ORIGINS {
            return Err(format!("at most {MAX_ORIGINS} origins"));
        }
        if item.len() > MAX_PATTERN_LEN || !item.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "`{item}`: an origin is up to {MAX_PATTERN_LEN} printable ASCII bytes, \
                 e.g. https://*.example.com"
            ));
        }
        if item != "*" && !item.contains("://") {
            return Err(format!(
                "`{item}`: expected SCHEME://HOST[:PORT], e.g. https://app.example.com"
            ));
        }
        out.push(item.to_ascii_lowercase());
    }
    Ok(out)
}

/// Whether `origin` matches one of `patterns`.
pub fn origin_allowed(patterns: &[String], origin: &str) -> bool {
    let origin = origin.trim().to_ascii_lowercase();
    patterns
        .iter()
        .any(|p| wildcard_match(p.as_bytes(), origin.as_bytes()))
}

/// `*` matches any run of bytes (including none); everything else matches itself. Greedy with
/// one backtrack point: linear in practice, at worst `pattern × text`, both bounded.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &str, origin: &str) -> bool {
        origin_allowed(&parse_origins(list).expect("valid list"), origin)
    }

    #[test]
    fn exact_and_wildcard_origins() {
        let list = "https://app.example.com, https://*.example.org, http://localhost:*";
        assert!(allowed(list, "https://app.example.com"));
        assert!(allowed(list, "HTTPS://App.Example.com"));
        assert!(allowed(list, "https://a.b.example.org"));
        assert!(allowed(list, "http://localhost:3000"));
        assert!(!allowed(list, "http://app.example.com"), "scheme matters");
        assert!(!allowed(list, "https://app.example.com.evil.net"));
        assert!(
            !allowed(list, "https://example.org"),
            "*. needs a subdomain"
        );
        assert!(!allowed(list, "https://evilexample.org"));
        assert!(!allowed(list, "null"));
        assert!(!allowed(list, ""));
        assert!(allowed("*", "https://anything"));
        assert!(
            !allowed("", "https://anything"),
            "an empty list allows nothing here"
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(parse_origins("app.example.com").is_err());
        assert!(parse_origins("https://a b").is_err());
        let many = vec!["https://a"; 65].join(",");
        assert!(parse_origins(&many).is_err());
        assert_eq!(parse_origins(" , ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn wildcards_match_like_a_glob() {
        for (p, t, ok) in [
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("**", "", true),
            ("a*", "a", true),
            ("*a", "ba", true),
            ("*a", "ab", false),
        ] {
            assert_eq!(wildcard_match(p.as_bytes(), t.as_bytes()), ok, "{p} {t}");
        }
    }
}
