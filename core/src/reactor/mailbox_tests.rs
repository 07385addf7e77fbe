//! Tests of the mailbox with a real mio Poll and Waker.

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
