//! Command-line options (clap). Bad options exit with code 2 before anything connects.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::target::Target;

/// Hermod's load generator and delivery auditor.
#[derive(Debug, Parser)]
#[command(name = "hermod-loadgen", version, about)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios this version knows.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Round trips through any WebSocket echo endpoint (Hermod's `--echo-path`, a backend behind
    /// nginx, ...), open loop at a fixed rate by default.
    Echo(EchoArgs),
    /// Open connections and hold them idle (memory per session, connect times).
    Connect(ConnectArgs),
}

/// Options shared by every scenario.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Target WebSocket URL, repeatable (connections are spread over the targets round-robin).
    /// `{i}` is replaced by the connection index, e.g. `ws://h:8080/ws?user=u{i}`.
    #[arg(long, required = true, env = "HERMOD_URL", value_delimiter = ',', value_parser = Target::parse)]
    pub url: Vec<Target>,
    /// Connections to open.
    #[arg(long, default_value_t = 1, env = "HERMOD_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    /// Event-loop threads; connections are spread over them.
    #[arg(long, default_value_t = 1, env = "HERMOD_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Handshakes in progress at once, over all threads.
    #[arg(long, default_value_t = 500, env = "HERMOD_CONCURRENCY",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Seconds a connection may take to connect and upgrade before it counts as failed.
    #[arg(long, default_value_t = 10.0, env = "HERMOD_CONNECT_TIMEOUT", value_parser = positive_secs)]
    pub connect_timeout: f64,
    /// Write the full report as JSON to this file.
    #[arg(long, env = "HERMOD_JSON")]
    pub json: Option<PathBuf>,
}

/// Options of the `echo` scenario.
#[derive(Debug, Args)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Total messages per second over all connections, open loop. Required without `--closed-loop`.
    #[arg(long, env = "HERMOD_RATE", required_unless_present = "closed_loop",
          conflicts_with = "closed_loop", value_parser = positive_secs)]
    pub rate: Option<f64>,
    /// Closed loop: each connection keeps `--in-flight` messages outstanding instead of a rate.
    #[arg(long, env = "HERMOD_CLOSED_LOOP")]
    pub closed_loop: bool,
    /// Closed loop: messages in flight per connection (default 1).
    #[arg(long, env = "HERMOD_IN_FLIGHT", conflicts_with = "rate",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub in_flight: Option<u32>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0, env = "HERMOD_DURATION", value_parser = positive_secs)]
    pub duration: f64,
    /// Seconds of load before the measured window, not recorded.
    #[arg(long, default_value_t = 1.0, env = "HERMOD_WARMUP", value_parser = non_negative_secs)]
    pub warmup: f64,
    /// Seconds to wait after the run for replies still in flight; those still missing are lost.
    #[arg(long, default_value_t = 5.0, env = "HERMOD_DRAIN", value_parser = non_negative_secs)]
    pub drain: f64,
    /// Open loop: wake-up granularity of the send timer in microseconds. 0 wakes at every due
    /// time (most precise); larger values batch sends into fewer wake-ups (cheaper in CPU), each
    /// message up to this late (the lateness is reported as send lag and counts in the latency).
    #[arg(long, default_value_t = 0, env = "HERMOD_TICK_US",
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub tick_us: u64,
    /// Payload bytes per message (binary frames; at least the 20-byte audit header).
    #[arg(long, default_value_t = 64, env = "HERMOD_SIZE",
          value_parser = clap::value_parser!(u32).range(20..=16 * 1024 * 1024))]
    pub size: u32,
}

/// Options of the `connect` scenario.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds to hold the connections idle once all are open (pings are answered).
    #[arg(long, default_value_t = 10.0, env = "HERMOD_HOLD", value_parser = non_negative_secs)]
    pub hold: f64,
}

/// Parses a number of seconds that must be finite and non-negative.
fn non_negative_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && (0.0..=1e7).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not a number between 0 and 10000000"))
    }
}

/// Parses a number that must be finite and positive.
fn positive_secs(s: &str) -> Result<f64, String> {
    match non_negative_secs(s)? {
        v if v > 0.0 => Ok(v),
        _ => Err(format!("{s} must be greater than 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn open_loop_needs_a_rate_and_closed_loop_refuses_one() {
        let base = ["hermod-loadgen", "echo", "--url", "ws://127.0.0.1:1/echo"];
        assert!(Cli::try_parse_from(base).is_err());
        let mut open = base.to_vec();
        open.extend(["--rate", "100"]);
        assert!(Cli::try_parse_from(&open).is_ok());
        let mut closed = base.to_vec();
        closed.extend(["--closed-loop", "--in-flight", "8"]);
        assert!(Cli::try_parse_from(&closed).is_ok());
        closed.extend(["--rate", "100"]);
        assert!(Cli::try_parse_from(&closed).is_err());
        let mut bad = base.to_vec();
        bad.extend(["--rate", "100", "--in-flight", "2"]);
        assert!(Cli::try_parse_from(&bad).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            ["--rate", "0"],
            ["--rate", "-1"],
            ["--size", "10"],
            ["--connections", "0"],
            ["--url", "http://x/"],
        ] {
            let mut v = vec!["hermod-loadgen", "echo", "--url", "ws://127.0.0.1:1/echo"];
            if args[0] != "--rate" {
                v.extend(["--rate", "10"]);
            }
            v.extend(args);
            assert!(Cli::try_parse_from(&v).is_err(), "{args:?} accepted");
        }
    }
}
