//! The tunnel settings (spec §1 `--route`): `--route PATH=ws://HOST:PORT[/path]` (repeatable;
//! `HERMOD_ROUTE` as a comma-separated list; `route = ["/t=ws://..."]` or one string in the file),
//! `--route-connect-timeout` and `--route-idle-timeout`. As for every setting, the first source
//! that sets `route` wins as a whole: flags are not merged with the environment or the file.

use std::time::Duration;

use super::{duration, env_name, ConfigError, Origin, RunArgs, Sources};
use crate::route::{parse_route, Route};
use crate::settings::Settings;

/// Routes one process may have (each is matched by a linear scan of short strings).
const MAX_ROUTES: usize = 64;

/// Resolves the routes and their timeouts into `s` (after `ws_path`/`echo_path`, which a route
/// must not shadow).
pub(super) fn resolve_routes(
    args: &RunArgs,
    src: &Sources<'_>,
    s: &mut Settings,
) -> Result<(), ConfigError> {
    let (raw, origin) = raw_routes(args, src)?;
    let error = |problem: String| ConfigError::new("route", origin.clone(), problem);
    if raw.len() > MAX_ROUTES {
        return Err(error(format!("at most {MAX_ROUTES} routes")));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for v in &raw {
        let route = parse_route(v.trim()).map_err(error)?;
        let taken = route.path == s.ws_path
            || s.echo_path.as_deref() == Some(route.path.as_str())
            || routes.iter().any(|r| r.path == route.path);
        if taken {
            return Err(error(format!("path {} is already in use", route.path)));
        }
        routes.push(route);
    }
    s.routes = routes;
    src.set(&mut s.route_connect_timeout, "route_connect_timeout", |v| {
        duration(v, Duration::from_millis(10), Duration::from_secs(3600))
    })?;
    let idle = src.get("route_idle_timeout", |v| {
        duration(v, Duration::ZERO, Duration::from_secs(7 * 86_400))
    })?;
    if let Some(idle) = idle {
        s.route_idle_timeout = (!idle.is_zero()).then_some(idle);
    }
    Ok(())
}

/// The unparsed routes of the first source that has any, and where they came from.
fn raw_routes(args: &RunArgs, src: &Sources<'_>) -> Result<(Vec<String>, Origin), ConfigError> {
    if !args.route.is_empty() {
        return Ok((args.route.clone(), Origin::Flag));
    }
    let var = env_name("route");
    if let Some(v) = (src.env)(&var).filter(|v| !v.trim().is_empty()) {
        let list = v.split(',').map(str::to_owned).collect();
        return Ok((list, Origin::Env(var)));
    }
    let Some(file) = src.file else {
        return Ok((Vec::new(), Origin::Flag));
    };
    let origin = file.origin();
    let list = match file.value("route") {
        None => Vec::new(),
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| {
                ConfigError::new("route", origin.clone(), "must be an array of strings")
            })?,
        Some(_) => {
            let problem = "must be a string or an array of strings";
            return Err(ConfigError::new("route", origin, problem));
        }
    };
    Ok((list, origin))
}

#[cfg(test)]
mod tests {
    use super::super::{parse_cli, resolve, ConfigFile, Resolved, SETTING_KEYS};
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
        assert_eq!(r.settings.route_idle_timeout, None);
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
}
