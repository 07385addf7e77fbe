//! The v1 client protocol on one session: client frames become broker [`Request`]s, broker
//! [`Event`]s become server frames, and every `send`/`publish` in flight is answered, by the
//! broker's `sent`/`error` or, past the request timeout, by `unavailable` (never silence).
//!
//! Permissions are checked here, at the gateway, before a request reaches any broker (embedded,
//! Redis-backed or the broker tier): a `join`, `publish` or `send` the session's token does not
//! allow is answered `forbidden` naming the room or user, the same whether the room exists or
//! not. A JWT session's token lifetime (`expiring`, `refresh`, the close at expiry) is
//! [`access`].
//!
//! Sans-io: frames go into the session's [`Outbound`] queue and requests to the broker through
//! the [`RequestPort`] the worker implements; no socket, no channel, no clock (`now` comes in).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod access;
mod published;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Instant;

use hermod_core::bus::{Event, Request, SessionKey};
use hermod_core::grants::TokenGrants;
use hermod_core::ids::{Cid, Name};
use hermod_core::protocol::{self, ClientFrame, ErrorCode};
use hermod_core::rate::{RateLimiter, Verdict};
use tungstenite::{Message, Utf8Bytes};

use self::access::{Expiry, TokenAccess};
use self::published::PendingPublishes;
use super::outbound::Outbound;
use crate::metrics::Metrics;
use crate::next::{CloseReason, Next};
use crate::settings::Settings;
use crate::webhooks::{EventKind, HookEvent, HookPort, Published, What};

/// Most `send`/`publish` requests one session may have waiting for `sent`; past it the answer is
/// `rate_limited`. Bounds the in-flight list a peer controls.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most members a client's `presence` answer lists (its `count` counts them all).
pub const CLIENT_PRESENCE_LIMIT: u16 = 100;

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
    /// The wall clock at that tick, in unix seconds: what token expiries are compared with.
    pub now_unix: u64,
    /// The session being served.
    pub key: SessionKey,
    pub settings: &'a Settings,
    pub metrics: &'a Metrics,
    /// The broker's request channel (bounded; never blocked on).
    pub broker: &'a dyn RequestPort,
    /// The webhook queue (bounded; never blocked on): `join`, `leave` and `publish` are
    /// reported there.
    pub hooks: &'a dyn HookPort,
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
    /// What the session's token allows and until when; `None` under `--auth none` (everything
    /// allowed, nothing expires). Boxed: one pointer on an idle session.
    access: Option<Box<TokenAccess>>,
    /// Publishes awaiting `sent`, with their room and data, while webhooks report `publish`
    /// events; `None` (one pointer) until the session publishes with them on.
    publishes: Option<Box<PendingPublishes>>,
}

impl ClientProtocol {
    /// A session of `user` on `device`; `access`: its token's rights (`None`: `--auth none`).
    pub fn new(
        user: Name,
        device: Name,
        limiter: RateLimiter,
        access: Option<Box<TokenAccess>>,
    ) -> Self {
        ClientProtocol {
            user,
            device,
            in_flight: VecDeque::new(),
            late: VecDeque::new(),
            replay_paused: false,
            limiter,
            access,
            publishes: None,
        }
    }

    /// The user and the rate limiter, as the session ends.
    pub fn into_limiter(self) -> (Name, RateLimiter) {
        (self.user, self.limiter)
    }

