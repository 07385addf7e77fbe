//! Unit tests of [`GatewaySessions`]: sid mapping, grouping of room messages, draining,
//! backpressure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use hermod_core::bus::{Delivery, Event, Request, SessionKey};
use hermod_core::ids::{MsgId, Name};
use hermod_core::link::{decode_push, LinkPush};
use hermod_core::reactor::slots::Key;
use hermod_core::resp::{encode_command, RespConn, RespEvent, RespLimits, RespReader, Value};

use super::sessions::{GatewaySessions, Handled, RequestSink};
use crate::metrics::Metrics;

#[derive(Default)]
struct Sink {
    sent: Vec<Request>,
    full: bool,
}

impl RequestSink for Sink {
    fn has_room(&self) -> bool {
        !self.full
    }
    fn send(&mut self, req: Request) {
        self.sent.push(req);
    }
    fn send_control(&mut self, req: Request) {
        self.sent.push(req);
    }
}

fn gateway_sessions() -> GatewaySessions<()> {
    GatewaySessions::new("n1".into(), Arc::new(|| true), Arc::new(Metrics::default()))
}

fn command(
    sessions: &mut GatewaySessions<()>,
    link: Key,
    sink: &mut Sink,
    args: &[&str],
) -> Handled {
    let mut wire = BytesMut::new();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode_command(&mut wire, &args);
    let mut r = RespReader::new(RespLimits::default());
    r.feed(&wire).unwrap();
    sessions.handle(link, r.next_value().unwrap().unwrap(), sink)
}

/// Replies and pushes written to `link` so far (taken out).
fn output(
    sessions: &mut GatewaySessions<()>,
    link: Key,
    replies: usize,
) -> (Vec<Value>, Vec<LinkPush>) {
    let out = std::mem::take(&mut sessions.link_mut(link).unwrap().out);
    let mut conn = RespConn::new(RespLimits::default());
    for tag in 0..replies {
        conn.queue(&[b"X"], tag as u64);
    }
    conn.handle_input(&out).unwrap();
    let (mut r, mut p) = (Vec::new(), Vec::new());
    while let Some(e) = conn.poll_event() {
        match e {
            RespEvent::Reply { value, .. } => r.push(value),
            RespEvent::Push(v) => p.push(decode_push(v).unwrap()),
        }
    }
    (r, p)
}

fn sid(slot: u32) -> SessionKey {
    SessionKey {
        worker: 3,
        slot,
        generation: 9,
    }
}

fn attach(
    sessions: &mut GatewaySessions<()>,
    link: Key,
    sink: &mut Sink,
    slot: u32,
    user: &str,
) -> SessionKey {
    let text = sid(slot).to_string();
    assert_eq!(
        command(sessions, link, sink, &["ATTACH", &text, user, "d"]),
        Handled::Done
    );
    sink.sent.last().unwrap().session()
}

