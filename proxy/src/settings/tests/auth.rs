//! The authentication settings (`settings/auth.rs`): secret length, key sources, claim rules,
//! allowed origins, and the claims of `hermod-proxy token`.

use std::time::Duration;

use hermod_core::jwt;

use super::{err, run, secret_of, token, SECRET};
use crate::settings::AuthMode;

const RSA_PUB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/src/jwt/testdata/rsa.pub"
);

fn verifier(auth: &AuthMode) -> &crate::auth::TokenVerifier {
    match auth {
        AuthMode::Tokens(v) => v,
        other => panic!("expected a token verifier, got {other:?}"),
    }
}

#[test]
fn short_secrets_are_refused_from_every_source() {
    let short = "x".repeat(31);
    let expected = "must be at least 32 bytes, got 31";
    assert!(err(&["--jwt-secret", &short], &[], None).contains(expected));
    let env = err(&[], &[("HERMOD_JWT_SECRET", &short)], None);
    assert!(
        env.contains("HERMOD_JWT_SECRET") && env.contains(expected),
        "{env}"
    );
    let file = err(&[], &[], Some(&format!("jwt_secret = \"{short}\"")));
    assert!(file.contains(expected), "{file}");
    assert!(token(&["--user=a", "--jwt-secret", &short], &[], None)
        .unwrap_err()
        .contains(expected));
    let ok = "x".repeat(32);
    assert_eq!(
        secret_of(
            &run(&["--jwt-secret", &ok], &[], None)
                .unwrap()
                .settings
                .auth
        ),
        Some(ok.into_bytes())
    );
    // The server's generated secret is long enough.
    assert_eq!(crate::server::random_secret().len(), 64);
}

#[test]
fn claim_rules_resolve() {
    let r = run(
        &["--jwt-max-lifetime=1h", "--jwt-audience=chat"],
        &[("HERMOD_JWT_ISSUER", "https://id.example")],
        None,
    )
    .unwrap();
    let rules = verifier(&r.settings.auth).rules();
    assert_eq!(rules.max_lifetime_secs, 3600);
    assert_eq!(rules.audience.as_deref(), Some("chat"));
    assert_eq!(rules.issuer.as_deref(), Some("https://id.example"));
    let d = run(&[], &[], None).unwrap();
    assert_eq!(verifier(&d.settings.auth).rules(), &jwt::Rules::default());
    assert_eq!(jwt::Rules::default().max_lifetime_secs, 24 * 3600);
    assert!(err(&["--jwt-max-lifetime=0"], &[], None).starts_with("--jwt-max-lifetime: "));
    assert!(err(&["--jwt-max-lifetime=400d"], &[], None).starts_with("--jwt-max-lifetime: "));
    assert!(err(&["--jwt-audience="], &[], None).starts_with("--jwt-audience: "));
}

#[test]
fn public_key_sources() {
    // A key file alone: no HS256 secret is generated, HS256 tokens are refused.
    let r = run(&["--jwt-public-key", RSA_PUB], &[], None).unwrap();
    assert_eq!(r.generated_secret, None);
    let v = verifier(&r.settings.auth);
    assert_eq!(v.secret(), None);
    let hs = jwt::mint(SECRET.as_bytes(), "a", 4_000_000_000);
    assert_eq!(
        v.verify(&hs, 3_999_999_000),
        Err(jwt::JwtError::UnsupportedAlgorithm)
    );
    // Both: each algorithm to its own key.
    let r = run(
        &["--jwt-public-key", RSA_PUB, "--jwt-secret", SECRET],
        &[],
        None,
    )
    .unwrap();
    assert!(verifier(&r.settings.auth)
        .verify(&hs, 3_999_999_000)
        .is_ok());

    let bad = err(&["--jwt-public-key", "/nonexistent.pem"], &[], None);
    assert!(bad.starts_with("--jwt-public-key: cannot read"), "{bad}");
    let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    assert!(err(&["--jwt-public-key", not_pem], &[], None).contains("not a PEM public key"));

    let r = run(&["--jwks-url", "http://127.0.0.1:1/jwks.json"], &[], None).unwrap();
    let source = verifier(&r.settings.auth).jwks().expect("a JWKS source");
    assert_eq!(source.url().to_string(), "http://127.0.0.1:1/jwks.json");
    assert!(
        source.current().is_empty(),
        "nothing fetched while resolving"
    );
    assert!(err(&["--jwks-url", "https://idp/jwks"], &[], None).contains("TLS"));
    let both = err(
        &["--jwks-url", "http://a/j", "--jwt-public-key", RSA_PUB],
        &[],
        None,
    );
    assert!(both.contains("not both"), "{both}");
}

#[test]
fn allowed_origins_resolve() {
    let r = run(
        &["--allowed-origins", "https://A.example, http://*.b"],
        &[],
        None,
    )
    .unwrap();
    assert_eq!(
        r.settings.allowed_origins,
        ["https://a.example", "http://*.b"]
    );
    let r = run(&[], &[], Some("allowed_origins = \"*\"\nauth = \"none\"")).unwrap();
    assert_eq!(r.settings.allowed_origins, ["*"]);
    assert!(run(&[], &[], None)
        .unwrap()
        .settings
        .allowed_origins
        .is_empty());
    assert!(
        err(&["--allowed-origins", "example.com"], &[], None).starts_with("--allowed-origins: ")
    );
}

#[test]
fn token_subcommand_claims() {
    let t = token(
        &[
            "--user=alice",
            "--ttl=10m",
            "--rooms=team.42,team.42.*",
            "--publish=team.42",
            "--aud=chat",
            "--iss=hermod",
            "--jwt-secret",
            SECRET,
        ],
        &[],
        None,
    )
    .unwrap();
    assert_eq!(t.ttl, Duration::from_secs(600));
    let minted = t.mint(1_000_000);
    let rules = jwt::Rules {
        audience: Some("chat".into()),
        issuer: Some("hermod".into()),
        ..jwt::Rules::default()
    };
    let keys = jwt::Keys {
        secret: Some(SECRET.as_bytes()),
        public: None,
    };
    let claims = jwt::verify_with(keys, &rules, &minted, 1_000_000).unwrap();
    assert_eq!(claims.exp, 1_000_600);
    assert_eq!(claims.rooms, ["team.42", "team.42.*"]);
    assert_eq!(claims.publish, ["team.42"]);
    // iat is now: issued in the future for a clock a leeway behind.
    assert_eq!(
        jwt::verify_with(keys, &rules, &minted, 1_000_000 - jwt::LEEWAY_SECS - 1),
        Err(jwt::JwtError::IssuedInFuture)
    );
    assert!(
        token(&["--user=a", "--aud=", "--jwt-secret", SECRET], &[], None)
            .unwrap_err()
            .starts_with("--aud: ")
    );
}
