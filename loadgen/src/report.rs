//! The run's report (sans-io): percentiles, validity, the final table and the JSON document.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::audit::AuditSummary;

/// Lowest value histograms record, in microseconds.
const HIST_LOW_US: u64 = 1;
/// Highest value histograms record, in microseconds (60 s); larger values saturate.
const HIST_HIGH_US: u64 = 60_000_000;
/// Significant decimal digits kept by histograms.
const HIST_DIGITS: u8 = 3;

/// A run fails validity when it achieved under this share of its target rate.
pub const VALID_RATE_SHARE: f64 = 0.99;

/// A latency histogram in microseconds: 1 us to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's preconditions (low >= 1,
    // high >= 2 * low, digits <= 5), so this cannot fail.
    Histogram::new_with_bounds(HIST_LOW_US, HIST_HIGH_US, HIST_DIGITS)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Records a duration given in nanoseconds into a microsecond histogram (saturating).
pub fn record_ns(histogram: &mut Histogram<u64>, nanos: u64) {
    histogram.saturating_record((nanos / 1_000).max(HIST_LOW_US));
}

/// The percentiles the report quotes, in microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value recorded.
    pub max: u64,
    /// Values recorded; all the others are 0 when this is.
    pub count: u64,
}

impl Percentiles {
    /// The percentiles of `histogram` (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            count: histogram.len(),
        }
    }
}

/// Whether a run that achieved `achieved` messages per second for a `target` is valid: always
/// for a run without target (closed loop), else at least 99% of the target.
pub fn is_valid(target: Option<f64>, achieved: f64) -> bool {
    target.is_none_or(|t| achieved >= VALID_RATE_SHARE * t)
}

/// The full report of one run; the JSON keys follow spec section 3.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `echo`, `direct`, `room` or `connect`.
    pub scenario: &'static str,
    /// `open`, `closed` (message scenarios), `hold` or `churn` (connect).
    pub mode: &'static str,
    /// Connections asked for.
    pub connections: u64,
    /// Connections that completed their WebSocket handshake.
    pub connected: u64,
    /// Connections still open at the end of the run.
    pub held: u64,
    /// Closed loop: messages kept in flight per connection.
    pub in_flight: Option<u32>,
    /// Payload bytes per message.
    pub size: Option<u64>,
    /// Measured seconds (warmup excluded).
    pub duration_s: f64,
    /// Seconds before the measured window, not recorded.
    pub warmup_s: f64,
    /// Open loop: offered messages per second; `null` for closed loop and connect.
    pub target_rate: Option<f64>,
    /// Measured messages sent by the end of the measured window (plus one tick or 1 ms), per
    /// second of measured time: a loadgen or connection that falls behind shows here.
    pub achieved_rate: f64,
    /// Measured messages received per second of measured time (closed loop: the throughput).
    pub received_rate: f64,
    /// False when the achieved rate is under 99% of the target (echo) or connections failed
    /// or dropped (connect).
    pub valid: bool,
    /// Measured messages sent.
    pub sent: u64,
    /// Measured copies due for delivery: `sent` for echo, confirmed-stored messages for
    /// direct, stored publishes times members for room.
    pub expected: u64,
    /// Measured messages received at least once.
    pub received: u64,
    /// Measured messages not received by the end of the drain.
    pub lost: u64,
    /// Extra copies of measured messages.
    pub duplicated: u64,
    /// `direct`/`room`: measured copies whose `sent` answer went with a closed session (not in
    /// `expected`); the true loss is between `lost` and `lost + unconfirmed`.
    pub unconfirmed: u64,
    /// Measured messages that overtook no one but were overtaken.
    pub reordered: u64,
    /// Failed connects, connections closed or broken mid-run, and unparseable or unknown replies.
    pub errors: u64,
    /// Connection attempts that failed (included in `errors`).
    pub connect_failures: u64,
    /// `direct`/`room`: sessions reopened after the server closed them or they broke.
    pub reconnects: u64,
    /// Sessions ended mid-run, by close code (`"none"`: broke without a close frame).
    pub closed_by_code: BTreeMap<String, u64>,
    /// Latency of measured messages: open loop from the due time, closed loop from the send time.
    pub latency_us: Percentiles,
    /// Open loop: how late the loadgen itself sent each message after its due time.
    pub send_lag_us: Percentiles,
    /// TCP connect plus WebSocket handshake time.
    pub connect_us: Percentiles,
    /// The loadgen's own CPU time (user + system) over the whole process lifetime.
    pub cpu_seconds: f64,
    /// The loadgen's CPU microseconds (all processes, run phase) per message sent (`null`
    /// without messages).
    pub cpu_us_per_message: Option<f64>,
    /// `room`: (rooms, members per room, publishers per room).
    pub rooms: Option<(u32, u32, u32)>,
    /// The merged latency histogram, for `--hdr-out` (not part of the JSON).
    #[serde(skip)]
    pub latency_histogram: Option<Histogram<u64>>,
}

impl Report {
    /// A report of `scenario` with every figure zero or absent, to be filled in.
    pub fn empty(scenario: &'static str) -> Report {
        Report {
            scenario,
            mode: "",
            connections: 0,
            connected: 0,
            held: 0,
            in_flight: None,
            size: None,
            duration_s: 0.0,
            warmup_s: 0.0,
            target_rate: None,
            achieved_rate: 0.0,
            received_rate: 0.0,
            valid: false,
            sent: 0,
            expected: 0,
            received: 0,
            lost: 0,
            duplicated: 0,
            unconfirmed: 0,
            reordered: 0,
            errors: 0,
            connect_failures: 0,
            reconnects: 0,
            closed_by_code: BTreeMap::new(),
            latency_us: Percentiles::default(),
            send_lag_us: Percentiles::default(),
            connect_us: Percentiles::default(),
            cpu_seconds: 0.0,
            cpu_us_per_message: None,
            rooms: None,
            latency_histogram: None,
        }
    }

