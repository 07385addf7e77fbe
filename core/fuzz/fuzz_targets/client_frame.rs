//! Feeds arbitrary text to the client frame parser (`hermod_core::protocol::parse_client_frame`),
//! what every WebSocket text message on `/ws` goes through. It must never panic; a parsed frame
//! must hold only valid, bounded names and ids.

#![no_main]

use hermod_core::protocol::{parse_client_frame, ClientFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = parse_client_frame(text) {
        // Whatever was accepted formats without panicking.
        let _ = format!("{frame:?}");
        if let ClientFrame::Send { data, .. } | ClientFrame::Publish { data, .. } = &frame {
            assert!(data.get().len() <= text.len());
        }
    }
});
