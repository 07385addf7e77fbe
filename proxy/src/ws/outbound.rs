//! A session's bounded queue of messages waiting to be handed to tungstenite.
//!
//! Messages queue here during a loop tick and move into tungstenite's write buffer at the end of
//! it (one flush per socket per tick). The queue counts its bytes; a push past the bound is
//! refused, and the session then closes 1008 `slow consumer` (nothing is lost: what the client
//! did not ack waits in its inbox).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::VecDeque;

use tungstenite::Message;

/// Bytes charged per message on top of its payload, so that a flood of empty frames is bounded
/// too (and roughly the frame header plus queue slot).
const PER_MESSAGE_OVERHEAD: usize = 16;

/// Capacity above which an emptied queue gives its memory back (idle sessions stay small).
const KEEP_CAPACITY: usize = 16;

/// The queue refused a message: the client is not keeping up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// A FIFO of outgoing messages bounded in bytes.
#[derive(Debug)]
pub struct Outbound {
    /// Messages in send order.
    queue: VecDeque<Message>,
    /// Sum of [`charge`] over `queue`.
    bytes: usize,
    /// Most bytes `queue` may hold (settings.max_outbound_bytes).
    limit: usize,
}

/// What a message costs against the bound.
fn charge(msg: &Message) -> usize {
    msg.len() + PER_MESSAGE_OVERHEAD
}

impl Outbound {
    /// An empty queue holding at most `limit` bytes. Allocates nothing until the first push.
    pub fn new(limit: usize) -> Self {
        Outbound {
            queue: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Appends `msg`, or refuses it when it would take the queue past its bound.
    pub fn push(&mut self, msg: Message) -> Result<(), Overflow> {
        let cost = charge(&msg);
        if self.bytes + cost > self.limit {
            return Err(Overflow);
        }
        self.bytes += cost;
        self.queue.push_back(msg);
        Ok(())
    }

    /// Puts back a message that tungstenite refused (its write buffer was full); it goes out
    /// first next time. Never refused: it was counted before.
    pub fn push_front(&mut self, msg: Message) {
        self.bytes += charge(&msg);
        self.queue.push_front(msg);
    }

    /// Takes the oldest message.
    pub fn pop(&mut self) -> Option<Message> {
        let msg = self.queue.pop_front()?;
        self.bytes -= charge(&msg);
        if self.queue.is_empty() && self.queue.capacity() > KEEP_CAPACITY {
            self.queue = VecDeque::new();
        }
        Some(msg)
    }

    /// Gives the queue's buffer back when nothing is queued (a session that goes idle after a
    /// burst, such as its welcome, holds no queue memory).
    pub fn release_if_empty(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
    }

    /// Drops everything queued (the session is closing).
    pub fn clear(&mut self) {
        self.queue = VecDeque::new();
        self.bytes = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes currently charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Message {
        Message::text("x".repeat(n))
    }

    #[test]
    fn bounded_in_bytes() {
        let mut q = Outbound::new(100);
        assert_eq!(q.push(text(34)), Ok(()));
        assert_eq!(q.push(text(34)), Ok(()));
        assert_eq!(q.bytes(), 100);
        assert_eq!(q.push(text(0)), Err(Overflow));
        assert!(q.pop().is_some());
        assert_eq!(q.push(text(0)), Ok(()));
        assert_eq!(q.bytes(), 66);
    }

    #[test]
    fn empty_frames_are_bounded_too() {
        let mut q = Outbound::new(1000);
        let accepted = (0..1000).take_while(|_| q.push(text(0)).is_ok()).count();
        assert_eq!(accepted, 1000 / PER_MESSAGE_OVERHEAD);
    }

    #[test]
    fn fifo_with_push_front() {
        let mut q = Outbound::new(1000);
        q.push(text(1)).expect("room");
        q.push(text(2)).expect("room");
        let first = q.pop().expect("queued");
        q.push_front(first);
        assert_eq!(q.pop().map(|m| m.len()), Some(1));
        assert_eq!(q.pop().map(|m| m.len()), Some(2));
        assert!(q.pop().is_none());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn clear_resets() {
        let mut q = Outbound::new(1000);
        q.push(text(10)).expect("room");
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }
}
