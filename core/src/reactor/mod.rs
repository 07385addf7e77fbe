//! The parts of a mio reactor. Each worker thread owns one `mio::Poll` and drives these from
//! its loop; none of them owns a thread or reads the clock.
//!
//! - [`slots`]: `Slots<T>`, a slab of connections addressed by generation-tagged `Key`s, which
//!   map to and from `mio::Token`s (tokens below `FIRST_SLOT_TOKEN` stay with the shell), so a
//!   stale event for a closed connection never reaches the one that reused its slot.
//! - [`timer`]: `TimerWheel<K>`, a hashed timer wheel with O(1) insert/cancel; time is passed in.
//! - [`mailbox`]: `mailbox()`, a bounded cross-thread channel paired with the Poll's one
//!   `mio::Waker`, waking the reactor once per batch rather than once per message.
//! - [`backlog`]: `Backlog<T>`, requests that must not be lost (Attach, Detach, ResumeReplay),
//!   parked in order while a bounded channel is full and retried on a later turn.
//! - [`listener`]: `bind_listener()` (socket2: SO_REUSEADDR, optional SO_REUSEPORT, a real
//!   backlog) and `Acceptor`, which sheds connections instead of spinning when fds run out.
//!
//! - [`admission`]: limits shared by every worker, touched at accept and close only:
//!   connections and connection rate per client address, sessions per user (pure data, the
//!   time passed in).
//!
//! Plus two predicates every readiness loop needs: [`would_block`] and [`interrupted`].

use std::io;

pub mod admission;
pub mod backlog;
pub mod listener;
pub mod mailbox;
pub mod slots;
pub mod timer;

/// Whether an I/O error means "no more for now, wait for the next readiness event".
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Whether an I/O error means "a signal interrupted the call, just retry".
pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_predicates() {
        assert!(would_block(&io::Error::from(io::ErrorKind::WouldBlock)));
        assert!(!would_block(&io::Error::from(io::ErrorKind::Interrupted)));
        assert!(interrupted(&io::Error::from(io::ErrorKind::Interrupted)));
        assert!(!interrupted(&io::Error::from(io::ErrorKind::WouldBlock)));
    }
}
