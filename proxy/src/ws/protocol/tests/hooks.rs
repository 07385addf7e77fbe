//! What a session reports to the webhook queue: join and leave once the broker answered, and a
//! publish (when wanted) once stored, with its room, id and data.

use super::*;
use crate::webhooks::{HookEvent, HookPort, What};
use std::collections::HashSet;

/// A webhook queue that records what it is given, wanting only `kinds`.
struct Hooks {
    kinds: HashSet<&'static str>,
    got: RefCell<Vec<HookEvent>>,
}

impl HookPort for Hooks {
    fn wants(&self, kind: EventKind) -> bool {
        self.kinds.contains(kind.as_str())
    }
    fn report(&self, event: HookEvent) {
        self.got.borrow_mut().push(event);
    }
}

fn hooks(kinds: &[&'static str]) -> Hooks {
    Hooks {
        kinds: kinds.iter().copied().collect(),
        got: RefCell::new(Vec::new()),
    }
}

/// Runs a publish of `c1` to `lobby` answered `sent`, a publish of `c2` answered `error`, and a
/// join and leave, with a queue wanting `kinds`; what was reported, as text.
fn reported(kinds: &[&'static str]) -> Vec<String> {
    let settings = Settings::defaults();
    let metrics = Metrics::default();
    let port = Port::new(16);
    let hooks = hooks(kinds);
    let mut cx = cx_at(Instant::now(), &settings, &metrics, &port);
    cx.hooks = &hooks;
    let mut out = Outbound::new(1 << 20);
    let mut c = client();
    let room = Name::parse("room", "lobby").expect("valid");
    let cid = |s: &str| Cid::parse(s).expect("valid");
    for f in [
        r#"{"op":"publish","room":"lobby","cid":"c1","data":{"n":1}}"#,
        r#"{"op":"publish","room":"lobby","cid":"c2","data":2}"#,
    ] {
        assert_eq!(c.on_text(f, &cx, &mut out), Next::Continue);
    }
    let events = [
        Event::Joined {
            room: room.clone(),
            recovered: false,
        },
        Event::Sent {
            cid: cid("c1"),
            id: MsgId::new("7-0"),
        },
        Event::Error {
            cid: Some(cid("c2")),
            code: ErrorCode::Unavailable,
            message: "busy".into(),
        },
        Event::Left { room },
    ];
    for e in events {
        assert_eq!(c.on_event(e, &cx, &mut out), Next::Continue);
    }
    let got = hooks.got.borrow();
    got.iter()
        .map(|e| {
            assert_eq!((e.user.as_str(), e.device.as_str()), ("alice", "default"));
            assert_eq!((e.session, e.ts), (key(), NOW_UNIX));
            match &e.what {
                What::Join { room } => format!("join {room}"),
                What::Leave { room } => format!("leave {room}"),
                What::Publish(p) => format!("publish {} {} {}", p.room, p.id, p.data.get()),
                other => format!("{other:?}"),
            }
        })
        .collect()
}

#[test]
fn joins_leaves_and_stored_publishes_are_reported_when_wanted() {
    assert_eq!(
        reported(&["join", "leave", "publish"]),
        ["join lobby", r#"publish lobby 7-0 {"n":1}"#, "leave lobby"]
    );
    assert_eq!(reported(&["join", "leave"]), ["join lobby", "leave lobby"]);
    assert_eq!(reported(&["publish"]), [r#"publish lobby 7-0 {"n":1}"#]);
    assert!(reported(&[]).is_empty());
}
