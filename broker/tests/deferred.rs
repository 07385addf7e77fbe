//! The broker over an engine that completes later (as the Redis engine will): live messages that
//! complete while a replay is in flight come after the replay, none twice.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use hermod_broker::{Broker, Channel, Completion, Engine, Limits, MemoryEngine, Op, Token};
use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::ids::MsgId;

/// Applies operations at once (in submission order) but hands the completions out only while
/// the gate is open.
struct Deferred {
    inner: MemoryEngine,
    held: VecDeque<Completion>,
    open: Arc<AtomicBool>,
}

impl Engine for Deferred {
    fn submit(&mut self, token: Token, op: Op, now_ms: u64) {
        self.inner.submit(token, op, now_ms);
        while let Some(c) = self.inner.poll_completion() {
            self.held.push_back(c);
        }
    }

    fn poll_completion(&mut self) -> Option<Completion> {
        if self.open.load(Ordering::SeqCst) {
            self.held.pop_front()
        } else {
            None
        }
    }

    fn sweep(&mut self, now_ms: u64, in_use: &dyn Fn(&Channel) -> bool) {
        self.inner.sweep(now_ms, in_use);
    }
}

fn deferred() -> (Broker<Deferred>, Arc<AtomicBool>) {
    deferred_with(Limits::default())
}

fn deferred_with(limits: Limits) -> (Broker<Deferred>, Arc<AtomicBool>) {
    let open = Arc::new(AtomicBool::new(true));
    let engine = Deferred {
        inner: MemoryEngine::new(&limits),
        held: VecDeque::new(),
        open: open.clone(),
    };
    (Broker::new(engine, limits), open)
}

fn paged(page: usize) -> (Broker<Deferred>, Arc<AtomicBool>) {
    deferred_with(Limits {
        replay_page_messages: page,
        ..Limits::default()
    })
}

/// Runs `reqs` with completions held back, then lets them all out.
fn run_deferred(b: &mut Broker<Deferred>, open: &AtomicBool, reqs: Vec<Request>) -> Vec<Delivery> {
    open.store(false, Ordering::SeqCst);
    let mut out = run(b, reqs);
    open.store(true, Ordering::SeqCst);
    b.poll_completions(&mut out);
    out
}

fn ids_of(out: &[Delivery], s: SessionKey) -> Vec<MsgId> {
    msgs(out, s).into_iter().map(|(id, _)| id).collect()
}

