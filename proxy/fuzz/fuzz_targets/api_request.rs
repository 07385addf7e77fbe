//! Feeds arbitrary bytes to the server API's request parser
//! (`hermod_proxy::api::http::parse_request`) and, for every whole request, to the call parser
//! (`hermod_proxy::api::calls::parse_call`): every byte a backend sends to `--api-listen` goes
//! through them. Neither may panic; a whole request lies within the bytes given, its body is
//! within the limit, and a refused call is a 4xx or 5xx.

#![no_main]

use hermod_core::ids::Cid;
use hermod_proxy::api::calls::parse_call;
use hermod_proxy::api::http::{parse_request, Parsed, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(2 * MAX_HEAD + MAX_BODY)];
    match parse_request(data, MAX_BODY) {
        Parsed::Complete(req, len) => {
            assert!(len > 0 && len <= data.len());
            assert!(req.body.len() <= MAX_BODY);
            let mut n = 0u32;
            let mut fresh = || {
                n += 1;
                Cid::parse(&format!("f{n}")).expect("a short cid")
            };
            if let Err(e) = parse_call(&req, 1024, &mut fresh) {
                assert!((400..600).contains(&e.status), "{e:?}");
            }
        }
        Parsed::Refused(e) => assert!((400..600).contains(&e.status), "{e:?}"),
        Parsed::Partial => {}
    }
});
