//! The gateway's counters: plain atomics shared by every worker and read by the admin listener.
//!
//! Workers bump them with `Relaxed` stores on their own hot path (no locks, no allocation);
//! [`Metrics::render`] writes them in the Prometheus text exposition format through
//! `hermod_core::metrics`, whose table names every metric.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use hermod_core::metrics::{names, Exposition};
use hermod_core::rate::Over;

/// Close codes counted one by one; anything else lands in `other`. 1006 stands for "no close
/// frame" (reset, EOF, I/O error, linger expired), as in RFC 6455.
pub const CLOSE_CODES: [u16; 12] = [
    1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 1012, 4001, 4002,
];

/// Upper bounds (seconds) of the `send`/`publish` -> `sent` latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The statuses a connection is refused with before an upgrade, each counted under its own
/// label: bad request or upgrade, bad token, unknown path, method not allowed, plain HTTP on a
/// WebSocket endpoint, header fields too large.
pub const REJECT_STATUSES: [u16; 7] = [400, 401, 403, 404, 405, 426, 431];

/// Why a connection was refused before it became a session (503 at accept, 429 at the
/// handshake), each counted under its own `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `--max-connections` reached: 503.
    ServerFull,
    /// `--max-connections-per-ip` reached by the client's address: 503.
    AddressConnections,
    /// `--max-connects-per-ip-per-sec` exceeded by the client's address: 503.
    AddressRate,
    /// `--max-sessions-per-user` reached by the user: 429.
    UserSessions,
}

impl Refused {
    /// Every reason, in label order.
    pub const ALL: [Refused; 4] = [
        Refused::ServerFull,
        Refused::AddressConnections,
        Refused::AddressRate,
        Refused::UserSessions,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refused::ServerFull => "server_full",
            Refused::AddressConnections => "address_connections",
            Refused::AddressRate => "address_rate",
            Refused::UserSessions => "user_sessions",
        }
    }
}

/// Which deadline of a new connection passed: no first byte, or no whole request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadTimeout {
    FirstByte,
    Head,
}

/// A handshake refused with an HTTP status (or failed without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Answered with this status (one not in [`REJECT_STATUSES`] counts as `other`).
    Status(u16),
    /// No answer: timed out, the peer went away mid-handshake, or tungstenite gave up.
    Failed,
}

/// Process-wide gateway counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client connections currently held (handshaking or open), all workers. Also the admission
    /// gate for `max_connections`, so it is a `usize` updated with `fetch_add`/`fetch_sub`.
    pub connections_open: AtomicUsize,
    /// TCP connections accepted.
    pub connections_accepted: AtomicU64,
    /// TCP connections dropped at accept because `max_connections` was reached.
    pub connections_refused: AtomicU64,
    /// WebSocket upgrades completed.
    pub handshakes_ok: AtomicU64,
    /// Handshakes refused 400/401/404, and handshakes that failed otherwise, in that order.
    pub handshakes_rejected: [AtomicU64; REJECT_STATUSES.len() + 2],
    /// Sessions ended, by close code, index-aligned with [`CLOSE_CODES`].
    pub closed_by_code: [AtomicU64; CLOSE_CODES.len()],
    /// Sessions ended with a code not in [`CLOSE_CODES`].
    pub closed_other: AtomicU64,
    /// Data messages received from clients.
    pub messages_in: AtomicU64,
    /// Data messages handed to clients' sockets.
    pub messages_out: AtomicU64,
    /// Payload bytes of `messages_in`.
    pub bytes_in: AtomicU64,
    /// Payload bytes of `messages_out`.
    pub bytes_out: AtomicU64,
    /// Sessions closed 1008 "slow consumer".
    pub slow_consumer_closes: AtomicU64,
    /// Requests refused `unavailable` because the broker's channel was full.
    pub broker_queue_full: AtomicU64,
    /// `send`/`publish` answered `unavailable` because no `sent` came within the request timeout.
    pub request_timeouts: AtomicU64,
    /// `send`/`publish` -> `sent` latency.
    pub send_latency: Histogram,
    /// Client messages refused over a rate limit, index-aligned with [`Over::ALL`].
    pub rate_limited: [AtomicU64; 2],
    /// Sessions closed 1008 `rate limit exceeded`.
    pub rate_limit_closes: AtomicU64,
    /// `join`/`publish`/`send`/`refresh` answered `forbidden`.
    pub forbidden: AtomicU64,
    /// Server API calls answered 200.
    pub api_calls: AtomicU64,
    /// Server API requests refused 401.
    pub api_unauthorized: AtomicU64,
    /// Server API requests answered with another error.
    pub api_refused: AtomicU64,
    /// Sessions closed 4001 `token expired`.
    pub token_expired: AtomicU64,
    /// `send`/`publish` refused because `data` nested too deep.
    pub data_too_deep: AtomicU64,
    /// Times a session stopped reading while its output was blocked.
    pub reads_paused: AtomicU64,
    /// Tunnels held now (`--route`): connecting, awaiting the upstream's answer, or relaying.
    pub tunnels_open: AtomicUsize,
    /// Requests routed to a tunnel upstream, whatever came of them.
    pub tunnel_requests: AtomicU64,
    /// Tunnels whose upstream answered 101: relaying began.
    pub tunnels_upgraded: AtomicU64,
    /// Bytes relayed from clients to upstreams.
    pub tunnel_bytes_up: AtomicU64,
    /// Bytes relayed from upstreams to clients (their 101 heads included).
    pub tunnel_bytes_down: AtomicU64,
    /// Routed requests answered 502/504: upstream unreachable, too slow, or not speaking HTTP.
    pub tunnel_upstream_failures: AtomicU64,
    /// Connections refused by reason, index-aligned with [`Refused::ALL`].
    pub admission_refused: [AtomicU64; 4],
    /// Connections closed at the first-byte and head deadlines, in that order.
    pub handshake_timeouts: [AtomicU64; 2],
    /// JWKS fetches that installed a key set, and fetches that failed (`--jwks-url`).
    pub jwks_fetches: [AtomicU64; 2],
    /// Webhook events, POSTs and the queue (`--webhook-url`).
    pub webhooks: WebhookMetrics,
    /// Events appended to the Redis stream, and its queue (`--events-stream`).
    pub events_stream: StreamMetrics,
}

