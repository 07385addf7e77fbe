//! Command-line options (clap). Bad options exit with code 2 before anything connects.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::target::Target;
use crate::wire::Pattern;

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
    /// Hermod users sending each other direct messages (`/ws`), receivers acking.
    Direct(DirectArgs),
    /// Hermod rooms: K members each, P publishers, every publish fanned out to every member.
    Room(RoomArgs),
    /// Open connections and hold them idle, or churn them (connect, upgrade, one message, close).
    Connect(ConnectArgs),
}

impl Scenario {
    /// The options every scenario shares.
    pub fn common(&self) -> &CommonArgs {
        match self {
            Scenario::Echo(a) => &a.common,
            Scenario::Direct(a) => &a.load.common,
            Scenario::Room(a) => &a.load.common,
            Scenario::Connect(a) => &a.common,
        }
    }
}

/// How `direct` and `room` users authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A JWT per user, minted from `--jwt-secret`.
    Jwt,
    /// `?user=` (a proxy running with `--auth none`).
    None,
}

/// Options shared by every scenario.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Target WebSocket URL, repeatable (connections are spread over the targets round-robin).
    /// `{i}` is replaced by the connection index, e.g. `ws://h:8080/echo?client={i}`.
    #[arg(long, required = true, env = "HERMOD_URL", value_delimiter = ',', value_parser = Target::parse)]
    pub url: Vec<Target>,
    /// Connections to open (`direct`/`room`: users; `connect --churn`: most cycles at once).
    #[arg(long, default_value_t = 1, env = "HERMOD_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub connections: u32,
    /// Event-loop threads per process; connections are spread over them.
    #[arg(long, default_value_t = 1, env = "HERMOD_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Worker processes; connections are spread over them (each process stays under the
    /// open-files limit) and their histograms are merged into one report.
    #[arg(long, default_value_t = 1, env = "HERMOD_PROCS",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub procs: u16,
    /// Source addresses to bind, round-robin, e.g. 127.0.0.1-127.0.0.8 (or a comma list).
    #[arg(long, env = "HERMOD_SOURCE_IPS", value_parser = parse_source_ips)]
    pub source_ips: Option<SourceIps>,
    /// Handshakes in progress at once, per process.
    #[arg(long, default_value_t = 500, env = "HERMOD_CONCURRENCY",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Seconds a connection may take to connect and upgrade before it counts as failed.
    #[arg(long, default_value_t = 10.0, env = "HERMOD_CONNECT_TIMEOUT", value_parser = positive_secs)]
    pub connect_timeout: f64,
    /// Write the full report as JSON to this file.
    #[arg(long, env = "HERMOD_JSON")]
    pub json: Option<PathBuf>,
    /// Write the latency histogram in HdrHistogram's percentile-distribution text format
    /// (milliseconds), for plotting.
    #[arg(long, env = "HERMOD_HDR_OUT")]
    pub hdr_out: Option<PathBuf>,
    /// HS256 secret to mint a token per user (`direct`, `room`).
    #[arg(long, env = "HERMOD_JWT_SECRET")]
    pub jwt_secret: Option<String>,
    /// How `direct`/`room` users authenticate: jwt (needs --jwt-secret) or none (`?user=`).
    #[arg(long, value_enum, env = "HERMOD_AUTH")]
    pub auth: Option<AuthMode>,
    /// Prefix of user names: user i is `{prefix}{i}`.
    #[arg(long, default_value = "lg", env = "HERMOD_USER_PREFIX", value_parser = parse_name)]
    pub user_prefix: String,
    /// Internal: this process is worker i of a `--procs` run.
    #[arg(long, hide = true)]
    pub worker_index: Option<u16>,
    /// Internal: the number of worker processes of the run.
    #[arg(long, hide = true)]
    pub worker_count: Option<u16>,
    /// Internal: the run's nonce, shared by every worker process.
    #[arg(long, hide = true)]
    pub run_id: Option<u32>,
}

/// Options of every message scenario.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Total messages per second over all senders, open loop. Required without `--closed-loop`.
    #[arg(long, env = "HERMOD_RATE", required_unless_present = "closed_loop",
          conflicts_with = "closed_loop", value_parser = positive_secs)]
    pub rate: Option<f64>,
    /// Closed loop: each sender keeps `--in-flight` messages outstanding instead of a rate.
    #[arg(long, env = "HERMOD_CLOSED_LOOP")]
    pub closed_loop: bool,
    /// Closed loop: messages in flight per sender (default 1).
    #[arg(long, env = "HERMOD_IN_FLIGHT", conflicts_with = "rate",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub in_flight: Option<u32>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0, env = "HERMOD_DURATION", value_parser = positive_secs)]
    pub duration: f64,
    /// Seconds of load before the measured window, not recorded.
    #[arg(long, default_value_t = 1.0, env = "HERMOD_WARMUP", value_parser = non_negative_secs)]
    pub warmup: f64,
    /// Seconds to wait after the run for messages still in flight; those still missing are lost.
    #[arg(long, default_value_t = 5.0, env = "HERMOD_DRAIN", value_parser = non_negative_secs)]
    pub drain: f64,
    /// Open loop: the send timer wakes on multiples of this many microseconds and sends every
    /// message due by then in one batch (cheaper in CPU). Latency still counts from each
    /// message's due time, so the batching is visible in the figures (send_lag_us). 0 wakes at
    /// every due time.
    #[arg(long, default_value_t = 100, env = "HERMOD_TICK_US",
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub tick_us: u64,
    /// Open loop: sleep until the next send tick and read the replies that arrived meanwhile,
    /// instead of waking for each reply (replies keep the kernel's receive time either way).
    /// Fewer wake-ups and less load-generator CPU at high rates; every send waits for its tick
    /// (see send_lag_us). On loopback the server gets cheaper too: it no longer pays for waking
    /// its reader.
    #[arg(long, env = "HERMOD_READ_AT_TICKS")]
    pub read_at_ticks: bool,
    /// Payload bytes per message (echo: binary frames of at least the 20-byte audit header;
    /// direct/room: the JSON frame is padded to about this size).
    #[arg(long, default_value_t = 64, env = "HERMOD_SIZE",
          value_parser = clap::value_parser!(u32).range(20..=16 * 1024 * 1024))]
    pub size: u32,
    /// direct/room: do not reopen a session the server closed (or that broke); messages stored
    /// for its user afterwards then count as lost.
    #[arg(long, env = "HERMOD_NO_RECONNECT")]
    pub no_reconnect: bool,
}

