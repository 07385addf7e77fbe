//! `hermod-proxy`: parse the command line, then either print a token (`token`) or run the gateway
//! (`server::run`). Exit codes: 0 done, 1 runtime failure (e.g. a port in use), 2 bad configuration.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::error::ErrorKind;
use hermod_proxy::config::{self, Command, ConfigFile, EnvLookup, RunArgs, TokenArgs};
use hermod_proxy::server;

fn main() -> ExitCode {
    let cli = match config::parse_cli(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    let env = |key: &str| std::env::var_os(key).map(|v| v.to_string_lossy().into_owned());
    match &cli.command {
        Some(Command::Token(args)) => token(args, &env),
        None => serve(&cli.run, &env),
    }
}

/// Help and version go to stdout with exit 0; any other clap error is one line, exit 2.
fn clap_exit(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let text = e.to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: bad command line")
            );
            ExitCode::from(2)
        }
    }
}

fn config_error(e: &config::ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn load_file(flag: Option<&str>, env: EnvLookup<'_>) -> Result<Option<ConfigFile>, ExitCode> {
    match config::config_path(flag, env) {
        None => Ok(None),
        Some(path) => ConfigFile::load(&path, config::SETTING_KEYS)
            .map(Some)
            .map_err(|e| config_error(&e)),
    }
}

fn token(args: &TokenArgs, env: EnvLookup<'_>) -> ExitCode {
    let file = match load_file(args.config.as_deref(), env) {
        Ok(file) => file,
        Err(code) => return code,
    };
    let req = match config::resolve_token(args, env, file.as_ref()) {
        Ok(req) => req,
        Err(e) => return config_error(&e),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let exp = now.saturating_add(req.ttl.as_secs());
    println!(
        "{}",
        hermod_core::jwt::mint(&req.secret, req.user.as_str(), exp)
    );
    ExitCode::SUCCESS
}

fn serve(args: &RunArgs, env: EnvLookup<'_>) -> ExitCode {
    let file = match load_file(args.config.as_deref(), env) {
        Ok(file) => file,
        Err(code) => return code,
    };
    let resolved = match config::resolve(args, env, file.as_ref(), server::random_secret) {
        Ok(r) => r,
        Err(e) => return config_error(&e),
    };
    // The filter was checked during resolution; fall back to `info` rather than fail twice.
    let filter = tracing_subscriber::EnvFilter::try_new(&resolved.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match server::run(resolved) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
