//! Token verification against a real `hermod-proxy` (docs/protocol.md, "Tokens"): the claim
//! rules refuse with 401 and say why; short HS256 secrets stop the gateway (exit 2); RS256 and
//! ES256 tokens minted by PyJWT verify with a public key file; `--allowed-origins` answers 403.

mod common;

use std::process::Command;

use common::pyjwt::{key_pairs, pyjwt, raw_upgrade, status_of, upgrade_with_token};
use common::{now_unix, Proxy, SECRET};
use hermod_core::jwt::{self, Claims, Registered};
use serde_json::json;

/// A token of `claims` and `registered` claims, HS256 with the harness's secret.
fn hs256(exp: u64, registered: Registered) -> String {
    jwt::mint_registered(SECRET.as_bytes(), &Claims::new("alice", exp), &registered)
}

#[test]
fn claim_rules_refuse_with_401_and_say_why() {
    let args = [
        "--jwt-audience",
        "chat",
        "--jwt-issuer",
        "hermod-test",
        "--jwt-max-lifetime",
        "1h",
    ];
    let proxy = Proxy::start_jwt(&args);
    let now = now_unix();
    let good = || Registered {
        aud: Some("chat".into()),
        iss: Some("hermod-test".into()),
        iat: Some(now),
        ..Registered::default()
    };
    let cases = [
        ("expired", hs256(now - 5, good()), "token expired"),
        (
            "future nbf",
            hs256(
                now + 600,
                Registered {
                    nbf: Some(now + 300),
                    ..good()
                },
            ),
            "token not valid yet (nbf)",
        ),
        (
            "future iat",
            hs256(
                now + 600,
                Registered {
                    iat: Some(now + 300),
                    ..good()
                },
            ),
            "token issued in the future (iat)",
        ),
        (
            "wrong aud",
            hs256(
                now + 600,
                Registered {
                    aud: Some("billing".into()),
                    ..good()
                },
            ),
            "token audience (aud) does not match",
        ),
        (
            "wrong iss",
            hs256(
                now + 600,
                Registered {
                    iss: Some("evil".into()),
                    ..good()
                },
            ),
            "token issuer (iss) does not match",
        ),
        (
            "no aud",
            hs256(
                now + 600,
                Registered {
                    aud: None,
                    ..good()
                },
            ),
            "token has no `aud` claim",
        ),
        (
            "absurd exp",
            hs256(u64::MAX, good()),
            "token `exp` is not a plausible date",
        ),
        (
            "too long",
            hs256(now + 7200, good()),
            "token lifetime longer than the maximum of 3600 s",
        ),
        (
            "too long since iat",
            hs256(
                now + 600,
                Registered {
                    iat: Some(now - 3600),
                    ..good()
                },
            ),
            "token lifetime longer than the maximum of 3600 s",
        ),
    ];
    for (what, token, reason) in cases {
        let response = upgrade_with_token(proxy.client, &token);
        assert_eq!(status_of(&response), 401, "{what}: {response}");
        assert!(
            response.contains(&format!("bad token: {reason}")),
            "{what}: {response}"
        );
    }
    // A float exp of 1e300 from PyJWT, too.
    let absurd = pyjwt(
        "HS256",
        SECRET,
        &json!({"sub": "a", "exp": 1e300, "aud": "chat", "iss": "hermod-test"}),
        None,
    );
    assert_eq!(status_of(&upgrade_with_token(proxy.client, &absurd)), 401);
    // Within every rule (nbf and iat inside the 60 s leeway): 101.
    let skewed = Registered {
        nbf: Some(now + 30),
        iat: Some(now + 30),
        ..good()
    };
    for token in [hs256(now + 600, good()), hs256(now + 600, skewed)] {
        assert_eq!(
            status_of(&upgrade_with_token(proxy.client, &token)),
            101,
            "{}",
            proxy.log()
        );
    }
    // PyJWT's HS256 token with aud as an array.
    let claims = json!({"sub": "py", "exp": now + 600, "iat": now, "aud": ["x", "chat"], "iss": "hermod-test"});
    let token = pyjwt("HS256", SECRET, &claims, None);
    assert_eq!(
        status_of(&upgrade_with_token(proxy.client, &token)),
        101,
        "{}",
        proxy.log()
    );
}

#[test]
fn short_secrets_stop_the_gateway_with_exit_2() {
    let short = "x".repeat(31);
    for (args, env) in [
        (vec!["--jwt-secret", short.as_str()], None),
        (vec![], Some(short.as_str())),
        (
            vec!["token", "--user", "a", "--jwt-secret", short.as_str()],
            None,
        ),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hermod-proxy"));
        cmd.args(&args)
            .args(if args.is_empty() {
                &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"][..]
            } else {
                &[]
            })
            .env_remove("HERMOD_JWT_SECRET");
        if let Some(secret) = env {
            cmd.env("HERMOD_JWT_SECRET", secret);
        }
        let out = cmd.output().expect("run hermod-proxy");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: --jwt-secret"), "{err}");
        assert!(err.contains("must be at least 32 bytes, got 31"), "{err}");
    }
}

