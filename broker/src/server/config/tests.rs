//! Unit tests of settings resolution: precedence and one-line errors, no process environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use hermod_core::redis::Target;

use super::*;

fn cli(args: &[&str]) -> Cli {
    let mut full = vec!["hermod-broker"];
    full.extend_from_slice(args);
    parse_cli(full).expect("command line parses")
}

fn run(args: &[&str], env: &[(&str, &str)], text: Option<&str>) -> Result<Settings, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let lookup = |k: &str| env.get(k).cloned();
    let file = text.map(|t| ConfigFile::parse("b.toml", t).expect("file parses"));
    resolve(&cli(args), &lookup, file.as_ref(), || "host-1".to_owned())
}

fn err(args: &[&str], env: &[(&str, &str)], text: Option<&str>) -> String {
    run(args, env, text).expect_err("must fail").to_string()
}

const REDIS: &[&str] = &["--redis", "redis://127.0.0.1:6379"];

#[test]
fn defaults_with_redis() {
    let s = run(REDIS, &[], None).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:7070");
    assert_eq!(s.admin_listen, None);
    assert_eq!(s.advertise, None);
    assert_eq!(s.node_id, "host-1");
    assert_eq!(s.registry_ttl, Duration::from_secs(3));
    assert_eq!(s.link_timeout, Duration::from_secs(5));
    assert_eq!(s.drain_timeout, Duration::from_secs(10));
    assert_eq!(s.durability, Durability::Leader);
    assert_eq!(s.limits, Limits::default());
    assert_eq!(
        s.redis.target,
        Target::Direct {
            addr: "127.0.0.1:6379".into()
        }
    );
}

#[test]
fn flag_beats_env_beats_file() {
    let file = "node_id = \"from-file\"\nregistry_ttl = \"9s\"\ndrain_timeout = 7\nredis = \"redis://127.0.0.1:1\"";
    let s = run(
        &["--node-id", "from-flag"],
        &[
            ("HERMOD_NODE_ID", "from-env"),
            ("HERMOD_REGISTRY_TTL", "500ms"),
        ],
        Some(file),
    )
    .unwrap();
    assert_eq!(s.node_id, "from-flag");
    assert_eq!(s.registry_ttl, Duration::from_millis(500));
    assert_eq!(s.drain_timeout, Duration::from_secs(7));
}

#[test]
fn sentinel_settings() {
    let s = run(
        &[
            "--sentinel",
            "127.0.0.1:26379,127.0.0.1:26380",
            "--sentinel-master",
            "m",
        ],
        &[],
        None,
    )
    .unwrap();
    assert!(matches!(s.redis.target, Target::Sentinel { ref master, .. } if master == "m"));
}

#[test]
fn errors_are_one_line_and_name_the_setting() {
    assert!(err(&[], &[], None).starts_with("--redis: required"));
    assert_eq!(
        err(REDIS, &[("HERMOD_REGISTRY_TTL", "10x")], None),
        "--registry-ttl (from HERMOD_REGISTRY_TTL): `10x` is not a duration (integer seconds, or e.g. 500ms, 30s, 10m, 1h, 7d)"
    );
    assert!(
        err(&["--node-id", "a@b", "--redis", "redis://x:1"], &[], None).starts_with("--node-id: ")
    );
    assert!(err(&["--sentinel", "h:1"], &[], None).starts_with("--sentinel-master: required"));
    assert!(err(
        &["--advertise", "nope", "--redis", "redis://x:1"],
        &[],
        None
    )
    .starts_with("--advertise: "));
    assert!(err(&["--listen", "x", "--redis", "redis://x:1"], &[], None).starts_with("--listen: "));
    assert!(err(
        &["--redis-connections", "1", "--redis", "redis://x:1"],
        &[],
        None
    )
    .starts_with("--redis-connections: "));
    for e in [
        err(&[], &[], None),
        err(&["--log", "[", "--redis", "redis://x:1"], &[], None),
    ] {
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let bad = ConfigFile::parse("b.toml", "nope = 1")
        .unwrap_err()
        .to_string();
    assert_eq!(bad, "--config (from b.toml): unknown key `nope`");
}

#[test]
fn link_secret_and_buffer_budget() {
    let s = run(REDIS, &[], None).unwrap();
    assert!(s.link_secret.is_none());
    assert_eq!(s.link_buffer_budget, 512 << 20);
    // Beyond loopback a secret is required: one line, exit-2 class (a setting error).
    let mut args = REDIS.to_vec();
    args.extend_from_slice(&["--listen", "0.0.0.0:7070"]);
    let e = err(&args, &[], None);
    assert!(
        e.starts_with("--link-secret: required when --listen (0.0.0.0:7070)"),
        "{e}"
    );
    // From the environment or the file; never shown, not even in Debug.
    let secret = "file-or-env-secret-0123456789";
    let env = [("HERMOD_LINK_SECRET", secret)];
    let s = run(&args, &env, None).unwrap();
    assert!(s
        .link_secret
        .as_ref()
        .unwrap()
        .verify(b"hermod", secret.as_bytes()));
    assert!(!format!("{s:?}").contains(secret));
    let file = format!("link_secret = \"{secret}\"\nlink_buffer_budget = 268435456\n");
    let s = run(&args, &[], Some(&file)).unwrap();
    assert!(s.link_secret.is_some());
    assert_eq!(s.link_buffer_budget, 256 << 20);
    let e = err(
        &[REDIS, &["--link-buffer-budget", "1000"][..]].concat(),
        &[],
        None,
    );
    assert!(e.starts_with("--link-buffer-budget: "), "{e}");
    let e = err(
        &[REDIS, &["--link-secret", "short"][..]].concat(),
        &[],
        None,
    );
    assert!(
        e.starts_with("--link-secret: ") && !e.contains("short"),
        "{e}"
    );
}
