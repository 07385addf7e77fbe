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
//!
//! A mailbox may have several *lanes* ([`fair_mailbox`]): one bounded queue per producer (a
//! gateway worker), drained round-robin with an equal share of each drain's budget per lane, so
//! one producer flooding its lane neither fills the others' nor delays them by more than one
//! share per turn. Lanes share the waker and the pending flag.

use std::cell::Cell;

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
    let (mut senders, rx) = fair_mailbox(1, capacity, waker);
    let tx = senders.pop().expect("one lane");
    (tx, rx)
}

/// Creates a mailbox of `lanes` (at least one) queues of `capacity` messages each, one sender
/// per lane, drained fairly (see the module doc).
pub fn fair_mailbox<T>(
    lanes: usize,
    capacity: usize,
    waker: Arc<mio::Waker>,
) -> (Vec<MailboxSender<T>>, MailboxReceiver<T>) {
    let lanes = lanes.max(1);
    let shared = Arc::new(Shared {
        pending: AtomicBool::new(false),
        waker,
        senders: AtomicUsize::new(lanes),
    });
    let (senders, receivers) = (0..lanes)
        .map(|_| {
            let (tx, rx) = crossbeam_channel::bounded(capacity);
            let tx = MailboxSender {
                tx,
                shared: Arc::clone(&shared),
            };
            (tx, rx)
        })
        .unzip();
    let rx = MailboxReceiver {
        lanes: receivers,
        next: Cell::new(0),
        shared,
    };
    (senders, rx)
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
    /// The bounded queues, one per lane.
    lanes: Vec<Receiver<T>>,
    /// The lane the next drain starts with (rotates, so no lane is always first).
    next: Cell<usize>,
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
    ///
    /// With several lanes, each round takes up to `max / lanes` (at least one) messages from
    /// each lane in turn, starting one lane further every drain; rounds repeat while the budget
    /// lasts and some lane had messages, so a lone busy lane still gets the whole budget.
    pub fn drain(&self, max: usize, mut f: impl FnMut(T)) -> usize {
        self.shared.pending.swap(false, Ordering::AcqRel);
        let n = self.lanes.len();
        let share = (max / n).max(1);
        let start = self.next.get();
        self.next.set((start + 1) % n);
        let mut count = 0;
        while count < max {
            let before = count;
            for i in 0..n {
                let lane = &self.lanes[(start + i) % n];
                let mut taken = 0;
                while taken < share && count < max {
                    match lane.try_recv() {
                        Ok(msg) => {
                            f(msg);
                            taken += 1;
                            count += 1;
                        }
                        Err(_) => break,
                    }
                }
            }
            if count == before {
                return count;
            }
        }
        if !self.is_empty() {
            self.shared.pending.store(true, Ordering::Release);
            self.shared.wake();
        }
        count
    }

    /// Whether every sender is gone; messages may still be queued, so drain first.
    pub fn is_disconnected(&self) -> bool {
        self.shared.senders.load(Ordering::Acquire) == 0
    }

    /// How many messages are queued, over every lane.
    pub fn len(&self) -> usize {
        self.lanes.iter().map(Receiver::len).sum()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(Receiver::is_empty)
    }
}

#[cfg(test)]
mod tests {
    // Tests of the mailbox with a real mio Poll and Waker.

    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use mio::{Events, Poll, Token};

    use super::*;

    const WAKER: Token = Token(1);
    const PATIENCE: Duration = Duration::from_secs(10);

    fn poll_and_waker() -> (Poll, Arc<mio::Waker>) {
        let poll = Poll::new().expect("poll");
        let waker = mio::Waker::new(poll.registry(), WAKER).expect("waker");
        (poll, Arc::new(waker))
    }

