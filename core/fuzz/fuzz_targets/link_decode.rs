//! Feeds arbitrary bytes, re-chunked at fuzzer-chosen boundaries, to what a broker link reads: the
//! RESP request reader (`hermod_core::resp::RespReader`) and then the link command decoder
//! (`hermod_core::link::decode_request`, the broker's side) and the push decoder
//! (`hermod_core::link::decode_push`, the gateway's side), under tight and default limits. It must
//! never panic, whatever the bytes; errors are fine.

#![no_main]

use hermod_core::link::{decode_push, decode_request};
use hermod_core::resp::{RespLimits, RespReader};
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
    let chunk = usize::from(control & 0x7f) + 1;
    let mut reader = RespReader::new(limits);
    for piece in bytes.chunks(chunk) {
        if reader.feed(piece).is_err() {
            return;
        }
        loop {
            match reader.next_value() {
                Ok(Some(value)) => {
                    let _ = decode_push(value.clone());
                    let _ = decode_request(value);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
