//! Limits and bad input (docs/protocol.md, "Limits and closing"): close codes 1009, 1007, 1003, 1002;
//! `bad_request` with the connection kept; the slow-consumer close with nothing lost. Bad input
//! on one connection never affects another.

mod common;

use common::{engine_tests, Engine};

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{id_of, raw_frame, raw_frame_with, set_timeouts, Client, Ending, Proxy, TIMEOUT};
use serde_json::{json, Value};
use tungstenite::Message;

/// Writes raw frame bytes behind tungstenite's back.
fn write_raw(c: &mut Client, bytes: &[u8]) {
    c.ws.get_mut().write_all(bytes).expect("write raw frame");
}

fn oversized_message_closes_1009(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut witness = proxy.connect("witness");

    // Just under the 64 KiB default: accepted and delivered whole.
    let mut alice = proxy.connect("alice");
    let fits = "x".repeat(60_000);
    let id = alice.send_to("witness", "fits", json!(fits));
    let m = witness.recv_op("msg");
    assert_eq!(id_of(&m), id);
    assert_eq!(m["data"].as_str().map(str::len), Some(60_000));

    // One frame over the limit.
    let big = json!({"op":"send","to":"bob","cid":"big","data":"y".repeat(70_000)});
    alice.send_json(&big);
    assert_eq!(alice.expect_close().0, 1009, "proxy log:\n{}", proxy.log());

    // A message over the limit in small fragments.
    let mut frag = proxy.connect("frag");
    let half = vec![b'z'; 40_000];
    let mut bytes = raw_frame_with(false, true, 0x1, &half);
    bytes.extend(raw_frame_with(true, true, 0x0, &half));
    write_raw(&mut frag, &bytes);
    assert_eq!(frag.expect_close().0, 1009, "fragmented oversized message");

    // The others are unaffected.
    let mut carol = proxy.connect("carol");
    let id = carol.send_to("witness", "after", json!("still here"));
    assert_eq!(id_of(&witness.recv_op("msg")), id);
}

fn invalid_utf8_closes_1007(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut c = proxy.connect("alice");
    write_raw(&mut c, &raw_frame(0x1, b"{\"op\":\xff\xfe}"));
    assert_eq!(c.expect_close().0, 1007, "proxy log:\n{}", proxy.log());

    // Also when the bad byte sequence is split across fragments of one message.
    let mut c = proxy.connect("alice");
    let mut bytes = raw_frame_with(false, true, 0x1, b"ok \xe2\x82");
    bytes.extend(raw_frame_with(true, true, 0x0, b"\x28 end"));
    write_raw(&mut c, &bytes);
    assert_eq!(c.expect_close().0, 1007, "fragmented invalid UTF-8");
}

fn binary_frame_on_ws_closes_1003(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut c = proxy.connect("alice");
    c.ws.send(Message::binary(vec![1u8, 2, 3]))
        .expect("send binary");
    assert_eq!(c.expect_close().0, 1003);
}

fn unmasked_frame_closes_1002(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut c = proxy.connect("alice");
    write_raw(&mut c, &raw_frame_with(true, false, 0x1, b"{}"));
    assert_eq!(c.expect_close().0, 1002);
}

/// Sends `text` and expects an `error`/`bad_request` (with `cid` when given).
fn expect_bad_request(c: &mut Client, text: &str, cid: Option<&str>) {
    c.send_text(text);
    let e = c.recv_op("error");
    assert_eq!(e["code"], "bad_request", "answer to {text:?}: {e}");
    assert!(e["message"].is_string(), "{e}");
    if let Some(cid) = cid {
        assert_eq!(
            e["cid"], cid,
            "answer to {text:?} should carry its cid: {e}"
        );
    }
}

