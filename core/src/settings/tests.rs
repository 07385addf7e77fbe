//! Unit tests of the shared settings machinery: precedence, file handling, parsers, the Redis
//! settings and the clap macro. No process environment is touched.

use std::time::Duration;

use super::*;
use crate::redis::{Secret, Target};

crate::setting_args! {
    /// A test binary's command line.
    #[derive(Debug, Default, Clone, clap::Parser)]
    #[command(name = "hermod-test")]
    pub struct TestCli {
        /// A repeatable extra (not single-valued, so not in `flag`).
        #[arg(long)]
        pub extra: Vec<String>,
    }
    settings {
        /// Listener.
        listen: "ADDR",
        /// A timeout.
        some_timeout: "DURATION",
        /// A switch.
        #[arg(num_args = 0..=1, default_missing_value = "true")]
        switch: "BOOL",
        redis: "URL",
        sentinel: "H:P,...",
        sentinel_master: "NAME",
        redis_timeout: "DURATION",
        redis_connections: "N",
        redis_user: "USER",
        redis_password: "PASSWORD",
        sentinel_password: "PASSWORD",
    }
}

fn cli(args: &[&str]) -> TestCli {
    parse_cli(std::iter::once("hermod-test").chain(args.iter().copied())).unwrap()
}

/// An environment holding exactly `pairs`.
fn env_of<'a>(pairs: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |key| {
        let found = pairs.iter().find(|(k, _)| *k == key);
        found.map(|(_, v)| (*v).to_owned())
    }
}

/// Resolves `key` through `parse` from the given flags, environment and file.
fn get<T>(
    args: &[&str],
    env: &[(&str, &str)],
    text: Option<&str>,
    key: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, SettingError> {
    let cli = cli(args);
    let lookup = env_of(env);
    let flag = |k: &str| cli.flag(k).map(str::to_owned);
    let file = text.map(|t| ConfigFile::parse("t.toml", t, TestCli::KEYS).unwrap());
    let src = Sources {
        flag: &flag,
        env: &lookup,
        file: file.as_ref(),
    };
    src.get(key, parse)
}

fn text(v: &str) -> Result<String, String> {
    Ok(v.to_owned())
}

#[test]
fn flag_beats_env_beats_file() {
    let file = Some("listen = \"file\"");
    let env = [("HERMOD_LISTEN", "env")];
    let flag = get(&["--listen", "flag"], &env, file, "listen", text);
    assert_eq!(flag.unwrap().as_deref(), Some("flag"));
    assert_eq!(
        get(&[], &env, file, "listen", text).unwrap().as_deref(),
        Some("env")
    );
    assert_eq!(
        get(&[], &[("HERMOD_LISTEN", "")], file, "listen", text)
            .unwrap()
            .as_deref(),
        Some("file"),
        "an empty variable counts as unset"
    );
    assert_eq!(get(&[], &[], None, "listen", text).unwrap(), None);
}

#[test]
fn errors_name_the_setting_and_its_source() {
    let parse = |v: &str| count(v, 1, 9);
    let e = get(&["--some-timeout", "x"], &[], None, "some_timeout", parse).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--some-timeout: must be an integer between 1 and 9"
    );
    let env = [("HERMOD_SOME_TIMEOUT", "0")];
    let e = get(&[], &env, None, "some_timeout", parse).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--some-timeout (from HERMOD_SOME_TIMEOUT): must be an integer between 1 and 9"
    );
    let e = get(&[], &[], Some("some_timeout = 10"), "some_timeout", parse).unwrap_err();
    assert_eq!(e.origin, Origin::File("t.toml".to_owned()));
    assert_eq!(
        e.to_string(),
        "--some-timeout (from t.toml): must be an integer between 1 and 9"
    );
}

