//! Unit tests of the client protocol handlers: a fake broker port, a real `Outbound`.

#![allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin

use super::*;
use std::cell::RefCell;
use std::time::Duration;

use hermod_core::ids::MsgId;
use std::sync::atomic::Ordering::Relaxed;

mod grants;
mod hooks;

/// The wall clock of every test's first tick.
const NOW_UNIX: u64 = 1_800_000_000;

fn key() -> SessionKey {
    SessionKey {
        worker: 0,
        slot: 1,
        generation: 2,
    }
}

fn texts(out: &mut Outbound) -> Vec<String> {
    std::iter::from_fn(|| out.pop())
        .map(|m| m.into_text().map(|t| t.to_string()).unwrap_or_default())
        .collect()
}

/// A broker channel of `cap` slots.
struct Port {
    cap: usize,
    got: RefCell<Vec<Request>>,
}

impl Port {
    fn new(cap: usize) -> Self {
        Port {
            cap,
            got: RefCell::new(Vec::new()),
        }
    }
}

impl RequestPort for Port {
    fn try_request(&self, request: Request) -> bool {
        let mut got = self.got.borrow_mut();
        let room = got.len() < self.cap;
        if room {
            got.push(request);
        }
        room
    }
}

/// What a handler borrows, at `now`, for the one session `key()`.
fn cx_at<'a>(
    now: Instant,
    settings: &'a Settings,
    metrics: &'a Metrics,
    port: &'a Port,
) -> SessionCx<'a> {
    SessionCx {
        now,
        now_unix: NOW_UNIX,
        key: key(),
        settings,
        metrics,
        broker: port,
        hooks: &crate::webhooks::NoHooks,
    }
}

fn client() -> ClientProtocol {
    let n = |s| Name::parse("user", s).expect("valid");
    let limiter = RateLimiter::new(Instant::now());
    ClientProtocol::new(n("alice"), n("default"), limiter, None)
}