#[test]
fn pyjwt_rs256_and_es256_tokens_verify_with_key_files() {
    let keys = key_pairs("keyfile");
    let now = now_unix();
    let claims = |sub: &str| json!({"sub": sub, "exp": now + 600, "iat": now});
    for (alg, name, other) in [("RS256", "rsa1", "rsa2"), ("ES256", "ec1", "ec2")] {
        let public = keys.file(&format!("{name}.pub"));
        // With --jwt-secret too: HS256 tokens go to the secret, the others to the key.
        let proxy = Proxy::start_jwt(&["--jwt-public-key", &public]);
        let private = keys.file(&format!("{name}.pem"));
        let good = pyjwt(alg, &private, &claims("alice"), None);
        assert_eq!(
            status_of(&upgrade_with_token(proxy.client, &good)),
            101,
            "{alg}: {}",
            proxy.log()
        );
        let with_kid = pyjwt(alg, &private, &claims("alice"), Some("any"));
        assert_eq!(
            status_of(&upgrade_with_token(proxy.client, &with_kid)),
            101,
            "a key file serves any kid"
        );
        let hs = pyjwt("HS256", SECRET, &claims("bob"), None);
        assert_eq!(
            status_of(&upgrade_with_token(proxy.client, &hs)),
            101,
            "HS256 beside {alg}"
        );

        // Tampered: another user's payload under alice's signature; a flipped signature byte;
        // a token signed by another key.
        let evil = pyjwt(alg, &private, &claims("mallory"), None);
        let (g, e): (Vec<&str>, Vec<&str>) = (good.split('.').collect(), evil.split('.').collect());
        let swapped = format!("{}.{}.{}", g[0], e[1], g[2]);
        let mut sig = g[2].to_owned().into_bytes();
        sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
        let flipped = format!(
            "{}.{}.{}",
            g[0],
            g[1],
            String::from_utf8(sig).expect("ascii")
        );
        let foreign = pyjwt(
            alg,
            &keys.file(&format!("{other}.pem")),
            &claims("alice"),
            None,
        );
        for (what, token) in [
            ("swapped", swapped),
            ("flipped", flipped),
            ("other key", foreign),
        ] {
            let response = upgrade_with_token(proxy.client, &token);
            assert_eq!(status_of(&response), 401, "{alg} {what}: {response}");
            assert!(
                response.contains("bad token signature"),
                "{alg} {what}: {response}"
            );
        }
    }
}

#[test]
fn the_public_key_never_serves_as_an_hmac_secret() {
    let keys = key_pairs("confusion");
    let public = keys.file("rsa1.pub");
    let proxy = Proxy::spawn(&["--jwt-public-key", &public], true);
    let pem = std::fs::read(&public).expect("public key");
    // HS256 over the token with the PEM text as the HMAC key: the classic algorithm confusion.
    let forged = jwt::mint(&pem, "admin", now_unix() + 600);
    let response = upgrade_with_token(proxy.client, &forged);
    assert_eq!(status_of(&response), 401, "{response}");
    assert!(
        response.contains("unsupported token algorithm"),
        "{response}"
    );
    let now = now_unix();
    let good = pyjwt(
        "RS256",
        &keys.file("rsa1.pem"),
        &json!({"sub": "a", "exp": now + 60}),
        None,
    );
    assert_eq!(
        status_of(&upgrade_with_token(proxy.client, &good)),
        101,
        "{}",
        proxy.log()
    );
}

#[test]
fn origins_outside_the_allow_list_get_403() {
    let proxy = Proxy::start_jwt(&[
        "--allowed-origins",
        "https://app.example.com,https://*.example.org",
    ]);
    let token = proxy.token("alice");
    let target = format!("/ws?token={token}");
    for (origin, status) in [
        (Some("https://app.example.com"), 101),
        (Some("https://chat.example.org"), 101),
        (Some("https://evil.example.net"), 403),
        (Some("null"), 403),
        (None, 101),
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        let response = raw_upgrade(proxy.client, &target, &headers);
        assert_eq!(
            status_of(&response),
            status,
            "Origin {origin:?}: {response}"
        );
        if status == 403 {
            assert!(response.contains("origin not allowed"), "{response}");
        }
    }
    // Counted when the refused connection is done with, which may trail the answer a little.
    let series = ["hermod_handshakes_rejected_total", "status=\"403\""];
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while proxy.metric_sum(&series) != Some(2.0) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(proxy.metric_sum(&series), Some(2.0));
}

#[test]
fn the_token_subcommand_mints_the_new_claims() {
    let out = Command::new(env!("CARGO_BIN_EXE_hermod-proxy"))
        .args([
            "token",
            "--user",
            "alice",
            "--ttl",
            "10m",
            "--rooms",
            "team.42,team.42.*",
        ])
        .args([
            "--publish",
            "team.42",
            "--aud",
            "chat",
            "--iss",
            "hermod-test",
        ])
        .args(["--jwt-secret", SECRET])
        .output()
        .expect("run hermod-proxy token");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).expect("utf-8");
    let token = token.trim();
    let proxy = Proxy::start_jwt(&["--jwt-audience", "chat", "--jwt-issuer", "hermod-test"]);
    assert_eq!(
        status_of(&upgrade_with_token(proxy.client, token)),
        101,
        "{}",
        proxy.log()
    );
    let other = Proxy::start_jwt(&["--jwt-audience", "billing"]);
    assert_eq!(status_of(&upgrade_with_token(other.client, token)), 401);
    let claims = jwt::verify(SECRET.as_bytes(), token, now_unix()).expect("verifies");
    assert_eq!(claims.rooms, ["team.42", "team.42.*"]);
    assert_eq!(claims.publish, ["team.42"]);
    assert!(claims.exp > now_unix() + 500 && claims.exp <= now_unix() + 600);
}
