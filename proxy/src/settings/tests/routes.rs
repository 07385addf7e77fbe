//! `--route` and its timeouts, trusted proxies, the per-address limits and the memory budget,
//! through the whole resolution.

use crate::settings::resolve::{parse_cli, resolve, ConfigFile, Resolved, SETTING_KEYS};
use std::time::Duration;

fn run(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> Result<Resolved, String> {
    let mut argv = vec!["hermod-proxy"];
    argv.extend_from_slice(args);
    let cli = parse_cli(argv).map_err(|e| e.to_string())?;
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let file = file
        .map(|text| ConfigFile::parse("f.toml", text, SETTING_KEYS))
        .transpose()
        .map_err(|e| e.to_string())?;
    resolve(&cli.run, &lookup, file.as_ref(), || "s".to_owned()).map_err(|e| e.to_string())
}

fn paths(r: &Resolved) -> Vec<String> {
    r.settings.routes.iter().map(|r| r.path.clone()).collect()
}

#[test]
fn routes_come_from_flags_then_env_then_file() {
    let flags = [
        "--route",
        "/a=ws://127.0.0.1:1",
        "--route",
        "/b=ws://127.0.0.1:2/x",
    ];
    let env = [("HERMOD_ROUTE", "/e=ws://127.0.0.1:3, /f=ws://127.0.0.1:4")];
    let file = Some("route = [\"/g=ws://127.0.0.1:5\"]\n");
    let r = run(&flags, &env, file).expect("resolves");
    assert_eq!(paths(&r), ["/a", "/b"]);
    assert_eq!(r.settings.routes[1].upstream.path, "/x");
    assert_eq!(paths(&run(&[], &env, file).expect("env")), ["/e", "/f"]);
    assert_eq!(paths(&run(&[], &[], file).expect("file")), ["/g"]);
    let one = Some("route = \"/h=ws://127.0.0.1:6\"\n");
    assert_eq!(paths(&run(&[], &[], one).expect("string")), ["/h"]);
    assert!(run(&[], &[], None)
        .expect("none")
        .settings
        .routes
        .is_empty());
}

#[test]
fn bad_routes_are_one_line_errors() {
    let e = run(&["--route", "/t=http://127.0.0.1:1"], &[], None).unwrap_err();
    assert!(e.starts_with("--route: `http://127.0.0.1:1`"), "{e}");
    let e = run(&["--route", "/ws=ws://127.0.0.1:1"], &[], None).unwrap_err();
    assert!(e.contains("already in use"), "{e}");
    let dup = [
        "--route",
        "/t=ws://127.0.0.1:1",
        "--route",
        "/t=ws://127.0.0.1:2",
    ];
    assert!(run(&dup, &[], None).unwrap_err().contains("already in use"));
    let echo = ["--echo-path", "/e", "--route", "/e=ws://127.0.0.1:1"];
    assert!(run(&echo, &[], None)
        .unwrap_err()
        .contains("already in use"));
    let e = run(&[], &[("HERMOD_ROUTE", "nope")], None).unwrap_err();
    assert!(e.starts_with("--route (from HERMOD_ROUTE): "), "{e}");
    let e = run(&[], &[], Some("route = [1]\n")).unwrap_err();
    assert!(e.starts_with("--route (from f.toml): "), "{e}");
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn route_timeouts() {
    let r = run(&[], &[], None).expect("defaults");
    assert_eq!(r.settings.route_connect_timeout, Duration::from_secs(5));
    assert_eq!(
        r.settings.route_idle_timeout,
        Some(Duration::from_secs(300))
    );
    assert!(r.settings.route_trusted_proxies.is_empty());
    let args = [
        "--route-connect-timeout",
        "250ms",
        "--route-idle-timeout",
        "2m",
    ];
    let r = run(&args, &[], None).expect("set");
    assert_eq!(r.settings.route_connect_timeout, Duration::from_millis(250));
    assert_eq!(
        r.settings.route_idle_timeout,
        Some(Duration::from_secs(120))
    );
    let r = run(&["--route-idle-timeout", "0"], &[], None).expect("off");
    assert_eq!(r.settings.route_idle_timeout, None);
    assert!(run(&["--route-connect-timeout", "0"], &[], None).is_err());
}

#[test]
fn trusted_proxies_and_memory_budget() {
    let env = [("HERMOD_ROUTE_TRUSTED_PROXIES", "10.0.0.2, ::1")];
    let r = run(&[], &env, None).expect("set");
    let want: Vec<std::net::IpAddr> = vec!["10.0.0.2".parse().unwrap(), "::1".parse().unwrap()];
    assert_eq!(r.settings.route_trusted_proxies, want);
    let e = run(&["--route-trusted-proxies", "10.0.0.0/8"], &[], None).unwrap_err();
    assert!(e.starts_with("--route-trusted-proxies: "), "{e}");
    let r = run(&[], &[], None).expect("defaults");
    assert_eq!(r.settings.broker.memory_budget, 1 << 30);
    assert_eq!(r.settings.broker.memory_per_user, 64 << 20);
    let file = "memory_budget = 1048576\nmemory_per_user = 65536\n";
    let r = run(&[], &[], Some(file)).expect("file");
    assert_eq!(r.settings.broker.memory_budget, 1 << 20);
    assert_eq!(r.settings.broker.memory_per_user, 1 << 16);
    assert!(run(&["--memory-budget", "100"], &[], None).is_err());
}

#[test]
fn per_address_limits_apply_to_loopback_only_when_set() {
    let d = run(&[], &[], None).unwrap().settings;
    assert_eq!(d.max_connections_per_ip.max, 256);
    assert!(!d.max_connections_per_ip.loopback);
    assert!(!d.max_connects_per_ip_per_sec.loopback);
    assert_eq!(d.max_sessions_per_user, 64);
    assert_eq!(d.first_byte_timeout, Duration::from_secs(2));
    assert_eq!(d.handshake_timeout, Duration::from_secs(5));
    let s = run(
        &["--max-connections-per-ip", "3"],
        &[("HERMOD_MAX_CONNECTS_PER_IP_PER_SEC", "0")],
        Some("max_sessions_per_user = 2\nfirst_byte_timeout = \"500ms\""),
    )
    .unwrap()
    .settings;
    assert_eq!(s.max_connections_per_ip.max, 3);
    assert!(s.max_connections_per_ip.loopback);
    assert_eq!(s.max_connects_per_ip_per_sec.max, 0);
    assert_eq!(s.max_sessions_per_user, 2);
    assert_eq!(s.first_byte_timeout, Duration::from_millis(500));
    assert!(run(&["--max-connections-per-ip", "x"], &[], None).is_err());
}
