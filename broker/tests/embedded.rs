//! The embedded runner: routing to worker sinks, and overflow when a sink is full.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{cid, data, name};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use hermod_broker::embedded::{self, Sink};
use hermod_broker::{Broker, Limits, MemoryEngine};
use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::reactor::mailbox::{MailboxSender, SendTimeoutError};

const WAIT: Duration = Duration::from_secs(10);

/// Blocking sends into the runner's mailbox, as a gateway's control requests do.
trait Put {
    fn send(&self, req: Request) -> Result<(), SendTimeoutError<Request>>;
}

impl Put for MailboxSender<Request> {
    fn send(&self, req: Request) -> Result<(), SendTimeoutError<Request>> {
        self.send_timeout(req, WAIT)
    }
}

fn session(worker: u16, slot: u32) -> SessionKey {
    SessionKey {
        worker,
        slot,
        generation: 1,
    }
}

/// A sink into a bounded channel that refuses while `full` is set.
fn sink(full: Arc<AtomicBool>) -> (Sink, Receiver<Delivery>) {
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let sink: Sink = Box::new(move |d: Delivery| {
        if full.load(Ordering::SeqCst) {
            return Err(d);
        }
        tx.try_send(d).map_err(|e| e.into_inner())
    });
    (sink, rx)
}

fn recv(rx: &Receiver<Delivery>) -> Delivery {
    rx.recv_timeout(WAIT).expect("a delivery in time")
}

#[test]
fn routes_deliveries_to_the_owning_worker() {
    let (s0, rx0) = sink(Arc::default());
    let (s1, rx1) = sink(Arc::default());
    let limits = Limits::default();
    let broker = Broker::new(MemoryEngine::new(&limits), limits);
    let running = embedded::spawn(broker, 64, vec![s0, s1]).unwrap();
    let tx = running.sender();
    let (alice, bob) = (session(0, 1), session(1, 1));
    for (s, u) in [(alice, "alice"), (bob, "bob")] {
        tx.send(Request::Attach {
            session: s,
            user: name(u),
            device: name("d"),
        })
        .unwrap();
    }
    tx.send(Request::Send {
        session: alice,
        cid: cid("c1"),
        to: name("bob"),
        data: data("1"),
    })
    .unwrap();
    assert!(matches!(recv(&rx0).event, Event::Sent { .. }));
    let d = recv(&rx1);
    assert_eq!(d.session, bob);
    assert!(matches!(d.event, Event::Message { .. }));
    running.shutdown();
}

#[test]
fn full_sink_overflows_the_session_and_overflow_arrives_later() {
    let (s0, rx0) = sink(Arc::default());
    let full = Arc::new(AtomicBool::new(true));
    let (s1, rx1) = sink(full.clone());
    let limits = Limits::default();
    let broker = Broker::new(MemoryEngine::new(&limits), limits);
    let running = embedded::spawn(broker, 64, vec![s0, s1]).unwrap();
    let tx = running.sender();
    let (alice, bob) = (session(0, 1), session(1, 7));
    tx.send(Request::Attach {
        session: alice,
        user: name("alice"),
        device: name("d"),
    })
    .unwrap();
    tx.send(Request::Attach {
        session: bob,
        user: name("bob"),
        device: name("d"),
    })
    .unwrap();
    for i in 0..3 {
        tx.send(Request::Send {
            session: alice,
            cid: cid(&format!("c{i}")),
            to: name("bob"),
            data: data("1"),
        })
        .unwrap();
        // stored and answered even though bob's worker is full
        assert!(matches!(recv(&rx0).event, Event::Sent { .. }));
    }
    // bob's own requests are dropped while overflowed
    tx.send(Request::Join {
        session: bob,
        room: name("r"),
        since: None,
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    full.store(false, Ordering::SeqCst);
    let d = recv(&rx1);
    assert_eq!(d.session, bob);
    assert!(matches!(d.event, Event::Overflow), "{d:?}");
    // nothing else for the overflowed session
    assert!(matches!(
        rx1.recv_timeout(Duration::from_millis(100)),
        Err(RecvTimeoutError::Timeout)
    ));
    // the client comes back on a new session and gets everything from its inbox
    tx.send(Request::Detach { session: bob }).unwrap();
    let bob2 = session(1, 8);
    tx.send(Request::Attach {
        session: bob2,
        user: name("bob"),
        device: name("d"),
    })
    .unwrap();
    for _ in 0..3 {
        let d = recv(&rx1);
        assert_eq!(d.session, bob2);
        assert!(matches!(d.event, Event::Message { .. }));
    }
    running.shutdown();
}

#[test]
fn shutdown_returns_while_senders_are_still_held() {
    let limits = Limits::default();
    let broker = Broker::new(MemoryEngine::new(&limits), limits);
    let running = embedded::spawn(broker, 4, Vec::new()).unwrap();
    let held = running.sender();
    running.shutdown();
    drop(held);
}

#[test]
fn paged_replay_through_the_runner_resumes_on_request() {
    let (s0, rx0) = sink(Arc::default());
    let limits = Limits {
        replay_page_messages: 10,
        ..Limits::default()
    };
    let broker = Broker::new(MemoryEngine::new(&limits), limits);
    let running = embedded::spawn(broker, 64, vec![s0]).unwrap();
    let tx = running.sender();
    let (alice, bob) = (session(0, 1), session(0, 2));
    tx.send(Request::Attach {
        session: alice,
        user: name("alice"),
        device: name("d"),
    })
    .unwrap();
    let mut sent = Vec::new();
    for i in 0..25 {
        tx.send(Request::Send {
            session: alice,
            cid: cid(&format!("c{i}")),
            to: name("bob"),
            data: data("1"),
        })
        .unwrap();
        match recv(&rx0).event {
            Event::Sent { id, .. } => sent.push(id),
            other => panic!("{other:?}"),
        }
    }
    tx.send(Request::Attach {
        session: bob,
        user: name("bob"),
        device: name("d"),
    })
    .unwrap();
    let mut got = Vec::new();
    let mut pauses = 0;
    while got.len() < sent.len() {
        let d = recv(&rx0);
        assert_eq!(d.session, bob);
        match d.event {
            Event::Message { id, .. } => got.push(id),
            Event::ReplayPaused => {
                pauses += 1;
                tx.send(Request::ResumeReplay { session: bob }).unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, sent);
    assert_eq!(pauses, 2);
    running.shutdown();
}
