//! Feeds arbitrary bytes to the admin server's request-head parser
//! (`hermod_core::admin_http::parse_head`), what every byte sent to `/healthz`, `/readyz` and
//! `/metrics` goes through, in both binaries. It must never panic; a complete head lies within
//! the bytes given, and parsing a prefix of it never claims more than the prefix holds.

#![no_main]

use hermod_core::admin_http::{parse_head, Head, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(2 * MAX_HEAD)];
    if let Head::Complete {
        len, method, path, ..
    } = parse_head(data)
    {
        assert!(len > 0 && len <= data.len());
        assert!(!method.is_empty() && !path.is_empty());
        // The same head followed by anything (a pipelined request) parses the same.
        let mut more = data[..len].to_vec();
        more.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
        match parse_head(&more) {
            Head::Complete { len: again, .. } => assert_eq!(again, len),
            other => panic!("prefix parsed, whole did not: {other:?}"),
        }
        for cut in 0..len {
            assert!(
                !matches!(parse_head(&data[..cut]), Head::Complete { len: l, .. } if l > cut),
                "a prefix claimed more bytes than it has"
            );
        }
    }
});
