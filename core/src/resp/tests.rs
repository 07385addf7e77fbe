use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn conn() -> RespConn {
    RespConn::new(RespLimits::default())
}

fn events(conn: &mut RespConn) -> Vec<RespEvent> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn bulk(s: &str) -> Value {
    Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn replies_match_tags_in_order_and_pushes_go_apart() {
    let mut c = conn();
    c.queue(&[b"GET", b"a"], 7);
    c.queue(&[b"GET", b"b"], 9);
    assert_eq!(
        c.output(),
        b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"
    );
    c.consume_output(c.output().len());
    assert!(c.output().is_empty());
    assert_eq!(c.in_flight(), 2);
    c.handle_input(b"$1\r\nx\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n-ERR no\r\n")
        .expect("valid input");
    assert_eq!(
        events(&mut c),
        vec![
            RespEvent::Reply {
                tag: 7,
                value: bulk("x")
            },
            RespEvent::Push(Value::Array(vec![bulk("message"), bulk("c"), bulk("p")])),
            RespEvent::Reply {
                tag: 9,
                value: Value::Error(Bytes::from_static(b"ERR no"))
            },
        ]
    );
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn abandoned_reply_is_discarded_not_matched_to_the_next_tag() {
    let mut c = conn();
    c.queue(&[b"DEBUG", b"SLEEP", b"1"], 1);
    c.queue(&[b"PING"], 2);
    assert!(c.abandon(1));
    assert!(!c.abandon(1));
    c.handle_input(b"+OK\r\n+PONG\r\n").expect("valid input");
    assert_eq!(
        events(&mut c),
        vec![RespEvent::Reply {
            tag: 2,
            value: Value::Simple(Bytes::from_static(b"PONG"))
        }]
    );
    assert_eq!(c.discarded(), 1);
}

#[test]
fn subscribe_is_confirmed_by_its_push() {
    let mut c = conn();
    c.queue(&[b"subscribe", b"a", b"b"], 5);
    c.queue(&[b"PING"], 6);
    c.handle_input(
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n+PONG\r\n",
    )
    .expect("valid input");
    let got = events(&mut c);
    assert!(matches!(got[0], RespEvent::Reply { tag: 5, .. }));
    assert!(matches!(got[1], RespEvent::Push(_)));
    assert!(matches!(got[2], RespEvent::Reply { tag: 6, .. }));
}

#[test]
fn errors_and_limits() {
    let mut c = conn();
    assert_eq!(c.handle_input(b"+OK\r\n"), Err(RespError::UnexpectedReply));
    let mut c = RespConn::new(RespLimits {
        max_buffer: 8,
        ..RespLimits::default()
    });
    c.queue(&[b"GET"], 1);
    assert_eq!(
        c.handle_input(b"$100\r\nxxxxx"),
        Err(RespError::TooLarge("input buffer"))
    );
    let mut c = conn();
    c.queue(&[b"GET"], 1);
    assert!(c.handle_input(b"=5\r\nxyz:a\r\n").is_err());
    let mut c = conn();
    c.queue(&[b"GET"], 1);
    c.queue(&[b"GET"], 2);
    c.handle_input(b"$-1\r\n*-1\r\n").expect("RESP2 nulls");
    assert_eq!(
        events(&mut c),
        vec![
            RespEvent::Reply {
                tag: 1,
                value: Value::Nil
            },
            RespEvent::Reply {
                tag: 2,
                value: Value::Nil
            }
        ]
    );
}

#[test]
fn drain_pending_skips_abandoned() {
    let mut c = conn();
    for tag in 0..4 {
        c.queue(&[b"PING"], tag);
    }
    c.abandon(1);
    assert_eq!(c.drain_pending().collect::<Vec<_>>(), vec![0, 2, 3]);
    assert_eq!(c.in_flight(), 0);
}

/// Leaf values that survive an encode/decode round trip exactly (and can be map keys).
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<i64>().prop_map(Value::Int),
        (-1.0e9f64..1.0e9).prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| Value::Simple(s.into())),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::Bulk(b.into())),
        "[A-Z]{1,5} [a-z ]{0,10}".prop_map(|s| Value::Error(s.into())),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((any::<u32>(), inner), 0..4).prop_map(|pairs| {
                Value::Map(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (Value::Int(k.into()), v))
                        .collect(),
                )
            }),
            proptest::collection::btree_set(any::<i32>(), 0..4)
                .prop_map(|s| Value::Set(s.into_iter().map(|i| Value::Int(i.into())).collect())),
        ]
    })
}

/// Maps and sets come back in hash order: sort them (and dedupe map keys, last wins) to compare.
fn normalize(v: Value) -> Value {
    let key = |v: &Value| {
        let mut out = BytesMut::new();
        encode_value(&mut out, v);
        out
    };
    match v {
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        Value::Set(items) => {
            let mut items: Vec<Value> = items.into_iter().map(normalize).collect();
            items.sort_by_key(key);
            items.dedup();
            Value::Set(items)
        }
        Value::Map(pairs) => {
            let mut unique: Vec<(Value, Value)> = Vec::new();
            for (k, v) in pairs {
                let (k, v) = (normalize(k), normalize(v));
                unique.retain(|(old, _)| *old != k);
                unique.push((k, v));
            }
            unique.sort_by_key(|(k, _)| key(k));
            Value::Map(unique)
        }
        other => other,
    }
}

/// A stream item: a reply or a push.
#[derive(Clone, Debug)]
enum Item {
    Reply(Value),
    Push(Vec<Value>),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        3 => value().prop_map(Item::Reply),
        1 => proptest::collection::vec(leaf(), 1..4).prop_map(Item::Push),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rechunked_stream_decodes_to_the_same_values(
        items in proptest::collection::vec(item(), 1..20),
        cuts in proptest::collection::vec(1usize..64, 1..64),
        one_byte in any::<bool>(),
    ) {
        let mut wire = BytesMut::new();
        let mut c = conn();
        let mut expected = Vec::new();
        let mut tag = 0;
        for item in &items {
            match item {
                Item::Reply(v) => {
                    encode_value(&mut wire, v);
                    c.queue(&[b"ECHO"], tag);
                    expected.push(RespEvent::Reply { tag, value: normalize(v.clone()) });
                    tag += 1;
                }
                Item::Push(elems) => {
                    encode_push(&mut wire, elems);
                    expected.push(RespEvent::Push(Value::Array(elems.clone())));
                }
            }
        }
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = if one_byte { 1 } else { cuts[i % cuts.len()] }.min(rest.len());
            i += 1;
            c.handle_input(&rest[..n]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            rest = &rest[n..];
            got.extend(events(&mut c).into_iter().map(|e| match e {
                RespEvent::Reply { tag, value } => RespEvent::Reply { tag, value: normalize(value) },
                push => push,
            }));
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        cut in 1usize..32,
    ) {
        let mut c = conn();
        for tag in 0..8 {
            c.queue(&[b"X"], tag);
        }
        for chunk in data.chunks(cut) {
            if c.handle_input(chunk).is_err() {
                break;
            }
            while c.poll_event().is_some() {}
        }
    }

    #[test]
    fn arbitrary_typed_lines_never_panic(
        parts in proptest::collection::vec(
            (prop::sample::select(b"+-:$*%~>|_#,(!=?".to_vec()), "[-0-9a-z?]{0,4}"), 0..24),
    ) {
        let mut wire = Vec::new();
        for (kind, body) in parts {
            wire.push(kind);
            wire.extend_from_slice(body.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        let mut c = conn();
        for tag in 0..32 {
            c.queue(&[b"X"], tag);
        }
        let _ = c.handle_input(&wire);
    }
}
