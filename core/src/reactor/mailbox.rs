//! A cross-thread mailbox: a bounded crossbeam channel paired with the receiving Poll's
//! [`mio::Waker`].
//!
//! A Poll has only one waker, and a wake is a syscall (an eventfd write), so senders do not wake
//! per message: a shared `pending` flag says "the reactor has been woken and has not drained yet".
//! A sender sets it after enqueuing and wakes only if it was clear. The receiver clears it *before*
//! draining: a message sent after the clear either is seen by this drain or finds the flag clear
//! and wakes again. Clearing after the drain would lose the wake of a message that arrived in
//! between (it saw the flag still set), leaving it stranded until some unrelated event.
//!
//! Both sides use read-modify-write operations (`swap`) on the flag with acquire/release
//! ordering, so whichever swap comes second sees the other's effects: either the receiver's drain
//! sees the message, or the sender sees the cleared flag and wakes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
pub use crossbeam_channel::{SendTimeoutError, TrySendError};

/// What both ends share.
#[derive(Debug)]
struct Shared {
    /// Set by senders after enqueuing, cleared by the receiver before draining: while set, the
    /// reactor is known to be woken already, so further sends skip the wake syscall.
    pending: AtomicBool,
    /// The receiving Poll's one waker.
    waker: Arc<mio::Waker>,
    /// Live senders; when it drops to zero the receiver is woken to notice the disconnection
    /// (crossbeam's receiver has no way to ask without receiving).
    senders: AtomicUsize,
}

impl Shared {
    /// Marks the mailbox pending and wakes the Poll unless a wake is already outstanding.
    fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// Wakes the Poll. A failed wake (practically impossible with an eventfd) clears the flag so
    /// that the next send tries again instead of assuming the reactor is awake.
    fn wake(&self) {
        if self.waker.wake().is_err() {
            self.pending.store(false, Ordering::Release);
        }
    }
}

/// Creates a mailbox holding at most `capacity` messages whose sends wake the Poll behind `waker`.
pub fn mailbox<T>(
    capacity: usize,
    waker: Arc<mio::Waker>,
) -> (MailboxSender<T>, MailboxReceiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let shared = Arc::new(Shared {
        pending: AtomicBool::new(false),
        waker,
        senders: AtomicUsize::new(1),
    });
    (
        MailboxSender {
            tx,
            shared: Arc::clone(&shared),
        },
        MailboxReceiver { rx, shared },
    )
}

/// The sending end; clone it freely, one per producer.
#[derive(Debug)]
pub struct MailboxSender<T> {
    /// The bounded queue; bounded so a slow reactor pushes back instead of growing memory.
    tx: Sender<T>,
    /// Flag, waker and sender count shared with the receiver.
    shared: Arc<Shared>,
}

impl<T> MailboxSender<T> {
    /// Enqueues `msg` without blocking; `Full` when the mailbox is at capacity, `Disconnected`
    /// when the receiver is gone (the message comes back in both).
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send(msg)?;
        self.shared.notify();
        Ok(())
    }

    /// Enqueues `msg`, waiting up to `timeout` for room; for control messages (shutdown, config)
    /// that must not be dropped when the mailbox is momentarily full. Never call it on a reactor
    /// thread with a long timeout.
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.tx.send_timeout(msg, timeout)?;
        self.shared.notify();
        Ok(())
    }

    /// How many messages are queued.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

impl<T> Clone for MailboxSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        MailboxSender {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for MailboxSender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: wake the reactor so it sees `is_disconnected()`.
            self.shared.notify();
        }
    }
}

/// The receiving end, owned by the reactor thread whose Poll the waker belongs to.
#[derive(Debug)]
pub struct MailboxReceiver<T> {
    /// The bounded queue.
    rx: Receiver<T>,
    /// Flag, waker and sender count shared with the senders.
    shared: Arc<Shared>,
}

impl<T> MailboxReceiver<T> {
    /// Hands up to `max` queued messages to `f` and returns how many it handed over. Call it
    /// whenever the waker's token shows up in the Poll's events.
    ///
    /// Clears the pending flag first (see the module doc). If it stops at `max` with messages
    /// still queued, it sets the flag again and wakes the Poll, so the reactor comes back for the
    /// rest on its next `poll` without any bookkeeping of its own, after serving its other events:
    /// `max` bounds the work one wake can cost.
    pub fn drain(&self, max: usize, mut f: impl FnMut(T)) -> usize {
        self.shared.pending.swap(false, Ordering::AcqRel);
        let mut count = 0;
        while count < max {
            match self.rx.try_recv() {
                Ok(msg) => {
                    f(msg);
                    count += 1;
                }
                Err(_) => return count,
            }
        }
        if !self.rx.is_empty() {
            self.shared.pending.store(true, Ordering::Release);
            self.shared.wake();
        }
        count
    }

    /// Whether every sender is gone; messages may still be queued, so drain first.
    pub fn is_disconnected(&self) -> bool {
        self.shared.senders.load(Ordering::Acquire) == 0
    }

    /// How many messages are queued.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
#[path = "mailbox_tests.rs"]
mod tests;
