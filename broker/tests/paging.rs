//! Paged replay with flow control: a long backlog goes out a page at a time, the next page only
//! after `ResumeReplay`; live messages meanwhile are neither lost, nor duplicated, nor reordered.
#![allow(clippy::unwrap_used)] // scenarios shared by both engines are not `#[test]`s

mod common;

use common::*;
use hermod_broker::Limits;
use hermod_core::bus::{Event, SessionKey};
use hermod_core::ids::MsgId;

const NO_BYTE_LIMIT: usize = usize::MAX;

fn ids(out: &[hermod_core::bus::Delivery], s: SessionKey) -> Vec<MsgId> {
    msgs(out, s).into_iter().map(|(id, _)| id).collect()
}

/// `n` messages from a fresh `alice` session (slot 1) to `to`, with cids `{tag}{i}`.
fn backlog(h: &mut Harness, to: &str, tag: &str, n: usize) -> Vec<MsgId> {
    (0..n)
        .map(|i| sent_id(&h.send(key(1), &format!("{tag}{i}"), to, &i.to_string())))
        .collect()
}

/// Resumes `s` until a page comes back short; returns the ids delivered on the way.
fn drain(h: &mut Harness, s: SessionKey) -> Vec<MsgId> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let out = h.resume(s);
        got.extend(ids(&out, s));
        if paused(&out, s) == 0 {
            return got;
        }
    }
    panic!("replay never ended");
}

fn attach_backlog_arrives_in_pages_after_resume(kind: Kind) {
    let mut h = Harness::paged_on(kind, 100, NO_BYTE_LIMIT);
    h.attach(key(1), "alice", "default");
    let sent = backlog(&mut h, "bob", "c", 1_000);
    let bob = key(2);
    let out = h.attach(bob, "bob", "phone");
    assert_eq!(ids(&out, bob), sent[..100]);
    assert_eq!(paused(&out, bob), 1);
    assert!(matches!(
        out.last().map(|d| &d.event),
        Some(Event::ReplayPaused)
    ));
    assert_eq!(h.broker.paused_replays(bob), 1);
    let mut got = ids(&out, bob);
    for page in 1..10 {
        let out = h.resume(bob);
        assert_eq!(
            ids(&out, bob),
            sent[page * 100..(page + 1) * 100],
            "page {page}"
        );
        // the engine knows the 10th page is the last one: no pause after it
        assert_eq!(paused(&out, bob), usize::from(page < 9), "page {page}");
        got.extend(ids(&out, bob));
    }
    assert_eq!(got, sent);
    assert_eq!(h.broker.paused_replays(bob), 0);
    // replay over: a stray resume is ignored, live messages go straight out
    assert!(h.resume(bob).is_empty());
    let out = h.send(key(1), "live", "bob", "\"live\"");
    assert_eq!(datas(&out, bob), ["\"live\""]);
}

fn live_sends_during_a_paged_replay_arrive_once_in_order(kind: Kind) {
    let mut h = Harness::paged_on(kind, 100, NO_BYTE_LIMIT);
    h.attach(key(1), "alice", "default");
    let mut sent = backlog(&mut h, "bob", "c", 350);
    let bob = key(2);
    let mut got = ids(&h.attach(bob, "bob", "d"), bob);
    assert_eq!(got.len(), 100);
    for round in 0..3 {
        // sent while paused: not delivered live, read by a later page
        let out = h.send(key(1), &format!("live{round}"), "bob", "0");
        sent.push(sent_id(&out));
        assert!(ids(&out, bob).is_empty());
        let out = h.resume(bob);
        got.extend(ids(&out, bob));
    }
    got.extend(drain(&mut h, bob));
    assert_eq!(got, sent);
    let out = h.send(key(1), "after", "bob", "0");
    assert_eq!(ids(&out, bob), [sent_id(&out)]);
}

