//! Unit and property tests of the client protocol codec.

use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn ok(text: &str) -> ClientFrame {
    parse_client_frame(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn bad(text: &str) -> BadFrame {
    match parse_client_frame(text) {
        Ok(frame) => panic!("{text} parsed as {frame:?}"),
        Err(e) => e,
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn parses_every_op() {
    match ok(r#"{"op":"send","to":"bob","cid":"c1","data":{"t":"hi"}}"#) {
        ClientFrame::Send { to, cid, data } => {
            assert_eq!((to.as_str(), cid.as_str()), ("bob", "c1"));
            assert_eq!(data.get(), r#"{"t":"hi"}"#);
        }
        other => panic!("{other:?}"),
    }
    match ok(r#"{"op":"ack","id":"1-0"}"#) {
        ClientFrame::Ack { id } => assert_eq!(id.as_str(), "1-0"),
        other => panic!("{other:?}"),
    }
    match ok(r#"{"op":"join","room":"r1"}"#) {
        ClientFrame::Join { room, since } => assert_eq!((room.as_str(), since), ("r1", None)),
        other => panic!("{other:?}"),
    }
    match ok(r#"{"op":"join","room":"r1","since":"5"}"#) {
        ClientFrame::Join { since, .. } => assert_eq!(since, Some(MsgId::new("5"))),
        other => panic!("{other:?}"),
    }
    match ok(r#"{"op":"join","room":"r1","since":null}"#) {
        ClientFrame::Join { since, .. } => assert_eq!(since, None),
        other => panic!("{other:?}"),
    }
    match ok(r#"{"op":"leave","room":"r1"}"#) {
        ClientFrame::Leave { room } => assert_eq!(room.as_str(), "r1"),
        other => panic!("{other:?}"),
    }
    match ok(r#" { "data" : [1, 2.5, null] , "cid":"p","room":"r","op":"publish" } "#) {
        ClientFrame::Publish { room, cid, data } => {
            assert_eq!((room.as_str(), cid.as_str()), ("r", "p"));
            assert_eq!(data.get(), "[1, 2.5, null]");
        }
        other => panic!("{other:?}"),
    }
    match ok(r#"{"op":"refresh","token":"a.b.c"}"#) {
        ClientFrame::Refresh { token } => assert_eq!(token, "a.b.c"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refresh_needs_a_bounded_string_token() {
    let e = bad(r#"{"op":"refresh"}"#);
    assert_eq!(e.message, "missing field `token`");
    let e = bad(r#"{"op":"refresh","token":7}"#);
    assert_eq!(e.message, "`token` must be a string, not a number");
    let long = format!(r#"{{"op":"refresh","token":"{}"}}"#, "x".repeat(4097));
    assert_eq!(bad(&long).message, "`token` is longer than 4096 bytes");
}

#[test]
fn data_is_any_value_kept_verbatim() {
    for data in [
        "null",
        "0",
        "-1.5e3",
        "true",
        r#""x\"y""#,
        "[]",
        r#"{"a":{"b":[{}]}}"#,
    ] {
        let text = format!(r#"{{"op":"send","to":"b","cid":"c","data":{data}}}"#);
        match ok(&text) {
            ClientFrame::Send { data: got, .. } => assert_eq!(got.get(), data),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn escaped_and_unicode_strings_are_decoded() {
    match ok(r#"{"\u006fp":"s\u0065nd","to":"b\u006fb","cid":"\u00e9\"\\\n😀","data":1}"#) {
        ClientFrame::Send { to, cid, .. } => {
            assert_eq!(to.as_str(), "bob");
            assert_eq!(cid.as_str(), "é\"\\\n😀");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_fields_are_ignored() {
    let frame = ok(r#"{"x":[{"deep":1}],"op":"leave","room":"r","to":5,"y":null}"#);
    assert!(matches!(frame, ClientFrame::Leave { .. }));
}

#[test]
fn malformed_json_and_non_objects_are_bad_requests() {
    for text in [
        "",
        "{",
        "{\"op\":",
        "not json",
        "{\"op\":\"ack\",\"id\":\"1\"} x",
        "{'op':1}",
        r#"{"op":"\ud800"}"#,
        "{\"op\":\"a\u{1}\"}",
    ] {
        let e = bad(text);
        assert!(e.message.starts_with("malformed JSON"), "{text}: {e}");
        assert_eq!(e.cid, None);
    }
    for text in ["[]", r#"["send","bob"]"#, r#""send""#, "42", "null", "true"] {
        assert_eq!(bad(text).message, "a frame must be a JSON object", "{text}");
    }
}

#[test]
fn missing_or_wrong_fields_name_the_field_and_keep_the_cid() {
    let cases = [
        (r#"{"cid":"c"}"#, "missing field `op`"),
        (
            r#"{"op":7,"cid":"c"}"#,
            "`op` must be a string, not a number",
        ),
        (r#"{"op":"fly","cid":"c"}"#, "unknown op `fly`"),
        (r#"{"op":"send","cid":"c","data":1}"#, "missing field `to`"),
        (
            r#"{"op":"send","to":["b"],"cid":"c","data":1}"#,
            "`to` must be a string, not an array",
        ),
        (
            r#"{"op":"send","to":"b","cid":"c"}"#,
            "missing field `data`",
        ),
        (
            r#"{"op":"publish","room":{},"cid":"c","data":1}"#,
            "`room` must be a string, not an object",
        ),
        (
            r#"{"op":"publish","room":"r","cid":"c"}"#,
            "missing field `data`",
        ),
        (
            r#"{"op":"leave","room":null,"cid":"c"}"#,
            "`room` must be a string, not null",
        ),
        (
            r#"{"op":"join","room":"a b","cid":"c"}"#,
            "room may only contain A-Z a-z 0-9 _ . : @ -",
        ),
        (
            r#"{"op":"join","room":"r","since":false,"cid":"c"}"#,
            "`since` must be a string, not a boolean",
        ),
        (r#"{"op":"ack","cid":"c"}"#, "missing field `id`"),
        (
            r#"{"op":"ack","id":"","cid":"c"}"#,
            "`id`: id must be 1 to 64 bytes",
        ),
        (
            r#"{"op":"ack","id":"1","id":"2","cid":"c"}"#,
            "duplicate field `id`",
        ),
        (
            r#"{"op":"send","to":"b","cid":"c","data":1,"data":2}"#,
            "duplicate field `data`",
        ),
    ];
    for (text, message) in cases {
        let e = bad(text);
        assert_eq!(e.message, message, "{text}");
        assert_eq!(e.cid, Some(Cid::parse("c").unwrap()), "{text}");
    }
}

#[test]
fn bad_cids_and_names_are_refused_without_a_cid() {
    let long_cid = "x".repeat(65);
    let e = bad(&format!(
        r#"{{"op":"send","to":"b","cid":"{long_cid}","data":1}}"#
    ));
    assert_eq!(
        (e.cid, e.message.as_str()),
        (None, "cid must be 1 to 64 bytes")
    );
    let e = bad(r#"{"op":"send","to":"b","cid":3,"data":1}"#);
    assert_eq!(
        (e.cid, e.message.as_str()),
        (None, "`cid` must be a string, not a number")
    );
    let long_name = "n".repeat(129);
    let e = bad(&format!(
        r#"{{"op":"send","to":"{long_name}","cid":"c","data":1}}"#
    ));
    assert_eq!(e.message, "to must be 1 to 128 bytes");
    assert!(bad(r#"{"op":"send","to":"é","cid":"c","data":1}"#)
        .message
        .contains("may only"));
}

#[test]
fn unknown_ops_are_quoted_briefly() {
    let op = "é".repeat(40);
    let e = bad(&format!(r#"{{"op":"{op}"}}"#));
    assert_eq!(e.message, format!("unknown op `{}`", "é".repeat(16)));
}

#[test]
fn deep_nesting_uses_no_stack() {
    // Values we do not read as strings are skipped by serde_json's iterative scanner, so depth
    // is bounded only by the frame size and never overflows the stack.
    let arrays = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let objects = |n| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    for deep in [arrays(20_000), objects(20_000)] {
        let e = bad(&format!(r#"{{"op":"leave","room":{deep},"cid":"c"}}"#));
        assert!(e.message.contains("must be a string"), "{e}");
        // Parsed without using the stack, then refused by the depth limit.
        let text = format!(r#"{{"op":"send","to":"b","cid":"c","data":{deep}}}"#);
        assert!(bad(&text).too_deep);
        let text = format!(r#"{{"op":"leave","room":"r","x":{deep}}}"#);
        assert!(matches!(ok(&text), ClientFrame::Leave { .. }));
        let unclosed = format!(
            r#"{{"op":"leave","room":"r","x":{}"#,
            &deep[..deep.len() / 2]
        );
        assert!(bad(&unclosed).message.starts_with("malformed JSON"));
    }
}

#[test]
fn encoders_write_the_spec_shapes_op_first() {
    let n = |s| Name::parse("user", s).unwrap();
    let id = MsgId::new("17-0");
    let cid = Cid::parse("c\"1").unwrap();
    let data = RawValue::from_string(r#"{"t":"hi"}"#.into()).unwrap();
    let cases = [
        (
            encode_welcome(&n("alice"), &n("phone"), "s-1"),
            json!({"op":"welcome","user":"alice","device":"phone","session":"s-1"}),
        ),
        (
            encode_sent(&cid, &id),
            json!({"op":"sent","cid":"c\"1","id":"17-0"}),
        ),
        (
            encode_joined(&n("r"), true),
            json!({"op":"joined","room":"r","recovered":true}),
        ),
        (
            encode_joined(&n("r"), false),
            json!({"op":"joined","room":"r","recovered":false}),
        ),
        (encode_left(&n("r")), json!({"op":"left","room":"r"})),
        (
            encode_refreshed(1_764_134_400),
            json!({"op":"refreshed","exp":1_764_134_400u64}),
        ),
        (
            encode_expiring(u64::MAX),
            json!({"op":"expiring","exp":u64::MAX}),
        ),
        (
            encode_error(Some(&cid), ErrorCode::NotJoined, "join first"),
            json!({"op":"error","cid":"c\"1","code":"not_joined","message":"join first"}),
        ),
        (
            encode_error(None, ErrorCode::BadRequest, "line\nbreak\u{1}"),
            json!({"op":"error","code":"bad_request","message":"line\nbreak\u{1}"}),
        ),
        (
            encode_direct_msg(&id, &n("a"), &n("b"), &data, 1_700_000_000_123),
            json!({"op":"msg","id":"17-0","from":"a","to":"b","data":{"t":"hi"},"ts":1_700_000_000_123_u64}),
        ),
        (
            encode_room_msg(&id, &n("a"), &n("r"), &data, u64::MAX),
            json!({"op":"msg","id":"17-0","from":"a","room":"r","data":{"t":"hi"},"ts":u64::MAX}),
        ),
        (
            encode_room_msg(&id, &Name::server_sender(None), &n("r"), &data, 5),
            json!({"op":"msg","id":"17-0","server":true,"room":"r","data":{"t":"hi"},"ts":5}),
        ),
        (
            encode_direct_msg(&id, &Name::server_sender(Some(&n("a"))), &n("b"), &data, 5),
            json!({"op":"msg","id":"17-0","from":"a","server":true,"to":"b","data":{"t":"hi"},"ts":5}),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(json_of(&text), expected, "{text}");
        let op = expected["op"].as_str().unwrap();
        assert!(text.starts_with(&format!(r#"{{"op":"{op}","#)), "{text}");
    }
}

#[test]
fn escaping_matches_serde_json() {
    let s = "\"\\/\u{0}\u{8}\u{c}\n\r\t\u{1f}\u{7f}é😀\u{2028}";
    let mut out = String::new();
    push_json_str(&mut out, s);
    assert_eq!(out, serde_json::to_string(s).unwrap());
}

fn name_strategy() -> impl Strategy<Value = Name> {
    // Client user ids: a server API sender (`@...`) is shown differently (`"server":true`).
    "[A-Za-z0-9_.:-][A-Za-z0-9_.:@-]{0,127}".prop_map(|s| Name::parse_user("user", &s).unwrap())
}

fn cid_strategy() -> impl Strategy<Value = Cid> {
    any::<String>().prop_filter_map("cid length", |s| Cid::parse(&s).ok())
}

fn json_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn raw(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap()
}

proptest! {
    #[test]
    fn encoded_frames_parse_back(
        id in any::<String>(), from in name_strategy(), to in name_strategy(),
        cid in cid_strategy(), message in any::<String>(), data in json_strategy(),
        ts in any::<u64>(),
    ) {
        let id = MsgId::new(id);
        let direct = encode_direct_msg(&id, &from, &to, &raw(&data), ts);
        prop_assert_eq!(json_of(&direct), json!({
            "op":"msg","id":id.as_str(),"from":from.as_str(),"to":to.as_str(),"data":data,"ts":ts
        }));
        let room = encode_room_msg(&id, &from, &to, &raw(&data), ts);
        prop_assert_eq!(json_of(&room), json!({
            "op":"msg","id":id.as_str(),"from":from.as_str(),"room":to.as_str(),"data":data,"ts":ts
        }));
        prop_assert_eq!(
            json_of(&encode_sent(&cid, &id)),
            json!({"op":"sent","cid":cid.as_str(),"id":id.as_str()})
        );
        prop_assert_eq!(
            json_of(&encode_error(Some(&cid), ErrorCode::Unavailable, &message)),
            json!({"op":"error","cid":cid.as_str(),"code":"unavailable","message":message})
        );
    }

    #[test]
    fn parsing_never_panics(text in any::<String>()) {
        if let Err(e) = parse_client_frame(&text) {
            prop_assert!(!e.message.contains('\n'));
        }
    }

    #[test]
    fn parsing_json_like_noise_never_panics(
        text in r#"\{("(op|to|cid|room|id|since|data|x)"|[:,\[\]{}"\\ a-z0-9.-]|null|true){0,24}\}?"#
    ) {
        if let Err(e) = parse_client_frame(&text) {
            prop_assert!(!e.message.contains('\n'));
        }
    }

    #[test]
    fn valid_frames_round_trip(
        kind in 0..7u8, name in name_strategy(), cid in cid_strategy(),
        id in cid_strategy(), with_since in any::<bool>(), data in json_strategy(),
    ) {
        let (name, cid, id) = (name.as_str(), cid.as_str(), id.as_str());
        let text = match kind {
            0 => json!({"op":"send","to":name,"cid":cid,"data":data}),
            1 => json!({"op":"ack","id":id}),
            2 if with_since => json!({"op":"join","room":name,"since":id}),
            2 => json!({"op":"join","room":name}),
            3 => json!({"op":"leave","room":name}),
            4 => json!({"op":"refresh","token":name}),
            5 => json!({"op":"presence","room":name}),
            _ => json!({"op":"publish","room":name,"cid":cid,"data":data}),
        }
        .to_string();
        match parse_client_frame(&text).unwrap() {
            ClientFrame::Send { to, cid: c, data: d } => {
                prop_assert_eq!((to.as_str(), c.as_str()), (name, cid));
                prop_assert_eq!(json_of(d.get()), data);
            }
            ClientFrame::Ack { id: i } => prop_assert_eq!(i.as_str(), id),
            ClientFrame::Join { room, since } => {
                prop_assert_eq!(room.as_str(), name);
                prop_assert_eq!(since.as_ref().map(MsgId::as_str), with_since.then_some(id));
            }
            ClientFrame::Leave { room } => prop_assert_eq!(room.as_str(), name),
            ClientFrame::Refresh { token } => prop_assert_eq!(token.as_str(), name),
            ClientFrame::Presence { room } => prop_assert_eq!(room.as_str(), name),
            ClientFrame::Publish { room, cid: c, data: d } => {
                prop_assert_eq!((room.as_str(), c.as_str()), (name, cid));
                prop_assert_eq!(json_of(d.get()), data);
            }
        }
    }
}

#[test]
fn data_nested_past_the_limit_is_refused_with_its_cid() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let f = |n: usize| {
        format!(
            r#"{{"op":"send","to":"bob","cid":"c1","data":{}}}"#,
            deep(n)
        )
    };
    assert!(matches!(ok(&f(MAX_DATA_DEPTH)), ClientFrame::Send { .. }));
    for n in [MAX_DATA_DEPTH + 1, 30_000] {
        let e = bad(&f(n));
        assert!(e.too_deep, "{e:?}");
        assert_eq!(e.cid.as_ref().map(Cid::as_str), Some("c1"));
        assert!(
            e.message.contains(&MAX_DATA_DEPTH.to_string()),
            "{}",
            e.message
        );
    }
    let p = format!(
        r#"{{"op":"publish","room":"r","cid":"c2","data":{}}}"#,
        deep(65)
    );
    assert!(bad(&p).too_deep);
    // Brackets inside strings are not nesting.
    let s = format!(
        r#"{{"op":"send","to":"bob","cid":"c3","data":"{}"}}"#,
        "[".repeat(500)
    );
    assert!(matches!(ok(&s), ClientFrame::Send { .. }));
}

#[test]
fn a_client_cannot_send_to_a_server_api_sender() {
    let err = parse_client_frame(r#"{"op":"send","to":"@alice","cid":"c","data":1}"#).unwrap_err();
    assert!(err.message.contains("reserved"), "{}", err.message);
    assert_eq!(err.cid.as_ref().map(Cid::as_str), Some("c"));
}

#[test]
fn presence_and_disconnect_frames() {
    let frame = parse_client_frame(r#"{"op":"presence","room":"lobby"}"#).unwrap();
    assert!(matches!(frame, ClientFrame::Presence { room } if room.as_str() == "lobby"));
    let n = |s| Name::parse("x", s).unwrap();
    let text = encode_presence(&n("lobby"), 3, &[(n("a"), n("phone"))]);
    assert!(text.starts_with(r#"{"op":"presence","#), "{text}");
    assert_eq!(
        json_of(&text),
        json!({"op":"presence","room":"lobby","count":3,"members":[{"user":"a","device":"phone"}]})
    );
    assert_eq!(
        json_of(&encode_disconnect("banned \"x\"")),
        json!({"op":"disconnect","reason":"banned \"x\""})
    );
}
