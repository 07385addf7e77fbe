//! The handshake (docs/protocol.md, "Connecting"): 401 before any upgrade for bad tokens, 400 for
//! bad names, 404 for unknown paths; good tokens in the query or the Authorization header.

mod common;

use common::{engine_tests, Engine};

use common::{handshake_status, handshake_status_with, mint, now_unix, Proxy, SECRET};

fn ws(proxy: &Proxy, query: &str) -> String {
    format!("ws://{}/ws{query}", proxy.client)
}

fn refused_tokens_get_401_without_upgrade(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let exp = now_unix() + 3600;
    let cases = [
        ("missing", String::new()),
        ("empty", "?token=".to_owned()),
        ("malformed", "?token=not-a-jwt".to_owned()),
        ("two parts", "?token=abc.def".to_owned()),
        (
            "bad signature",
            format!("?token={}", mint("some-other-secret", "alice", exp)),
        ),
        (
            "expired",
            format!("?token={}", mint(SECRET, "alice", now_unix() - 120)),
        ),
        ("tampered", {
            // Swap the payload of a valid token for another user's: the signature no longer fits.
            let good = mint(SECRET, "alice", exp);
            let evil = mint(SECRET, "mallory", exp);
            let g: Vec<&str> = good.split('.').collect();
            let e: Vec<&str> = evil.split('.').collect();
            format!("?token={}.{}.{}", g[0], e[1], g[2])
        }),
    ];
    for (what, query) in cases {
        assert_eq!(
            handshake_status(&ws(&proxy, &query), proxy.client),
            Err("401".to_owned()),
            "{what} token; proxy log:\n{}",
            proxy.log()
        );
    }
    let bad = mint("some-other-secret", "alice", exp);
    assert_eq!(
        handshake_status_with(
            &ws(&proxy, ""),
            proxy.client,
            &[("Authorization", &format!("Bearer {bad}"))]
        ),
        Err("401".to_owned()),
        "badly signed bearer token"
    );
    // The proxy still serves good clients after all that.
    let mut alice = proxy.connect("alice");
    let _ = alice.send_to("bob", "after-401s", serde_json::json!(1));
}

fn good_token_in_query_or_bearer_header(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let token = proxy.token("alice");
    assert_eq!(
        handshake_status(&ws(&proxy, &format!("?token={token}")), proxy.client),
        Ok(())
    );
    assert_eq!(
        handshake_status_with(
            &ws(&proxy, "?device=tab"),
            proxy.client,
            &[("Authorization", &format!("Bearer {token}"))]
        ),
        Ok(())
    );
    // The default device is `default`; the welcome names user and device.
    let c = proxy.connect("alice");
    assert_eq!(c.welcome["device"], "default");
}

fn bad_names_get_400(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let token = proxy.token("alice");
    let long = "d".repeat(129);
    for device in ["a%20b", "a%2Fb", "caf%C3%A9", long.as_str()] {
        assert_eq!(
            handshake_status(
                &ws(&proxy, &format!("?token={token}&device={device}")),
                proxy.client
            ),
            Err("400".to_owned()),
            "device {device:?}; proxy log:\n{}",
            proxy.log()
        );
    }
    let ok = "d".repeat(128);
    assert_eq!(
        handshake_status(
            &ws(&proxy, &format!("?token={token}&device={ok}")),
            proxy.client
        ),
        Ok(()),
        "128 bytes is allowed"
    );

    let open = Proxy::start_open_on(engine, &[]);
    for user in ["bad%20name", "a!b", long.as_str()] {
        assert_eq!(
            handshake_status(&ws(&open, &format!("?user={user}")), open.client),
            Err("400".to_owned()),
            "user {user:?} with --auth none"
        );
    }
    let mut c = open.connect("user_1.x:y@z-w");
    let _ = c.send_to("someone", "c", serde_json::json!(null));
}

fn unknown_path_gets_404(engine: Engine) {
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let token = proxy.token("alice");
    for path in ["/", "/nope", "/wsx", "/echo"] {
        assert_eq!(
            handshake_status(
                &format!("ws://{}{path}?token={token}", proxy.client),
                proxy.client
            ),
            Err("404".to_owned()),
            "path {path} (no --echo-path given)"
        );
    }
}

fn token_subcommand_mints_an_accepted_token(engine: Engine) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hermod-proxy"))
        .args(["token", "--user", "alice", "--jwt-secret", SECRET])
        .output()
        .expect("run hermod-proxy token");
    assert!(out.status.success(), "token subcommand: {out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 token");
    let token = stdout.trim();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {stdout:?}");
    let proxy = Proxy::start_jwt_on(engine, &[]);
    let url = format!("ws://{}/ws?token={token}", proxy.client);
    assert_eq!(handshake_status(&url, proxy.client), Ok(()));
}

engine_tests!(
    refused_tokens_get_401_without_upgrade,
    good_token_in_query_or_bearer_header,
    bad_names_get_400,
    unknown_path_gets_404,
    token_subcommand_mints_an_accepted_token,
);
