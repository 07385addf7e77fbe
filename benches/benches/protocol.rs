//! The client protocol's hot paths: parsing a typical `send`, encoding a delivered message, and
//! verifying a token at the handshake (HS256 with our HMAC path; RS256 and ES256 with RustCrypto,
//! on tokens PyJWT made, the same the core's unit tests check).

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

/// The core's test fixtures: PyJWT tokens (valid at 1_700_000_000) and their public keys.
const PYJWT: &str = include_str!("../../core/src/jwt/testdata/pyjwt.json");
const RSA_PUB: &str = include_str!("../../core/src/jwt/testdata/rsa.pub");
const EC_PUB: &str = include_str!("../../core/src/jwt/testdata/ec.pub");

fn verify(c: &mut Criterion) {
    let secret = b"bench-secret-0123456789abcdef-0123";
    let now = 1_700_000_000;
    let token = jwt::mint(secret, "user-42", now + 3600);
    c.bench_function("jwt/verify", |b| {
        b.iter(|| jwt::verify(black_box(secret), black_box(&token), black_box(now)))
    });
    let Ok(fixtures) = serde_json::from_str::<serde_json::Value>(PYJWT) else {
        panic!("the PyJWT fixture is JSON");
    };
    let rules = jwt::Rules::default();
    for (name, pem, field) in [
        ("jwt/verify_rs256", RSA_PUB, "rs256"),
        ("jwt/verify_es256", EC_PUB, "es256"),
    ] {
        let (Ok(keys), Some(token)) = (jwt::KeySet::from_pem(pem), fixtures[field].as_str()) else {
            panic!("the fixture keys and tokens are valid");
        };
        let keys = jwt::Keys {
            secret: None,
            public: Some(&keys),
        };
        assert!(jwt::verify_with(keys, &rules, token, now).is_ok());
        c.bench_function(name, |b| {
            b.iter(|| jwt::verify_with(keys, &rules, black_box(token), black_box(now)))
        });
    }
}

criterion_group!(benches, parse, encode, verify);
criterion_main!(benches);
