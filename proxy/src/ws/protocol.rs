//! The v1 client protocol on one session: client frames become broker [`Request`]s, broker
//! [`Event`]s become server frames, and every `send`/`publish` in flight is answered, by the
//! broker's `sent`/`error` or, past the request timeout, by `unavailable` (never silence).
//!
//! Sans-io: frames go into the session's [`Outbound`] queue and requests to the broker through
//! the [`RequestPort`] the worker implements; no socket, no channel, no clock (`now` comes in).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::VecDeque;
use std::time::Instant;

use hermod_core::bus::{Event, Request, SessionKey};
use hermod_core::ids::{Cid, Name};
use hermod_core::protocol::{self, ClientFrame, ErrorCode};
use hermod_core::rate::{RateLimiter, Verdict};
use tungstenite::{Message, Utf8Bytes};

use super::outbound::Outbound;
use crate::metrics::Metrics;
use crate::next::{CloseReason, Next};
use crate::settings::Settings;

/// Most `send`/`publish` requests one session may have waiting for `sent`; past it the answer is
/// `rate_limited`. Bounds the in-flight list a peer controls.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Where a session's requests to the broker go: the worker's bounded channel to the broker.
pub trait RequestPort {
    /// Hands `request` over without blocking; false when it cannot be taken now (the channel is
    /// full, or control requests are still waiting for room: none may be overtaken), and the
    /// request is dropped.
    fn try_request(&self, request: Request) -> bool;
}

/// What a session's handlers need from the worker for one call.
pub struct SessionCx<'a> {
    /// The time of the current loop tick.
    pub now: Instant,
    /// The session being served.
    pub key: SessionKey,
    pub settings: &'a Settings,
    pub metrics: &'a Metrics,
    /// The broker's request channel (bounded; never blocked on).
    pub broker: &'a dyn RequestPort,
}

/// Protocol state of a `/ws` session.
#[derive(Debug)]
pub struct ClientProtocol {
    /// Authenticated identity, for the welcome frame and the broker's Attach.
    pub user: Name,
    /// The device, each with its own inbox cursor.
    pub device: Name,
    /// `send`/`publish` awaiting `sent`, oldest first, with when they were sent to the broker.
    /// All share one timeout, so the front is always the first to expire.
    in_flight: VecDeque<(Cid, Instant)>,
    /// Requests answered `unavailable` here (past the request timeout) whose broker answer may
    /// still come, oldest first, each with when it stops being awaited. A client retries with the
    /// same `cid`, so without this list the first attempt's late answer would take the retry's
    /// place in `in_flight`, and the retry would never time out: the client would wait for the
    /// broker however long it takes. At most [`MAX_IN_FLIGHT`] entries.
    late: VecDeque<(Cid, Instant)>,
    /// The broker paused a replay (inbox backlog, room history) and waits for `ResumeReplay`,
    /// which goes out once what it sent so far has been written to the socket.
    replay_paused: bool,
    /// The session's token buckets (`--session-rate`, `--session-burst`,
    /// `--session-byte-rate`): every message the client sends is charged here.
    limiter: RateLimiter,
}

impl ClientProtocol {
    pub fn new(user: Name, device: Name, limiter: RateLimiter) -> Self {
        ClientProtocol {
            user,
            device,
            in_flight: VecDeque::new(),
            late: VecDeque::new(),
            replay_paused: false,
            limiter,
        }
    }

    /// The user and the rate limiter, as the session ends.
    pub fn into_limiter(self) -> (Name, RateLimiter) {
        (self.user, self.limiter)
    }

    /// Charges a message that is no op (a ping or pong) against the rate limits: it cannot be
    /// refused (tungstenite answers pings itself), but it counts, and a peer that keeps pinging
    /// past the limits is closed 1008.
    pub fn charge_control(&mut self, len: usize, cx: &SessionCx<'_>) -> Next {
        match self
            .limiter
            .check(&cx.settings.rate, cx.settings.max_message_size, cx.now, len)
        {
            Verdict::Pass => Next::Continue,
            Verdict::Refuse(over) => {
                cx.metrics.rate_limited(over);
                Next::Continue
            }
            Verdict::Close(over) => {
                cx.metrics.rate_limited(over);
                rate_limit_close(cx)
            }
        }
    }

