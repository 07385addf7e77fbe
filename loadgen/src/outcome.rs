//! What a worker measured, in a form that merges across threads and across processes (sans-io).
//!
//! Worker processes (`--procs`) send their [`Outcome`] to the parent as one line of JSON in which
//! every histogram is serialized with HdrHistogram's V2 format and base64-encoded; the parent
//! decodes and merges them, so percentiles of the merged run are exact, not averaged.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::audit::AuditSummary;
use crate::report::new_histogram;

/// Why a merge or a decode failed.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    /// Two histograms could not be added (bounds differ: a worker from another version).
    #[error("merging histograms: {0}")]
    Merge(String),
    /// A worker's result line is not valid JSON of the expected shape.
    #[error("worker result: {0}")]
    Json(#[from] serde_json::Error),
    /// A histogram field is not valid base64.
    #[error("worker histogram: {0}")]
    Base64(#[from] base64::DecodeError),
    /// A histogram field is not a valid V2 histogram.
    #[error("worker histogram: {0}")]
    Histogram(String),
}

/// Everything one worker (thread or process) measured. Its serde form is the wire line
/// ([`Outcome::to_wire`]): histograms as base64 of their V2 serialization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Audit counts over measured messages; `lost` is recomputed after the final merge.
    pub audit: AuditSummary,
    /// Broken connections, refused requests, unparseable or unknown replies.
    pub errors: u64,
    /// Connections that completed their handshake.
    pub connected: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Connections still open at the end.
    pub held: u64,
    /// Messages sent over the whole run, warmup included (CPU per message).
    pub sent_all: u64,
    /// Measured messages written by the end of the measured window (plus one tick): what the
    /// achieved rate counts, so a loadgen that falls behind its schedule shows it.
    pub on_time: u64,
    /// Messages received over the whole run, warmup included (CPU per message).
    pub received_all: u64,
    /// Sessions the loadgen reopened after the server closed them or they broke.
    #[serde(default)]
    pub reconnects: u64,
    /// Sessions ended mid-run, by close code (`"none"`: broke without a close frame).
    #[serde(default)]
    pub closed_by_code: BTreeMap<String, u64>,
    /// Latency of measured messages, microseconds.
    #[serde(with = "base64_v2")]
    pub latency: Histogram<u64>,
    /// Open loop: lateness of the loadgen's own sends, microseconds.
    #[serde(with = "base64_v2")]
    pub send_lag: Histogram<u64>,
    /// TCP connect plus WebSocket handshake times, microseconds.
    #[serde(with = "base64_v2")]
    pub connect: Histogram<u64>,
    /// CPU seconds of the process(es) during the run phase (set per process, summed).
    pub cpu_run_seconds: f64,
    /// CPU seconds of the process(es) over their whole life (set per process, summed).
    pub cpu_seconds: f64,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            audit: AuditSummary::default(),
            errors: 0,
            connected: 0,
            connect_failures: 0,
            held: 0,
            sent_all: 0,
            on_time: 0,
            received_all: 0,
            reconnects: 0,
            closed_by_code: BTreeMap::new(),
            latency: new_histogram(),
            send_lag: new_histogram(),
            connect: new_histogram(),
            cpu_run_seconds: 0.0,
            cpu_seconds: 0.0,
        }
    }
}

/// Adds `other` into `into`.
fn add(into: &mut Histogram<u64>, other: &Histogram<u64>) -> Result<(), OutcomeError> {
    into.add(other)
        .map_err(|e| OutcomeError::Merge(format!("{e:?}")))
}

/// A histogram as base64 of its V2 serialization.
pub fn encode_histogram(h: &Histogram<u64>) -> Result<String, OutcomeError> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| OutcomeError::Histogram(format!("{e:?}")))?;
    Ok(STANDARD.encode(bytes))
}

/// The histogram `encode_histogram` made, merged into a fresh one with the run's bounds.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, OutcomeError> {
    let bytes = STANDARD.decode(text)?;
    let decoded: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| OutcomeError::Histogram(format!("{e:?}")))?;
    let mut h = new_histogram();
    add(&mut h, &decoded)?;
    Ok(h)
}

