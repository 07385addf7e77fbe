//! Property test: random send/ack/attach/detach/resume against a simple model of inboxes and
//! cursors, with replays paged small. Every device receives, on every attach, every message after
//! its cursor exactly once, in order: at any time what a session got is a prefix of that, the
//! whole of it whenever no `ReplayPaused` is outstanding, and at most one is outstanding.

mod common;

use std::collections::HashMap;

use common::*;
use hermod_core::bus::SessionKey;
use hermod_core::ids::MsgId;
use proptest::prelude::*;

const DEVICES: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    /// alice sends to bob (true) or to carol (noise, false)
    Send(bool),
    /// the session of a device acks the n-th message it has received (modulo)
    Ack(usize, usize),
    Attach(usize),
    Detach(usize),
    /// alice repeats an earlier cid (modulo): must not store again
    Retry(usize),
    /// the gateway asks for the next page of a device's session (or of a stale session)
    Resume(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<bool>().prop_map(Step::Send),
        2 => (0..DEVICES, 0..64usize).prop_map(|(d, n)| Step::Ack(d, n)),
        2 => (0..DEVICES).prop_map(Step::Attach),
        1 => (0..DEVICES).prop_map(Step::Detach),
        1 => (0..64usize).prop_map(Step::Retry),
        3 => (0..DEVICES + 1).prop_map(Step::Resume),
    ]
}

/// One attached device.
struct Attached {
    session: SessionKey,
    /// Index in the inbox of the first message this attach must deliver (the cursor then).
    start: usize,
    /// Ids received on this session, in order.
    got: Vec<MsgId>,
    /// A `ReplayPaused` is outstanding.
    paused: bool,
}

/// The model: bob's inbox and each device's cursor (index of the first unacked message).
#[derive(Default)]
struct Model {
    inbox: Vec<MsgId>,
    cursor: [usize; DEVICES],
    attached: HashMap<usize, Attached>,
}

impl Model {
    /// Takes one request's deliveries into every attached session and checks the invariant.
    fn observe(&mut self, out: &[hermod_core::bus::Delivery]) -> Result<(), TestCaseError> {
        for a in self.attached.values_mut() {
            a.got
                .extend(msgs(out, a.session).into_iter().map(|(id, _)| id));
            let pauses = paused(out, a.session);
            prop_assert!(pauses <= 1 && !(a.paused && pauses == 1), "double pause");
            a.paused |= pauses == 1;
            let want = &self.inbox[a.start..];
            prop_assert!(a.got.len() <= want.len(), "more than the inbox");
            prop_assert_eq!(&a.got[..], &want[..a.got.len()]);
            if !a.paused {
                prop_assert_eq!(a.got.len(), want.len(), "live session behind");
            } else {
                prop_assert!(a.got.len() < want.len(), "paused with nothing left");
            }
        }
        Ok(())
    }
}

fn page_bytes() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(300), Just(usize::MAX)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn devices_receive_everything_after_their_cursor(
        page_messages in 1..5usize,
        page_bytes in page_bytes(),
        steps in prop::collection::vec(step(), 1..100),
    ) {
        let mut h = Harness::paged(page_messages, page_bytes);
        let alice = key(0);
        h.attach(alice, "alice", "default");
        let mut m = Model::default();
        let mut next_slot = 1;
        let mut cids = 0;
        for s in steps {
            match s {
                Step::Send(to_bob) => {
                    let to = if to_bob { "bob" } else { "carol" };
                    let out = h.send(alice, &format!("c{cids}"), to, "1");
                    cids += 1;
                    let id = sent_id(&out);
                    if to_bob {
                        m.inbox.push(id);
                    }
                    m.observe(&out)?;
                }
                Step::Retry(n) if cids > 0 => {
                    let out = h.send(alice, &format!("c{}", n % cids), "bob", "1");
                    sent_id(&out);
                    prop_assert!(out.iter().all(|d| d.session == alice));
                }
                Step::Retry(_) => {}
                Step::Ack(d, n) => {
                    if let Some(a) = m.attached.get(&d) {
                        if !a.got.is_empty() {
                            let id = a.got[n % a.got.len()].clone();
                            let out = h.ack(a.session, &id);
                            prop_assert!(out.is_empty());
                            let pos = m.inbox.iter().position(|i| *i == id).unwrap();
                            m.cursor[d] = m.cursor[d].max(pos + 1);
                        }
                    }
                }
                Step::Attach(d) => {
                    if let Some(old) = m.attached.remove(&d) {
                        h.detach(old.session);
                    }
                    let session = key(next_slot);
                    next_slot += 1;
                    let start = m.cursor[d];
                    m.attached.insert(d, Attached { session, start, got: Vec::new(), paused: false });
                    let out = h.attach(session, "bob", &format!("dev{d}"));
                    m.observe(&out)?;
                }
                Step::Detach(d) => {
                    if let Some(old) = m.attached.remove(&d) {
                        prop_assert!(h.detach(old.session).is_empty());
                        prop_assert_eq!(h.broker.paused_replays(old.session), 0);
                    }
                }
                Step::Resume(d) => {
                    let Some(a) = m.attached.get_mut(&d) else {
                        // no such session (never attached, detached, or the stale slot)
                        prop_assert!(h.resume(key(10_000 + d as u32)).is_empty());
                        continue;
                    };
                    let was_paused = std::mem::replace(&mut a.paused, false);
                    let out = h.resume(a.session);
                    if !was_paused {
                        prop_assert!(out.is_empty(), "resume without a pause must be ignored");
                    }
                    m.observe(&out)?;
                }
            }
        }
        // the gateway drains every paused replay: then every device has everything
        for _ in 0..1_000 {
            let Some(a) = m.attached.values_mut().find(|a| a.paused) else {
                break;
            };
            a.paused = false;
            let out = h.resume(a.session);
            m.observe(&out)?;
        }
        for a in m.attached.values() {
            prop_assert!(!a.paused);
            prop_assert_eq!(&a.got[..], &m.inbox[a.start..]);
        }
    }
}