    /// The user, the device and the rate limiter, as the session closes.
    pub fn into_parts(self) -> (Name, Name, RateLimiter) {
        (self.user, self.device, self.limiter)
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

    /// The earliest deadline: of the oldest request in flight, and of the token's warning or
    /// expiry.
    pub fn next_deadline(&self, settings: &Settings) -> Option<Instant> {
        let request = self
            .in_flight
            .front()
            .map(|(_, sent_at)| *sent_at + settings.request_timeout);
        let token = self.access.as_ref().and_then(|a| a.next_deadline());
        match (request, token) {
            (Some(r), Some(t)) => Some(r.min(t)),
            (r, t) => r.or(t),
        }
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
        if let Some((cid, message)) = self.forbidden(&frame, cx) {
            cx.metrics
                .forbidden
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return error(out, cid, ErrorCode::Forbidden, &message);
        }
        let session = cx.key;
        // A publish's room and data, kept for its webhook event if `publish` is reported.
        let mut hook = None;
        let (request, tracked) = match frame {
            ClientFrame::Refresh { token } => return self.refresh(&token, cx, out),
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
                if cx.hooks.wants(EventKind::Publish) {
                    hook = Some((room.clone(), data.clone()));
                }
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
            ClientFrame::Presence { room } => {
                let request = Request::Presence {
                    session,
                    cid: Cid::parse("presence").expect("a valid cid"),
                    room,
                    limit: CLIENT_PRESENCE_LIMIT,
                };
                (request, None)
            }
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
            if let Some((room, data)) = hook {
                let publishes = self.publishes.get_or_insert_with(Box::default);
                publishes.remember(cid.clone(), room, data);
            }
            self.in_flight.push_back((cid, cx.now));
        }
        Next::Continue
    }

    /// Turns a broker event into a server frame. `Overflow` closes the session.
    pub fn on_event(&mut self, event: Event, cx: &SessionCx<'_>, out: &mut Outbound) -> Next {
        let text: Utf8Bytes = match event {
            Event::Sent { cid, id } => {
                self.answered(&cid, cx);
                let text = protocol::encode_sent(&cid, &id).into();
                if let Some((room, data)) = self.publishes.as_mut().and_then(|p| p.take(&cid)) {
                    let what = || What::Publish(Box::new(Published { room, id, data }));
                    self.report(EventKind::Publish, what, cx);
                }
                text
            }
            Event::Joined { room, recovered } => {
                if let Some(access) = &mut self.access {
                    access.on_joined(&room);
                }
                self.report(EventKind::Join, || What::Join { room: room.clone() }, cx);
                protocol::encode_joined(&room, recovered).into()
            }
            Event::Left { room } => {
                if let Some(access) = &mut self.access {
                    access.on_left(&room);
                }
                self.report(EventKind::Leave, || What::Leave { room: room.clone() }, cx);
                protocol::encode_left(&room).into()
            }
            Event::Error { cid, code, message } => {
                if let Some(cid) = &cid {
                    self.answered(cid, cx);
                    if let Some(publishes) = &mut self.publishes {
                        publishes.take(cid);
                    }
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
            Event::Presence(p) => protocol::encode_presence(&p.room, p.count, &p.members).into(),
            Event::Kicked { reason } => {
                push(
                    out,
                    Message::Text(protocol::encode_disconnect(&reason).into()),
                );
                return Next::Close(CloseReason::Disconnected);
            }
            // Only the server API asks for these; a client session never does.
            Event::History { .. } | Event::Online { .. } | Event::Disconnected { .. } => {
                return Next::Continue
            }
        };
        push(out, Message::Text(text))
    }

    /// Whether a paused replay waits for `ResumeReplay`; clears the mark. Call it only once the
    /// session's output is written out.
    pub fn take_replay_paused(&mut self) -> bool {
        std::mem::take(&mut self.replay_paused)
    }

    /// Answers `unavailable` for every request in flight past the request timeout (its broker
    /// answer is awaited one more request timeout, see `late`); warns of the token's expiry, and
    /// closes the session (4001) once it expired.
    pub fn expire(&mut self, cx: &SessionCx<'_>, out: &mut Outbound) -> Next {
        if let Some(access) = &mut self.access {
            match access.poll_expiry(cx.now) {
                Expiry::Valid => {}
                Expiry::Warn(exp) => {
                    let text = protocol::encode_expiring(exp);
                    let next = push(out, Message::Text(text.into()));
                    if next != Next::Continue {
                        return next;
                    }
                }
                Expiry::Expired => {
                    cx.metrics
                        .token_expired
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Next::Close(CloseReason::TokenExpired);
                }
            }
        }
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

    /// Why `frame` is refused, if the session's token does not allow it: the `cid` to answer
    /// with and a message naming the room or user. Under `--auth none` nothing is refused.
    fn forbidden<'f>(
        &self,
        frame: &'f ClientFrame,
        cx: &SessionCx<'_>,
    ) -> Option<(Option<&'f Cid>, String)> {
        let access = self.access.as_deref()?;
        let s = cx.settings;
        match frame {
            ClientFrame::Join { room, .. } if !access.may_join(&s.rooms, room) => Some((
                None,
                format!("not allowed to join room `{}`", room.as_str()),
            )),
            ClientFrame::Presence { room } if !access.may_join(&s.rooms, room) => Some((
                None,
                format!("not allowed to see who is in room `{}`", room.as_str()),
            )),
            ClientFrame::Publish { room, cid, .. } if !access.may_publish(&s.rooms, room) => {
                let message = format!("not allowed to publish to room `{}`", room.as_str());
                Some((Some(cid), message))
            }
            ClientFrame::Send { to, cid, .. } if !access.may_send(s.direct_messages, to) => {
                let message = format!("not allowed to send to user `{}`", to.as_str());
                Some((Some(cid), message))
            }
            _ => None,
        }
    }

    /// `refresh`: a valid token for the same user replaces the session's token (its grants and
    /// expiry; joined rooms it no longer allows are left), answered `refreshed`. Any other is
    /// `forbidden`, and the old token stands.
    fn refresh(&mut self, token: &str, cx: &SessionCx<'_>, out: &mut Outbound) -> Next {
        let Some(access) = self.access.as_deref_mut() else {
            let msg = "no token to refresh: the gateway runs without authentication";
            return error(out, None, ErrorCode::Forbidden, msg);
        };
        let checked = cx
            .settings
            .auth
            .verify(token, cx.now_unix)
            .map_err(|e| e.to_string())
            .and_then(|claims| {
                if claims.sub != self.user.as_str() {
                    return Err("the token is for another user".to_owned());
                }
                let grants = TokenGrants::from_claims(&claims).map_err(|e| e.to_string())?;
                Ok((grants, claims.exp))
            });
        let (grants, exp) = match checked {
            Ok(ok) => ok,
            Err(why) => {
                cx.metrics
                    .forbidden
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let msg = format!("refresh refused ({why}); the current token stands");
                return error(out, None, ErrorCode::Forbidden, &msg);
            }
        };
        access.set_token(grants, exp, cx.now, cx.now_unix);
        for room in access.joined_but_not_allowed(&cx.settings.rooms) {
            // The broker answers `left`, which also forgets the room here. A full channel
            // leaves the room joined: the client is told so.
            let session = cx.key;
            if !cx.broker.try_request(Request::Leave {
                session,
                room: room.clone(),
            }) {
                let msg = format!("could not leave room `{}`, retry `leave`", room.as_str());
                let next = error(out, None, ErrorCode::Unavailable, &msg);
                if next != Next::Continue {
                    return next;
                }
            }
        }
        push(out, Message::Text(protocol::encode_refreshed(exp).into()))
    }

    /// Reports an event of this session (`what`, of `kind`) to the webhook queue, if that kind
    /// is wanted: nothing is cloned otherwise.
    fn report(&self, kind: EventKind, what: impl FnOnce() -> What, cx: &SessionCx<'_>) {
        if cx.hooks.wants(kind) {
            cx.hooks.report(HookEvent {
                what: what(),
                user: self.user.clone(),
                device: self.device.clone(),
                session: cx.key,
                ts: cx.now_unix,
            });
        }
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
