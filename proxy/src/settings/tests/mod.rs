//! Unit tests of settings resolution (`resolve.rs`, `storage.rs`): precedence and errors, no
//! process env. Routes, the per-address limits and the memory budget: `routes.rs`; namespaces
//! and `--direct-messages`: `permissions.rs`; `--webhook-*`: `webhooks.rs`.

use std::collections::HashMap;
use std::time::Duration;

use super::resolve::*;
use super::{AuthMode, Durability, Settings, Storage};
use hermod_core::redis::Target;
use hermod_core::settings::duration;

mod auth;
mod permissions;
mod routes;
mod webhooks;

fn cli(args: &[&str]) -> Cli {
    let mut full = vec!["hermod-proxy"];
    full.extend_from_slice(args);
    parse_cli(full).expect("command line parses")
}

fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn file(text: &str) -> ConfigFile {
    ConfigFile::parse("test.toml", text, &file_keys()).expect("config file parses")
}

/// What the secret maker of [`run`] yields.
const GENERATED: &str = "generated-0123456789abcdef-0123456789abcdef";
/// A secret long enough (32 bytes).
const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cr";

/// Resolves with the given flags, environment and file; the secret maker yields [`GENERATED`].
pub(super) fn run(
    args: &[&str],
    env: &[(&str, &str)],
    text: Option<&str>,
) -> Result<Resolved, ConfigError> {
    let env = env_of(env);
    let lookup = |k: &str| env.get(k).cloned();
    let file = text.map(file);
    resolve(&cli(args).run, &lookup, file.as_ref(), || {
        GENERATED.to_owned()
    })
}

/// The HS256 secret tokens are checked with (`None` without one, or under `--auth none`).
fn secret_of(auth: &AuthMode) -> Option<Vec<u8>> {
    match auth {
        AuthMode::Tokens(v) => v.secret().map(<[u8]>::to_vec),
        AuthMode::None => None,
    }
}

pub(super) fn err(args: &[&str], env: &[(&str, &str)], text: Option<&str>) -> String {
    run(args, env, text).expect_err("must fail").to_string()
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let r = run(&[], &[], None).unwrap();
    let d = Settings::defaults();
    assert_eq!(r.settings.listen, d.listen);
    assert_eq!(r.settings.admin_listen, d.admin_listen);
    assert_eq!(r.settings.workers, d.workers);
    assert_eq!(r.settings.idle_timeout, d.idle_timeout);
    assert_eq!(r.settings.broker, d.broker);
    assert_eq!(r.log, "info");
    // auth defaults to jwt; without a secret one is generated and reported.
    assert_eq!(
        secret_of(&r.settings.auth),
        Some(GENERATED.as_bytes().to_vec())
    );
    assert_eq!(r.generated_secret.as_deref(), Some(GENERATED));
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let text = "workers = 3\nmax_connections = 30\nroom_max_len = 300\n";
    let env = [("HERMOD_WORKERS", "2"), ("HERMOD_MAX_CONNECTIONS", "20")];
    let r = run(&["--workers", "1"], &env, Some(text)).unwrap();
    assert_eq!(r.settings.workers, 1, "flag wins");
    assert_eq!(r.settings.max_connections, 20, "env beats file");
    assert_eq!(r.settings.broker.room_max_len, 300, "file beats default");
    assert_eq!(
        r.settings.broker.inbox_max_len,
        Settings::defaults().broker.inbox_max_len,
        "default"
    );
}

