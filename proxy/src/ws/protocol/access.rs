//! What one JWT session may do, and until when: the grants of its current token, the rooms the
//! broker confirmed it joined (for `members` namespaces and for a refresh that takes a grant
//! away), and the token's expiry with the warning before it.
//!
//! ```text
//!  open/refresh ──> Valid ──warn_at──> Warned (`expiring` sent) ──expires_at──> Expired (close 4001)
//!                     ^                   │
//!                     └────refresh────────┘
//! ```
//!
//! The warning goes out [`WARN_LEAD`] before `exp`, or halfway through what is left of the
//! token's life when that is shorter (a 10 s token is warned 5 s before it expires), so a
//! client always has time to fetch a new token. Sans-io: `now` (monotonic) and `now_unix` (the
//! wall clock tokens speak in) come in; deadlines go out as `Instant`s.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::{Duration, Instant};

use hermod_core::grants::{DirectMessages, RoomPolicy, TokenGrants};
use hermod_core::ids::Name;

/// How long before its token expires a session is told (`expiring`), at most.
pub const WARN_LEAD: Duration = Duration::from_secs(60);

/// Most joined rooms remembered: the broker's own cap on rooms per session, so every confirmed
/// join fits.
pub const MAX_JOINED: usize = hermod_broker::MAX_ROOMS_PER_SESSION;

/// A JWT session's rights and token lifetime. Boxed in `ClientProtocol` (`None` under
/// `--auth none`, where everything is allowed), so an idle session pays one pointer.
#[derive(Debug)]
pub struct TokenAccess {
    /// What the current token grants.
    grants: TokenGrants,
    /// The current token's `exp` (unix seconds), for `expiring` and `refreshed`.
    exp: u64,
    /// When `expiring` goes out (`None`: beyond what an `Instant` holds, as `expires_at`).
    warn_at: Option<Instant>,
    /// When the session is closed unless refreshed; `None` when `exp` is beyond what an
    /// `Instant` can hold (the token never expires within this process's life).
    expires_at: Option<Instant>,
    /// `expiring` went out for the current token.
    warned: bool,
    /// Rooms the broker answered `joined` for and that were not left since, at most
    /// [`MAX_JOINED`].
    joined: Vec<Name>,
}

/// What the token's clock says at a timer tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing to do.
    Valid,
    /// Send `expiring` with this `exp`.
    Warn(u64),
    /// The token expired: close the session.
    Expired,
}

impl TokenAccess {
    /// The access of a token expiring at `exp`, received at `now` (`now_unix` on the wall clock).
    pub fn new(grants: TokenGrants, exp: u64, now: Instant, now_unix: u64) -> Self {
        let (warn_at, expires_at) = deadlines(exp, now, now_unix);
        TokenAccess {
            grants,
            exp,
            warn_at,
            expires_at,
            warned: false,
            joined: Vec::new(),
        }
    }

    /// Replaces the token (a `refresh`): new grants, new expiry, a new warning.
    pub fn set_token(&mut self, grants: TokenGrants, exp: u64, now: Instant, now_unix: u64) {
        (self.warn_at, self.expires_at) = deadlines(exp, now, now_unix);
        self.exp = exp;
        self.warned = false;
        self.grants = grants;
    }

    /// The token's `exp`.
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// When the token's clock next needs a look: the warning, then the expiry.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.warned {
            self.expires_at
        } else {
            self.warn_at
        }
    }

    /// Checks the token's clock at `now`; a warning is handed out once per token.
    pub fn poll_expiry(&mut self, now: Instant) -> Expiry {
        if self.expires_at.is_some_and(|at| now >= at) {
            return Expiry::Expired;
        }
        if !self.warned && self.warn_at.is_some_and(|at| now >= at) {
            self.warned = true;
            return Expiry::Warn(self.exp);
        }
        Expiry::Valid
    }

    /// Whether the session may join `room` (live and history).
    pub fn may_join(&self, policy: &RoomPolicy, room: &Name) -> bool {
        policy.may_join(room.as_str(), &self.grants)
    }

    /// Whether the session may publish to `room`.
    pub fn may_publish(&self, policy: &RoomPolicy, room: &Name) -> bool {
        let member = self.joined.contains(room);
        policy.may_publish(room.as_str(), &self.grants, member)
    }

    /// Whether the session may send a direct message to user `to`.
    pub fn may_send(&self, policy: DirectMessages, to: &Name) -> bool {
        policy.may_send(to.as_str(), &self.grants)
    }

    /// The broker confirmed a join.
    pub fn on_joined(&mut self, room: &Name) {
        if !self.joined.contains(room) && self.joined.len() < MAX_JOINED {
            self.joined.push(room.clone());
        }
    }

    /// The broker confirmed a leave.
    pub fn on_left(&mut self, room: &Name) {
        self.joined.retain(|r| r != room);
    }

    /// Joined rooms the current grants no longer allow (after a refresh): they are left.
    pub fn joined_but_not_allowed(&self, policy: &RoomPolicy) -> Vec<Name> {
        self.joined
            .iter()
            .filter(|room| !self.may_join(policy, room))
            .cloned()
            .collect()
    }
}

/// When a token expiring at `exp` is warned about and when it expires, seen at `now`.
fn deadlines(exp: u64, now: Instant, now_unix: u64) -> (Option<Instant>, Option<Instant>) {
    let left = Duration::from_secs(exp.saturating_sub(now_unix));
    let lead = WARN_LEAD.min(left / 2);
    let expires_at = now.checked_add(left);
    let warn_at = now.checked_add(left - lead);
    (warn_at, expires_at)
}
