//! Who may do what on rooms and direct messages: the grant patterns a token carries, the
//! namespaces of the configuration file, and the one decision both feed ([`RoomPolicy`]).
//!
//! A **pattern** is an exact name (`team.42`) or a prefix ending in `*` (`team.42.*` matches
//! `team.42.x` and `team.42.` but not `team.42`); a lone `*` matches every name. A pattern is at
//! most [`MAX_PATTERN_LEN`] bytes of the name alphabet (`[A-Za-z0-9_.:@-]`) plus that one
//! trailing `*`; a claim holds at most [`MAX_PATTERNS`] of them. A token whose patterns break
//! these rules is refused as a whole (401 at the handshake, `forbidden` on `refresh`): an issuer
//! bug is reported, never half-applied.
//!
//! A **namespace** is a room-name prefix with a join policy and a publish policy. The longest
//! prefix naming a room decides for it; a room no namespace names needs a grant for both.
//!
//! Pure: no clock, no I/O. The check runs on every `publish`, so nothing is allocated: the
//! namespace is found by binary search in the sorted prefixes, the grant by a scan of the
//! token's (at most [`MAX_PATTERNS`]) patterns.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

#[cfg(test)]
mod tests;

use crate::ids::{is_name_byte, MAX_NAME_LEN};
use crate::jwt::Claims;

/// Most patterns one claim may hold. Bounds the per-session memory and the per-check scan a
/// token's issuer (or a stolen signing key) controls.
pub const MAX_PATTERNS: usize = 64;
/// Longest pattern: a whole name, plus the trailing `*` of a prefix.
pub const MAX_PATTERN_LEN: usize = MAX_NAME_LEN + 1;
/// Most namespaces in one configuration (each is matched by a scan on every join and publish).
pub const MAX_NAMESPACES: usize = 256;

/// Why a pattern, a claim or a namespace was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("`{claim}` holds more than {MAX_PATTERNS} patterns")]
    TooMany { claim: &'static str },
    #[error("`{claim}`: a pattern must be 1 to {MAX_PATTERN_LEN} bytes")]
    Length { claim: &'static str },
    #[error("`{claim}`: a pattern is a name of [A-Za-z0-9_.:@-], optionally ending in `*`")]
    Charset { claim: &'static str },
    #[error("namespace prefix `{0}`: at most {MAX_NAME_LEN} bytes of [A-Za-z0-9_.:@-]")]
    Prefix(String),
    #[error("namespace prefix `{0}` is given twice")]
    Duplicate(String),
    #[error("more than {MAX_NAMESPACES} namespaces")]
    TooManyNamespaces,
}

/// One grant pattern, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Matches this name only.
    Exact(Box<str>),
    /// Matches every name starting with this (empty: every name).
    Prefix(Box<str>),
}

impl Pattern {
    fn parse(claim: &'static str, text: &str) -> Result<Self, GrantError> {
        if text.is_empty() || text.len() > MAX_PATTERN_LEN {
            return Err(GrantError::Length { claim });
        }
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None if text.len() > MAX_NAME_LEN => return Err(GrantError::Length { claim }),
            None => (text, false),
        };
        if !body.bytes().all(is_name_byte) {
            return Err(GrantError::Charset { claim });
        }
        Ok(if prefix {
            Pattern::Prefix(body.into())
        } else {
            Pattern::Exact(body.into())
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => **exact == *name,
            Pattern::Prefix(prefix) => name.starts_with(&**prefix),
        }
    }
}

/// The patterns of one claim (`rooms`, `publish` or `send`), checked. Empty grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    patterns: Box<[Pattern]>,
}

impl Grants {
    /// Checks the patterns of `claim` (its name is for the error).
    pub fn parse(claim: &'static str, patterns: &[String]) -> Result<Self, GrantError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(GrantError::TooMany { claim });
        }
        let patterns = patterns
            .iter()
            .map(|p| Pattern::parse(claim, p))
            .collect::<Result<_, _>>()?;
        Ok(Grants { patterns })
    }

    /// Whether some pattern matches `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }
}

/// What one verified token grants: rooms to join, rooms to publish to, users to send to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenGrants {
    /// From the `rooms` claim: join (live and history).
    pub join: Grants,
    /// From the `publish` claim.
    pub publish: Grants,
    /// From the `send` claim (user patterns), read under `--direct-messages grant` only.
    pub send: Grants,
}

