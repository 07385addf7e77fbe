#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::value::RawValue;

use super::*;
use crate::ids::{Cid, Name};
use crate::protocol::ErrorCode;
use crate::resp::{encode_command, RespConn, RespEvent, RespLimits, RespReader};

/// Decodes every command in `wire` as the broker does.
fn commands(wire: &[u8]) -> Vec<Result<LinkCommand, LinkError>> {
    let mut reader = RespReader::new(RespLimits::default());
    reader.feed(wire).unwrap();
    let mut out = Vec::new();
    while let Some(v) = reader.next_value().unwrap() {
        out.push(decode_request(v));
    }
    out
}

/// Decodes every push in `wire` as the gateway does.
fn pushes(wire: &[u8]) -> Vec<Result<LinkPush, LinkError>> {
    let mut conn = RespConn::new(RespLimits::default());
    conn.handle_input(wire).unwrap();
    let mut out = Vec::new();
    while let Some(event) = conn.poll_event() {
        let RespEvent::Push(v) = event else {
            panic!("not a push: {event:?}")
        };
        out.push(decode_push(v));
    }
    out
}

fn key(worker: u16, slot: u32, generation: u32) -> SessionKey {
    SessionKey {
        worker,
        slot,
        generation,
    }
}

fn name(s: &str) -> Name {
    Name::parse("name", s).unwrap()
}

#[test]
fn sids_round_trip_and_reject_junk() {
    let k = key(65535, u32::MAX, 0);
    let mut text = Vec::new();
    write_sid(&mut text, k);
    assert_eq!(text, b"65535-4294967295-0");
    assert_eq!(parse_sid(&text), Some(k));
    for bad in [
        &b""[..],
        b"1-2",
        b"1-2-3-4",
        b"+1-2-3",
        b"65536-1-1",
        b"1--1",
        b"1-2-4294967296",
    ] {
        assert_eq!(parse_sid(bad), None, "{bad:?}");
    }
}

