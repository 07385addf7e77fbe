//! Link authentication and the bounds on what a link may send, before and after it
//! authenticated. Pure: no clock, no socket.
//!
//! A gateway presents the shared link secret as `HELLO 3 AUTH hermod <secret>` (an operator's
//! `redis-cli` as `AUTH hermod <secret>`). [`LinkSecret::verify`] compares in constant time:
//! both sides are first reduced to an HMAC-SHA256 tag under a fixed key, and the two 32-byte
//! tags are compared with `hmac`'s constant-time `verify_slice`, so neither the secret's bytes
//! nor its length can be learned from timing.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::redis::Secret;
use crate::resp::RespLimits;

use super::MAX_FRAME_LEN;

/// The user name a link authenticates as (`HELLO 3 AUTH hermod <secret>`).
pub const AUTH_USER: &str = "hermod";
/// Shortest accepted `--link-secret`: a guessable secret is no authentication.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest accepted `--link-secret` (it must fit a pre-auth frame with room to spare).
pub const MAX_SECRET_LEN: usize = 512;
/// Largest frame, and most bytes buffered, from a link that has not authenticated: `HELLO 3
/// AUTH hermod <secret> SETNAME <name>` fits with room to spare.
pub const PRE_AUTH_FRAME: usize = 4096;
/// Most arguments of any link command (`HELLO 3 AUTH u p SETNAME n` has 7).
pub const MAX_COMMAND_ARGS: usize = 8;
/// What a command needs beyond its one large bulk (`data`): the other fields and headers.
pub const COMMAND_MARGIN: usize = 4096;

/// Fixed key of the tags compared in [`LinkSecret::verify`] (not a secret: it only makes the
/// comparison length-independent).
const TAG_KEY: &[u8] = b"hermod-link-auth-v1";

/// The shared link secret. `Debug` prints `***`; the text is reached only through
/// [`LinkSecret::expose`], where the gateway puts it on the wire.
#[derive(Clone)]
pub struct LinkSecret {
    secret: Secret,
    tag: [u8; 32],
}

impl LinkSecret {
    /// Wraps a secret (its length is checked by [`parse_link_secret`]).
    pub fn new(secret: impl Into<String>) -> Self {
        let secret = Secret::new(secret.into());
        let tag = tag(secret.expose().as_bytes());
        LinkSecret { secret, tag }
    }

    /// The secret itself, for the `HELLO ... AUTH` that sends it.
    pub fn expose(&self) -> &str {
        self.secret.expose()
    }

    /// Whether `user`/`pass` are `hermod` and this secret, in time independent of `pass`.
    pub fn verify(&self, user: &[u8], pass: &[u8]) -> bool {
        let mut mac = keyed();
        mac.update(pass);
        let pass_ok = mac.verify_slice(&self.tag).is_ok();
        // Both checks always run: the user name is public, but the order must not matter.
        let user_ok = user == AUTH_USER.as_bytes();
        pass_ok & user_ok
    }
}

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

fn keyed() -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this never fails.
    <Hmac<Sha256> as Mac>::new_from_slice(TAG_KEY).expect("HMAC accepts keys of any length")
}

fn tag(bytes: &[u8]) -> [u8; 32] {
    let mut mac = keyed();
    mac.update(bytes);
    mac.finalize().into_bytes().into()
}

/// `--link-secret`: [`MIN_SECRET_LEN`] to [`MAX_SECRET_LEN`] printable ASCII characters, no
/// spaces. The error never shows the value.
pub fn parse_link_secret(v: &str) -> Result<LinkSecret, String> {
    if v.len() < MIN_SECRET_LEN || v.len() > MAX_SECRET_LEN {
        return Err(format!(
            "must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters (value not shown)"
        ));
    }
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces (value not shown)".into());
    }
    Ok(LinkSecret::new(v))
}