    /// Queues the welcome frame (the first server frame of every session).
    pub fn welcome(&self, key: SessionKey, out: &mut Outbound) -> Next {
        let text = protocol::encode_welcome(&self.user, &self.device, &key.to_string());
        push(out, Message::Text(text.into()))
    }

    /// The earliest in-flight deadline, if any request is in flight.
    pub fn next_deadline(&self, settings: &Settings) -> Option<Instant> {
        let (_, sent_at) = self.in_flight.front()?;
        Some(*sent_at + settings.request_timeout)
    }

    /// Handles one text frame from the client.
    ///
    /// Every frame is charged against the session's rate limits first (ops without a `cid`
    /// included); one over them is answered `rate_limited` (with its `cid` when it has a readable
    /// one), and the session is closed 1008 once it has been refused too often.
    pub fn on_text(&mut self, text: &str, cx: &SessionCx<'_>, out: &mut Outbound) -> Next {
        let s = cx.settings;
        let verdict = self
            .limiter
            .check(&s.rate, s.max_message_size, cx.now, text.len());
        let parsed = protocol::parse_client_frame(text);
        if let Verdict::Refuse(over) | Verdict::Close(over) = verdict {
            cx.metrics.rate_limited(over);
            if matches!(verdict, Verdict::Close(_)) {
                return rate_limit_close(cx);
            }
            let cid = match &parsed {
                Ok(ClientFrame::Send { cid, .. } | ClientFrame::Publish { cid, .. }) => Some(cid),
                Ok(_) => None,
                Err(bad) => bad.cid.as_ref(),
            };
            let msg = "over the session's rate limit; slow down";
            return error(out, cid, ErrorCode::RateLimited, msg);
        }
        let frame = match parsed {
            Ok(frame) => frame,
            Err(bad) => {
                if bad.too_deep {
                    cx.metrics
                        .data_too_deep
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return error(out, bad.cid.as_ref(), ErrorCode::BadRequest, &bad.message);
            }
        };
        let session = cx.key;
        let (request, tracked) = match frame {
            ClientFrame::Send { to, cid, data } => {
                let cid2 = cid.clone();
                (
                    Request::Send {
                        session,
                        cid,
                        to,
                        data,
                    },
                    Some(cid2),
                )
            }
            ClientFrame::Publish { room, cid, data } => {
                let cid2 = cid.clone();
                (
                    Request::Publish {
                        session,
                        cid,
                        room,
                        data,
                    },
                    Some(cid2),
                )
            }
            ClientFrame::Ack { id } => (Request::Ack { session, id }, None),
            ClientFrame::Join { room, since } => (
                Request::Join {
                    session,
                    room,
                    since,
                },
                None,
            ),
            ClientFrame::Leave { room } => (Request::Leave { session, room }, None),
        };
        if let Some(cid) = &tracked {
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                let msg = "too many requests in flight";
                return error(out, Some(cid), ErrorCode::RateLimited, msg);
            }
        }
        if !cx.broker.try_request(request) {
            cx.metrics
                .broker_queue_full
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let msg = "storage is busy, retry later";
            return error(out, tracked.as_ref(), ErrorCode::Unavailable, msg);
        }
        if let Some(cid) = tracked {
            self.in_flight.push_back((cid, cx.now));
        }
        Next::Continue
    }

