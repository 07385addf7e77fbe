use bytes::Bytes;

use super::*;

fn bulk(s: &str) -> Value {
    Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn addr_reply(host: &str, port: &str) -> Value {
    Value::Array(vec![bulk(host), bulk(port)])
}

fn ok() -> Value {
    Value::Map(vec![(bulk("server"), bulk("redis"))])
}

fn actions(d: &mut Discovery) -> Vec<Action> {
    std::iter::from_fn(|| d.poll_action()).collect()
}

fn machine() -> Discovery {
    Discovery::new(
        vec!["s1:1".into(), "s2:2".into(), "s3:3".into()],
        "m".into(),
        None,
    )
}

fn connect(addr: &str) -> Action {
    Action::Connect { addr: addr.into() }
}

fn query() -> Action {
    Action::Send(vec![
        b"SENTINEL".to_vec(),
        b"get-master-addr-by-name".to_vec(),
        b"m".to_vec(),
    ])
}

fn subscribe() -> Action {
    Action::Send(vec![b"SUBSCRIBE".to_vec(), b"+switch-master".to_vec()])
}

#[test]
fn resolves_subscribes_and_switches() {
    let mut d = machine();
    d.resolve();
    assert_eq!(actions(&mut d), vec![connect("s1:1")]);
    assert!(d.is_resolving());
    d.handle_connected();
    assert_eq!(
        actions(&mut d),
        vec![
            Action::Send(vec![b"HELLO".to_vec(), b"3".to_vec()]),
            query()
        ]
    );
    d.handle_reply(ok());
    d.handle_reply(addr_reply("10.0.0.1", "6379"));
    assert_eq!(
        actions(&mut d),
        vec![
            Action::Resolved {
                master: "10.0.0.1:6379".into()
            },
            subscribe()
        ]
    );
    d.handle_reply(bulk("subscribe"));
    assert!(d.is_watching());
    d.handle_push(Value::Array(vec![
        bulk("message"),
        bulk("+switch-master"),
        bulk("other 1.1.1.1 1 2.2.2.2 2"),
    ]));
    assert_eq!(actions(&mut d), vec![]);
    d.handle_push(Value::Array(vec![
        bulk("message"),
        bulk("+switch-master"),
        bulk("m 10.0.0.1 6379 10.0.0.2 6380"),
    ]));
    assert_eq!(
        actions(&mut d),
        vec![Action::SwitchMaster {
            from: "10.0.0.1:6379".into(),
            to: "10.0.0.2:6380".into()
        }]
    );
    // Re-resolving reuses the watching connection.
    d.resolve();
    assert_eq!(actions(&mut d), vec![query()]);
    d.handle_reply(addr_reply("10.0.0.2", "6380"));
    assert_eq!(
        actions(&mut d),
        vec![
            Action::Resolved {
                master: "10.0.0.2:6380".into()
            },
            subscribe()
        ]
    );
}

#[test]
fn unreachable_sentinels_are_skipped_then_reported() {
    let mut d = machine();
    d.resolve();
    actions(&mut d);
    d.handle_closed("connection refused");
    assert_eq!(actions(&mut d), vec![connect("s2:2")]);
    d.handle_connected();
    actions(&mut d);
    d.handle_reply(Value::Error("NOAUTH".into()));
    assert_eq!(actions(&mut d), vec![Action::Close, connect("s3:3")]);
    d.handle_closed("timeout");
    let got = actions(&mut d);
    let [Action::Failed(SentinelError::NoSentinelReachable(errors))] = &got[..] else {
        panic!("expected NoSentinelReachable, got {got:?}");
    };
    assert_eq!(errors.len(), 3);
    assert!(errors[1].contains("s2:2") && errors[1].contains("NOAUTH"));
    assert!(!d.is_resolving());
}

#[test]
fn nil_answers_mean_unknown_master() {
    let mut d = machine();
    d.resolve();
    for next in ["s2:2", "s3:3"] {
        actions(&mut d);
        d.handle_connected();
        actions(&mut d);
        d.handle_reply(ok());
        d.handle_reply(Value::Nil);
        assert_eq!(actions(&mut d), vec![Action::Close, connect(next)]);
    }
    d.handle_closed("refused");
    assert_eq!(
        actions(&mut d),
        vec![Action::Failed(SentinelError::UnknownMaster("m".into()))]
    );
    // A later round starts over from a clean slate.
    d.resolve();
    assert_eq!(actions(&mut d), vec![connect("s1:1")]);
}

#[test]
fn losing_the_watch_starts_a_round_at_the_next_sentinel() {
    let mut d = machine();
    d.resolve();
    d.handle_connected();
    d.handle_reply(ok());
    d.handle_reply(addr_reply("h", "1"));
    d.handle_reply(bulk("subscribe"));
    actions(&mut d);
    d.handle_closed("reset by peer");
    assert_eq!(actions(&mut d), vec![connect("s2:2")]);
    d.handle_connected();
    d.handle_reply(ok());
    d.handle_reply(addr_reply("h", "1"));
    let got = actions(&mut d);
    assert!(got.contains(&Action::Resolved {
        master: "h:1".into()
    }));
}

#[test]
fn password_goes_into_hello_and_garbage_is_refused() {
    let mut d = Discovery::new(vec!["s:1".into()], "m".into(), Some("pw".into()));
    d.resolve();
    d.handle_connected();
    let got = actions(&mut d);
    assert_eq!(
        got[1],
        Action::Send(vec![
            b"HELLO".to_vec(),
            b"3".to_vec(),
            b"AUTH".to_vec(),
            b"default".to_vec(),
            b"pw".to_vec()
        ])
    );
    d.handle_reply(ok());
    d.handle_reply(Value::Int(3));
    let got = actions(&mut d);
    assert!(matches!(
        got[..],
        [
            Action::Close,
            Action::Failed(SentinelError::NoSentinelReachable(_))
        ]
    ));
    // No sentinels at all fails at once.
    let mut d = Discovery::new(Vec::new(), "m".into(), None);
    d.resolve();
    assert!(matches!(actions(&mut d)[..], [Action::Failed(_)]));
}