#[test]
fn every_setting_is_read_from_flags() {
    let args = [
        "--listen=127.0.0.1:0",
        "--admin-listen=127.0.0.1:0",
        "--workers=4",
        "--auth=none",
        "--echo-path=/echo",
        "--max-message-size=1024",
        "--idle-timeout=2s",
        "--ping-interval=500ms",
        "--handshake-timeout=3",
        "--max-outbound-bytes=4096",
        "--session-rate=50",
        "--session-burst=7",
        "--session-byte-rate=0",
        "--max-connections=10",
        "--request-timeout=250ms",
        "--shutdown-grace=0",
        "--inbox-max-len=5",
        "--inbox-max-age=7d",
        "--room-max-len=6",
        "--room-max-age=1h",
        "--dedupe-window=10m",
        "--log=hermod_proxy=debug",
    ];
    let r = run(&args, &[], None).unwrap();
    let s = &r.settings;
    assert_eq!(s.listen.port(), 0);
    assert_eq!(s.workers, 4);
    assert_eq!(s.auth, AuthMode::None);
    assert_eq!(r.generated_secret, None);
    assert_eq!(s.echo_path.as_deref(), Some("/echo"));
    assert_eq!(s.max_message_size, 1024);
    assert_eq!(s.idle_timeout, Duration::from_secs(2));
    assert_eq!(s.ping_interval, Duration::from_millis(500));
    assert_eq!(s.handshake_timeout, Duration::from_secs(3));
    assert_eq!(s.max_outbound_bytes, 4096);
    let rate = s.rate;
    assert_eq!(
        (rate.messages_per_sec, rate.burst, rate.bytes_per_sec),
        (50, 7, 0)
    );
    assert_eq!(s.max_connections, 10);
    assert_eq!(s.request_timeout, Duration::from_millis(250));
    assert_eq!(s.shutdown_grace, Duration::ZERO);
    assert_eq!(s.broker.inbox_max_len, 5);
    assert_eq!(s.broker.inbox_max_age, Duration::from_secs(7 * 86400));
    assert_eq!(s.broker.room_max_len, 6);
    assert_eq!(s.broker.room_max_age, Duration::from_secs(3600));
    assert_eq!(s.broker.dedupe_window, Duration::from_secs(600));
    assert_eq!(r.log, "hermod_proxy=debug");
}

#[test]
fn env_and_file_set_the_secret_and_auth() {
    let r = run(&[], &[("HERMOD_JWT_SECRET", SECRET)], None).unwrap();
    assert_eq!(
        secret_of(&r.settings.auth),
        Some(SECRET.as_bytes().to_vec())
    );
    assert_eq!(r.generated_secret, None);
    let r = run(
        &[],
        &[],
        Some("auth = \"none\"\nadmin_listen = \"127.0.0.1:9999\""),
    )
    .unwrap();
    assert_eq!(r.settings.auth, AuthMode::None);
    assert_eq!(r.settings.admin_listen.port(), 9999);
    // An empty environment variable counts as unset.
    let r = run(&[], &[("HERMOD_WORKERS", "")], Some("workers = 7")).unwrap();
    assert_eq!(r.settings.workers, 7);
}

#[test]
fn file_durations_take_integers_and_units() {
    let r = run(
        &[],
        &[],
        Some("idle_timeout = 90\nping_interval = \"1500ms\""),
    )
    .unwrap();
    assert_eq!(r.settings.idle_timeout, Duration::from_secs(90));
    assert_eq!(r.settings.ping_interval, Duration::from_millis(1500));
}

#[test]
fn bad_values_name_the_setting_and_source() {
    assert_eq!(
        err(&["--workers", "0"], &[], None),
        "--workers: must be an integer between 1 and 256"
    );
    assert_eq!(
        err(&[], &[("HERMOD_WORKERS", "many")], None),
        "--workers (from HERMOD_WORKERS): must be an integer between 1 and 256"
    );
    assert_eq!(
        err(&[], &[], Some("workers = 999")),
        "--workers (from test.toml): must be an integer between 1 and 256"
    );
    assert!(err(&["--listen", "localhost"], &[], None).starts_with("--listen: "));
    assert!(err(&["--auth", "basic"], &[], None).starts_with("--auth: "));
    assert!(err(&["--idle-timeout", "5x"], &[], None).starts_with("--idle-timeout: "));
    assert!(err(&["--idle-timeout", "0"], &[], None).starts_with("--idle-timeout: "));
    assert!(err(&["--echo-path", "echo"], &[], None).starts_with("--echo-path: "));
    assert!(err(&["--echo-path", "/ws"], &[], None).starts_with("--echo-path: "));
    assert!(err(&["--jwt-secret", ""], &[], None).starts_with("--jwt-secret: "));
    assert!(err(&["--log", "a=b=c"], &[], None).starts_with("--log: "));
    assert!(err(&["--ping-interval", "90"], &[], None).starts_with("--ping-interval: "));
    assert!(err(&["--max-message-size=-1"], &[], None).starts_with("--max-message-size: "));
    assert!(err(&[], &[], Some("idle_timeout = 1.5")).starts_with("--idle-timeout (from "));
    let same = ["--listen=127.0.0.1:7000", "--admin-listen=127.0.0.1:7000"];
    assert!(err(&same, &[], None).starts_with("--admin-listen: "));
}

