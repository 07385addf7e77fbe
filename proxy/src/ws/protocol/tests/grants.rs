//! Permissions and token lifetime in the protocol handlers: `forbidden` answers, the namespace
//! policies, `refresh`, `expiring` and the close at expiry.

use std::sync::Arc;
use std::time::Duration;

use hermod_core::grants::{
    DirectMessages, JoinPolicy, Namespace, PublishPolicy, RoomPolicy, TokenGrants,
};
use hermod_core::jwt::{self, Claims};

use crate::auth::TokenVerifier;

use super::*;
use crate::settings::AuthMode;

const SECRET: &[u8] = b"grants-unit-test-secret-0123456789";

fn jwt_settings() -> Settings {
    let mut s = Settings::defaults();
    s.auth = AuthMode::Tokens(Arc::new(TokenVerifier::hs256(SECRET.to_vec())));
    s
}

fn claims(exp: u64, rooms: &[&str], publish: &[&str]) -> Claims {
    let own = |v: &[&str]| v.iter().map(|p| p.to_string()).collect();
    Claims {
        rooms: own(rooms),
        publish: own(publish),
        ..Claims::new("alice", exp)
    }
}

/// A JWT session of alice whose token (received at `now`) expires at `exp`.
fn session(now: Instant, c: &Claims) -> ClientProtocol {
    let n = |s| Name::parse("user", s).expect("valid");
    let grants = TokenGrants::from_claims(c).expect("valid patterns");
    let access = TokenAccess::new(grants, c.exp, now, NOW_UNIX);
    let limiter = RateLimiter::new(now);
    ClientProtocol::new(n("alice"), n("default"), limiter, Some(Box::new(access)))
}

fn room(name: &str) -> Name {
    Name::parse("room", name).expect("valid")
}

#[test]
fn rooms_without_a_grant_are_forbidden_naming_the_room() {
    let settings = jwt_settings();
    let metrics = Metrics::default();
    let port = Port::new(64);
    let now = Instant::now();
    let cx = cx_at(now, &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 20);
    let mut c = session(now, &claims(NOW_UNIX + 3600, &["team.*"], &["team.1"]));
    let frames = [
        r#"{"op":"join","room":"team.1"}"#,
        r#"{"op":"join","room":"secret","since":"1-0"}"#,
        r#"{"op":"join","room":"secret"}"#,
        r#"{"op":"publish","room":"team.1","cid":"p1","data":1}"#,
        r#"{"op":"publish","room":"team.2","cid":"p2","data":1}"#,
        r#"{"op":"send","to":"bob","cid":"s1","data":1}"#,
    ];
    for f in frames {
        assert_eq!(c.on_text(f, &cx, &mut out), Next::Continue);
    }
    let answers = texts(&mut out);
    assert_eq!(
        answers,
        [
            r#"{"op":"error","code":"forbidden","message":"not allowed to join room `secret`"}"#,
            r#"{"op":"error","code":"forbidden","message":"not allowed to join room `secret`"}"#,
            r#"{"op":"error","cid":"p2","code":"forbidden","message":"not allowed to publish to room `team.2`"}"#,
        ]
    );
    let got = port.got.borrow();
    assert_eq!(got.len(), 3, "only allowed requests reach the broker");
    assert!(matches!(&got[0], Request::Join { room, .. } if room.as_str() == "team.1"));
    assert!(matches!(&got[1], Request::Publish { room, .. } if room.as_str() == "team.1"));
    assert!(matches!(&got[2], Request::Send { .. }));
    assert_eq!(metrics.forbidden.load(Relaxed), 3);
}

