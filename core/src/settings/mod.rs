//! Settings resolution shared by `hermod-proxy` and `hermod-broker`: the command line,
//! the environment and the `--config` TOML file merged, flag beats env beats file beats default.
//!
//! Every setting has one name used three ways: `--admin-listen` on the command line,
//! `HERMOD_ADMIN_LISTEN` in the environment, `admin_listen` in the file. Clap only collects the
//! flags as strings ([`setting_args!`](crate::setting_args)); every value, whatever its source,
//! goes through the same parser ([`Sources::get`]), so a bad value gives the same one-line
//! [`SettingError`] naming the setting and where it came from. Resolution is a pure function of
//! (flags, environment lookup, file text): tests need no process environment.
//!
//! - `cli.rs`: the clap side: the flag struct macro, `[env: ...]` in the help, exit codes.
//! - `file.rs`: [`ConfigFile`], a TOML file whose unknown keys are errors.
//! - `parse.rs`: value parsers (durations with units, counts, addresses, booleans, choices).
//! - `link.rs`: `--link-secret`, the secret of the broker link, read the same way by both
//!   binaries and never shown.
//! - `storage.rs`: the Redis settings both binaries read the same way ([`RedisChoice`]), with the
//!   credentials (`--redis-user`, `--redis-password`, `--sentinel-password`), never shown.

mod cli;
mod file;
mod link;
mod parse;
mod storage;
#[cfg(test)]
mod tests;

use std::fmt;

pub use cli::{clap_exit, init_logging, parse_cli, setting_exit, with_env_help};
pub use file::ConfigFile;
pub use link::{link_secret, require_link_secret};
pub use parse::{
    boolean, count, duration, is_host_port, log_filter, one_of, show_duration, socket_addr,
};
pub use storage::{RedisChoice, MAX_MASTER_NAME, MAX_PASSWORD, MAX_SENTINELS, MAX_USER};

/// Prefix of every environment variable: `HERMOD_` + the setting's name in upper snake case.
pub const ENV_PREFIX: &str = "HERMOD_";

/// The environment as resolution sees it: a variable's value, if set. Empty counts as unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `HERMOD_` + `key` in upper case.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// The process environment as an [`EnvLookup`] (values that are not UTF-8 lossily converted).
pub fn process_env(key: &str) -> Option<String> {
    std::env::var_os(key).map(|v| v.to_string_lossy().into_owned())
}

/// The config file to read, if any: `--config`, else `HERMOD_CONFIG`.
pub fn config_path(flag: Option<&str>, env: EnvLookup<'_>) -> Option<String> {
    flag.map(str::to_owned)
        .or_else(|| env(&env_name("config")).filter(|v| !v.is_empty()))
}

/// A setting that could not be used. Displayed as one line, e.g.
/// `--workers (from HERMOD_WORKERS): must be between 1 and 256`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{}{origin}: {problem}", setting.replace('_', "-"))]
pub struct SettingError {
    /// The setting's snake_case name (shown as its flag).
    pub setting: String,
    /// Where the bad value came from, so the user knows what to fix.
    pub origin: Origin,
    /// What is wrong with it.
    pub problem: String,
}

impl SettingError {
    /// The error for `setting`'s value from `origin`.
    pub fn new(setting: &str, origin: Origin, problem: impl Into<String>) -> Self {
        SettingError {
            setting: setting.to_owned(),
            origin,
            problem: problem.into(),
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line (or a check across settings: no single source).
    Flag,
    /// The environment variable of that name.
    Env(String),
    /// The config file at that path.
    File(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => Ok(()),
            Origin::Env(var) => write!(f, " (from {var})"),
            Origin::File(path) => write!(f, " (from {path})"),
        }
    }
}

/// Where to look for a setting, in order of precedence.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// The command line: the value given for a setting's snake_case name, if any.
    pub flag: &'a dyn Fn(&str) -> Option<String>,
    /// The environment (looked up by [`env_name`]).
    pub env: EnvLookup<'a>,
    /// The `--config` file, if one was given.
    pub file: Option<&'a ConfigFile>,
}

impl Sources<'_> {
    /// The highest-precedence raw value of `key`, and where it came from.
    pub fn raw(&self, key: &str) -> Result<Option<(String, Origin)>, SettingError> {
        if let Some(v) = (self.flag)(key) {
            return Ok(Some((v, Origin::Flag)));
        }
        let var = env_name(key);
        if let Some(v) = (self.env)(&var).filter(|v| !v.is_empty()) {
            return Ok(Some((v, Origin::Env(var))));
        }
        match self.file {
            Some(file) => Ok(file.get(key)?.map(|v| (v, file.origin()))),
            None => Ok(None),
        }
    }

    /// The value of `key` through `parse`, `None` when no source sets it.
    pub fn get<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, SettingError> {
        match self.raw(key)? {
            None => Ok(None),
            Some((raw, origin)) => parse(&raw)
                .map(Some)
                .map_err(|problem| SettingError::new(key, origin, problem)),
        }
    }

    /// Overwrites `slot` when some source sets `key`.
    pub fn set<T>(
        &self,
        slot: &mut T,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<(), SettingError> {
        if let Some(v) = self.get(key, parse)? {
            *slot = v;
        }
        Ok(())
    }
}