    /// Turns a broker event into a server frame. `Overflow` closes the session.
    pub fn on_event(&mut self, event: Event, cx: &SessionCx<'_>, out: &mut Outbound) -> Next {
        let text: Utf8Bytes = match event {
            Event::Sent { cid, id } => {
                self.answered(&cid, cx);
                protocol::encode_sent(&cid, &id).into()
            }
            Event::Joined { room, recovered } => protocol::encode_joined(&room, recovered).into(),
            Event::Left { room } => protocol::encode_left(&room).into(),
            Event::Error { cid, code, message } => {
                if let Some(cid) = &cid {
                    self.answered(cid, cx);
                }
                protocol::encode_error(cid.as_ref(), code, &message).into()
            }
            Event::Message { id, frame } => match Utf8Bytes::try_from(frame) {
                Ok(text) => text,
                Err(_) => {
                    tracing::error!(session = %cx.key, id = %id, "broker frame is not UTF-8; dropped");
                    return Next::Continue;
                }
            },
            Event::Overflow => return Next::Close(CloseReason::SlowConsumer),
            Event::ReplayPaused => {
                self.replay_paused = true;
                return Next::Continue;
            }
        };
        push(out, Message::Text(text))
    }

    /// Whether a paused replay waits for `ResumeReplay`; clears the mark. Call it only once the
    /// session's output is written out.
    pub fn take_replay_paused(&mut self) -> bool {
        std::mem::take(&mut self.replay_paused)
    }

    /// Answers `unavailable` for every request in flight past the request timeout; its broker
    /// answer is awaited one more request timeout (see `late`).
    pub fn expire(&mut self, cx: &SessionCx<'_>, out: &mut Outbound) -> Next {
        while self.late.front().is_some_and(|(_, until)| *until <= cx.now) {
            self.late.pop_front();
        }
        while let Some((_, sent_at)) = self.in_flight.front() {
            if *sent_at + cx.settings.request_timeout > cx.now {
                break;
            }
            let Some((cid, _)) = self.in_flight.pop_front() else {
                break;
            };
            if self.late.len() >= MAX_IN_FLIGHT {
                self.late.pop_front();
            }
            self.late
                .push_back((cid.clone(), cx.now + cx.settings.request_timeout));
            cx.metrics
                .request_timeouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let msg = "no answer from storage in time; the message may or may not be stored";
            let next = error(out, Some(&cid), ErrorCode::Unavailable, msg);
            if !matches!(next, Next::Continue) {
                return next;
            }
        }
        Next::Continue
    }

    /// The broker answered `cid`. The answer is the oldest attempt's: a late answer to an
    /// attempt that timed out here only leaves `late` (and is still passed on to the client); any
    /// other ends the attempt in flight.
    fn answered(&mut self, cid: &Cid, cx: &SessionCx<'_>) {
        if let Some(pos) = self.late.iter().position(|(c, _)| c == cid) {
            self.late.remove(pos);
            return;
        }
        if let Some(pos) = self.in_flight.iter().position(|(c, _)| c == cid) {
            if let Some((_, sent_at)) = self.in_flight.remove(pos) {
                let latency = cx.now.saturating_duration_since(sent_at);
                cx.metrics.send_latency.observe(latency);
            }
        }
    }
}

/// Counts a session closed for staying over its rate limits.
fn rate_limit_close(cx: &SessionCx<'_>) -> Next {
    cx.metrics
        .rate_limit_closes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Next::Close(CloseReason::RateLimited)
}

/// Queues a message; a full queue means the client is not keeping up.
pub fn push(out: &mut Outbound, msg: Message) -> Next {
    match out.push(msg) {
        Ok(()) => Next::Continue,
        Err(_) => Next::Close(CloseReason::SlowConsumer),
    }
}

fn error(out: &mut Outbound, cid: Option<&Cid>, code: ErrorCode, message: &str) -> Next {
    push(
        out,
        Message::Text(protocol::encode_error(cid, code, message).into()),
    )
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real `Instant` is each test's origin
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::time::Duration;

    use hermod_core::ids::MsgId;
    use std::sync::atomic::Ordering::Relaxed;

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
            key: key(),
            settings,
            metrics,
            broker: port,
        }
    }

    fn client() -> ClientProtocol {
        let n = |s| Name::parse("user", s).expect("valid");
        let limiter = RateLimiter::new(Instant::now());
        ClientProtocol::new(n("alice"), n("default"), limiter)
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
}