    /// Fills the audit counts.
    pub fn set_audit(&mut self, audit: &AuditSummary) {
        self.sent = audit.sent;
        self.expected = audit.expected;
        self.received = audit.received;
        self.lost = audit.lost;
        self.duplicated = audit.duplicated;
        self.unconfirmed = audit.unconfirmed;
        self.reordered = audit.reordered;
    }

    /// The human-readable final table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(out, "{k:<18} {v}");
        };
        row("scenario", format!("{} ({})", self.scenario, self.mode));
        row(
            "connections",
            format!(
                "{} asked, {} connected, {} held at end, {} failed",
                self.connections, self.connected, self.held, self.connect_failures
            ),
        );
        if let Some((rooms, members, publishers)) = self.rooms {
            row(
                "rooms",
                format!("{rooms} of {members} members, {publishers} publishing each"),
            );
        }
        if let Some(k) = self.in_flight {
            row("in-flight depth", format!("{k} per connection"));
        }
        if self.mode != "hold" {
            row(
                "messages",
                format!(
                    "sent {} expected {} received {} lost {} duplicated {} reordered {}",
                    self.sent,
                    self.expected,
                    self.received,
                    self.lost,
                    self.duplicated,
                    self.reordered
                ),
            );
            let target = self
                .target_rate
                .map_or_else(|| "none".to_string(), |t| format!("{t:.0}/s"));
            row(
                "rate",
                format!(
                    "target {target} achieved {:.0}/s received {:.0}/s over {:.1}s",
                    self.achieved_rate, self.received_rate, self.duration_s
                ),
            );
        }
        row("errors", self.errors.to_string());
        if self.reconnects > 0 || !self.closed_by_code.is_empty() {
            let codes: Vec<String> = self
                .closed_by_code
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect();
            row(
                "sessions",
                format!(
                    "{} reconnects, closed by code {{{}}}, {} copies unconfirmed",
                    self.reconnects,
                    codes.join(", "),
                    self.unconfirmed
                ),
            );
        }
        row("valid", self.valid.to_string());
        if self.mode != "hold" {
            row("latency us", percentile_row(&self.latency_us));
            if self.target_rate.is_some() {
                row("send lag us", percentile_row(&self.send_lag_us));
            }
        }
        row("connect us", percentile_row(&self.connect_us));
        let per_msg = self
            .cpu_us_per_message
            .map_or_else(String::new, |c| format!(" ({c:.2} us per message)"));
        row("loadgen cpu", format!("{:.2} s{per_msg}", self.cpu_seconds));
        out
    }

    /// The JSON document written by `--json`.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

/// One table row of percentiles.
fn percentile_row(p: &Percentiles) -> String {
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} max {} (n={})",
        p.p50, p.p90, p.p99, p.p999, p.max, p.count
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_histogram() {
        let mut h = new_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max, p.count),
            (500, 900, 990, 1000, 1000)
        );
        assert_eq!(p.p999, 999);
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn record_ns_clamps_and_saturates() {
        let mut h = new_histogram();
        record_ns(&mut h, 10);
        record_ns(&mut h, 3_600_000_000_000);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= HIST_HIGH_US);
        assert!(h.max() < 2 * HIST_HIGH_US);
    }

    #[test]
    fn validity_is_99_percent_of_target() {
        assert!(is_valid(Some(1000.0), 990.0));
        assert!(!is_valid(Some(1000.0), 989.9));
        assert!(is_valid(None, 0.0));
    }

    fn sample() -> Report {
        Report {
            mode: "open",
            connections: 10,
            connected: 10,
            held: 10,
            size: Some(64),
            duration_s: 2.0,
            warmup_s: 1.0,
            target_rate: Some(1000.0),
            achieved_rate: 1000.0,
            received_rate: 1000.0,
            valid: true,
            cpu_seconds: 0.5,
            cpu_us_per_message: Some(12.5),
            ..Report::empty("echo")
        }
    }

    #[test]
    fn json_has_the_spec_keys() {
        let mut r = sample();
        r.set_audit(&AuditSummary {
            sent: 2000,
            expected: 2000,
            received: 1999,
            lost: 1,
            duplicated: 2,
            reordered: 3,
            unknown: 0,
            unconfirmed: 4,
        });
        let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        for key in [
            "scenario",
            "target_rate",
            "achieved_rate",
            "valid",
            "sent",
            "received",
            "lost",
            "duplicated",
            "reordered",
            "errors",
            "cpu_seconds",
            "reconnects",
            "closed_by_code",
            "unconfirmed",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_us"].get(key).is_some());
            assert!(v["connect_us"].get(key).is_some());
        }
        assert_eq!(v["lost"], 1);
        assert_eq!(v["unconfirmed"], 4);
        assert_eq!(v["scenario"], "echo");
    }

    #[test]
    fn table_mentions_the_key_figures() {
        let mut r = sample();
        r.reconnects = 4;
        r.closed_by_code.insert("1008".into(), 3);
        r.closed_by_code.insert("none".into(), 1);
        let t = r.table();
        assert!(
            t.contains("4 reconnects, closed by code {1008: 3, none: 1}"),
            "{t}"
        );
        assert!(t.contains("target 1000/s"));
        assert!(t.contains("valid              true"));
        assert!(t.contains("12.50 us per message"));
    }
}