/// Input bounds of a link that has not authenticated: flat commands of at most
/// [`MAX_COMMAND_ARGS`] short arguments, [`PRE_AUTH_FRAME`] bytes buffered at most. A 64 MiB
/// array, a nested array or a large bulk is refused at its header.
pub fn pre_auth_limits() -> RespLimits {
    RespLimits {
        max_bulk: 1024,
        max_depth: 1,
        max_array_len: MAX_COMMAND_ARGS,
        max_line: 64,
        max_buffer: PRE_AUTH_FRAME,
    }
}

/// Input bounds of an authenticated link: what a command can need (at most
/// [`MAX_COMMAND_ARGS`] flat arguments, one bulk of at most [`MAX_FRAME_LEN`], i.e. the largest
/// message plus a margin), and `read_chunk` more bytes buffered (a socket read may end inside
/// the next command).
pub fn command_limits(read_chunk: usize) -> RespLimits {
    RespLimits {
        max_bulk: MAX_FRAME_LEN,
        max_depth: 1,
        max_array_len: MAX_COMMAND_ARGS,
        max_line: 1024,
        max_buffer: MAX_FRAME_LEN + COMMAND_MARGIN + read_chunk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_is_exact() {
        let s = LinkSecret::new("0123456789abcdef");
        assert!(s.verify(b"hermod", b"0123456789abcdef"));
        assert!(!s.verify(b"hermod", b"0123456789abcdeF"));
        assert!(!s.verify(b"hermod", b"0123456789abcdef0"));
        assert!(!s.verify(b"hermod", b""));
        assert!(!s.verify(b"default", b"0123456789abcdef"));
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
    }

    #[test]
    fn pre_auth_frames_are_refused_at_their_header() {
        use crate::resp::{RespError, RespReader};
        let refused = |wire: &[u8]| {
            let mut r = RespReader::new(pre_auth_limits());
            r.feed(wire).and_then(|()| r.next_value()).unwrap_err()
        };
        assert_eq!(refused(b"*22369621\r\n"), RespError::TooLarge("aggregate"));
        assert_eq!(
            refused(b"*1\r\n*1\r\n"),
            RespError::TooLarge("nesting depth")
        );
        let bulk = b"*2\r\n$4\r\nPING\r\n$67108864\r\n";
        assert_eq!(refused(bulk), RespError::TooLarge("bulk string"));
        assert_eq!(
            refused(&[b'_'; PRE_AUTH_FRAME + 1]),
            RespError::TooLarge("input buffer")
        );
        // A HELLO with the longest secret fits.
        let secret = "s".repeat(MAX_SECRET_LEN);
        let mut wire = bytes::BytesMut::new();
        let hello: [&[u8]; 7] = [
            b"HELLO",
            b"3",
            b"AUTH",
            b"hermod",
            secret.as_bytes(),
            b"SETNAME",
            b"gw",
        ];
        crate::resp::encode_command(&mut wire, &hello);
        let mut r = RespReader::new(pre_auth_limits());
        r.feed(&wire).unwrap();
        assert!(r.next_value().unwrap().is_some());
        // After authentication a message-sized bulk is fine, more is not.
        let mut r = RespReader::new(command_limits(64 << 10));
        let big = format!("*5\r\n$4\r\nSEND\r\n${}\r\n", MAX_FRAME_LEN + 1);
        r.feed(big.as_bytes()).unwrap();
        assert_eq!(r.next_value(), Err(RespError::TooLarge("bulk string")));
    }

    #[test]
    fn parse_bounds_and_hides_the_value() {
        assert!(parse_link_secret("0123456789abcdef").is_ok());
        let short = parse_link_secret("hunter2").unwrap_err();
        assert!(!short.contains("hunter2"), "{short}");
        let spaced = parse_link_secret("0123456789 abcdef").unwrap_err();
        assert!(!spaced.contains("abcdef"), "{spaced}");
        assert!(parse_link_secret(&"x".repeat(MAX_SECRET_LEN + 1)).is_err());
    }
}