#[test]
fn send_is_answered_or_times_out() {
    let settings = Settings::defaults();
    let metrics = Metrics::default();
    let port = Port::new(4);
    let now = Instant::now();
    let mut cx = cx_at(now, &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 20);
    let mut c = client();
    let f1 = r#"{"op":"send","to":"bob","cid":"c1","data":1}"#;
    let f2 = r#"{"op":"send","to":"bob","cid":"c2","data":2}"#;
    assert_eq!(c.on_text(f1, &cx, &mut out), Next::Continue);
    assert_eq!(c.on_text(f2, &cx, &mut out), Next::Continue);
    let first = port.got.borrow_mut().drain(..).next();
    assert!(matches!(first, Some(Request::Send { .. })));
    assert_eq!(
        c.next_deadline(&settings),
        Some(now + settings.request_timeout)
    );
    let sent = Event::Sent {
        cid: Cid::parse("c1").expect("valid"),
        id: MsgId::new("1-0"),
    };
    assert_eq!(c.on_event(sent, &cx, &mut out), Next::Continue);
    assert_eq!(texts(&mut out), [r#"{"op":"sent","cid":"c1","id":"1-0"}"#]);
    cx.now = now + settings.request_timeout + Duration::from_millis(1);
    assert_eq!(c.expire(&cx, &mut out), Next::Continue);
    let answers = texts(&mut out);
    assert_eq!(answers.len(), 1);
    assert!(
        answers[0].contains(r#""cid":"c2","code":"unavailable""#),
        "{answers:?}"
    );
    assert_eq!(c.next_deadline(&settings), None);
}

/// A client retries a timed-out `send` with the same cid; the broker's late answer to the
/// first attempt must not end the retry, which still times out on its own deadline.
#[test]
fn a_late_answer_to_a_timed_out_attempt_leaves_the_retry_in_flight() {
    let settings = Settings::defaults();
    let metrics = Metrics::default();
    let port = Port::new(8);
    let t0 = Instant::now();
    let timeout = settings.request_timeout;
    let mut cx = cx_at(t0, &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 20);
    let mut c = client();
    let f = r#"{"op":"send","to":"bob","cid":"c1","data":1}"#;
    let c1 = || Cid::parse("c1").expect("valid");
    assert_eq!(c.on_text(f, &cx, &mut out), Next::Continue);
    cx.now = t0 + timeout;
    assert_eq!(c.expire(&cx, &mut out), Next::Continue);
    assert_eq!(
        texts(&mut out).len(),
        1,
        "the first attempt is answered unavailable"
    );
    cx.now = t0 + timeout + Duration::from_millis(100);
    let retry_at = cx.now;
    assert_eq!(c.on_text(f, &cx, &mut out), Next::Continue);
    cx.now = t0 + timeout + Duration::from_millis(150);
    let late = Event::Error {
        cid: Some(c1()),
        code: ErrorCode::Unavailable,
        message: "storage unavailable".into(),
    };
    assert_eq!(c.on_event(late, &cx, &mut out), Next::Continue);
    assert_eq!(texts(&mut out).len(), 1, "the late answer is passed on");
    assert_eq!(c.next_deadline(&settings), Some(retry_at + timeout));
    cx.now = retry_at + timeout;
    assert_eq!(c.expire(&cx, &mut out), Next::Continue);
    let answers = texts(&mut out);
    assert_eq!(answers.len(), 1, "the retry times out: {answers:?}");
    assert!(answers[0].contains(r#""cid":"c1","code":"unavailable""#));
    // The retry's own late answer, then a third attempt answered in time.
    let sent = || Event::Sent {
        cid: c1(),
        id: MsgId::new("1-0"),
    };
    assert_eq!(c.on_event(sent(), &cx, &mut out), Next::Continue);
    assert_eq!(c.on_text(f, &cx, &mut out), Next::Continue);
    assert_eq!(c.on_event(sent(), &cx, &mut out), Next::Continue);
    assert_eq!(c.next_deadline(&settings), None);
    // A late answer awaited past its second timeout is forgotten.
    assert_eq!(c.on_text(f, &cx, &mut out), Next::Continue);
    cx.now += timeout;
    assert_eq!(c.expire(&cx, &mut out), Next::Continue);
    cx.now += timeout;
    assert_eq!(c.expire(&cx, &mut out), Next::Continue);
    assert!(c.late.is_empty());
}

#[test]
fn bad_frames_and_full_broker_get_errors() {
    let settings = Settings::defaults();
    let metrics = Metrics::default();
    let port = Port::new(0);
    let cx = cx_at(Instant::now(), &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 20);
    let mut c = client();
    assert_eq!(c.on_text("{nope", &cx, &mut out), Next::Continue);
    let f = r#"{"op":"publish","room":"r","cid":"c9","data":{}}"#;
    assert_eq!(c.on_text(f, &cx, &mut out), Next::Continue);
    let answers = texts(&mut out);
    assert!(
        answers[0].contains(r#""code":"bad_request""#),
        "{answers:?}"
    );
    assert!(
        answers[1].contains(r#""cid":"c9","code":"unavailable""#),
        "{answers:?}"
    );
    assert_eq!(c.next_deadline(&settings), None);
}

#[test]
fn ops_over_the_rate_limit_are_refused_then_the_session_closed() {
    let mut settings = Settings::defaults();
    settings.rate.messages_per_sec = 10;
    settings.rate.burst = 2;
    let metrics = Metrics::default();
    let port = Port::new(1 << 16);
    let cx = cx_at(Instant::now(), &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 24);
    let mut c = client();
    let send = r#"{"op":"send","to":"bob","cid":"c1","data":1}"#;
    let ack = r#"{"op":"ack","id":"1-0"}"#;
    assert_eq!(c.on_text(send, &cx, &mut out), Next::Continue);
    assert_eq!(c.on_text(ack, &cx, &mut out), Next::Continue);
    assert_eq!(port.got.borrow().len(), 2);
    assert_eq!(c.on_text(send, &cx, &mut out), Next::Continue);
    assert_eq!(c.on_text(ack, &cx, &mut out), Next::Continue);
    let answers = texts(&mut out);
    assert!(answers[0].contains(r#""cid":"c1","code":"rate_limited""#));
    assert!(answers[1].starts_with(r#"{"op":"error","code":"rate_limited""#));
    assert_eq!(
        port.got.borrow().len(),
        2,
        "refused ops never reach the broker"
    );
    // The 1,000th refusal within the window closes the session.
    let nexts: Vec<Next> = (2..hermod_core::rate::STRIKE_LIMIT)
        .map(|_| c.on_text(ack, &cx, &mut out))
        .collect();
    assert_eq!(nexts.last(), Some(&Next::Close(CloseReason::RateLimited)));
    assert!(nexts[..nexts.len() - 1]
        .iter()
        .all(|n| *n == Next::Continue));
    assert_eq!(metrics.rate_limit_closes.load(Relaxed), 1);
}

#[test]
fn overflow_and_full_queue_close_1008() {
    let settings = Settings::defaults();
    let metrics = Metrics::default();
    let port = Port::new(1);
    let cx = cx_at(Instant::now(), &settings, &metrics, &port);
    let mut c = client();
    let mut out = Outbound::new(64);
    assert_eq!(
        c.on_event(Event::Overflow, &cx, &mut out),
        Next::Close(CloseReason::SlowConsumer)
    );
    let big = Event::Message {
        id: MsgId::new("1"),
        frame: bytes::Bytes::from(vec![b'x'; 100]),
    };
    assert_eq!(
        c.on_event(big, &cx, &mut out),
        Next::Close(CloseReason::SlowConsumer)
    );
}