#[test]
fn file_values_are_strings_integers_or_booleans() {
    let file = Some("switch = true\nlisten = 5\nsome_timeout = \"2s\"");
    assert_eq!(get(&[], &[], file, "switch", boolean).unwrap(), Some(true));
    assert_eq!(
        get(&[], &[], file, "listen", text).unwrap().as_deref(),
        Some("5")
    );
    let e = get(&[], &[], Some("listen = 1.5"), "listen", text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--listen (from t.toml): expected a string, an integer or a boolean"
    );
    let file = ConfigFile::parse("t.toml", "extra = [\"a\"]", TestCli::KEYS).unwrap();
    assert!(file.value("extra").is_some_and(toml::Value::is_array));
    assert_eq!(file.path(), "t.toml");
}

#[test]
fn file_errors_are_one_line() {
    let e = ConfigFile::parse("f.toml", "a = 1\nlisten = \n", TestCli::KEYS).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("--config (from f.toml): line 2: "),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    let e = ConfigFile::parse("f.toml", "nope = 1", TestCli::KEYS).unwrap_err();
    assert_eq!(e.to_string(), "--config (from f.toml): unknown key `nope`");
    let e = ConfigFile::load("/nonexistent/hermod.toml", TestCli::KEYS).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--config: /nonexistent/hermod.toml: "),
        "{e}"
    );
}

#[test]
fn config_path_is_flag_then_env() {
    let lookup = env_of(&[("HERMOD_CONFIG", "/env.toml")]);
    assert_eq!(
        config_path(Some("/f.toml"), &lookup).as_deref(),
        Some("/f.toml")
    );
    assert_eq!(config_path(None, &lookup).as_deref(), Some("/env.toml"));
    assert_eq!(config_path(None, &|_: &str| Some(String::new())), None);
    assert_eq!(env_name("admin_listen"), "HERMOD_ADMIN_LISTEN");
}

#[test]
fn the_macro_keeps_flags_keys_and_help_in_step() {
    assert_eq!(TestCli::KEYS[..3], ["extra", "listen", "some_timeout"]);
    let c = cli(&[
        "--config", "c.toml", "--switch", "--extra", "a", "--extra", "b",
    ]);
    assert_eq!(c.flag("config"), Some("c.toml"));
    assert_eq!(c.flag("switch"), Some("true"));
    assert_eq!(c.flag("extra"), None);
    assert_eq!(c.extra, ["a", "b"]);
    let help = with_env_help(<TestCli as clap::CommandFactory>::command())
        .render_long_help()
        .to_string();
    assert!(help.contains("[env: HERMOD_SOME_TIMEOUT]"), "{help}");
    assert!(help.contains("[env: HERMOD_CONFIG]"), "{help}");
    assert!(!help.contains("HERMOD_HELP"), "{help}");
}

#[test]
fn durations() {
    let (lo, hi) = (Duration::ZERO, Duration::from_secs(86400 * 365));
    assert_eq!(duration("15", lo, hi), Ok(Duration::from_secs(15)));
    assert_eq!(duration("15ms", lo, hi), Ok(Duration::from_millis(15)));
    assert_eq!(duration("2m", lo, hi), Ok(Duration::from_secs(120)));
    assert_eq!(duration("1h", lo, hi), Ok(Duration::from_secs(3600)));
    assert_eq!(duration("2d", lo, hi), Ok(Duration::from_secs(2 * 86400)));
    for bad in ["", "ms", "1.5s", "-1", "5x", "99999999999999999999d"] {
        assert!(
            duration(bad, lo, hi)
                .unwrap_err()
                .contains("is not a duration"),
            "{bad}"
        );
    }
    let min = Duration::from_millis(300);
    assert_eq!(
        duration("400d", min, Duration::from_secs(3600)),
        Err("must be between 300ms and 1h".to_owned())
    );
    assert_eq!(show_duration(Duration::ZERO), "0s");
    assert_eq!(show_duration(Duration::from_secs(90)), "90s");
    assert_eq!(show_duration(Duration::from_secs(7 * 86400)), "7d");
}

