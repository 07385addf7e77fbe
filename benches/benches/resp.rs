//! RESP on the broker's hot path: encoding a pipelined command, and decoding replies and push
//! frames through the sans-io `RespConn` (pre-scan for limits, zero-copy decode, FIFO matching).

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hermod_core::resp::{encode_command, RespConn, RespEvent, RespLimits};

/// A publish as the Redis engine issues it: one server-side function call, about 200 bytes.
fn fcall_args(payload: &[u8]) -> Vec<&[u8]> {
    vec![
        b"FCALL",
        b"hermod_publish",
        b"2",
        b"{u:user-42}:inbox",
        b"{u:user-42}:dedupe",
        b"user-7",
        b"c-000123",
        b"10000",
        b"600000",
        payload,
    ]
}

const PAYLOAD: &[u8] = br#"{"op":"msg","from":"user-7","to":"user-42","data":{"text":"hello, how are you doing today?","n":7}}"#;

fn encode(c: &mut Criterion) {
    let args = fcall_args(PAYLOAD);
    let mut out = BytesMut::with_capacity(512);
    encode_command(&mut out, &args);
    let mut group = c.benchmark_group("resp");
    group.throughput(Throughput::Bytes(out.len() as u64));
    group.bench_function("encode_fcall", |b| {
        b.iter(|| {
            out.clear();
            encode_command(&mut out, black_box(&args));
        })
    });
    group.finish();
}

/// A reply of `entries` stream entries, each `[id, [field, value]]` (an XREAD/XRANGE page).
fn xrange_reply(entries: usize) -> Vec<u8> {
    let mut out = format!("*{entries}\r\n").into_bytes();
    for i in 0..entries {
        let id = format!("1700000000123-{i}");
        out.extend_from_slice(
            format!("*2\r\n${}\r\n{id}\r\n*2\r\n$1\r\nm\r\n", id.len()).as_bytes(),
        );
        out.extend_from_slice(format!("${}\r\n", PAYLOAD.len()).as_bytes());
        out.extend_from_slice(PAYLOAD);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Decodes `reply` as the answer to one queued command, many times over one connection.
fn bench_reply(c: &mut Criterion, name: &str, reply: &[u8]) {
    let mut conn = RespConn::new(RespLimits::default());
    let mut group = c.benchmark_group("resp");
    group.throughput(Throughput::Bytes(reply.len() as u64));
    let mut tag = 0u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            tag += 1;
            conn.queue(&[b"PING"], tag);
            let written = conn.output().len();
            conn.consume_output(written);
            if let Err(e) = conn.handle_input(black_box(reply)) {
                panic!("a well-formed reply failed to decode: {e}");
            }
            conn.poll_event()
        })
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    bench_reply(c, "decode_id_reply", b"$15\r\n1700000000123-0\r\n");
    for entries in [1, 10, 100] {
        bench_reply(
            c,
            &format!("decode_xrange/{entries}"),
            &xrange_reply(entries),
        );
    }
}

fn push(c: &mut Criterion) {
    let mut frame = format!(
        ">3\r\n$7\r\nmessage\r\n$14\r\nhermod:u:alice\r\n${}\r\n",
        PAYLOAD.len()
    )
    .into_bytes();
    frame.extend_from_slice(PAYLOAD);
    frame.extend_from_slice(b"\r\n");
    let mut group = c.benchmark_group("resp");
    for batch in [1usize, 16] {
        let input = frame.repeat(batch);
        let mut conn = RespConn::new(RespLimits::default());
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("decode_push", batch),
            &input,
            |b, input| {
                b.iter(|| {
                    if let Err(e) = conn.handle_input(black_box(input)) {
                        panic!("a well-formed push failed to decode: {e}");
                    }
                    let mut n = 0;
                    while let Some(RespEvent::Push(_)) = conn.poll_event() {
                        n += 1;
                    }
                    n
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, encode, decode, push);
criterion_main!(benches);
