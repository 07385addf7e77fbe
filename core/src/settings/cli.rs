//! The command-line side: clap collects each setting as an unparsed string (parsing is
//! [`Sources`](super::Sources)' job, the same for every source); the help names each flag's
//! environment variable; bad command lines and settings exit 2 with one line.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};

use super::{env_name, SettingError};

/// Declares a binary's settings once: the clap struct (a `--config FILE` field, then any extra
/// fields as written, then one `Option<String>` flag per setting), its `KEYS` (every setting's
/// snake_case name, extra fields first: exactly the keys a config file may hold) and its
/// `flag(key)` lookup of the single-valued settings, so the three stay in step.
///
/// ```text
/// hermod_core::setting_args! {
///     /// The command line.
///     #[derive(Debug, Default, Clone, clap::Parser)]
///     pub struct Cli {}
///     settings {
///         /// Listener (default 127.0.0.1:7070).
///         listen: "ADDR",
///     }
/// }
/// ```
///
/// A binary that reads the Redis settings ([`RedisChoice`](super::RedisChoice) and the engine's
/// tuning) writes `redis_settings;` between two `settings { ... }` lists (the first ending with a
/// comma): the Redis flags are declared here once, in that place, for both binaries.
#[macro_export]
macro_rules! setting_args {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($extra:tt)* }
        settings { $($before:tt)* }
        redis_settings;
        settings { $($after:tt)* }
    ) => {
        $crate::setting_args! {
            $(#[$meta])*
            pub struct $name { $($extra)* }
            settings {
                $($before)*
                /// Redis for the engine: redis://[user:pass@]host:port/db. Without it or
                /// --sentinel the gateway keeps messages in memory; hermod-broker needs one.
                redis: "URL",
                /// Redis through Sentinel: HOST:PORT,HOST:PORT,... (needs --sentinel-master).
                sentinel: "H:P,...",
                /// The master name the sentinels monitor (with --sentinel).
                sentinel_master: "NAME",
                /// ACL user for the Redis servers (with --redis-password; default: `default`).
                redis_user: "USER",
                /// Password of the Redis servers (master and replicas): with --sentinel, or with
                /// a --redis URL that holds no credentials. Visible in ps; prefer
                /// HERMOD_REDIS_PASSWORD or the config file.
                redis_password: "PASSWORD",
                /// Password of the sentinels themselves (their requirepass; with --sentinel).
                /// Visible in ps; prefer HERMOD_SENTINEL_PASSWORD or the config file.
                sentinel_password: "PASSWORD",
                /// When `sent` is answered: leader (applied on the Redis master) or replica (a
                /// replica confirmed it too, WAIT 1). Default leader.
                durability: "leader|replica",
                /// A Redis command without reply by then fails: the request is answered
                /// `unavailable` (default 5s).
                redis_timeout: "DURATION",
                /// Pipelined connections to Redis, 2 to 16 (default 2: reads and writes apart).
                redis_connections: "N",
                $($after)*
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$xmeta:meta])* pub $xfield:ident : $xty:ty, )*
        }
        settings {
            $( $(#[$fmeta:meta])* $field:ident : $value_name:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            /// TOML file with settings (keys: the flag names in snake_case).
            #[arg(long, value_name = "FILE")]
            pub config: Option<String>,
            $( $(#[$xmeta])* pub $xfield: $xty, )*
            $( $(#[$fmeta])* #[arg(long, value_name = $value_name)] pub $field: Option<String>, )*
        }

        impl $name {
            /// Every setting's name in snake_case: exactly the keys a config file may hold.
            pub const KEYS: &'static [&'static str] =
                &[$(stringify!($xfield),)* $(stringify!($field)),*];

            /// The value given on the command line for the single-valued setting `key`, if any.
            pub fn flag(&self, key: &str) -> Option<&str> {
                match key {
                    "config" => self.config.as_deref(),
                    $(stringify!($field) => self.$field.as_deref(),)*
                    _ => None,
                }
            }
        }
    };
}

/// `cmd` with each top-level flag's environment variable added to its help:
/// `--admin-listen` gets ` [env: HERMOD_ADMIN_LISTEN]`.
pub fn with_env_help(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| match arg.get_long() {
        Some(long) if long != "help" && long != "version" => {
            let env = env_name(&long.replace('-', "_"));
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            arg.help(format!("{help} [env: {env}]"))
        }
        _ => arg,
    })
}

/// Parses the command line into `C` (its help as [`with_env_help`] makes it). Help and
/// version requests come back as clap errors of those kinds; [`clap_exit`] handles them.
pub fn parse_cli<C, I, T>(args: I) -> Result<C, clap::Error>
where
    C: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = with_env_help(C::command()).try_get_matches_from(args)?;
    C::from_arg_matches(&matches)
}

/// Help and version go to stdout with exit 0; any other clap error is one line, exit 2.
pub fn clap_exit(e: &clap::Error) -> ExitCode {
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

/// A bad setting: `error: <the one line>` on stderr, exit 2.
pub fn setting_exit(e: &SettingError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// Logs to stderr through `filter` (checked during resolution: a filter that still fails to
/// parse falls back to `info` rather than failing twice), colours only on a terminal.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