#[test]
fn scalar_parsers() {
    assert_eq!(count("3", 1, 3), Ok(3));
    assert!(count("4", 1, 3).is_err() && count("-1", 0, 3).is_err());
    assert_eq!(socket_addr("127.0.0.1:80", "x").map(|a| a.port()), Ok(80));
    assert_eq!(
        socket_addr("localhost:80", "127.0.0.1:7070"),
        Err("`localhost:80` is not an IP:PORT address (e.g. 127.0.0.1:7070)".to_owned())
    );
    for (v, want) in [("true", true), ("ON", true), ("1", true), ("no", false)] {
        assert_eq!(boolean(v), Ok(want), "{v}");
    }
    assert_eq!(
        boolean("maybe"),
        Err("`maybe` is not true or false".to_owned())
    );
    let choices = [("jwt", true), ("none", false)];
    assert_eq!(one_of("none", &choices), Ok(false));
    assert_eq!(
        one_of("JWT", &choices),
        Err("`JWT` is not one of: jwt, none".to_owned())
    );
    assert!(is_host_port("h:1") && is_host_port("[::1]:65535"));
    for bad in ["", "h", "h:0", "h:x", ":1", "a b:1", "h:65536"] {
        assert!(!is_host_port(bad), "{bad}");
    }
    assert_eq!(
        log_filter("info,hermod=debug").as_deref(),
        Ok("info,hermod=debug")
    );
    assert!(log_filter("a=b=c").unwrap_err().starts_with("`a=b=c`: "));
}

fn redis(args: &[&str]) -> Result<Option<crate::redis::ClientConfig>, String> {
    redis_from(args, &[], None)
}

/// The Redis client the given flags, environment and file name.
fn redis_from(
    args: &[&str],
    env: &[(&str, &str)],
    text: Option<&str>,
) -> Result<Option<crate::redis::ClientConfig>, String> {
    let cli = cli(args);
    let flag = |k: &str| cli.flag(k).map(str::to_owned);
    let lookup = env_of(env);
    let file = text.map(|t| ConfigFile::parse("t.toml", t, TestCli::KEYS).unwrap());
    let src = Sources {
        flag: &flag,
        env: &lookup,
        file: file.as_ref(),
    };
    let choice = RedisChoice::parse(&src).map_err(|e| e.to_string())?;
    if env.is_empty() && text.is_none() {
        assert_eq!(choice.is_unset(), args.is_empty());
    }
    choice.into_client(&src).map_err(|e| e.to_string())
}

#[test]
fn redis_settings() {
    assert!(redis(&[]).unwrap().is_none());
    let c = redis(&["--redis=redis://127.0.0.1:6390/2", "--redis-connections=3"])
        .unwrap()
        .unwrap();
    assert_eq!(
        c.target,
        Target::Direct {
            addr: "127.0.0.1:6390".into()
        }
    );
    assert_eq!((c.db, c.connections), (2, 3));
    let c = redis(&[
        "--sentinel=h:1, h:2",
        "--sentinel-master=m",
        "--redis-timeout=2s",
    ])
    .unwrap()
    .unwrap();
    let sentinels = vec!["h:1".to_owned(), "h:2".to_owned()];
    let master = "m".to_owned();
    assert_eq!(c.target, Target::Sentinel { sentinels, master });
    assert_eq!(c.command_timeout, Duration::from_secs(2));
}

#[test]
fn redis_settings_errors() {
    let many = vec!["h:1"; MAX_SENTINELS + 1].join(",");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--redis=redis://h:1", "--sentinel=h:2"],
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
        (&["--sentinel=h:0"], "--sentinel: `h:0` is not HOST:PORT"),
        (&["--sentinel=h:1,"], "--sentinel: `` is not HOST:PORT"),
        (
            &["--sentinel", many.as_str()],
            "--sentinel: at most 16 sentinels",
        ),
        (
            &["--sentinel=h:1", "--sentinel-master=a b"],
            "--sentinel-master: `a b` is not",
        ),
        (&["--redis=http://h:1"], "--redis: `http://h:1`"),
        (
            &["--redis=redis://h:1", "--redis-timeout=0"],
            "--redis-timeout: must be between",
        ),
        (
            &["--redis=redis://h:1", "--redis-connections=17"],
            "--redis-connections: must be an integer between 2 and 16",
        ),
    ];
    for (args, prefix) in cases {
        let e = redis(args).unwrap_err();
        assert!(e.starts_with(prefix), "{args:?}: {e}");
    }
}