fn pages_are_bounded_by_bytes_too(kind: Kind) {
    let mut h = Harness::paged_on(kind, 1_000, 1);
    h.attach(key(1), "alice", "default");
    let sent = backlog(&mut h, "bob", "c", 3);
    let bob = key(2);
    let out = h.attach(bob, "bob", "d");
    // a page always holds at least one message, even larger than the byte bound
    assert_eq!(ids(&out, bob), sent[..1]);
    assert_eq!(paused(&out, bob), 1);
    assert_eq!(drain(&mut h, bob), sent[1..]);
}

fn acks_during_a_paged_replay_do_not_skip_or_repeat(kind: Kind) {
    let mut h = Harness::paged_on(kind, 10, NO_BYTE_LIMIT);
    h.attach(key(1), "alice", "default");
    let sent = backlog(&mut h, "bob", "c", 35);
    let bob = key(2);
    let mut got = ids(&h.attach(bob, "bob", "d"), bob);
    assert!(h.ack(bob, &got[9]).is_empty());
    got.extend(drain(&mut h, bob));
    assert_eq!(got, sent);
    h.detach(bob);
    // the cursor is where the ack left it
    let again = key(3);
    let out = h.attach(again, "bob", "d");
    assert_eq!(ids(&out, again), sent[10..20]);
}

fn room_since_replay_is_paged(kind: Kind) {
    let mut h = Harness::paged_on(kind, 100, NO_BYTE_LIMIT);
    let a = key(1);
    h.attach(a, "alice", "default");
    let mut sent: Vec<MsgId> = (0..260)
        .map(|i| sent_id(&h.publish(a, &format!("p{i}"), "r", &i.to_string())))
        .collect();
    let b = key(2);
    h.attach(b, "bob", "default");
    let out = h.join(b, "r", Some(&sent[9]));
    assert!(joined(&out, b));
    assert!(matches!(out[0].event, Event::Joined { .. }));
    assert_eq!(ids(&out, b), sent[10..110]);
    assert_eq!(paused(&out, b), 1);
    let mut got = ids(&out, b);
    // published while paused: in the history, read by a later page
    let out = h.publish(a, "live", "r", "0");
    sent.push(sent_id(&out));
    assert!(ids(&out, b).is_empty());
    got.extend(drain(&mut h, b));
    assert_eq!(got, sent[10..]);
    let out = h.publish(a, "after", "r", "0");
    assert_eq!(ids(&out, b), [sent_id(&out)]);
}

fn room_trimmed_during_a_paused_replay_delivers_what_is_left(kind: Kind) {
    let limits = Limits {
        room_max_len: 150,
        replay_page_messages: 100,
        ..Limits::default()
    };
    let mut h = Harness::of_with(kind, limits, 9);
    let a = key(1);
    h.attach(a, "alice", "default");
    let mut sent: Vec<MsgId> = (0..150)
        .map(|i| sent_id(&h.publish(a, &format!("p{i}"), "r", "0")))
        .collect();
    let b = key(2);
    h.attach(b, "bob", "default");
    let out = h.join(b, "r", Some(&sent[0]));
    assert!(joined(&out, b));
    assert_eq!(ids(&out, b), sent[1..101]);
    // 160 more: the history keeps the newest 150, past bob's last delivered id (sent[100])
    for i in 150..310 {
        sent.push(sent_id(&h.publish(a, &format!("p{i}"), "r", "0")));
    }
    // the rest, from the oldest retained message: a gap, but no duplicate and in order
    assert_eq!(drain(&mut h, b), sent[160..]);
}

