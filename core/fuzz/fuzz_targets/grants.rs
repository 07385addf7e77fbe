//! Feeds arbitrary grant patterns (a signed token's `rooms`/`publish`/`send` claims) and room
//! names to `hermod_core::grants`: parsing never panics, and a parsed pattern matches exactly
//! what its definition says (equality, or `starts_with` for a trailing `*`).

#![no_main]

use hermod_core::grants::Grants;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Patterns separated by NUL, then the room after the last newline.
    let (patterns, room) = text.rsplit_once('\n').unwrap_or((text, "room"));
    let patterns: Vec<String> = patterns.split('\0').map(str::to_owned).collect();
    let Ok(grants) = Grants::parse("rooms", &patterns) else {
        return;
    };
    let expected = patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => p == room,
    });
    assert_eq!(grants.allows(room), expected, "{patterns:?} {room:?}");
});