#[test]
fn redis_credentials_reach_the_client() {
    let c = redis(&[
        "--sentinel=h:1",
        "--sentinel-master=m",
        "--redis-user=bob",
        "--redis-password=master-pw",
        "--sentinel-password=sentinel-pw",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(c.username.as_deref(), Some("bob"));
    assert_eq!(c.password.as_ref().map(Secret::expose), Some("master-pw"));
    assert_eq!(
        c.sentinel_password.as_ref().map(Secret::expose),
        Some("sentinel-pw")
    );
    // With --redis, a URL without credentials takes them from the settings.
    let c = redis(&["--redis=redis://h:1/2", "--redis-password=pw"])
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.username, c.password.as_ref().map(Secret::expose), c.db),
        (None, Some("pw"), 2)
    );
    // Credentials in the URL alone still work.
    let c = redis(&["--redis=redis://bob:pw@h:1"]).unwrap().unwrap();
    assert_eq!(
        (
            c.username.as_deref(),
            c.password.as_ref().map(Secret::expose)
        ),
        (Some("bob"), Some("pw"))
    );
    assert_eq!(c.sentinel_password, None);
}

#[test]
fn redis_passwords_follow_precedence() {
    let target = ["--sentinel=h:1", "--sentinel-master=m"];
    let file = Some("redis_password = \"file-pw\"\nsentinel_password = \"file-spw\"\n");
    let env = [
        ("HERMOD_REDIS_PASSWORD", "env-pw"),
        ("HERMOD_SENTINEL_PASSWORD", "env-spw"),
    ];
    let pws = |c: crate::redis::ClientConfig| (c.password, c.sentinel_password);
    let both = |a: &str, b: &str| (Some(Secret::new(a)), Some(Secret::new(b)));
    let c = redis_from(&target, &[], file).unwrap().unwrap();
    assert_eq!(pws(c), both("file-pw", "file-spw"));
    let c = redis_from(&target, &env, file).unwrap().unwrap();
    assert_eq!(pws(c), both("env-pw", "env-spw"));
    let mut args = target.to_vec();
    args.extend(["--redis-password=flag-pw", "--sentinel-password=flag-spw"]);
    let c = redis_from(&args, &env, file).unwrap().unwrap();
    assert_eq!(pws(c), both("flag-pw", "flag-spw"));
    // The user comes from the environment too; an empty variable counts as unset.
    let env = [("HERMOD_REDIS_USER", "bob"), ("HERMOD_REDIS_PASSWORD", "")];
    let e = redis_from(&target, &env, None).unwrap_err();
    assert_eq!(e, "--redis-user: needs --redis-password");
}

#[test]
fn redis_credentials_errors() {
    fn with_s(extra: &str) -> Vec<&str> {
        vec!["--sentinel=h:1", "--sentinel-master=m", extra]
    }
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--redis=redis://:pw@h:1", "--redis-password=x"],
            "--redis-password: give the password in the URL or in --redis-password, not both",
        ),
        (
            vec!["--redis=redis://bob:pw@h:1", "--redis-user=al"],
            "--redis-user: give the user in the URL or in --redis-user, not both",
        ),
        (
            vec!["--redis=redis://h:1", "--redis-user=al"],
            "--redis-user: needs --redis-password",
        ),
        (
            with_s("--redis-user=al"),
            "--redis-user: needs --redis-password",
        ),
        (
            vec!["--redis=redis://h:1", "--sentinel-password=x"],
            "--sentinel-password: needs --sentinel",
        ),
        (
            vec!["--sentinel-password=x"],
            "--sentinel-password: needs --sentinel",
        ),
        (
            vec!["--redis-password=x"],
            "--redis-password: needs --redis or --sentinel",
        ),
        (
            vec!["--redis-user=al"],
            "--redis-user: needs --redis or --sentinel",
        ),
        (
            with_s("--redis-password="),
            "--redis-password: must be 1 to",
        ),
        (
            with_s("--sentinel-password="),
            "--sentinel-password: must be 1 to",
        ),
        (
            with_s("--redis-user=a b"),
            "--redis-user: `a b` is not a user name",
        ),
    ];
    for (args, want) in cases {
        let e = redis(&args).unwrap_err();
        assert!(e.starts_with(want), "{args:?}: {e}");
    }
    let long = "p".repeat(MAX_PASSWORD + 1);
    let e = redis(&with_s(&format!("--redis-password={long}"))).unwrap_err();
    assert!(
        e.starts_with("--redis-password: must be 1 to 1024 bytes"),
        "{e}"
    );
}

