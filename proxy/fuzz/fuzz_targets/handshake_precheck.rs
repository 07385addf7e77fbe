//! Feeds arbitrary bytes to the handshake precheck (`hermod_proxy::ws::handshake::precheck`), the
//! first look at every new client connection's request head, both as a head still arriving and as
//! all the gateway will read. It must never panic, and a refusal must encode as HTTP.

#![no_main]

use std::sync::OnceLock;

use hermod_proxy::settings::Settings;
use hermod_proxy::ws::handshake::{precheck, Precheck};
use libfuzzer_sys::fuzz_target;

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let mut s = Settings::defaults();
        s.echo_path = Some("/echo".to_owned());
        s
    })
}

fuzz_target!(|data: &[u8]| {
    for full in [false, true] {
        if let Precheck::Refuse { refusal, head_only } = precheck(data, full, settings()) {
            let _ = refusal.to_http(head_only);
        }
    }
});
