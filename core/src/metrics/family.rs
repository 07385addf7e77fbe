//! What a metric family is: its name, its Prometheus type, its help text, its label names and
//! which part of which binary exports it. The families themselves are listed in
//! [`super::names`].

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets (`_bucket{le=...}`), `_sum` and `_count`.
    Histogram,
}

impl Kind {
    /// The word on the `# TYPE` line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Which binary, and in which mode, exports a family (for docs/operations.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `hermod-proxy`, always: connections, sessions, messages, tunnels.
    Gateway,
    /// `hermod-proxy` with `--brokers` or `--registry`: its links to brokers.
    GatewayLinks,
    /// The Redis engine: `hermod-proxy` with `--redis`/`--sentinel`, and `hermod-broker`.
    Engine,
    /// The in-memory engine: `hermod-proxy` with neither `--redis`, `--sentinel`, `--brokers`
    /// nor `--registry`.
    MemoryEngine,
    /// `hermod-proxy` and `hermod-broker`, always: the process's own figures read from /proc,
    /// the build, and the admin listener's own counters.
    Process,
    /// `hermod-broker`, always: gateway links, sessions, draining, the registry.
    Broker,
}

impl Source {
    /// Who exports it, in words.
    pub const fn describe(self) -> &'static str {
        match self {
            Source::Gateway => "proxy",
            Source::GatewayLinks => "proxy with `--brokers`/`--registry`",
            Source::Engine => "proxy with `--redis`/`--sentinel`; broker",
            Source::MemoryEngine => "proxy with the in-memory engine",
            Source::Process => "proxy; broker",
            Source::Broker => "broker",
        }
    }
}

/// One metric family: written once with `# HELP` and `# TYPE`, then its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// Matches `[a-zA-Z_:][a-zA-Z0-9_:]*` and starts with `hermod_`.
    pub name: &'static str,
    pub kind: Kind,
    /// One line, no backslash or newline (written as is).
    pub help: &'static str,
    /// Label names of every sample, in order; empty for an unlabelled family.
    pub labels: &'static [&'static str],
    pub source: Source,
}

impl Family {
    /// A counter without labels.
    pub const fn counter(source: Source, name: &'static str, help: &'static str) -> Family {
        Family::new(source, Kind::Counter, name, help)
    }

    /// A gauge without labels.
    pub const fn gauge(source: Source, name: &'static str, help: &'static str) -> Family {
        Family::new(source, Kind::Gauge, name, help)
    }

    /// A histogram (its `le` label is implied).
    pub const fn histogram(source: Source, name: &'static str, help: &'static str) -> Family {
        Family::new(source, Kind::Histogram, name, help)
    }

    /// The same family with these label names.
    pub const fn with_labels(self, labels: &'static [&'static str]) -> Family {
        Family { labels, ..self }
    }

    const fn new(source: Source, kind: Kind, name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind,
            help,
            labels: &[],
            source,
        }
    }
}
