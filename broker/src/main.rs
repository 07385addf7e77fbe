//! `hermod-broker`: parse the settings, then run the broker until drained (`server::run`).
//! Exit codes: 0 drained, 1 runtime failure (e.g. a port in use), 2 bad configuration.

use std::process::ExitCode;

use hermod_broker::server::{self, config};
use hermod_core::settings::{clap_exit, init_logging, process_env, setting_exit};

fn main() -> ExitCode {
    let cli = match config::parse_cli(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    let file = match config::config_path(cli.config.as_deref(), &process_env) {
        None => None,
        Some(path) => match config::ConfigFile::load(&path) {
            Ok(file) => Some(file),
            Err(e) => return setting_exit(&e),
        },
    };
    let settings = match config::resolve(&cli, &process_env, file.as_ref(), default_node_id) {
        Ok(s) => s,
        Err(e) => return setting_exit(&e),
    };
    init_logging(&settings.log);
    match server::run(settings) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `hostname-pid`, with any character a node id may not hold replaced by `-`.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "broker".to_owned());
    let host: String = host
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.:-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{}", std::process::id())
}