fn simple(s: &str) -> Value {
    Value::Simple(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn sids_map_to_broker_keys_and_back() {
    let (mut sessions, mut sink) = (gateway_sessions(), Sink::default());
    let now = Instant::now();
    let link = sessions.add_link((), now);
    let ours = attach(&mut sessions, link, &mut sink, 1, "alice");
    assert_eq!(ours.worker, 0);
    command(
        &mut sessions,
        link,
        &mut sink,
        &["SEND", &sid(1).to_string(), "c1", "bob", "{}"],
    );
    assert!(matches!(&sink.sent[1], Request::Send { session, .. } if *session == ours));
    let r = command(
        &mut sessions,
        link,
        &mut sink,
        &["SEND", &sid(2).to_string(), "c1", "bob", "{}"],
    );
    assert_eq!(r, Handled::Done);
    let (replies, _) = output(&mut sessions, link, 3);
    assert_eq!(replies[..2], [simple("OK"), simple("OK")]);
    assert!(replies[2].is_error());

    sessions.route(Delivery {
        session: ours,
        event: Event::Left {
            room: Name::parse("r", "r").unwrap(),
        },
    });
    sessions.end_tick();
    let (_, pushes) = output(&mut sessions, link, 0);
    assert!(matches!(&pushes[..], [LinkPush::Event { sid: s, .. }] if *s == sid(1)));

    // Detach: the broker key goes stale, later deliveries for it are dropped.
    command(
        &mut sessions,
        link,
        &mut sink,
        &["DETACH", &sid(1).to_string()],
    );
    assert!(matches!(sink.sent.last(), Some(Request::Detach { session }) if *session == ours));
    sessions.route(Delivery {
        session: ours,
        event: Event::Overflow,
    });
    sessions.end_tick();
    let (replies, pushes) = output(&mut sessions, link, 1);
    assert_eq!((replies.len(), pushes.len()), (1, 0));
    assert_eq!(sessions.session_count(), 0);
}

#[test]
fn a_room_message_crosses_the_link_once() {
    let (mut sessions, mut sink) = (gateway_sessions(), Sink::default());
    let link = sessions.add_link((), Instant::now());
    let a = attach(&mut sessions, link, &mut sink, 1, "alice");
    let b = attach(&mut sessions, link, &mut sink, 2, "bob");
    let c = attach(&mut sessions, link, &mut sink, 3, "carol");
    output(&mut sessions, link, 3);
    let frame = Bytes::from_static(b"{\"op\":\"msg\"}");
    let id = MsgId::new("1-1");
    let msg = |s| Delivery {
        session: s,
        event: Event::Message {
            id: id.clone(),
            frame: frame.clone(),
        },
    };
    sessions.route(msg(a));
    sessions.route(msg(b));
    // c got something else first: joining the group would put the message before it.
    sessions.route(Delivery {
        session: c,
        event: Event::ReplayPaused,
    });
    sessions.route(msg(c));
    sessions.end_tick();
    let (_, pushes) = output(&mut sessions, link, 0);
    assert_eq!(pushes.len(), 3, "{pushes:?}");
    assert!(matches!(&pushes[0], LinkPush::Message { sids, .. } if sids == &[sid(1), sid(2)]));
    assert!(
        matches!(&pushes[1], LinkPush::Event { sid: s, event: Event::ReplayPaused } if *s == sid(3))
    );
    assert!(matches!(&pushes[2], LinkPush::Message { sids, .. } if sids == &[sid(3)]));
}

#[test]
fn draining_refuses_attach_and_tells_links() {
    let (mut sessions, mut sink) = (gateway_sessions(), Sink::default());
    let link = sessions.add_link((), Instant::now());
    sessions.start_drain();
    command(
        &mut sessions,
        link,
        &mut sink,
        &["ATTACH", &sid(1).to_string(), "u", "d"],
    );
    let (replies, pushes) = output(&mut sessions, link, 1);
    assert!(matches!(&pushes[..], [LinkPush::Draining]));
    assert!(replies[0].error_message().unwrap().starts_with("DRAINING"));
    assert!(sink.sent.is_empty());
}

#[test]
fn a_full_mailbox_parks_and_a_dead_link_detaches() {
    let (mut sessions, mut sink) = (gateway_sessions(), Sink::default());
    let link = sessions.add_link((), Instant::now());
    let ours = attach(&mut sessions, link, &mut sink, 1, "alice");
    sink.full = true;
    let r = command(
        &mut sessions,
        link,
        &mut sink,
        &["ACK", &sid(1).to_string(), "1-1"],
    );
    assert_eq!(r, Handled::Parked);
    assert!(sessions.is_parked(link));
    sink.full = false;
    assert_eq!(sessions.retry_parked(link, &mut sink), Handled::Done);
    assert!(matches!(sink.sent.last(), Some(Request::Ack { .. })));
    sessions.remove_link(link, &mut sink);
    assert!(matches!(sink.sent.last(), Some(Request::Detach { session }) if *session == ours));
    assert_eq!((sessions.link_count(), sessions.session_count()), (0, 0));
}

#[test]
fn operator_commands() {
    let (mut sessions, mut sink) = (gateway_sessions(), Sink::default());
    let link = sessions.add_link((), Instant::now());
    command(&mut sessions, link, &mut sink, &["PING"]);
    command(&mut sessions, link, &mut sink, &["HELLO", "3"]);
    command(&mut sessions, link, &mut sink, &["INFO"]);
    command(&mut sessions, link, &mut sink, &["HELLO", "4"]);
    command(&mut sessions, link, &mut sink, &["FLUSHALL"]);
    let (replies, _) = output(&mut sessions, link, 5);
    assert_eq!(replies[0], simple("PONG"));
    assert_eq!(
        replies[1].map_get("node").and_then(Value::as_str),
        Some("n1")
    );
    assert!(replies[2].as_str().unwrap().contains("sessions:0"));
    assert!(replies[3].error_message().unwrap().starts_with("NOPROTO"));
    assert!(replies[4]
        .error_message()
        .unwrap()
        .starts_with("ERR unknown command"));
}

#[test]
fn with_a_secret_only_hello_auth_ping_until_authenticated() {
    use super::auth::Refusal;
    use hermod_core::link::LinkSecret;
    use std::time::Duration;

    let secret = LinkSecret::new("0123456789abcdef");
    let mut s = gateway_sessions().with_secret(Some(secret));
    let mut sink = Sink::default();
    let t0 = Instant::now();
    let attacker = s.add_link((), t0);
    let gateway = s.add_link((), t0);
    assert!(!s.is_authenticated(attacker));

    // The attack of issue 11: ATTACH as bob from a link that never authenticated.
    let h = command(
        &mut s,
        attacker,
        &mut sink,
        &["ATTACH", "0-1-1", "bob", "x"],
    );
    assert_eq!(h, Handled::Close(Refusal::NotAuthenticated));
    assert!(sink.sent.is_empty(), "nothing reaches the broker");
    let (replies, _) = output(&mut s, attacker, 1);
    assert!(matches!(&replies[0], Value::Error(e) if e.starts_with(b"NOAUTH")));

    // PING is fine, HELLO without AUTH is answered NOAUTH, a wrong secret closes.
    assert_eq!(
        command(&mut s, gateway, &mut sink, &["PING"]),
        Handled::Done
    );
    assert_eq!(
        command(&mut s, gateway, &mut sink, &["HELLO", "3"]),
        Handled::Done
    );
    let wrong = ["HELLO", "3", "AUTH", "hermod", "0123456789abcdeX"];
    assert_eq!(
        command(&mut s, attacker, &mut sink, &wrong),
        Handled::Close(Refusal::WrongSecret)
    );
    let (replies, _) = output(&mut s, gateway, 2);
    assert!(matches!(&replies[1], Value::Error(e) if e.starts_with(b"NOAUTH")));

    // The right secret authenticates; then ATTACH is served.
    let good = ["HELLO", "3", "AUTH", "hermod", "0123456789abcdef"];
    assert_eq!(
        command(&mut s, gateway, &mut sink, &good),
        Handled::Authenticated
    );
    assert!(s.is_authenticated(gateway));
    let h = command(&mut s, gateway, &mut sink, &["ATTACH", "0-1-1", "bob", "x"]);
    assert_eq!(h, Handled::Done);
    assert_eq!(sink.sent.len(), 1);

    // Only the unauthenticated link is past the auth deadline.
    let later = t0 + Duration::from_secs(6);
    assert_eq!(
        s.unauthenticated_past(later, Duration::from_secs(5)),
        vec![attacker]
    );
}