#[test]
fn without_auth_everything_is_allowed() {
    let settings = Settings::defaults();
    let metrics = Metrics::default();
    let port = Port::new(64);
    let cx = cx_at(Instant::now(), &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 20);
    let mut c = client();
    assert_eq!(c.next_deadline(&settings), None);
    for f in [
        r#"{"op":"join","room":"secret"}"#,
        r#"{"op":"publish","room":"secret","cid":"p","data":1}"#,
    ] {
        assert_eq!(c.on_text(f, &cx, &mut out), Next::Continue);
    }
    assert!(texts(&mut out).is_empty());
    assert_eq!(port.got.borrow().len(), 2);
    let refresh = r#"{"op":"refresh","token":"a.b.c"}"#;
    assert_eq!(c.on_text(refresh, &cx, &mut out), Next::Continue);
    assert!(texts(&mut out)[0].contains(r#""code":"forbidden""#));
}

#[test]
fn members_may_publish_once_joined_and_until_they_leave() {
    let mut settings = jwt_settings();
    let public = Namespace {
        prefix: "public.".into(),
        join: JoinPolicy::Any,
        publish: PublishPolicy::Members,
    };
    settings.rooms = Arc::new(RoomPolicy::new(vec![public]).expect("valid"));
    let metrics = Metrics::default();
    let port = Port::new(64);
    let now = Instant::now();
    let cx = cx_at(now, &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 20);
    let mut c = session(now, &claims(NOW_UNIX + 3600, &[], &[]));
    let publish = r#"{"op":"publish","room":"public.lobby","cid":"p","data":1}"#;
    assert_eq!(c.on_text(publish, &cx, &mut out), Next::Continue);
    assert!(texts(&mut out)[0].contains("not allowed to publish to room `public.lobby`"));
    let join = r#"{"op":"join","room":"public.lobby"}"#;
    assert_eq!(c.on_text(join, &cx, &mut out), Next::Continue);
    let joined = Event::Joined {
        room: room("public.lobby"),
        recovered: false,
    };
    assert_eq!(c.on_event(joined, &cx, &mut out), Next::Continue);
    assert_eq!(c.on_text(publish, &cx, &mut out), Next::Continue);
    assert_eq!(texts(&mut out).len(), 1, "only the joined answer");
    let left = Event::Left {
        room: room("public.lobby"),
    };
    assert_eq!(c.on_event(left, &cx, &mut out), Next::Continue);
    assert_eq!(c.on_text(publish, &cx, &mut out), Next::Continue);
    assert!(texts(&mut out)[1].contains(r#""code":"forbidden""#));
    assert_eq!(port.got.borrow().len(), 2, "the join and one publish");
}

#[test]
fn direct_messages_need_a_send_grant_when_configured() {
    let mut settings = jwt_settings();
    settings.direct_messages = DirectMessages::Grant;
    let metrics = Metrics::default();
    let port = Port::new(64);
    let now = Instant::now();
    let cx = cx_at(now, &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 20);
    let mut c = session(
        now,
        &Claims {
            send: vec!["support.*".into()],
            ..Claims::new("alice", NOW_UNIX + 60)
        },
    );
    let to_bob = r#"{"op":"send","to":"bob","cid":"s1","data":1}"#;
    let to_support = r#"{"op":"send","to":"support.7","cid":"s2","data":1}"#;
    assert_eq!(c.on_text(to_bob, &cx, &mut out), Next::Continue);
    assert_eq!(c.on_text(to_support, &cx, &mut out), Next::Continue);
    assert_eq!(
        texts(&mut out),
        [
            r#"{"op":"error","cid":"s1","code":"forbidden","message":"not allowed to send to user `bob`"}"#
        ]
    );
    assert_eq!(port.got.borrow().len(), 1);
}

#[test]
fn refresh_replaces_the_token_or_leaves_the_old_one_standing() {
    let settings = jwt_settings();
    let metrics = Metrics::default();
    let port = Port::new(64);
    let now = Instant::now();
    let mut cx = cx_at(now, &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 20);
    let mut c = session(now, &claims(NOW_UNIX + 100, &["a", "b"], &[]));
    for r in ["a", "b"] {
        let joined = Event::Joined {
            room: room(r),
            recovered: false,
        };
        assert_eq!(c.on_event(joined, &cx, &mut out), Next::Continue);
    }
    texts(&mut out);
    let refresh = |token: String| format!(r#"{{"op":"refresh","token":"{token}"}}"#);
    let bad = [
        jwt::mint_claims(
            b"another-secret-of-32-bytes-or-more",
            &claims(NOW_UNIX + 500, &[], &[]),
        ),
        jwt::mint_claims(SECRET, &claims(NOW_UNIX - 1, &[], &[])),
        jwt::mint_claims(SECRET, &Claims::new("mallory", NOW_UNIX + 500)),
        jwt::mint_claims(SECRET, &claims(NOW_UNIX + 500, &["bad pattern"], &[])),
    ];
    for token in bad {
        assert_eq!(c.on_text(&refresh(token), &cx, &mut out), Next::Continue);
    }
    let answers = texts(&mut out);
    assert_eq!(answers.len(), 4);
    for (answer, why) in answers.iter().zip([
        "bad token signature",
        "token expired",
        "another user",
        "`rooms`",
    ]) {
        assert!(answer.contains(r#""code":"forbidden""#), "{answer}");
        assert!(
            answer.contains(why) && answer.contains("stands"),
            "{answer}"
        );
    }
    // The old token stands: its expiry still closes the session.
    cx.now = now + Duration::from_secs(100);
    assert_eq!(
        c.expire(&cx, &mut out),
        Next::Close(CloseReason::TokenExpired)
    );
    // A good token for the same user: new expiry, new grants; `b` is no longer allowed.
    cx.now = now + Duration::from_secs(30);
    cx.now_unix = NOW_UNIX + 30;
    let good = jwt::mint_claims(SECRET, &claims(NOW_UNIX + 3600, &["a"], &[]));
    assert_eq!(c.on_text(&refresh(good), &cx, &mut out), Next::Continue);
    let exp = NOW_UNIX + 3600;
    assert_eq!(
        texts(&mut out),
        [format!(r#"{{"op":"refreshed","exp":{exp}}}"#)]
    );
    let got = port.got.borrow();
    assert!(matches!(&got[..], [Request::Leave { room, .. }] if room.as_str() == "b"));
    drop(got);
    cx.now = now + Duration::from_secs(100);
    assert_eq!(c.expire(&cx, &mut out), Next::Continue);
    let join_b = r#"{"op":"join","room":"b"}"#;
    assert_eq!(c.on_text(join_b, &cx, &mut out), Next::Continue);
    assert!(texts(&mut out)[0].contains(r#""code":"forbidden""#));
}

#[test]
fn a_session_is_warned_before_its_token_expires_then_closed_4001() {
    let settings = jwt_settings();
    let metrics = Metrics::default();
    let port = Port::new(64);
    let t0 = Instant::now();
    let mut cx = cx_at(t0, &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 20);
    // An hour-long token is warned a minute before it expires.
    let mut c = session(t0, &claims(NOW_UNIX + 3600, &[], &[]));
    let warn_at = t0 + Duration::from_secs(3540);
    assert_eq!(c.next_deadline(&settings), Some(warn_at));
    cx.now = warn_at - Duration::from_millis(1);
    assert_eq!(c.expire(&cx, &mut out), Next::Continue);
    assert!(texts(&mut out).is_empty());
    cx.now = warn_at;
    assert_eq!(c.expire(&cx, &mut out), Next::Continue);
    let exp = NOW_UNIX + 3600;
    assert_eq!(
        texts(&mut out),
        [format!(r#"{{"op":"expiring","exp":{exp}}}"#)]
    );
    assert_eq!(c.expire(&cx, &mut out), Next::Continue);
    assert!(texts(&mut out).is_empty(), "warned once");
    let expires_at = t0 + Duration::from_secs(3600);
    assert_eq!(c.next_deadline(&settings), Some(expires_at));
    cx.now = expires_at;
    assert_eq!(
        c.expire(&cx, &mut out),
        Next::Close(CloseReason::TokenExpired)
    );
    assert_eq!(metrics.token_expired.load(Relaxed), 1);
    // A 10 s token is warned halfway, 5 s before it expires.
    let short = session(t0, &claims(NOW_UNIX + 10, &[], &[]));
    assert_eq!(
        short.next_deadline(&settings),
        Some(t0 + Duration::from_secs(5))
    );
    // An `exp` no `Instant` can hold never schedules anything.
    let far = session(t0, &claims(u64::MAX, &[], &[]));
    assert_eq!(far.next_deadline(&settings), None);
}

/// A refresh that takes a joined room away but cannot reach the broker to leave it says so; the
/// new token still applies.
#[test]
fn a_refresh_that_cannot_leave_a_room_tells_the_client() {
    let settings = jwt_settings();
    let metrics = Metrics::default();
    let port = Port::new(0);
    let now = Instant::now();
    let cx = cx_at(now, &settings, &metrics, &port);
    let mut out = Outbound::new(1 << 20);
    let mut c = session(now, &claims(NOW_UNIX + 100, &["a"], &[]));
    let joined = Event::Joined {
        room: room("a"),
        recovered: false,
    };
    assert_eq!(c.on_event(joined, &cx, &mut out), Next::Continue);
    texts(&mut out);
    let token = jwt::mint_claims(SECRET, &claims(NOW_UNIX + 3600, &[], &[]));
    let refresh = format!(r#"{{"op":"refresh","token":"{token}"}}"#);
    assert_eq!(c.on_text(&refresh, &cx, &mut out), Next::Continue);
    let answers = texts(&mut out);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers[0].contains(r#""code":"unavailable""#),
        "{answers:?}"
    );
    assert!(
        answers[0].contains("could not leave room `a`"),
        "{answers:?}"
    );
    assert!(
        answers[1].starts_with(r#"{"op":"refreshed""#),
        "{answers:?}"
    );
}