#[test]
fn passwords_are_never_shown() {
    let env = [("HERMOD_REDIS_PASSWORD", "bad\npw-secret")];
    let e = redis_from(&["--redis=redis://h:1"], &env, None).unwrap_err();
    assert!(
        e.starts_with("--redis-password (from HERMOD_REDIS_PASSWORD): must be"),
        "{e}"
    );
    assert!(!e.contains("pw-secret"), "{e}");
    for (url, shown) in [
        ("redis://bob:hunter2@h:0", "`redis://bob:***@h:0`"),
        ("redis://hunter2@h:0", "`redis://***@h:0`"),
        ("http://bob:hunter2@h:1", "`http://bob:***@h:1`"),
        ("bob:hunter2@h:1", "`bob:***@h:1`"),
    ] {
        let e = redis(&[&format!("--redis={url}")]).unwrap_err();
        assert!(e.starts_with(&format!("--redis: {shown}: ")), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
    assert_eq!(storage::redact_url("redis://h:1/0"), "redis://h:1/0");
    assert_eq!(storage::redact_url("redis://u:p/a@ss@h"), "redis://u:***@h");
    let args = [
        "--sentinel=h:1",
        "--sentinel-master=m",
        "--redis-user=bob",
        "--redis-password=master-secret",
        "--sentinel-password=sentinel-secret",
    ];
    let c = redis(&args).unwrap().unwrap();
    let shown = format!("{c:?}");
    assert!(shown.contains("password: Some(***)"), "{shown}");
    assert!(shown.contains("bob"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
    let cli = cli(&args);
    let flag = |k: &str| cli.flag(k).map(str::to_owned);
    let src = Sources {
        flag: &flag,
        env: &|_: &str| None,
        file: None,
    };
    let shown = format!("{:?}", RedisChoice::parse(&src).unwrap());
    assert!(
        !shown.contains("secret") && shown.contains("***"),
        "{shown}"
    );
}

crate::setting_args! {
    /// A binary that takes the shared Redis settings between two of its own.
    #[derive(Debug, Default, Clone, clap::Parser)]
    #[command(name = "hermod-test-redis")]
    pub struct RedisCli {}
    settings {
        /// Before.
        listen: "ADDR",
    }
    redis_settings;
    settings {
        /// After.
        log: "FILTER",
    }
}

#[test]
fn redis_settings_are_declared_once_in_place() {
    let redis = [
        "redis",
        "sentinel",
        "sentinel_master",
        "redis_user",
        "redis_password",
        "sentinel_password",
        "durability",
        "redis_timeout",
        "redis_connections",
    ];
    let mut want = vec!["listen"];
    want.extend(redis);
    want.push("log");
    assert_eq!(RedisCli::KEYS, want.as_slice());
    let c: RedisCli = parse_cli(["t", "--sentinel-master", "m", "--durability", "replica"])
        .expect("the Redis flags parse");
    assert_eq!(c.flag("sentinel_master"), Some("m"));
    assert_eq!(c.flag("durability"), Some("replica"));
    assert_eq!(c.flag("log"), None);
}
