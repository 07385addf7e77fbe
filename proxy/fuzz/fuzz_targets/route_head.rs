//! Feeds arbitrary bytes to the tunnel's request-head classifier
//! (`hermod_proxy::tunnel::http::classify`, which rewrites a routed request for its upstream) and
//! to the upstream answer reader (`parse_answer`). It must never panic, and what goes upstream must
//! be one complete, well-formed `GET` head without a body-length header, carrying the peer's
//! address in the forwarding headers and no other `X-Forwarded-For`/`Forwarded`/`X-Real-IP`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use hermod_proxy::settings::routes::{parse_route, Route};
use hermod_proxy::tunnel::http::{classify, parse_answer, Head, Peer};
use libfuzzer_sys::fuzz_target;

fn routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        [
            "/t=ws://127.0.0.1:9000/echo",
            "/a=ws://[::1]:9001",
            "/=ws://10.0.0.1:80/x",
        ]
        .iter()
        .filter_map(|r| parse_route(r, |_, _| None).ok())
        .collect()
    })
}

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fuzz_target!(|data: &[u8]| {
    let _ = parse_answer(data);
    for full in [false, true] {
        let peer = || Peer {
            ip: PEER,
            trusted: &[],
        };
        let Head::Tunnel { len, request, .. } = classify(data, full, routes(), peer) else {
            continue;
        };
        assert!(len <= data.len());
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(&request);
        assert!(
            matches!(parsed, Ok(httparse::Status::Complete(n)) if n == request.len()),
            "rewritten head does not parse: {parsed:?} {:?}",
            String::from_utf8_lossy(&request)
        );
        assert_eq!(req.method, Some("GET"));
        for h in req.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            assert!(
                name != "content-length" && name != "transfer-encoding",
                "{name}"
            );
            if name == "x-forwarded-for" || name == "x-real-ip" {
                assert_eq!(h.value, b"192.0.2.7");
            }
            if name == "forwarded" {
                assert_eq!(h.value, b"for=192.0.2.7");
            }
        }
    }
});
