//! Requests that must not be lost, parked in order while a bounded channel is full.
//!
//! A reactor never blocks on a full channel. Requests it may refuse (a client's `send`) are
//! answered "busy"; requests it must not lose (a session's Attach, Detach, ResumeReplay) are
//! parked here and retried in order on a later loop turn. While anything is parked, new control
//! requests queue behind it, so none overtakes an older one.
//!
//! ```text
//!  send ──empty, channel takes it──> sent
//!    │ something parked, or channel full
//!    v
//!  parked (FIFO) ──retry: channel takes the front──> sent, next
//!    │ channel closed: everything parked is dropped (the receiver is gone)
//! ```
//!
//! Pure: the channel is a closure the shell passes in (`|item| sender.try_send(item)`), so this
//! holds no channel, wakes no one and reads no clock.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::VecDeque;

pub use crossbeam_channel::TrySendError;

/// Items waiting, oldest first, for room in a bounded channel.
#[derive(Debug)]
pub struct Backlog<T> {
    parked: VecDeque<T>,
}

impl<T> Default for Backlog<T> {
    fn default() -> Self {
        Backlog {
            parked: VecDeque::new(),
        }
    }
}

impl<T> Backlog<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    /// How many items are parked.
    pub fn len(&self) -> usize {
        self.parked.len()
    }

    /// The parked items, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.parked.iter()
    }

    /// Sends `item` through `try_send` when nothing is parked; otherwise, or when the channel is
    /// full, parks it behind the others. A closed channel drops it.
    pub fn send(&mut self, item: T, try_send: impl FnOnce(T) -> Result<(), TrySendError<T>>) {
        if !self.parked.is_empty() {
            self.parked.push_back(item);
            return;
        }
        match try_send(item) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(item)) => self.parked.push_back(item),
        }
    }

    /// Sends parked items in order until the channel is full. A closed channel drops them all.
    pub fn retry(&mut self, mut try_send: impl FnMut(T) -> Result<(), TrySendError<T>>) {
        while let Some(item) = self.parked.pop_front() {
            match try_send(item) {
                Ok(()) => {}
                Err(TrySendError::Disconnected(_)) => self.parked.clear(),
                Err(TrySendError::Full(item)) => {
                    self.parked.push_front(item);
                    return;
                }
            }
        }
    }

    /// Drops the parked items `keep` rejects, keeping the others in order.
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.parked.retain(keep);
    }

    /// Drops everything parked.
    pub fn clear(&mut self) {
        self.parked.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel of `cap` slots, or a closed one.
    struct Channel {
        cap: usize,
        got: Vec<u32>,
        closed: bool,
    }

    impl Channel {
        fn new(cap: usize) -> Self {
            Channel {
                cap,
                got: Vec::new(),
                closed: false,
            }
        }

        fn try_send(&mut self, item: u32) -> Result<(), TrySendError<u32>> {
            if self.closed {
                Err(TrySendError::Disconnected(item))
            } else if self.got.len() >= self.cap {
                Err(TrySendError::Full(item))
            } else {
                self.got.push(item);
                Ok(())
            }
        }
    }

    #[test]
    fn a_channel_with_room_takes_items_at_once() {
        let mut ch = Channel::new(4);
        let mut b = Backlog::new();
        b.send(1, |i| ch.try_send(i));
        b.send(2, |i| ch.try_send(i));
        assert!(b.is_empty());
        assert_eq!(ch.got, [1, 2]);
    }

    #[test]
    fn a_full_channel_parks_and_later_items_queue_behind_in_order() {
        let mut ch = Channel::new(1);
        let mut b = Backlog::new();
        for i in 1..=4 {
            b.send(i, |i| ch.try_send(i));
        }
        assert_eq!(b.iter().copied().collect::<Vec<_>>(), [2, 3, 4]);
        // Room for one more: the oldest goes first, the rest stay parked.
        ch.cap = 2;
        b.retry(|i| ch.try_send(i));
        assert_eq!(ch.got, [1, 2]);
        assert_eq!(b.len(), 2);
        // Even with room, a new item may not overtake the parked ones.
        ch.cap = 10;
        b.send(5, |i| ch.try_send(i));
        assert_eq!(ch.got, [1, 2]);
        b.retry(|i| ch.try_send(i));
        assert_eq!(ch.got, [1, 2, 3, 4, 5]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_closed_channel_drops_everything() {
        let mut ch = Channel::new(0);
        let mut b = Backlog::new();
        b.send(1, |i| ch.try_send(i));
        b.send(2, |i| ch.try_send(i));
        ch.closed = true;
        b.retry(|i| ch.try_send(i));
        assert!(b.is_empty());
        b.send(3, |i| ch.try_send(i));
        assert!(b.is_empty());
    }

    #[test]
    fn retain_drops_selected_items_in_place() {
        let mut ch = Channel::new(0);
        let mut b = Backlog::new();
        for i in 1..=5 {
            b.send(i, |i| ch.try_send(i));
        }
        b.retain(|i| i % 2 == 1);
        assert_eq!(b.iter().copied().collect::<Vec<_>>(), [1, 3, 5]);
    }
}