/// Options of the `echo` scenario.
pub type EchoArgs = LoadArgs;

/// Options of the `direct` scenario.
#[derive(Debug, Args)]
pub struct DirectArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Who writes to whom.
    #[arg(long, value_enum, default_value_t = Pattern::Pairs, env = "HERMOD_PATTERN")]
    pub pattern: Pattern,
}

/// Options of the `room` scenario.
#[derive(Debug, Args)]
pub struct RoomArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Rooms; users are split evenly over them (`--connections` must be rooms x members).
    #[arg(long, default_value_t = 1, env = "HERMOD_ROOMS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rooms: u32,
    /// Members per room (default: connections / rooms).
    #[arg(long, env = "HERMOD_MEMBERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub members: Option<u32>,
    /// Publishers per room (the first P members).
    #[arg(long, default_value_t = 1, env = "HERMOD_PUBLISHERS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: u32,
    /// Prefix of room names: room r is `{prefix}{r}`.
    #[arg(long, default_value = "lgroom", env = "HERMOD_ROOM_PREFIX", value_parser = parse_name)]
    pub room_prefix: String,
}

/// Options of the `connect` scenario.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds to hold the connections idle once all are open (pings are answered).
    #[arg(long, default_value_t = 10.0, env = "HERMOD_HOLD", value_parser = non_negative_secs)]
    pub hold: f64,
    /// Churn instead of holding: cycles of connect, upgrade, one text message, wait for the
    /// first message back, close; `--rate` cycles per second for `--duration` seconds, at most
    /// `--connections` at once.
    #[arg(long, env = "HERMOD_CHURN", requires = "rate")]
    pub churn: bool,
    /// Churn: cycles per second over all processes.
    #[arg(long, env = "HERMOD_RATE", value_parser = positive_secs)]
    pub rate: Option<f64>,
    /// Churn: measured seconds.
    #[arg(long, default_value_t = 10.0, env = "HERMOD_DURATION", value_parser = positive_secs)]
    pub duration: f64,
    /// Churn: seconds of cycles before the measured window.
    #[arg(long, default_value_t = 1.0, env = "HERMOD_WARMUP", value_parser = non_negative_secs)]
    pub warmup: f64,
}

/// Source addresses to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps(pub Vec<IpAddr>);

/// Parses `A-B` (an IPv4 range, at most 65,536 addresses) or `A,B,...`.
fn parse_source_ips(s: &str) -> Result<SourceIps, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{s}: {e}");
    if let Some((a, b)) = s.split_once('-') {
        let a: Ipv4Addr = a.trim().parse().map_err(|e| bad(&e))?;
        let b: Ipv4Addr = b.trim().parse().map_err(|e| bad(&e))?;
        let (a, b) = (u32::from(a), u32::from(b));
        if b < a || b - a >= 65_536 {
            return Err(bad(
                &"the range must go up and hold at most 65536 addresses",
            ));
        }
        return Ok(SourceIps((a..=b).map(|v| IpAddr::V4(v.into())).collect()));
    }
    let ips: Result<Vec<IpAddr>, _> = s.split(',').map(|p| p.trim().parse()).collect();
    Ok(SourceIps(ips.map_err(|e| bad(&e))?))
}

/// Parses a name prefix: 1 to 64 bytes of Hermod's name alphabet `[A-Za-z0-9_.:@-]`.
fn parse_name(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s}: 1 to 64 characters of [A-Za-z0-9_.:@-]"))
    }
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
    fn hermod_scenarios_and_sources_parse() {
        let cli = Cli::try_parse_from([
            "hermod-loadgen",
            "room",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--rate",
            "10",
            "--rooms",
            "2",
            "--members",
            "3",
            "--publishers",
            "2",
            "--auth",
            "none",
            "--source-ips",
            "127.0.0.1-127.0.0.4",
            "--procs",
            "2",
        ])
        .unwrap();
        let common = cli.scenario.common();
        assert_eq!(common.procs, 2);
        assert_eq!(common.source_ips.as_ref().unwrap().0.len(), 4);
        assert!(parse_source_ips("127.0.0.5-127.0.0.1").is_err());
        assert_eq!(parse_source_ips("127.0.0.1,127.0.0.2").unwrap().0.len(), 2);
        assert!(parse_name("bad name").is_err());
        let d = Cli::try_parse_from([
            "hermod-loadgen",
            "direct",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--rate",
            "10",
            "--pattern",
            "ring",
        ]);
        assert!(d.is_ok());
        let churn = [
            "hermod-loadgen",
            "connect",
            "--url",
            "ws://127.0.0.1:1/",
            "--churn",
        ];
        assert!(Cli::try_parse_from(churn).is_err());
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
