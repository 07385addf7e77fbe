//! Feeds arbitrary bytes to the RESP3 client decoder (pre-scan, redis-protocol, routing),
//! re-chunked at fuzzer-chosen boundaries, under tight and default limits. It must never panic,
//! whatever the bytes; errors are fine.

#![no_main]

use hermod_core::resp::{RespConn, RespLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let limits = if control & 0x80 != 0 {
        RespLimits {
            max_bulk: 64,
            max_depth: 4,
            max_array_len: 16,
            max_line: 64,
            max_buffer: 256,
        }
    } else {
        RespLimits::default()
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let mut conn = RespConn::new(limits);
    for tag in 0..64 {
        conn.queue(&[b"subscribe", b"x"], tag);
        conn.queue(&[b"GET", b"k"], tag + 1000);
    }
    if control & 0x40 != 0 {
        conn.abandon(0);
        conn.abandon(1001);
    }
    for piece in bytes.chunks(chunk) {
        if conn.handle_input(piece).is_err() {
            return;
        }
        while conn.poll_event().is_some() {}
    }
});