#[test]
fn errors_are_one_line() {
    let e = ConfigFile::parse("f.toml", "workers = \n", SETTING_KEYS).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("--config (from f.toml): line 1"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn unknown_file_keys_are_errors() {
    let e = ConfigFile::parse("f.toml", "brokerz = \"h:1\"\n", SETTING_KEYS).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--config (from f.toml): unknown key `brokerz`"
    );
}

#[test]
fn brokers_and_registry_choose_external_brokers() {
    use crate::settings::Brokers;
    let brokers = |r: Resolved| r.settings.brokers;
    assert_eq!(brokers(run(&[], &[], None).unwrap()), Brokers::Embedded);
    let listed = run(
        &["--brokers", "127.0.0.1:7070, b.example:7071,127.0.0.1:7070"],
        &[],
        None,
    );
    assert_eq!(
        brokers(listed.unwrap()),
        Brokers::Static(vec!["127.0.0.1:7070".into(), "b.example:7071".into()])
    );
    let redis = ["--redis", "redis://127.0.0.1:6379"];
    let flag = run(&[&redis[..], &["--registry"]].concat(), &[], None).unwrap();
    assert_eq!(brokers(flag), Brokers::Registry);
    let env = run(&redis, &[("HERMOD_REGISTRY", "true")], None).unwrap();
    assert_eq!(brokers(env), Brokers::Registry);
    let file = run(&redis, &[], Some("registry = true")).unwrap();
    assert_eq!(brokers(file), Brokers::Registry);
    let off = run(&[&redis[..], &["--registry", "false"]].concat(), &[], None).unwrap();
    assert_eq!(brokers(off), Brokers::Embedded);
}

#[test]
fn broker_settings_errors() {
    let e = err(&["--registry"], &[], None);
    assert!(
        e.starts_with("--registry: needs --redis or --sentinel"),
        "{e}"
    );
    let e = err(
        &[
            "--brokers",
            "127.0.0.1:1",
            "--registry",
            "--redis",
            "redis://h:1",
        ],
        &[],
        None,
    );
    assert!(
        e.starts_with("--registry: cannot be combined with --brokers"),
        "{e}"
    );
    let e = err(
        &["--brokers", "127.0.0.1:1", "--redis", "redis://h:1"],
        &[],
        None,
    );
    assert!(
        e.starts_with("--brokers: cannot be combined with --redis"),
        "{e}"
    );
    for bad in ["", "h", "h:0", "h:x", ":1", "a b:1"] {
        let e = err(&["--brokers", bad], &[], None);
        assert!(e.starts_with("--brokers: `"), "{bad:?}: {e}");
    }
    let e = err(&[], &[("HERMOD_REGISTRY", "maybe")], None);
    assert!(
        e.starts_with("--registry (from HERMOD_REGISTRY): `maybe`"),
        "{e}"
    );
}

#[test]
fn every_key_has_a_flag_and_an_env_note() {
    let cmd = command();
    let longs: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| l.replace('-', "_")))
        .collect();
    for key in SETTING_KEYS {
        assert!(longs.iter().any(|l| l == key), "{key}");
    }
    let help = command().render_long_help().to_string();
    assert!(help.contains("[env: HERMOD_ADMIN_LISTEN]"), "{help}");
    assert!(help.contains("[env: HERMOD_CONFIG]"), "{help}");
}

#[test]
fn config_path_comes_from_flag_then_env() {
    let env = env_of(&[("HERMOD_CONFIG", "/env.toml")]);
    let lookup = |k: &str| env.get(k).cloned();
    assert_eq!(
        config_path(Some("/flag.toml"), &lookup).as_deref(),
        Some("/flag.toml")
    );
    assert_eq!(config_path(None, &lookup).as_deref(), Some("/env.toml"));
    assert_eq!(config_path(None, &|_: &str| None), None);
}

fn token(args: &[&str], env: &[(&str, &str)], text: Option<&str>) -> Result<TokenRequest, String> {
    let mut full = vec!["hermod-proxy", "token"];
    full.extend_from_slice(args);
    let Some(Command::Token(t)) = parse_cli(full).expect("parses").command else {
        panic!("not the token subcommand");
    };
    let env = env_of(env);
    let lookup = |k: &str| env.get(k).cloned();
    let file = text.map(file);
    resolve_token(&t, &lookup, file.as_ref()).map_err(|e| e.to_string())
}