/// The ids answered to `s` by `Sent`, in order.
fn sent_ids(out: &[Delivery], s: SessionKey) -> Vec<MsgId> {
    out.iter()
        .filter(|d| d.session == s)
        .filter_map(|d| match &d.event {
            Event::Sent { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

fn run(b: &mut Broker<Deferred>, reqs: Vec<Request>) -> Vec<Delivery> {
    let mut out = Vec::new();
    for r in reqs {
        b.handle(r, 1, &mut out);
    }
    out
}

fn send(from: u32, c: &str, to: &str, json: &str) -> Request {
    Request::Send {
        session: key(from),
        cid: cid(c),
        to: name(to),
        data: data(json),
    }
}

fn publish(from: u32, c: &str, room: &str, json: &str) -> Request {
    Request::Publish {
        session: key(from),
        cid: cid(c),
        room: name(room),
        data: data(json),
    }
}

fn attach(s: u32, user: &str) -> Request {
    Request::Attach {
        session: key(s),
        user: name(user),
        device: name("d"),
    }
}

#[test]
fn inbox_replay_then_live_in_order_without_duplicates() {
    let (mut b, open) = deferred();
    run(
        &mut b,
        vec![
            attach(1, "alice"),
            send(1, "c1", "bob", "1"),
            send(1, "c2", "bob", "2"),
        ],
    );
    open.store(false, Ordering::SeqCst);
    let mut out = run(
        &mut b,
        vec![
            send(1, "c3", "bob", "3"),
            attach(2, "bob"),
            send(1, "c4", "bob", "4"),
        ],
    );
    assert!(out.is_empty());
    open.store(true, Ordering::SeqCst);
    b.poll_completions(&mut out);
    assert_eq!(datas(&out, key(2)), ["1", "2", "3", "4"]);
}

#[test]
fn room_replay_then_live_in_order_without_duplicates() {
    let (mut b, open) = deferred();
    let out = run(&mut b, vec![attach(1, "alice"), publish(1, "p1", "r", "1")]);
    let first = sent_id(&out);
    open.store(false, Ordering::SeqCst);
    let join = Request::Join {
        session: key(2),
        room: name("r"),
        since: Some(first),
    };
    let mut out = run(
        &mut b,
        vec![
            attach(2, "bob"),
            publish(1, "p2", "r", "2"),
            join,
            publish(1, "p3", "r", "3"),
        ],
    );
    open.store(true, Ordering::SeqCst);
    b.poll_completions(&mut out);
    assert!(joined(&out, key(2)));
    assert_eq!(datas(&out, key(2)), ["2", "3"]);
}

#[test]
fn paged_replay_with_live_sends_while_reads_are_in_flight() {
    let (mut b, open) = paged(3);
    let (alice, bob) = (key(1), key(2));
    let mut sent = Vec::new();
    let mut reqs = vec![attach(1, "alice")];
    reqs.extend((0..10).map(|i| send(1, &format!("c{i}"), "bob", "0")));
    sent.extend(sent_ids(&run(&mut b, reqs), alice));
    // completions of these sends come before and after the first page's read
    let out = run_deferred(
        &mut b,
        &open,
        vec![
            send(1, "x", "bob", "0"),
            attach(2, "bob"),
            send(1, "y", "bob", "0"),
        ],
    );
    sent.extend(sent_ids(&out, alice));
    let mut got = ids_of(&out, bob);
    let mut is_paused = pauses(&out, bob) == 1;
    assert!(is_paused);
    for round in 0..12 {
        let mut reqs = vec![send(1, &format!("a{round}"), "bob", "0")];
        if is_paused {
            reqs.push(Request::ResumeReplay { session: bob });
        }
        reqs.push(send(1, &format!("b{round}"), "bob", "0"));
        let out = run_deferred(&mut b, &open, reqs);
        sent.extend(sent_ids(&out, alice));
        got.extend(ids_of(&out, bob));
        let pauses = pauses(&out, bob);
        assert!(pauses <= usize::from(is_paused), "round {round}");
        is_paused = pauses == 1;
    }
    assert!(
        !is_paused,
        "2 live messages per round against pages of 3: the replay ends"
    );
    assert_eq!(got, sent);
}

#[test]
fn rejoin_while_the_first_page_is_in_flight_answers_once() {
    let (mut b, open) = paged(2);
    let out = run(&mut b, vec![attach(1, "alice"), attach(2, "bob")]);
    assert!(out.is_empty());
    let mut ids = Vec::new();
    for i in 0..5 {
        let out = run(&mut b, vec![publish(1, &format!("p{i}"), "r", "0")]);
        ids.push(sent_id(&out));
    }
    let join = |since: &MsgId| Request::Join {
        session: key(2),
        room: name("r"),
        since: Some(since.clone()),
    };
    let out = run_deferred(&mut b, &open, vec![join(&ids[0]), join(&ids[2])]);
    assert!(joined(&out, key(2)));
    assert_eq!(ids_of(&out, key(2)), ids[3..]);
    assert_eq!(pauses(&out, key(2)), 0);
}

#[test]
fn leaving_a_room_whose_resumed_page_is_in_flight_passes_the_turn_on() {
    let (mut b, open) = paged(2);
    let carol = key(3);
    let mut reqs = vec![attach(1, "alice")];
    reqs.extend((0..5).map(|i| publish(1, &format!("p{i}"), "r", "0")));
    reqs.extend((0..5).map(|i| send(1, &format!("c{i}"), "carol", "0")));
    let sent = sent_ids(&run(&mut b, reqs), key(1));
    let (room, inbox) = sent.split_at(5);
    let join = Request::Join {
        session: carol,
        room: name("r"),
        since: Some(room[0].clone()),
    };
    let out = run(&mut b, vec![attach(3, "carol"), join]);
    assert_eq!(pauses(&out, carol), 1);
    let mut got = ids_of(&out, carol);
    assert_eq!(b.paused_replays(carol), 2);
    // inbox first, then the room's turn
    let out = run(&mut b, vec![Request::ResumeReplay { session: carol }]);
    assert_eq!(pauses(&out, carol), 1);
    got.extend(ids_of(&out, carol));
    let leave = Request::Leave {
        session: carol,
        room: name("r"),
    };
    let out = run_deferred(
        &mut b,
        &open,
        vec![Request::ResumeReplay { session: carol }, leave],
    );
    assert!(
        ids_of(&out, carol).is_empty(),
        "the resumed room page is stale"
    );
    assert!(matches!(out[0].event, Event::Left { .. }));
    // the stale read ends the turn: the inbox, still waiting, gets its pause
    assert_eq!(pauses(&out, carol), 1);
    assert_eq!(b.paused_replays(carol), 1);
    let out = run(&mut b, vec![Request::ResumeReplay { session: carol }]);
    assert_eq!(pauses(&out, carol), 0);
    got.extend(ids_of(&out, carol));
    let mut want = inbox[..2].to_vec();
    want.extend_from_slice(&room[1..3]);
    want.extend_from_slice(&inbox[2..]);
    assert_eq!(got, want);
}
