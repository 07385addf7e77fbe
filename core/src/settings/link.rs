//! `--link-secret` (env `HERMOD_LINK_SECRET`, file key `link_secret`): the shared secret of the
//! broker link. A gateway presents it in `HELLO 3 AUTH hermod <secret>` on every broker link;
//! a broker refuses links that do not. Both binaries read it here; no error shows the value.

use std::net::SocketAddr;

use super::{Origin, SettingError, Sources};
use crate::link::{parse_link_secret, LinkSecret};

/// The link secret from the first source that sets it, if any.
pub fn link_secret(src: &Sources<'_>) -> Result<Option<LinkSecret>, SettingError> {
    src.get("link_secret", parse_link_secret)
}

/// A link listener on an address other than loopback needs a secret: anyone who can reach the
/// port could otherwise act as a gateway (read any user's inbox, send as anyone).
pub fn require_link_secret(
    listen: SocketAddr,
    secret: Option<&LinkSecret>,
) -> Result<(), SettingError> {
    if secret.is_some() || listen.ip().is_loopback() {
        return Ok(());
    }
    let problem = format!(
        "required when --listen ({listen}) is not a loopback address: gateways must \
         authenticate (set HERMOD_LINK_SECRET, or listen on 127.0.0.1)"
    );
    Err(SettingError::new("link_secret", Origin::Flag, problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_from_any_source_never_shown() {
        let flag = |_: &str| None;
        let env = |k: &str| (k == "HERMOD_LINK_SECRET").then(|| "short".to_owned());
        let src = Sources {
            flag: &flag,
            env: &env,
            file: None,
        };
        let e = link_secret(&src).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("--link-secret (from HERMOD_LINK_SECRET)"),
            "{text}"
        );
        assert!(!text.contains("short"), "{text}");
        let env = |k: &str| (k == "HERMOD_LINK_SECRET").then(|| "0123456789abcdef".to_owned());
        let src = Sources {
            flag: &flag,
            env: &env,
            file: None,
        };
        let s = link_secret(&src).unwrap().unwrap();
        assert!(s.verify(b"hermod", b"0123456789abcdef"));
    }

    #[test]
    fn non_loopback_listener_needs_a_secret() {
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let lo6: SocketAddr = "[::1]:7070".parse().unwrap();
        assert!(require_link_secret(lo, None).is_ok());
        assert!(require_link_secret(lo6, None).is_ok());
        let e = require_link_secret(any, None).unwrap_err().to_string();
        assert!(e.starts_with("--link-secret: required"), "{e}");
        assert!(!e.contains('\n'));
        let s = LinkSecret::new("0123456789abcdef");
        assert!(require_link_secret(any, Some(&s)).is_ok());
    }
}