impl TokenGrants {
    /// Checks the grant claims of a verified token.
    pub fn from_claims(claims: &Claims) -> Result<Self, GrantError> {
        Ok(TokenGrants {
            join: Grants::parse("rooms", &claims.rooms)?,
            publish: Grants::parse("publish", &claims.publish)?,
            send: Grants::parse("send", &claims.send)?,
        })
    }
}

/// Who may join a namespace's rooms (receive live messages and read history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinPolicy {
    /// Any authenticated user.
    Any,
    /// Users whose token's `rooms` claim matches the room.
    Grant,
    /// Nobody but the server (no client may join).
    Server,
}

/// Who may publish to a namespace's rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishPolicy {
    /// Any authenticated user.
    Any,
    /// Sessions that have joined the room (so: users allowed to join it).
    Members,
    /// Users whose token's `publish` claim matches the room.
    Grant,
    /// Nobody but the server (no client may publish).
    Server,
}

/// A room-name prefix and what its rooms allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Rooms whose name starts with this belong to the namespace (empty: every room).
    pub prefix: String,
    pub join: JoinPolicy,
    pub publish: PublishPolicy,
}

/// The namespaces of the configuration, sorted by prefix for a binary search. Shared by every
/// worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomPolicy {
    namespaces: Vec<Namespace>,
}

/// The namespace of rooms no configured namespace names: a grant for everything.
static UNNAMED: Namespace = Namespace {
    prefix: String::new(),
    join: JoinPolicy::Grant,
    publish: PublishPolicy::Grant,
};

impl RoomPolicy {
    /// Checks and orders `namespaces` (prefixes of the name alphabet, none twice).
    pub fn new(mut namespaces: Vec<Namespace>) -> Result<Self, GrantError> {
        if namespaces.len() > MAX_NAMESPACES {
            return Err(GrantError::TooManyNamespaces);
        }
        for ns in &namespaces {
            if ns.prefix.len() > MAX_NAME_LEN || !ns.prefix.bytes().all(is_name_byte) {
                return Err(GrantError::Prefix(ns.prefix.clone()));
            }
        }
        namespaces.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        if let Some(pair) = namespaces.windows(2).find(|w| w[0].prefix == w[1].prefix) {
            return Err(GrantError::Duplicate(pair[0].prefix.clone()));
        }
        Ok(RoomPolicy { namespaces })
    }

    /// The namespace deciding for `room`: the longest prefix of it, else the secure default.
    ///
    /// A binary search in the sorted prefixes: the last prefix `<= key` is the longest prefix
    /// of `key` if any prefix of `key` is there (a prefix sorts before what it prefixes, and a
    /// longer prefix after a shorter one). When it is not one, only the part `key` shares with
    /// it can still hold a prefix, so the search repeats on that, strictly shorter, part.
    pub fn namespace(&self, room: &str) -> &Namespace {
        let mut key = room;
        loop {
            let after = self
                .namespaces
                .partition_point(|ns| ns.prefix.as_str() <= key);
            let Some(candidate) = after.checked_sub(1).map(|i| &self.namespaces[i]) else {
                return &UNNAMED;
            };
            if key.starts_with(candidate.prefix.as_str()) {
                return candidate;
            }
            let mut shared = key
                .bytes()
                .zip(candidate.prefix.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            while !key.is_char_boundary(shared) {
                shared -= 1;
            }
            key = &key[..shared];
        }
    }

    /// Whether a session holding `grants` may join `room` (live and history).
    pub fn may_join(&self, room: &str, grants: &TokenGrants) -> bool {
        match self.namespace(room).join {
            JoinPolicy::Any => true,
            JoinPolicy::Grant => grants.join.allows(room),
            JoinPolicy::Server => false,
        }
    }

    /// Whether a session holding `grants` may publish to `room`; `member`: it has joined it.
    pub fn may_publish(&self, room: &str, grants: &TokenGrants, member: bool) -> bool {
        match self.namespace(room).publish {
            PublishPolicy::Any => true,
            PublishPolicy::Members => member,
            PublishPolicy::Grant => grants.publish.allows(room),
            PublishPolicy::Server => false,
        }
    }
}

/// Who may send a direct message to whom (`--direct-messages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DirectMessages {
    /// Any authenticated user to any user (what chat applications expect).
    #[default]
    Any,
    /// Only to users the token's `send` claim matches.
    Grant,
}

impl DirectMessages {
    /// Whether a session holding `grants` may send to user `to`.
    pub fn may_send(self, to: &str, grants: &TokenGrants) -> bool {
        match self {
            DirectMessages::Any => true,
            DirectMessages::Grant => grants.send.allows(to),
        }
    }
}