/// The events stream's figures: the workers count drops, the `hermod-events-stream` thread the
/// rest.
#[derive(Debug, Default)]
pub struct StreamMetrics {
    /// Events Redis appended (their XADD answered with an id).
    pub appended: AtomicU64,
    /// Events dropped at a full queue.
    pub dropped: AtomicU64,
    /// Failed attempts at a batch (each is retried).
    pub failures: AtomicU64,
    /// Events waiting (queued and in the batch in flight), as last seen by the stream thread.
    pub queued: AtomicU64,
}

/// The webhook figures: the workers count drops, the `hermod-webhooks` thread the rest.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    /// Events in POSTs answered 2xx.
    pub events_sent: AtomicU64,
    /// Events dropped at a full queue.
    pub events_dropped: AtomicU64,
    /// POSTs attempted.
    pub posts: AtomicU64,
    /// POSTs failed.
    pub post_failures: AtomicU64,
    /// Events waiting (queued and in the batch in flight), as last seen by the webhook thread.
    pub queued: AtomicU64,
}

/// A fixed-bucket histogram in the Prometheus sense (cumulative buckets are computed at render).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (non-cumulative), index-aligned with [`LATENCY_BUCKETS`], plus
    /// one overflow bucket for `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observations in microseconds (rendered in seconds). The count is the sum of the
    /// buckets.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[idx].fetch_add(1, Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    fn render(&self, w: &mut Exposition<'_>) {
        let counts = self.buckets.iter().map(|b| b.load(Relaxed));
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        w.histogram(&names::SEND_LATENCY, &LATENCY_BUCKETS, counts, sum);
    }
}

impl Metrics {
    /// Takes one of `max` connection places for a new connection, atomically across workers:
    /// false (and counted as refused) when all are taken. The place is given back by
    /// decrementing `connections_open` when the connection goes.
    pub fn try_open(&self, max: usize) -> bool {
        let taken = self
            .connections_open
            .fetch_update(Relaxed, Relaxed, |open| (open < max).then_some(open + 1))
            .is_ok();
        if taken {
            self.connections_accepted.fetch_add(1, Relaxed);
        } else {
            self.connections_refused.fetch_add(1, Relaxed);
        }
        taken
    }

    /// Counts a session that ended with `code`.
    pub fn closed(&self, code: u16) {
        match CLOSE_CODES.iter().position(|c| *c == code) {
            Some(i) => self.closed_by_code[i].fetch_add(1, Relaxed),
            None => self.closed_other.fetch_add(1, Relaxed),
        };
    }