#[test]
fn token_options_resolve() {
    let (k, e, f) = (SECRET, GENERATED, "f".repeat(32));
    let t = token(&["--user", "alice", "--jwt-secret", k], &[], None).unwrap();
    assert_eq!(t.user.as_str(), "alice");
    assert_eq!(t.ttl, Duration::from_secs(3600));
    assert_eq!(t.secret, k.as_bytes());
    let t = token(
        &["--user=bob", "--ttl=60"],
        &[("HERMOD_JWT_SECRET", e)],
        None,
    )
    .unwrap();
    assert_eq!(
        (t.ttl, t.secret),
        (Duration::from_secs(60), e.as_bytes().to_vec())
    );
    let text = format!("jwt_secret = \"{f}\"\nworkers = 2");
    let t = token(&["--user=bob"], &[], Some(&text)).unwrap();
    assert_eq!(t.secret, f.as_bytes());
}

#[test]
fn token_errors() {
    assert_eq!(
        token(&["--user", "alice"], &[], None).unwrap_err(),
        "--jwt-secret: required (or HERMOD_JWT_SECRET, or jwt_secret in --config)"
    );
    assert!(token(&["--user", "a b", "--jwt-secret", SECRET], &[], None)
        .unwrap_err()
        .starts_with("--user: "));
    assert_eq!(
        token(&["--jwt-secret", SECRET], &[], None).unwrap_err(),
        "--user: required"
    );
    assert!(
        token(&["--user=a", "--jwt-secret", SECRET, "--ttl=0"], &[], None)
            .unwrap_err()
            .starts_with("--ttl: ")
    );
}

#[test]
fn durations_parse_with_units() {
    let (lo, hi) = (Duration::ZERO, Duration::from_secs(86400 * 365));
    assert_eq!(duration("15", lo, hi), Ok(Duration::from_secs(15)));
    assert_eq!(duration("15ms", lo, hi), Ok(Duration::from_millis(15)));
    assert_eq!(duration("2m", lo, hi), Ok(Duration::from_secs(120)));
    assert_eq!(duration("2d", lo, hi), Ok(Duration::from_secs(2 * 86400)));
    assert!(duration("", lo, hi).is_err());
    assert!(duration("ms", lo, hi).is_err());
    assert!(duration("1.5s", lo, hi).is_err());
    assert!(duration("99999999999999999999d", lo, hi).is_err());
    assert!(duration("400d", lo, hi).is_err());
}

fn redis_of(r: &Resolved) -> (&hermod_core::redis::ClientConfig, Durability) {
    match &r.settings.storage {
        Storage::Redis { client, durability } => (&**client, *durability),
        Storage::Memory => panic!("expected the Redis engine"),
    }
}

#[test]
fn storage_defaults_to_memory() {
    let r = run(&[], &[], None).unwrap();
    assert!(matches!(r.settings.storage, Storage::Memory));
    // Redis-only tuning without Redis is harmless (a shared file may carry it).
    let r = run(&["--redis-timeout=1s", "--durability=leader"], &[], None).unwrap();
    assert!(matches!(r.settings.storage, Storage::Memory));
}

#[test]
fn redis_url_and_tuning() {
    let args = [
        "--redis=redis://u:p@127.0.0.1:6390/3",
        "--durability=replica",
        "--redis-timeout=1500ms",
        "--redis-connections=4",
    ];
    let r = run(&args, &[], None).unwrap();
    let (client, durability) = redis_of(&r);
    assert_eq!(durability, Durability::Replica);
    assert_eq!(
        client.target,
        Target::Direct {
            addr: "127.0.0.1:6390".to_owned()
        }
    );
    assert_eq!(client.db, 3);
    assert_eq!(client.password.as_ref().map(|p| p.expose()), Some("p"));
    assert_eq!(client.command_timeout, Duration::from_millis(1500));
    assert_eq!(client.connections, 4);

    // Defaults: leader, the client's 5 s and 2 lanes; env and file work like for every setting.
    let env = [("HERMOD_REDIS", "redis://127.0.0.1:6391")];
    let r = run(&[], &env, Some("redis_timeout = 2\n")).unwrap();
    let (client, durability) = redis_of(&r);
    assert_eq!(durability, Durability::Leader);
    assert_eq!(client.command_timeout, Duration::from_secs(2));
    assert_eq!(client.connections, 2);
}

