//! The client protocol's hot paths: parsing a typical `send`, encoding a delivered message, and
//! verifying a token at the handshake.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use hermod_core::ids::{MsgId, Name};
use hermod_core::{jwt, protocol};
use serde_json::value::RawValue;

const SEND: &str = r#"{"op":"send","to":"user-42","cid":"c-000123","data":{"text":"hello, how are you doing today?","n":7}}"#;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Bytes(SEND.len() as u64));
    group.bench_function("parse_send", |b| {
        b.iter(|| protocol::parse_client_frame(black_box(SEND)))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let id = MsgId::new("1700000000123-0");
    let (Ok(from), Ok(to)) = (
        Name::parse("user", "user-7"),
        Name::parse("user", "user-42"),
    ) else {
        panic!("fixed names are valid");
    };
    let Ok(data) =
        RawValue::from_string(r#"{"text":"hello, how are you doing today?","n":7}"#.into())
    else {
        panic!("fixed data is valid JSON");
    };
    c.bench_function("protocol/encode_direct_msg", |b| {
        b.iter(|| {
            protocol::encode_direct_msg(
                black_box(&id),
                black_box(&from),
                black_box(&to),
                black_box(&data),
                black_box(1_700_000_000_123),
            )
        })
    });
}

fn verify(c: &mut Criterion) {
    let secret = b"bench-secret-0123456789abcdef";
    let token = jwt::mint(secret, "user-42", 4_000_000_000);
    c.bench_function("jwt/verify", |b| {
        b.iter(|| {
            jwt::verify(
                black_box(secret),
                black_box(&token),
                black_box(1_700_000_000),
            )
        })
    });
}

criterion_group!(benches, parse, encode, verify);
criterion_main!(benches);