fn replays_of_one_session_take_turns_with_one_pause_outstanding(kind: Kind) {
    let mut h = Harness::paged_on(kind, 100, NO_BYTE_LIMIT);
    let a = key(1);
    h.attach(a, "alice", "default");
    let inbox = backlog(&mut h, "bob", "c", 250);
    let room: Vec<MsgId> = (0..251)
        .map(|i| sent_id(&h.publish(a, &format!("p{i}"), "r", "0")))
        .collect();
    let b = key(2);
    let out = h.attach(b, "bob", "d");
    let mut got_inbox = ids(&out, b);
    assert_eq!(paused(&out, b), 1);
    let out = h.join(b, "r", Some(&room[0]));
    let mut got_room = ids(&out, b);
    assert_eq!(got_room.len(), 100);
    // a pause is already outstanding: no second one
    assert_eq!(paused(&out, b), 0);
    assert_eq!(h.broker.paused_replays(b), 2);
    // one page per resume, inbox and room in turn
    let mut turns = Vec::new();
    loop {
        let out = h.resume(b);
        let page = ids(&out, b);
        let is_room = page.first().is_some_and(|id| room.contains(id));
        turns.push((is_room, page.len()));
        if is_room {
            got_room.extend(page);
        } else {
            got_inbox.extend(page);
        }
        if paused(&out, b) == 0 {
            break;
        }
    }
    assert_eq!(
        turns,
        [(false, 100), (true, 100), (false, 50), (true, 50)],
        "round robin"
    );
    assert_eq!(got_inbox, inbox);
    assert_eq!(got_room, room[1..]);
}

fn detach_mid_replay_drops_it_and_unknown_resumes_are_ignored(kind: Kind) {
    let mut h = Harness::paged_on(kind, 10, NO_BYTE_LIMIT);
    h.attach(key(1), "alice", "default");
    let sent = backlog(&mut h, "bob", "c", 30);
    let bob = key(2);
    assert_eq!(ids(&h.attach(bob, "bob", "d"), bob), sent[..10]);
    assert!(h.detach(bob).is_empty());
    assert_eq!(h.broker.paused_replays(bob), 0);
    assert!(h.resume(bob).is_empty());
    assert!(h.resume(key(99)).is_empty());
    // nothing was acked: the next attach starts from the beginning again
    let again = key(3);
    let mut got = ids(&h.attach(again, "bob", "d"), again);
    got.extend(drain(&mut h, again));
    assert_eq!(got, sent);
}

fn leaving_or_rejoining_a_paused_room_drops_its_replay(kind: Kind) {
    let mut h = Harness::paged_on(kind, 5, NO_BYTE_LIMIT);
    let a = key(1);
    h.attach(a, "alice", "default");
    let room: Vec<MsgId> = (0..20)
        .map(|i| sent_id(&h.publish(a, &format!("p{i}"), "r", "0")))
        .collect();
    let b = key(2);
    h.attach(b, "bob", "d");
    let out = h.join(b, "r", Some(&room[0]));
    assert_eq!(paused(&out, b), 1);
    h.leave(b, "r");
    assert_eq!(h.broker.paused_replays(b), 0);
    // the outstanding pause is answered, nothing is left to read
    assert!(h.resume(b).is_empty());
    // rejoin from later: the old replay is gone, the new one starts at the new position
    let out = h.join(b, "r", Some(&room[14]));
    assert_eq!(ids(&out, b), room[15..20]);
    assert_eq!(paused(&out, b), 0);
    let out = h.join(b, "r", Some(&room[2]));
    assert_eq!(ids(&out, b), room[3..8]);
    assert_eq!(paused(&out, b), 1);
    let out = h.join(b, "r", Some(&room[17]));
    assert_eq!(ids(&out, b), room[18..]);
    assert_eq!(h.broker.paused_replays(b), 0);
    assert!(h.resume(b).is_empty());
}

on_both_engines!(
    attach_backlog_arrives_in_pages_after_resume,
    live_sends_during_a_paged_replay_arrive_once_in_order,
    pages_are_bounded_by_bytes_too,
    acks_during_a_paged_replay_do_not_skip_or_repeat,
    room_since_replay_is_paged,
    room_trimmed_during_a_paused_replay_delivers_what_is_left,
    replays_of_one_session_take_turns_with_one_pause_outstanding,
    detach_mid_replay_drops_it_and_unknown_resumes_are_ignored,
    leaving_or_rejoining_a_paused_room_drops_its_replay,
);