#[test]
fn operator_commands() {
    let mut wire = BytesMut::new();
    encode_command(&mut wire, &[b"ping"]);
    encode_command(&mut wire, &[b"PING", b"hi"]);
    encode_command(&mut wire, &[b"hello", b"3"]);
    encode_command(&mut wire, &[b"HELLO"]);
    encode_command(&mut wire, &[b"INFO", b"all"]);
    encode_command(&mut wire, &[b"COMMAND", b"DOCS"]);
    encode_command(&mut wire, &[b"HELLO", b"x"]);
    encode_command(
        &mut wire,
        &[b"HELLO", b"3", b"AUTH", b"hermod", b"s3", b"SETNAME", b"g"],
    );
    encode_command(&mut wire, &[b"AUTH", b"hermod", b"s3"]);
    encode_command(&mut wire, &[b"AUTH", b"s3"]);
    encode_command(&mut wire, &[b"HELLO", b"3", b"AUTH", b"hermod"]);
    encode_command(&mut wire, &[b"HELLO", b"3", b"WHAT", b"x"]);
    let got = commands(&wire);
    assert!(matches!(got[0], Ok(LinkCommand::Ping { message: None })));
    assert!(matches!(&got[1], Ok(LinkCommand::Ping { message: Some(m) }) if m == "hi"));
    assert!(matches!(
        got[2],
        Ok(LinkCommand::Hello {
            proto: Some(3),
            auth: None
        })
    ));
    assert!(matches!(
        got[3],
        Ok(LinkCommand::Hello {
            proto: None,
            auth: None
        })
    ));
    assert!(matches!(got[4], Ok(LinkCommand::Info)));
    assert_eq!(
        got[5].as_ref().unwrap_err(),
        &LinkError::UnknownCommand("COMMAND".into())
    );
    assert!(matches!(
        got[6],
        Err(LinkError::Invalid {
            what: "protover",
            ..
        })
    ));
    match &got[7] {
        Ok(LinkCommand::Hello {
            proto: Some(3),
            auth: Some(c),
        }) => {
            assert_eq!((&c.user[..], &c.pass[..]), (&b"hermod"[..], &b"s3"[..]));
            assert!(!format!("{c:?}").contains("s3"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&got[8], Ok(LinkCommand::Auth(c)) if c.user == "hermod" && c.pass == "s3"));
    assert!(matches!(&got[9], Ok(LinkCommand::Auth(c)) if c.user == "default" && c.pass == "s3"));
    assert_eq!(
        got[10].as_ref().unwrap_err(),
        &LinkError::WrongArity("hello")
    );
    assert!(got[11].is_err());
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let mut wire = BytesMut::new();
    encode_command(&mut wire, &[b"ATTACH", b"0-1-1", b"alice"]);
    encode_command(&mut wire, &[b"ATTACH", b"0-1", b"alice", b"d"]);
    encode_command(&mut wire, &[b"ATTACH", b"0-1-1", b"al ice", b"d"]);
    encode_command(&mut wire, &[b"SEND", b"0-1-1", b"c", b"bob", b"{not json"]);
    encode_command(&mut wire, &[b"SEND", b"0-1-1", b"", b"bob", b"1"]);
    encode_command(&mut wire, &[b"ACK", b"0-1-1", &[b'1'; 65][..]]);
    encode_command(&mut wire, &[b"JOIN", b"0-1-1", b"r", b"1-1", b"x"]);
    wire.extend_from_slice(b"*2\r\n:1\r\n:2\r\n*0\r\n");
    let got = commands(&wire);
    assert_eq!(got.len(), 9);
    assert!(got.iter().all(Result::is_err), "{got:?}");
    assert_eq!(
        got[0].as_ref().unwrap_err(),
        &LinkError::WrongArity("attach")
    );
    assert!(matches!(
        got[1],
        Err(LinkError::Invalid { what: "sid", .. })
    ));
    assert!(matches!(
        got[3],
        Err(LinkError::Invalid { what: "data", .. })
    ));
    assert_eq!(got[7].as_ref().unwrap_err(), &LinkError::NotACommand);
    assert_eq!(got[8].as_ref().unwrap_err(), &LinkError::NotACommand);
}

#[test]
fn event_layout_is_as_documented() {
    let mut out = BytesMut::new();
    let sent = Event::Sent {
        cid: Cid::parse("c1").unwrap(),
        id: MsgId::new("7-1"),
    };
    encode_event(key(1, 2, 3), &sent, &mut out);
    assert_eq!(
        &out[..],
        b">5\r\n$2\r\nev\r\n$5\r\n1-2-3\r\n$4\r\nsent\r\n$2\r\nc1\r\n$3\r\n7-1\r\n"
    );
    out.clear();
    encode_draining(&mut out);
    assert_eq!(&out[..], b">1\r\n$8\r\ndraining\r\n");
}

#[test]
fn a_single_message_event_becomes_a_msg_push() {
    let mut out = BytesMut::new();
    let event = Event::Message {
        id: MsgId::new("1-1"),
        frame: Bytes::from_static(b"{\"op\":\"msg\"}"),
    };
    encode_event(key(0, 5, 1), &event, &mut out);
    let got = pushes(&out);
    let Ok(LinkPush::Message { id, frame, sids }) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(id.as_str(), "1-1");
    assert_eq!(&frame[..], b"{\"op\":\"msg\"}");
    assert_eq!(sids, &[key(0, 5, 1)]);
}

#[test]
fn error_text_is_cut_and_bad_pushes_refused() {
    let mut out = BytesMut::new();
    let event = Event::Error {
        cid: None,
        code: ErrorCode::Forbidden,
        message: "é".repeat(MAX_ERROR_TEXT),
    };
    encode_event(key(0, 1, 1), &event, &mut out);
    let got = pushes(&out);
    let Ok(LinkPush::Event {
        event: Event::Error { cid, code, message },
        ..
    }) = &got[0]
    else {
        panic!("{got:?}")
    };
    assert_eq!((cid, *code), (&None, ErrorCode::Forbidden));
    assert!(message.len() <= MAX_ERROR_TEXT && message.chars().all(|c| c == 'é'));

    let bad: &[&[&[u8]]] = &[
        &[b"ev", b"0-1-1", b"nope"],
        &[b"ev", b"0-1-1", b"sent", b"c"],
        &[b"ev", b"0-1-1", b"joined", b"r", b"2"],
        &[b"ev", b"0-1-1", b"error", b"", b"bogus", b"m"],
        &[b"msg", b"1-1", b"{}"],
        &[b"msg", b"1-1", b"\xff", b"0-1-1"],
        &[b"draining", b"x"],
        &[b"message", b"chan", b"payload"],
        &[],
    ];
    for items in bad {
        let value = Value::Array(
            items
                .iter()
                .map(|b| Value::Bulk(Bytes::copy_from_slice(b)))
                .collect(),
        );
        assert!(decode_push(value).is_err(), "{items:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests: every request and push round-trips through bytes; arbitrary input never panics.

fn arb_key() -> impl Strategy<Value = SessionKey> {
    (any::<u16>(), any::<u32>(), any::<u32>()).prop_map(|(w, s, g)| key(w, s, g))
}

fn arb_name() -> impl Strategy<Value = Name> {
    "[A-Za-z0-9_.:@-]{1,128}".prop_map(|s| name(&s))
}

fn arb_cid() -> impl Strategy<Value = Cid> {
    "\\PC{1,16}".prop_filter_map("cid bounds", |s| Cid::parse(&s).ok())
}

fn arb_id() -> impl Strategy<Value = MsgId> {
    "[0-9a-z-]{1,64}".prop_map(|s| MsgId::parse(&s).unwrap())
}

fn arb_data() -> impl Strategy<Value = Box<RawValue>> {
    prop_oneof![
        Just("null".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\\PC{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ("[a-z]{1,8}", "\\PC{0,20}")
            .prop_map(|(k, v)| serde_json::json!({ k: [v, 1.5, true] }).to_string()),
    ]
    .prop_map(|s| RawValue::from_string(s).unwrap())
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (arb_key(), arb_name(), arb_name()).prop_map(|(session, user, device)| Request::Attach {
            session,
            user,
            device
        }),
        arb_key().prop_map(|session| Request::Detach { session }),
        (arb_key(), arb_cid(), arb_name(), arb_data()).prop_map(|(session, cid, to, data)| {
            Request::Send {
                session,
                cid,
                to,
                data,
            }
        }),
        (arb_key(), arb_cid(), arb_name(), arb_data()).prop_map(|(session, cid, room, data)| {
            Request::Publish {
                session,
                cid,
                room,
                data,
            }
        }),
        (arb_key(), arb_id()).prop_map(|(session, id)| Request::Ack { session, id }),
        (arb_key(), arb_name(), proptest::option::of(arb_id())).prop_map(
            |(session, room, since)| Request::Join {
                session,
                room,
                since
            }
        ),
        (arb_key(), arb_name()).prop_map(|(session, room)| Request::Leave { session, room }),
        arb_key().prop_map(|session| Request::ResumeReplay { session }),
        (
            arb_key(),
            arb_cid(),
            arb_name(),
            proptest::option::of(arb_id()),
            any::<u16>()
        )
            .prop_map(|(session, cid, room, since, limit)| Request::History {
                session,
                cid,
                room,
                since,
                limit
            }),
    ]
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    (0usize..6).prop_map(|i| push_codes()[i])
}

fn push_codes() -> [ErrorCode; 6] {
    [
        ErrorCode::BadRequest,
        ErrorCode::Forbidden,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::NotJoined,
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (arb_cid(), arb_id()).prop_map(|(cid, id)| Event::Sent { cid, id }),
        (arb_name(), any::<bool>()).prop_map(|(room, recovered)| Event::Joined { room, recovered }),
        arb_name().prop_map(|room| Event::Left { room }),
        (proptest::option::of(arb_cid()), arb_code(), "\\PC{0,60}")
            .prop_map(|(cid, code, message)| Event::Error { cid, code, message }),
        Just(Event::Overflow),
        Just(Event::ReplayPaused),
        (
            arb_cid(),
            any::<bool>(),
            proptest::collection::vec("\\PC{0,80}", 0..20),
            any::<bool>()
        )
            .prop_map(|(cid, recovered, frames, more)| Event::History {
                cid,
                recovered,
                frames: frames.into_iter().map(Bytes::from).collect(),
                more
            }),
    ]
}

fn arb_push() -> impl Strategy<Value = LinkPush> {
    prop_oneof![
        (arb_key(), arb_event()).prop_map(|(sid, event)| LinkPush::Event { sid, event }),
        (
            arb_id(),
            "\\PC{0,200}",
            proptest::collection::vec(arb_key(), 1..20)
        )
            .prop_map(|(id, frame, sids)| LinkPush::Message {
                id,
                frame: Bytes::from(frame),
                sids
            }),
        Just(LinkPush::Draining),
    ]
}

/// Arbitrary RESP values, shaped like commands and pushes often enough to reach the fields.
fn arb_value() -> impl Strategy<Value = Value> {
    let word = prop_oneof![
        Just(b"ev".to_vec()),
        Just(b"msg".to_vec()),
        Just(b"sent".to_vec()),
        Just(b"error".to_vec()),
        Just(b"ATTACH".to_vec()),
        Just(b"SEND".to_vec()),
        Just(b"JOIN".to_vec()),
        Just(b"0-1-1".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    let leaf = prop_oneof![
        word.prop_map(|w| Value::Bulk(Bytes::from(w))),
        any::<i64>().prop_map(Value::Int),
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
    ];
    leaf.prop_recursive(3, 24, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #[test]
    fn requests_round_trip(reqs in proptest::collection::vec(arb_request(), 1..8)) {
        let mut wire = BytesMut::new();
        for r in &reqs {
            encode_request(r, &mut wire);
        }
        let got = commands(&wire);
        prop_assert_eq!(got.len(), reqs.len());
        for (sent, got) in reqs.iter().zip(got) {
            let Ok(LinkCommand::Request(got)) = got else {
                return Err(TestCaseError::fail(format!("{got:?}")));
            };
            prop_assert_eq!(format!("{sent:?}"), format!("{got:?}"));
        }
    }

    #[test]
    fn pushes_round_trip(sent in proptest::collection::vec(arb_push(), 1..8)) {
        let mut wire = BytesMut::new();
        for p in &sent {
            encode_push(p, &mut wire);
        }
        let got = pushes(&wire);
        prop_assert_eq!(got.len(), sent.len());
        for (sent, got) in sent.iter().zip(got) {
            prop_assert_eq!(format!("{sent:?}"), format!("{:?}", got.unwrap()));
        }
    }

    #[test]
    fn decoding_arbitrary_values_never_panics(v in arb_value()) {
        let _ = decode_request(v.clone());
        let _ = decode_push(v);
    }

    #[test]
    fn arbitrary_commands_never_panic(args in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..20), 0..7), name in 0usize..10) {
        let names: [&[u8]; 10] = [b"ATTACH", b"SEND", b"PUBLISH", b"JOIN", b"ACK", b"LEAVE",
            b"RESUME", b"DETACH", b"HELLO", b"PING"];
        let mut items = vec![Value::Bulk(Bytes::from_static(names[name]))];
        items.extend(args.into_iter().map(|a| Value::Bulk(Bytes::from(a))));
        let _ = decode_request(Value::Array(items.clone()));
        items[0] = Value::Bulk(Bytes::from_static(b"ev"));
        let _ = decode_push(Value::Array(items));
    }
}

#[test]
fn the_longest_sid_fits_and_round_trips() {
    let key = SessionKey {
        worker: u16::MAX,
        slot: u32::MAX,
        generation: u32::MAX,
    };
    let text = SidText::new(key);
    assert_eq!(text.as_bytes(), b"65535-4294967295-4294967295");
    assert_eq!(parse_sid(text.as_bytes()), Some(key));
}