/// Serde for the histogram fields of [`Outcome`]: [`encode_histogram`] and [`decode_histogram`].
mod base64_v2 {
    use hdrhistogram::Histogram;
    use serde::{de, ser, Deserialize, Deserializer, Serializer};

    /// Writes `h` as a base64 string.
    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let text = super::encode_histogram(h).map_err(ser::Error::custom)?;
        s.serialize_str(&text)
    }

    /// Reads what `serialize` wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text = String::deserialize(d)?;
        super::decode_histogram(&text).map_err(de::Error::custom)
    }
}

impl Outcome {
    /// Adds another worker's figures.
    pub fn merge(&mut self, other: &Outcome) -> Result<(), OutcomeError> {
        self.audit.merge(&other.audit);
        self.errors += other.errors;
        self.connected += other.connected;
        self.connect_failures += other.connect_failures;
        self.held += other.held;
        self.sent_all += other.sent_all;
        self.on_time += other.on_time;
        self.received_all += other.received_all;
        self.reconnects += other.reconnects;
        for (code, n) in &other.closed_by_code {
            *self.closed_by_code.entry(code.clone()).or_insert(0) += n;
        }
        add(&mut self.latency, &other.latency)?;
        add(&mut self.send_lag, &other.send_lag)?;
        add(&mut self.connect, &other.connect)?;
        self.cpu_run_seconds += other.cpu_run_seconds;
        self.cpu_seconds += other.cpu_seconds;
        Ok(())
    }

    /// One line of JSON (no newline inside) for the parent process.
    pub fn to_wire(&self) -> Result<String, OutcomeError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Parses what `to_wire` wrote.
    pub fn from_wire(line: &str) -> Result<Outcome, OutcomeError> {
        Ok(serde_json::from_str(line)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::record_ns;

    fn sample(base: u64) -> Outcome {
        let mut o = Outcome {
            audit: AuditSummary {
                sent: 10 * base,
                expected: 10 * base,
                received: 9 * base,
                duplicated: base,
                ..AuditSummary::default()
            },
            errors: base,
            connected: 2,
            reconnects: base,
            closed_by_code: BTreeMap::from([("1008".to_string(), base)]),
            sent_all: 11 * base,
            cpu_seconds: 0.5,
            ..Outcome::default()
        };
        for v in 1..=1000 {
            record_ns(&mut o.latency, v * base * 1000);
        }
        record_ns(&mut o.connect, 250_000);
        o
    }

    #[test]
    fn wire_round_trip_keeps_every_count() {
        let o = sample(3);
        let line = o.to_wire().unwrap();
        assert!(!line.contains('\n'));
        let back = Outcome::from_wire(&line).unwrap();
        assert_eq!(back.audit, o.audit);
        assert_eq!(back.latency, o.latency);
        assert_eq!(back.connect.len(), 1);
        assert_eq!(back.sent_all, 33);
        assert_eq!(back.cpu_seconds, 0.5);
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut m = Outcome::default();
        m.merge(&sample(1)).unwrap();
        m.merge(&Outcome::from_wire(&sample(2).to_wire().unwrap()).unwrap())
            .unwrap();
        assert_eq!(m.audit.sent, 30);
        assert_eq!(m.audit.with_lost().lost, 3);
        assert_eq!(m.latency.len(), 2000);
        assert_eq!(m.latency.max(), m.latency.highest_equivalent(2000));
        assert_eq!(m.connected, 4);
        assert_eq!(m.reconnects, 3);
        assert_eq!(m.closed_by_code.get("1008"), Some(&3));
        assert_eq!(m.cpu_seconds, 1.0);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Outcome::from_wire("{").is_err());
        let mut w: serde_json::Value = serde_json::from_str(&sample(1).to_wire().unwrap()).unwrap();
        w["latency"] = "bm90IGEgaGlzdG9ncmFt".into();
        assert!(Outcome::from_wire(&w.to_string()).is_err());
    }
}
