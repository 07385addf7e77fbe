//! WebSocket framing, the work every gateway message pays twice (in and out): parsing a frame
//! header, formatting a frame, and a whole `WebSocketContext` read (unmask + message assembly)
//! and write (format + flush) over an in-memory stream.

use std::io::{self, Cursor, Read, Write};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

/// Payload sizes: a typical chat message and a larger one.
const SIZES: [usize; 2] = [64, 4096];

/// The gateway's buffer sizes (design.md: a 4 KiB read buffer keeps idle sessions small).
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_frame_size(Some(64 << 10))
        .max_message_size(Some(64 << 10))
}

/// An endless stream repeating one byte string (a peer that always has the next frame ready);
/// writes are discarded.
struct Replay {
    /// The bytes repeated.
    data: Vec<u8>,
    /// Read position in `data`.
    pos: usize,
}

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let take = (self.data.len() - self.pos).min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&self.data[self.pos..self.pos + take]);
            n += take;
            self.pos = (self.pos + take) % self.data.len();
        }
        Ok(n)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A write end that keeps what it is given (`keep`) or only counts it, so that a write
/// benchmark does not grow a buffer. Reading from it would block.
struct Sink {
    /// Whether to keep the bytes in `kept`.
    keep: bool,
    /// The bytes written, when kept.
    kept: Vec<u8>,
    /// Bytes written.
    count: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.keep {
            self.kept.extend_from_slice(buf);
        }
        self.count += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Sink {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// One masked binary frame as a client sends it.
fn client_frame(size: usize) -> Vec<u8> {
    let mut ctx = WebSocketContext::new(Role::Client, Some(config()));
    let mut out = Sink {
        keep: true,
        kept: Vec::new(),
        count: 0,
    };
    let sent = ctx
        .write(&mut out, Message::Binary(Bytes::from(vec![0x5a; size])))
        .and_then(|()| ctx.flush(&mut out));
    if let Err(e) = sent {
        panic!("writing to a Vec cannot fail: {e}");
    }
    out.kept
}

fn header(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_header");
    for size in SIZES {
        let frame = client_frame(size);
        group.bench_with_input(BenchmarkId::new("parse", size), &frame, |b, frame| {
            b.iter(|| FrameHeader::parse(&mut Cursor::new(black_box(frame.as_slice()))))
        });
        let head = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        };
        let mut out = Vec::with_capacity(16);
        group.bench_function(BenchmarkId::new("format", size), |b| {
            b.iter(|| {
                out.clear();
                black_box(&head).format(black_box(size as u64), &mut out)
            })
        });
    }
    group.finish();
}

fn frame_format(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_frame");
    for size in SIZES {
        let payload = Bytes::from(vec![0x5a; size]);
        let mut out = Vec::with_capacity(size + 16);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("format_unmasked", size), |b| {
            b.iter(|| {
                out.clear();
                Frame::message(black_box(payload.clone()), OpCode::Data(Data::Binary), true)
                    .format(&mut out)
            })
        });
    }
    group.finish();
}

fn context(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_context");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut stream = Replay {
            data: client_frame(size),
            pos: 0,
        };
        let mut server = WebSocketContext::new(Role::Server, Some(config()));
        group.bench_function(BenchmarkId::new("read_masked", size), |b| {
            b.iter(|| server.read(&mut stream))
        });
        let payload = Bytes::from(vec![0x5a; size]);
        let mut sink = Sink {
            keep: false,
            kept: Vec::new(),
            count: 0,
        };
        let mut writer = WebSocketContext::new(Role::Server, Some(config()));
        group.bench_function(BenchmarkId::new("write_flush", size), |b| {
            b.iter(|| {
                writer
                    .write(&mut sink, Message::Binary(black_box(payload.clone())))
                    .and_then(|()| writer.flush(&mut sink))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, header, frame_format, context);
criterion_main!(benches);