fn malformed_json_and_unknown_op_get_bad_request_and_keep_the_connection(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let mut c = proxy.connect("alice");
    let long_cid = "c".repeat(65);
    let long_room = "r".repeat(129);
    let cases: Vec<(String, Option<&str>)> = vec![
        ("{not json".into(), None),
        ("".into(), None),
        ("[1,2,3]".into(), None),
        ("\"send\"".into(), None),
        (r#"{"cid":"noop"}"#.into(), None),
        (r#"{"op":"dance","cid":"d1"}"#.into(), None),
        (r#"{"op":7}"#.into(), None),
        (
            r#"{"op":"send","to":"bad name","cid":"s1","data":1}"#.into(),
            Some("s1"),
        ),
        (r#"{"op":"send","to":"bob","cid":"s2"}"#.into(), Some("s2")),
        (r#"{"op":"send","cid":"s3","data":1}"#.into(), Some("s3")),
        (r#"{"op":"send","to":"bob","cid":"","data":1}"#.into(), None),
        (
            json!({"op":"send","to":"bob","cid":long_cid,"data":1}).to_string(),
            None,
        ),
        (r#"{"op":"join","room":"bad room"}"#.into(), None),
        (json!({"op":"join","room":long_room}).to_string(), None),
        (
            r#"{"op":"publish","room":"r","cid":"p1"}"#.into(),
            Some("p1"),
        ),
        (r#"{"op":"ack"}"#.into(), None),
    ];
    for (text, cid) in &cases {
        expect_bad_request(&mut c, text, *cid);
    }
    // Still open and working.
    let mut bob = proxy.connect("bob");
    let id = c.send_to("bob", "ok", json!("fine"));
    assert_eq!(id_of(&bob.recv_op("msg")), id);
}

/// A client socket with a tiny receive buffer, so the server's output backs up quickly.
fn small_rcvbuf_stream(addr: std::net::SocketAddr) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sock.connect_timeout(&addr.into(), TIMEOUT)
        .expect("connect");
    let stream: TcpStream = sock.into();
    set_timeouts(&stream);
    stream
}

/// Messages sent to the slow consumer, and their payload size: 8 MB in all.
const SLOW_MESSAGES: usize = 1000;
const SLOW_PAYLOAD: usize = 8000;

/// Sends `n` messages of `size` bytes to `to`, pipelined in batches; returns the ids in order.
fn send_batched(c: &mut Client, to: &str, n: usize, size: usize) -> Vec<String> {
    let payload = "p".repeat(size);
    let mut ids = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(50) {
        for i in batch {
            c.send_json(
                &json!({"op":"send","to":to,"cid":format!("m{i}"),"data":{"i":i,"p":payload}}),
            );
        }
        for i in batch {
            let sent = c.recv_op("sent");
            assert_eq!(sent["cid"], format!("m{i}"), "{sent}");
            ids.push(id_of(&sent));
        }
    }
    ids
}

/// Waits until `c` (signed in as `user`) gets its inbox live; returns the probe message's id.
///
/// The welcome goes out before the worker even hands the session's Attach to the broker, and the
/// broker reads the inbox asynchronously. If messages for `c` are stored before that first read
/// runs (a starved broker thread whose next drain takes the sender's lane first), the read finds
/// more than a page and the inbox becomes a paged replay: one page per `ResumeReplay`, asked for
/// only once the previous page left the outbound queue. That is flow control working as designed
/// (`broker/src/replay.rs`): a client that stops reading holds up its own replay and never
/// overflows, and a slow-consumer test waits in vain for its close. So `c` sends itself a
/// message first: the request follows its Attach on the worker's lane, so the inbox read is
/// submitted before the append; a replay delivers nothing before its page read completes, and
/// with one message stored that page is the last. Once the probe arrives the inbox is live.
fn inbox_is_live(c: &mut Client, user: &str) -> String {
    c.send_json(&json!({"op":"send","to":user,"cid":"live","data":"probe"}));
    let (mut sent, mut got) = (None, None);
    while sent.is_none() || got.is_none() {
        let f = c.recv();
        match f["op"].as_str() {
            Some("sent") if f["cid"] == "live" => sent = Some(id_of(&f)),
            Some("msg") => got = Some(id_of(&f)),
            _ => panic!("unexpected frame while waiting for the live probe: {f}"),
        }
    }
    assert_eq!(sent, got, "the probe came back as another message");
    got.expect("probe id")
}

fn slow_consumer_is_closed_1008_and_loses_nothing(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &["--max-outbound-bytes", "65536"]);
    let url = proxy.ws_url("bob", "default");
    let mut bob = Client::handshake(&url, small_rcvbuf_stream(proxy.client))
        .unwrap_or_else(|e| panic!("bob handshake: {e}"));
    bob.expect_welcome("bob", "default");
    let mut ids = vec![inbox_is_live(&mut bob, "bob")];

    // Bob stops reading; alice sends far more than the bound plus every buffer on the way (on
    // loopback the kernel's send buffer alone can grow to tcp_wmem's max, 4 MiB here).
    let mut alice = proxy.connect("alice");
    let flood = send_batched(&mut alice, "bob", SLOW_MESSAGES, SLOW_PAYLOAD);
    ids.extend(flood.iter().cloned());

    // What bob got before the end is a prefix of the inbox, in order.
    let (frames, ending) = bob.read_to_end();
    for (i, m) in frames.iter().enumerate() {
        assert_eq!(m["op"], "msg", "{m}");
        assert_eq!(
            id_of(m),
            flood[i],
            "frame {i} before the close is out of order"
        );
    }
    match &ending {
        Ending::Close(code, reason) => {
            assert_eq!(*code, 1008, "close reason {reason:?}");
            assert_eq!(reason, "slow consumer");
        }
        // With both kernel buffers full the server may have had to drop the socket instead;
        // the metric below must still count the slow-consumer close.
        Ending::Dropped(e) => eprintln!(
            "note: slow consumer dropped without a readable close frame after {} messages: {e}",
            frames.len()
        ),
        Ending::CloseNoCode => panic!("slow consumer closed without a code"),
    }
    let slow = proxy.metric_sum(&["hermod_", "slow"]);
    assert!(
        slow.is_some_and(|v| v >= 1.0),
        "no hermod_*slow* metric counts the close: {slow:?}\n{}",
        proxy.admin_get("/metrics").1
    );

    // Nothing lost: reconnecting replays every message, in order, without any ack.
    let mut bob = proxy.connect("bob");
    let mut got = Vec::with_capacity(ids.len());
    while got.len() < ids.len() {
        match bob.next(TIMEOUT) {
            Some(Ok(Message::Text(t))) => {
                let m: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                assert_eq!(m["op"], "msg", "{m}");
                got.push(id_of(&m));
            }
            Some(Err(end)) => panic!(
                "bob reconnected with {} unacked messages (~{} KiB, more than \
                 --max-outbound-bytes) and was closed after {} of them: {end:?}. The inbox replay \
                 goes into the bounded outbound queue at once, so a client whose backlog exceeds \
                 the bound is closed again on every connect and can never drain its inbox.",
                ids.len(),
                ids.len() * SLOW_PAYLOAD / 1024,
                got.len()
            ),
            other => panic!("replay after {} messages: {other:?}", got.len()),
        }
    }
    assert_eq!(got, ids, "replay after the slow-consumer close");
    let last = alice.send_to("bob", "last", json!("end"));
    assert_eq!(id_of(&bob.recv_op("msg")), last);
    bob.expect_silence(Duration::from_millis(100));
}

engine_tests!(
    oversized_message_closes_1009,
    invalid_utf8_closes_1007,
    binary_frame_on_ws_closes_1003,
    unmasked_frame_closes_1002,
    malformed_json_and_unknown_op_get_bad_request_and_keep_the_connection,
    slow_consumer_is_closed_1008_and_loses_nothing,
);