    /// Counts a connection refused for `why`.
    pub fn refused(&self, why: Refused) {
        self.admission_refused[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts a connection closed at one of its head deadlines.
    pub fn head_timeout(&self, stage: HeadTimeout) {
        self.handshake_timeouts[stage as usize].fetch_add(1, Relaxed);
    }

    /// Counts a refused or failed handshake.
    pub fn rejected(&self, why: Rejected) {
        let n = REJECT_STATUSES.len();
        let i = match why {
            Rejected::Status(status) => REJECT_STATUSES
                .iter()
                .position(|&s| s == status)
                .unwrap_or(n),
            Rejected::Failed => n + 1,
        };
        self.handshakes_rejected[i].fetch_add(1, Relaxed);
    }

    /// Appends every metric in Prometheus text format (with `# HELP`/`# TYPE` lines).
    pub fn render(&self, out: &mut String) {
        let mut w = Exposition::new(out);
        w.gauge(
            &names::CONNECTIONS_OPEN,
            self.connections_open.load(Relaxed) as u64,
        );
        let counters = [
            (&names::CONNECTIONS_ACCEPTED, &self.connections_accepted),
            (&names::CONNECTIONS_REFUSED, &self.connections_refused),
            (&names::HANDSHAKES, &self.handshakes_ok),
            (&names::MESSAGES_IN, &self.messages_in),
            (&names::MESSAGES_OUT, &self.messages_out),
            (&names::BYTES_IN, &self.bytes_in),
            (&names::BYTES_OUT, &self.bytes_out),
            (&names::SLOW_CONSUMER_CLOSES, &self.slow_consumer_closes),
            (&names::BROKER_QUEUE_FULL, &self.broker_queue_full),
            (&names::REQUEST_TIMEOUTS, &self.request_timeouts),
            (&names::SESSIONS_CLOSED_OTHER, &self.closed_other),
        ];
        for (family, value) in counters {
            w.counter(family, value.load(Relaxed));
        }
        self.render_labelled(&mut w);
        self.send_latency.render(&mut w);
        self.render_fairness(&mut w);
        self.render_tunnels(&mut w);
        self.render_webhooks(&mut w);
    }

    fn render_webhooks(&self, w: &mut Exposition<'_>) {
        let h = &self.webhooks;
        let counters = [
            (&names::WEBHOOK_EVENTS_SENT, &h.events_sent),
            (&names::WEBHOOK_EVENTS_DROPPED, &h.events_dropped),
            (&names::WEBHOOK_POSTS, &h.posts),
            (&names::WEBHOOK_POST_FAILURES, &h.post_failures),
        ];
        for (family, value) in counters {
            w.counter(family, value.load(Relaxed));
        }
        w.gauge(&names::WEBHOOK_QUEUE, h.queued.load(Relaxed));
        let e = &self.events_stream;
        let counters = [
            (&names::EVENTS_STREAM_APPENDED, &e.appended),
            (&names::EVENTS_STREAM_DROPPED, &e.dropped),
            (&names::EVENTS_STREAM_FAILURES, &e.failures),
        ];
        for (family, value) in counters {
            w.counter(family, value.load(Relaxed));
        }
        w.gauge(&names::EVENTS_STREAM_QUEUE, e.queued.load(Relaxed));
    }

    /// Counts a message refused over the `over` bucket.
    pub fn rate_limited(&self, over: Over) {
        let i = Over::ALL.iter().position(|o| *o == over).unwrap_or(0);
        self.rate_limited[i].fetch_add(1, Relaxed);
    }

    /// Issue 11, session fairness: rate limits, input depth, paused reads.
    fn render_fairness(&self, w: &mut Exposition<'_>) {
        let limited = &names::RATE_LIMITED;
        w.header(limited);
        for (over, counter) in Over::ALL.iter().zip(&self.rate_limited) {
            w.sample(limited, &[&over.as_str()], counter.load(Relaxed));
        }
        let counters = [
            (&names::RATE_LIMIT_CLOSES, &self.rate_limit_closes),
            (&names::DATA_TOO_DEEP, &self.data_too_deep),
            (&names::FORBIDDEN, &self.forbidden),
            (&names::API_CALLS, &self.api_calls),
            (&names::API_UNAUTHORIZED, &self.api_unauthorized),
            (&names::API_REFUSED, &self.api_refused),
            (&names::TOKEN_EXPIRED_CLOSES, &self.token_expired),
            (&names::READS_PAUSED, &self.reads_paused),
        ];
        for (family, value) in counters {
            w.counter(family, value.load(Relaxed));
        }
    }

    /// Handshakes refused by status, sessions closed by code.
    fn render_labelled(&self, w: &mut Exposition<'_>) {
        let rejected = &names::HANDSHAKES_REJECTED;
        w.header(rejected);
        for (i, counter) in self.handshakes_rejected.iter().enumerate() {
            let value = counter.load(Relaxed);
            match REJECT_STATUSES.get(i) {
                Some(status) => w.sample(rejected, &[status], value),
                None if i == REJECT_STATUSES.len() => w.sample(rejected, &[&"other"], value),
                None => w.sample(rejected, &[&"failed"], value),
            }
        }
        let refused = &names::ADMISSION_REFUSED;
        w.header(refused);
        for (why, counter) in Refused::ALL.iter().zip(&self.admission_refused) {
            w.sample(refused, &[&why.label()], counter.load(Relaxed));
        }
        let timeouts = &names::HANDSHAKE_TIMEOUTS;
        w.header(timeouts);
        let [first_byte, head] = &self.handshake_timeouts;
        w.sample(timeouts, &[&"first_byte"], first_byte.load(Relaxed));
        w.sample(timeouts, &[&"head"], head.load(Relaxed));
        let closed = &names::SESSIONS_CLOSED;
        w.header(closed);
        for (code, counter) in CLOSE_CODES.iter().zip(&self.closed_by_code) {
            w.sample(closed, &[code], counter.load(Relaxed));
        }
    }

    fn render_tunnels(&self, w: &mut Exposition<'_>) {
        w.gauge(&names::TUNNELS_OPEN, self.tunnels_open.load(Relaxed) as u64);
        let counters = [
            (&names::TUNNEL_REQUESTS, &self.tunnel_requests),
            (&names::TUNNELS, &self.tunnels_upgraded),
            (
                &names::TUNNEL_UPSTREAM_FAILURES,
                &self.tunnel_upstream_failures,
            ),
        ];
        for (family, value) in counters {
            w.counter(family, value.load(Relaxed));
        }
        let bytes = &names::TUNNEL_BYTES;
        w.header(bytes);
        w.sample(bytes, &[&"up"], self.tunnel_bytes_up.load(Relaxed));
        w.sample(bytes, &[&"down"], self.tunnel_bytes_down.load(Relaxed));
        let jwks = &names::JWKS_FETCHES;
        w.header(jwks);
        let [ok, failed] = &self.jwks_fetches;
        w.sample(jwks, &[&"ok"], ok.load(Relaxed));
        w.sample(jwks, &[&"failed"], failed.load(Relaxed));
    }

    /// Counts one JWKS fetch.
    pub fn jwks_fetched(&self, ok: bool) {
        self.jwks_fetches[usize::from(!ok)].fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_holds_across_threads() {
        let m = std::sync::Arc::new(Metrics::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || (0..1_000).filter(|_| m.try_open(100)).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 100);
        assert_eq!(m.connections_open.load(Relaxed), 100);
        assert_eq!(m.connections_accepted.load(Relaxed), 100);
        assert_eq!(m.connections_refused.load(Relaxed), 3_900);
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.closed(1009);
        m.closed(4000);
        m.rejected(Rejected::Status(401));
        m.rejected(Rejected::Status(426));
        m.rejected(Rejected::Status(503));
        m.send_latency.observe(Duration::from_micros(700));
        m.send_latency.observe(Duration::from_secs(10));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("# TYPE hermod_connections_open gauge\nhermod_connections_open 0\n"));
        assert!(out.contains("hermod_sessions_closed_total{code=\"1009\"} 1\n"));
        assert!(out.contains("hermod_sessions_closed_other_total 1\n"));
        assert!(out.contains("hermod_handshakes_rejected_total{status=\"401\"} 1\n"));
        assert!(out.contains("hermod_handshakes_rejected_total{status=\"426\"} 1\n"));
        assert!(out.contains("hermod_handshakes_rejected_total{status=\"other\"} 1\n"));
        assert!(out.contains("hermod_handshakes_rejected_total{status=\"failed\"} 0\n"));
        assert!(out.contains("hermod_send_latency_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(out.contains("hermod_send_latency_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(out.contains("hermod_send_latency_seconds_bucket{le=\"5\"} 1\n"));
        assert!(out.contains("hermod_send_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(out.contains("hermod_send_latency_seconds_count 2\n"));
        assert!(out.contains("hermod_tunnel_bytes_total{direction=\"up\"} 0\n"));
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("hermod_"), "{line}");
        }
    }
}
