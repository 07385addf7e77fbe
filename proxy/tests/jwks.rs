//! Keys from a JWKS URL (docs/operations.md, "Token keys"): a Python `http.server` serves a JWKS
//! made by PyJWT; RS256 and ES256 tokens verify with its keys, tampered ones do not; a key added
//! at the provider (rotation) is picked up by the refresh its first token triggers; a stream of
//! unknown key ids costs at most one fetch per gap.

mod common;

use std::time::{Duration, Instant};

use common::pyjwt::{
    jwt_tool, key_pairs, pyjwt, status_of, upgrade_with_token, FileServer, TempDir,
};
use common::{now_unix, Proxy, SECRET};
use serde_json::json;

fn refreshes(proxy: &Proxy) -> usize {
    proxy.log().matches("JWKS refreshed").count()
}

#[test]
fn jwks_keys_verify_tokens_and_a_rotation_is_picked_up() {
    let keys = key_pairs("jwks-keys");
    let www = TempDir::new("jwks-www");
    let jwks = www.file("jwks.json");
    let k1 = format!("k1={}", keys.file("rsa1.pub"));
    let e1 = format!("e1={}", keys.file("ec1.pub"));
    jwt_tool(&["jwks", &jwks, &k1, &e1]);
    let server = FileServer::start(&www.0);
    let url = format!("http://{}/jwks.json", server.addr);
    let proxy = Proxy::spawn(&["--jwks-url", &url], true);
    assert!(proxy.log().contains("JWKS fetched"), "{}", proxy.log());

    let now = now_unix();
    let claims = json!({"sub": "alice", "exp": now + 600, "iat": now});
    let rs = pyjwt("RS256", &keys.file("rsa1.pem"), &claims, Some("k1"));
    let es = pyjwt("ES256", &keys.file("ec1.pem"), &claims, Some("e1"));
    for token in [&rs, &es] {
        assert_eq!(
            status_of(&upgrade_with_token(proxy.client, token)),
            101,
            "{}",
            proxy.log()
        );
    }
    // Tampered, signed by a key the JWKS does not have under that kid, or HS256 without a secret.
    let parts: Vec<&str> = rs.split('.').collect();
    let evil = pyjwt(
        "RS256",
        &keys.file("rsa1.pem"),
        &json!({"sub": "mallory", "exp": now + 600}),
        Some("k1"),
    );
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        evil.split('.').nth(1).expect("payload"),
        parts[2]
    );
    let wrong_key = pyjwt("RS256", &keys.file("rsa2.pem"), &claims, Some("k1"));
    for token in [&swapped, &wrong_key] {
        let response = upgrade_with_token(proxy.client, token);
        assert_eq!(status_of(&response), 401, "{response}");
        assert!(response.contains("bad token signature"), "{response}");
    }
    let hs = pyjwt("HS256", SECRET, &claims, None);
    assert_eq!(
        status_of(&upgrade_with_token(proxy.client, &hs)),
        401,
        "no --jwt-secret: HS256 refused"
    );

    // Rotation: the provider adds k2. Its first token is refused (unknown kid) and triggers a
    // refresh; within the refresh gap (5 s) a retry is accepted.
    let k2 = format!("k2={}", keys.file("rsa2.pub"));
    jwt_tool(&["jwks", &jwks, &k1, &e1, &k2]);
    let new = pyjwt("RS256", &keys.file("rsa2.pem"), &claims, Some("k2"));
    let first = upgrade_with_token(proxy.client, &new);
    assert_eq!(status_of(&first), 401, "{first}");
    assert!(first.contains("unknown key id"), "{first}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if status_of(&upgrade_with_token(proxy.client, &new)) == 101 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "k2 never accepted; log:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        status_of(&upgrade_with_token(proxy.client, &rs)),
        101,
        "k1 still served"
    );

    // A burst of made-up kids right after a refresh: all refused, and one fetch for them all,
    // MIN_REFRESH_GAP (5 s) after the last.
    let kids: Vec<String> = (0..20).map(|i| format!("made-up-{i}")).collect();
    let claims = claims.to_string();
    let burst = jwt_tool(&[
        "mint",
        "RS256",
        &keys.file("rsa1.pem"),
        &claims,
        &kids.join(","),
    ]);
    let before = refreshes(&proxy);
    for token in burst.lines() {
        assert_eq!(status_of(&upgrade_with_token(proxy.client, token)), 401);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while refreshes(&proxy) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(refreshes(&proxy), before + 1, "log:\n{}", proxy.log());
    // Every fetch is counted: the startup one and each refresh.
    let ok = proxy.metric_sum(&["hermod_jwks_fetches_total", "result=\"ok\""]);
    assert_eq!(ok, Some((before + 2) as f64));
    let failed = proxy.metric_sum(&["hermod_jwks_fetches_total", "result=\"failed\""]);
    assert_eq!(failed, Some(0.0));
}

#[test]
fn an_unreachable_jwks_at_start_refuses_tokens_but_serves() {
    let keys = key_pairs("jwks-down");
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let proxy = Proxy::spawn(&["--jwks-url", &url], true);
    assert!(proxy.log().contains("JWKS fetch failed"), "{}", proxy.log());
    let now = now_unix();
    let token = pyjwt(
        "RS256",
        &keys.file("rsa1.pem"),
        &json!({"sub": "a", "exp": now + 60}),
        Some("k1"),
    );
    let response = upgrade_with_token(proxy.client, &token);
    assert_eq!(status_of(&response), 401, "{response}");
    // Unknown to the empty set: the kind of refusal that asks the refresher for a fetch.
    assert!(response.contains("unknown key id"), "{response}");
    let failed = proxy.metric_sum(&["hermod_jwks_fetches_total", "result=\"failed\""]);
    assert!(failed >= Some(1.0), "{failed:?}");
}
