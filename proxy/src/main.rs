//! `hermod-proxy`: parse the command line, then either print a token (`token`) or run the gateway
//! (`server::run`). Exit codes: 0 done, 1 runtime failure (e.g. a port in use), 2 bad configuration.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use hermod_core::settings::{clap_exit, init_logging, process_env, setting_exit};
use hermod_proxy::server;
use hermod_proxy::settings::resolve::{
    self as settings, Command, ConfigFile, EnvLookup, RunArgs, TokenArgs,
};

fn main() -> ExitCode {
    let cli = match settings::parse_cli(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    match &cli.command {
        Some(Command::Token(args)) => token(args, &process_env),
        None => serve(&cli.run, &process_env),
    }
}

fn load_file(flag: Option<&str>, env: EnvLookup<'_>) -> Result<Option<ConfigFile>, ExitCode> {
    match settings::config_path(flag, env) {
        None => Ok(None),
        Some(path) => ConfigFile::load(&path, &settings::file_keys())
            .map(Some)
            .map_err(|e| setting_exit(&e)),
    }
}

fn token(args: &TokenArgs, env: EnvLookup<'_>) -> ExitCode {
    let file = match load_file(args.config.as_deref(), env) {
        Ok(file) => file,
        Err(code) => return code,
    };
    let req = match settings::resolve_token(args, env, file.as_ref()) {
        Ok(req) => req,
        Err(e) => return setting_exit(&e),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("{}", req.mint(now));
    ExitCode::SUCCESS
}

fn serve(args: &RunArgs, env: EnvLookup<'_>) -> ExitCode {
    let file = match load_file(args.config.as_deref(), env) {
        Ok(file) => file,
        Err(code) => return code,
    };
    let resolved = match settings::resolve(args, env, file.as_ref(), server::random_secret) {
        Ok(r) => r,
        Err(e) => return setting_exit(&e),
    };
    init_logging(&resolved.log);
    match server::run(resolved) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