    /// Whether a poll with `timeout` reports the waker's token.
    fn woken(poll: &mut Poll, timeout: Duration) -> bool {
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(timeout)).expect("poll");
        events.iter().any(|event| event.token() == WAKER)
    }

    #[test]
    fn messages_arrive_across_threads_in_order() {
        let (mut poll, waker) = poll_and_waker();
        let (tx, rx) = mailbox::<u32>(64, waker);
        let producer = thread::spawn(move || {
            for i in 0..5_000u32 {
                let mut msg = i;
                loop {
                    match tx.try_send(msg) {
                        Ok(()) => break,
                        Err(TrySendError::Full(back)) => {
                            msg = back;
                            thread::yield_now();
                        }
                        Err(TrySendError::Disconnected(_)) => panic!("receiver gone"),
                    }
                }
            }
        });
        let mut received = Vec::new();
        let deadline = Instant::now() + PATIENCE * 3;
        while !(rx.is_disconnected() && rx.is_empty()) {
            assert!(Instant::now() < deadline, "gave up at {}", received.len());
            if woken(&mut poll, PATIENCE) {
                rx.drain(100, |msg| received.push(msg));
            }
        }
        producer.join().expect("producer");
        assert_eq!(received, (0..5_000).collect::<Vec<_>>());
    }

    #[test]
    fn wakes_coalesce_until_drained() {
        let (mut poll, waker) = poll_and_waker();
        let (tx, rx) = mailbox::<u8>(16, waker);
        for i in 0..5 {
            tx.try_send(i).expect("room");
        }
        assert!(woken(&mut poll, PATIENCE));
        // Still pending (not drained): more sends must not wake again.
        tx.try_send(5).expect("room");
        assert!(!woken(&mut poll, Duration::ZERO));
        let mut got = Vec::new();
        assert_eq!(rx.drain(usize::MAX, |m| got.push(m)), 6);
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
        assert!(!woken(&mut poll, Duration::ZERO));
        // Drained: the next send wakes once more.
        tx.try_send(6).expect("room");
        assert!(woken(&mut poll, PATIENCE));
        assert_eq!(rx.drain(10, |_| {}), 1);
    }

    #[test]
    fn drain_stopping_at_max_wakes_again() {
        let (mut poll, waker) = poll_and_waker();
        let (tx, rx) = mailbox::<u8>(16, waker);
        for i in 0..10 {
            tx.try_send(i).expect("room");
        }
        assert!(woken(&mut poll, PATIENCE));
        assert_eq!(rx.drain(4, |_| {}), 4);
        assert!(
            woken(&mut poll, PATIENCE),
            "the rest must bring the reactor back"
        );
        assert_eq!(rx.drain(4, |_| {}), 4);
        assert!(woken(&mut poll, PATIENCE));
        assert_eq!(rx.drain(4, |_| {}), 2);
        assert!(!woken(&mut poll, Duration::ZERO));
    }

    #[test]
    fn full_and_disconnected_are_reported() {
        let (_poll, waker) = poll_and_waker();
        let (tx, rx) = mailbox::<&str>(2, waker);
        tx.try_send("a").expect("room");
        tx.try_send("b").expect("room");
        assert_eq!(tx.len(), 2);
        assert!(matches!(tx.try_send("c"), Err(TrySendError::Full("c"))));
        assert!(matches!(
            tx.send_timeout("c", Duration::from_millis(1)),
            Err(SendTimeoutError::Timeout("c"))
        ));
        assert_eq!(rx.drain(1, |_| {}), 1);
        tx.send_timeout("c", PATIENCE).expect("room after drain");
        drop(rx);
        assert!(matches!(
            tx.try_send("d"),
            Err(TrySendError::Disconnected("d"))
        ));
    }

    #[test]
    fn last_sender_dropping_wakes_and_disconnects() {
        let (mut poll, waker) = poll_and_waker();
        let (tx, rx) = mailbox::<u8>(4, waker);
        let tx2 = tx.clone();
        drop(tx);
        assert!(!rx.is_disconnected());
        assert!(!woken(&mut poll, Duration::ZERO));
        thread::spawn(move || drop(tx2)).join().expect("thread");
        assert!(woken(&mut poll, PATIENCE));
        assert!(rx.is_disconnected());
        assert_eq!(rx.drain(4, |_| {}), 0);
    }

    #[test]
    fn lanes_share_each_drain_fairly() {
        let (_poll, waker) = poll_and_waker();
        let (senders, rx) = fair_mailbox::<(usize, u32)>(2, 1000, waker);
        for i in 0..1000 {
            senders[0].try_send((0, i)).expect("room");
        }
        for i in 0..10 {
            senders[1].try_send((1, i)).expect("room");
        }
        // The flooded lane cannot push the other's 10 messages out of the first drain.
        let mut got = Vec::new();
        assert_eq!(rx.drain(100, |m| got.push(m)), 100);
        assert_eq!(got.iter().filter(|(lane, _)| *lane == 1).count(), 10);
        // Each lane stays in order.
        let lane0: Vec<u32> = got.iter().filter(|m| m.0 == 0).map(|m| m.1).collect();
        assert_eq!(lane0, (0..90).collect::<Vec<_>>());
        // A lone busy lane gets the whole budget.
        assert_eq!(rx.drain(500, |_| {}), 500);
        assert_eq!(rx.len(), 410);
        // A full lane refuses its sender only.
        for i in 0..590 {
            senders[0].try_send((0, i)).expect("room");
        }
        assert!(senders[0].try_send((0, 0)).is_err());
        assert!(senders[1].try_send((1, 0)).is_ok());
        drop(senders);
        assert!(rx.is_disconnected());
    }
}
