//! Room fan-out at the gateway: one encoded room message handed to 1,000 local members' bounded
//! outbound queues. With `bytes::Bytes` each member costs a reference count, not a copy; the
//! `copy` variant shows what a per-member `Vec<u8>` would cost.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hermod_proxy::ws::outbound::Outbound;
use tungstenite::Message;

/// Members of the room on this gateway.
const MEMBERS: usize = 1_000;
/// Each member's outbound bound (the gateway's default `--max-outbound-bytes`).
const LIMIT: usize = 1 << 20;

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_1000");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    for size in [200usize, 4096] {
        let frame = Bytes::from(vec![b'x'; size]);
        let mut queues: Vec<Outbound> = (0..MEMBERS).map(|_| Outbound::new(LIMIT)).collect();
        group.bench_function(BenchmarkId::new("bytes_clone", size), |b| {
            b.iter(|| {
                for q in &mut queues {
                    if q.push(Message::Binary(black_box(&frame).clone())).is_err() {
                        panic!("a queue of one message cannot overflow");
                    }
                }
                for q in &mut queues {
                    black_box(q.pop());
                }
            })
        });
        group.bench_function(BenchmarkId::new("vec_copy", size), |b| {
            b.iter(|| {
                for q in &mut queues {
                    let copy = Bytes::from(black_box(&frame[..]).to_vec());
                    if q.push(Message::Binary(copy)).is_err() {
                        panic!("a queue of one message cannot overflow");
                    }
                }
                for q in &mut queues {
                    black_box(q.pop());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