#[test]
fn sentinel_settings() {
    let text =
        "sentinel = \"127.0.0.1:26380, 127.0.0.1:26381,h3:26382\"\nsentinel_master = \"m\"\n";
    let r = run(&[], &[], Some(text)).unwrap();
    let (client, _) = redis_of(&r);
    let want = Target::Sentinel {
        sentinels: vec![
            "127.0.0.1:26380".to_owned(),
            "127.0.0.1:26381".to_owned(),
            "h3:26382".to_owned(),
        ],
        master: "m".to_owned(),
    };
    assert_eq!(client.target, want);
}

#[test]
fn storage_errors_name_the_setting() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--redis=redis://h:1",
                "--sentinel=h:2",
                "--sentinel-master=m",
            ],
            "--sentinel: cannot be combined with --redis",
        ),
        (
            &["--sentinel=h:2"],
            "--sentinel-master: required with --sentinel",
        ),
        (
            &["--sentinel-master=m"],
            "--sentinel-master: needs --sentinel",
        ),
        (
            &["--durability=replica"],
            "--durability: replica needs --redis or --sentinel",
        ),
        (
            &["--sentinel=h:0", "--sentinel-master=m"],
            "--sentinel: `h:0`",
        ),
        (&["--sentinel=h", "--sentinel-master=m"], "--sentinel: `h`"),
        (
            &["--sentinel=h:1,", "--sentinel-master=m"],
            "--sentinel: ``",
        ),
        (
            &["--sentinel=h:1", "--sentinel-master=a b"],
            "--sentinel-master: ",
        ),
        (&["--redis=http://h:1"], "--redis: `http://h:1`"),
        (
            &["--redis=redis://h:1", "--durability=all"],
            "--durability: `all`",
        ),
        (
            &["--redis=redis://h:1", "--redis-timeout=0"],
            "--redis-timeout: ",
        ),
        (
            &["--redis=redis://h:1", "--redis-connections=1"],
            "--redis-connections: must be an integer between 2 and 16",
        ),
    ];
    for (args, prefix) in cases {
        let e = err(args, &[], None);
        assert!(e.starts_with(prefix), "{args:?}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let e = err(
        &[],
        &[("HERMOD_DURABILITY", "x"), ("HERMOD_REDIS", "redis://h:1")],
        None,
    );
    assert!(
        e.starts_with("--durability (from HERMOD_DURABILITY): "),
        "{e}"
    );
}

/// deploy/hermod-proxy.toml lists every setting (commented or set), each with a value that resolves.
#[test]
fn example_config_lists_every_setting() {
    let text = include_str!("../../../../deploy/hermod-proxy.toml");
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .filter(|l| {
            l.split_once(" = ")
                .is_some_and(|(k, _)| SETTING_KEYS.contains(&k))
        })
        .collect();
    let keys: Vec<&str> = lines.iter().filter_map(|l| l.split(" = ").next()).collect();
    for key in SETTING_KEYS.iter().filter(|k| **k != "config") {
        assert!(keys.contains(key), "deploy/hermod-proxy.toml lacks `{key}`");
    }
    // Uncommented (one storage choice only), the file resolves.
    let direct: Vec<&str> = lines
        .iter()
        .copied()
        // One storage choice, and one key source (the key file does not exist here).
        .filter(|l| {
            !l.starts_with("sentinel")
                && !l.starts_with("brokers")
                && !l.starts_with("jwt_public_key")
        })
        .collect();
    let r = run(&[], &[], Some(&direct.join("\n"))).unwrap();
    assert!(matches!(r.settings.storage, Storage::Redis { .. }));
}

/// The endpoints' paths, which routes must not shadow.
mod served_paths {
    use crate::settings::Settings;

    #[test]
    fn served_paths_are_the_protocol_and_echo_paths() {
        let mut s = Settings::defaults();
        assert!(s.serves_path("/ws"));
        assert!(!s.serves_path("/echo"));
        s.echo_path = Some("/echo".to_owned());
        assert!(s.serves_path("/echo"));
        assert!(!s.serves_path("/other"));
    }
}
