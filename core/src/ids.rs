//! Validated identifiers that cross the wire: names (users, devices, rooms), client request ids,
//! and message ids. Validation happens once, at the edge; everything inside takes the newtypes.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest user id, device id or room name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest client request id (`cid`), in bytes.
pub const MAX_CID_LEN: usize = 64;
/// Longest message id we accept back from a client (`ack`, `since`). Ids are ours and short;
/// the bound only stops a peer from making us carry large strings around.
pub const MAX_MSG_ID_LEN: usize = 64;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be 1 to {max} bytes")]
    Length { what: &'static str, max: usize },
    #[error("{what} may only contain A-Z a-z 0-9 _ . : @ -")]
    Charset { what: &'static str },
    #[error("{what} may not start with `@`: those ids are reserved for the server API")]
    Reserved { what: &'static str },
}

/// A user id, device id or room name: 1 to 128 bytes of `[A-Za-z0-9_.:@-]`.
///
/// Cheap to clone (shared), because one name is held by many sessions, subscriptions and messages.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    /// Validates `s` as a name; `what` names the field in the error ("user", "room", ...).
    pub fn parse(what: &'static str, s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(IdError::Length {
                what,
                max: MAX_NAME_LEN,
            });
        }
        if !s.bytes().all(is_name_byte) {
            return Err(IdError::Charset { what });
        }
        Ok(Name(Arc::from(s)))
    }

    /// Validates `s` as a client's user id: a [`Name`] that does not start with
    /// [`SERVER_MARK`], which only the server API's senders carry (so no client can pass for
    /// it).
    pub fn parse_user(what: &'static str, s: &str) -> Result<Self, IdError> {
        let name = Name::parse(what, s)?;
        if name.is_server_sender() {
            return Err(IdError::Reserved { what });
        }
        Ok(name)
    }

    /// The sender of a message the server API stores: `@` for the server itself, `@alice` for
    /// one sent in alice's name. Frames show it as `"server":true` (and `"from":"alice"`).
    pub fn server_sender(on_behalf_of: Option<&Name>) -> Name {
        match on_behalf_of {
            None => Name(Arc::from("@")),
            Some(user) if user.as_str().len() < MAX_NAME_LEN => {
                Name(Arc::from(format!("@{}", user.as_str())))
            }
            // A 128-byte name has no room for the mark: such a sender is shown as the server.
            Some(_) => Name(Arc::from("@")),
        }
    }

    /// Whether this is a server API sender (see [`Name::server_sender`]).
    pub fn is_server_sender(&self) -> bool {
        self.0.starts_with(SERVER_MARK)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The first byte of the user ids reserved for the server API's senders.
pub const SERVER_MARK: char = '@';

pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-')
}

/// Looks a name up by its text in maps keyed by `Name` (hashes and compares as the `str`).
impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's id for one request (`cid`): 1 to 64 bytes of any UTF-8. It makes retries safe:
/// a repeated `(user, cid)` inside the dedupe window is stored once.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(Arc<str>);

impl Cid {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_CID_LEN {
            return Err(IdError::Length {
                what: "cid",
                max: MAX_CID_LEN,
            });
        }
        Ok(Cid(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A message id as the engine that stored it wrote it. Opaque to clients; each engine knows
/// how to order its own ids. Unique per inbox or room.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MsgId(Arc<str>);

impl MsgId {
    /// Wraps an id the engine produced (trusted).
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        MsgId(s.into())
    }

    /// Accepts an id a client sent back (`ack`, `since`); only the length is checked here,
    /// the engine decides whether it means anything.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_MSG_ID_LEN {
            return Err(IdError::Length {
                what: "id",
                max: MAX_MSG_ID_LEN,
            });
        }
        Ok(MsgId(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        assert!(Name::parse("user", "alice").is_ok());
        assert!(Name::parse("user", "a.b:c@d-e_F9").is_ok());
        assert!(Name::parse("user", &"x".repeat(128)).is_ok());
        assert!(Name::parse("user", &"x".repeat(129)).is_err());
        assert!(Name::parse("user", "").is_err());
        assert_eq!(
            Name::parse("room", "a b"),
            Err(IdError::Charset { what: "room" })
        );
        assert!(Name::parse("user", "é").is_err());
    }

    #[test]
    fn user_ids_starting_with_the_server_mark_are_reserved() {
        assert!(Name::parse_user("user", "alice@example.com").is_ok());
        assert_eq!(
            Name::parse_user("user", "@server"),
            Err(IdError::Reserved { what: "user" })
        );
        let alice = Name::parse_user("user", "alice").unwrap();
        assert_eq!(Name::server_sender(None).as_str(), "@");
        assert_eq!(Name::server_sender(Some(&alice)).as_str(), "@alice");
        assert!(Name::server_sender(Some(&alice)).is_server_sender());
        assert!(!alice.is_server_sender());
        let longest = Name::parse_user("user", &"x".repeat(128)).unwrap();
        assert_eq!(Name::server_sender(Some(&longest)).as_str(), "@");
    }

    #[test]
    fn cids_are_bounded() {
        assert!(Cid::parse("c-1").is_ok());
        assert!(Cid::parse(&"é".repeat(32)).is_ok());
        assert!(Cid::parse(&"x".repeat(65)).is_err());
        assert!(Cid::parse("").is_err());
    }
}
