//! The one list of every metric either binary exports: name, type, help text, labels, and who
//! exports it. Both binaries write their figures through these constants only
//! ([`super::Exposition`] takes a [`Family`]), docs/operations.md lists them (a test keeps the
//! list in sync), and each binary has a test that fails if it emits a family missing here.
//!
//! Naming: every name starts with `hermod_`; counters end in `_total`; one figure has one name
//! in both binaries (the Redis engine's figures are `hermod_redis_*` wherever they come from).

use super::family::Family;
use super::family::Source::{Broker, Engine, Gateway, GatewayLinks, MemoryEngine, Process};

// The gateway (`hermod-proxy`): connections and handshakes.
pub const CONNECTIONS_OPEN: Family = Family::gauge(
    Gateway,
    "hermod_connections_open",
    "Client connections held now.",
);
pub const CONNECTIONS_ACCEPTED: Family = Family::counter(
    Gateway,
    "hermod_connections_accepted_total",
    "TCP connections accepted.",
);
pub const CONNECTIONS_REFUSED: Family = Family::counter(
    Gateway,
    "hermod_connections_refused_total",
    "Connections refused at max_connections (answered 503) or shed for want of file descriptors.",
);
pub const HANDSHAKES: Family = Family::counter(
    Gateway,
    "hermod_handshakes_total",
    "WebSocket upgrades completed.",
);
pub const HANDSHAKES_REJECTED: Family = Family::counter(
    Gateway,
    "hermod_handshakes_rejected_total",
    "Handshakes refused, by HTTP status (failed: no response).",
)
.with_labels(&["status"]);
// Issue 11, bounded connections (i11-conn): refusals by reason, head deadlines by stage.
pub const ADMISSION_REFUSED: Family = Family::counter(
    Gateway,
    "hermod_admission_refused_total",
    "Connections answered 503 at accept or 429 at the handshake, by reason.",
)
.with_labels(&["reason"]);
pub const HANDSHAKE_TIMEOUTS: Family = Family::counter(
    Gateway,
    "hermod_handshake_timeouts_total",
    "Connections closed for no first byte, or no whole request head, in time.",
)
.with_labels(&["stage"]);

// The gateway: messages and sessions.
pub const MESSAGES_IN: Family = Family::counter(
    Gateway,
    "hermod_messages_in_total",
    "Data messages received from clients.",
);
pub const MESSAGES_OUT: Family = Family::counter(
    Gateway,
    "hermod_messages_out_total",
    "Data messages written to clients.",
);
pub const BYTES_IN: Family = Family::counter(
    Gateway,
    "hermod_bytes_in_total",
    "Payload bytes received from clients.",
);
pub const BYTES_OUT: Family = Family::counter(
    Gateway,
    "hermod_bytes_out_total",
    "Payload bytes written to clients.",
);
pub const SLOW_CONSUMER_CLOSES: Family = Family::counter(
    Gateway,
    "hermod_slow_consumer_closes_total",
    "Sessions closed 1008 slow consumer.",
);
pub const BROKER_QUEUE_FULL: Family = Family::counter(
    Gateway,
    "hermod_broker_queue_full_total",
    "Requests refused because the broker queue was full.",
);
pub const REQUEST_TIMEOUTS: Family = Family::counter(
    Gateway,
    "hermod_request_timeouts_total",
    "Requests answered unavailable after the request timeout.",
);
pub const SESSIONS_CLOSED_OTHER: Family = Family::counter(
    Gateway,
    "hermod_sessions_closed_other_total",
    "Sessions ended with an uncommon close code.",
);
pub const SESSIONS_CLOSED: Family = Family::counter(
    Gateway,
    "hermod_sessions_closed_total",
    "Sessions ended, by close code (1006: no close frame).",
)
.with_labels(&["code"]);
pub const SEND_LATENCY: Family = Family::histogram(
    Gateway,
    "hermod_send_latency_seconds",
    "Time from a client's send/publish to the broker's sent answer.",
);
// Issue 11, session fairness: rate limits, input depth, outbound accounting.
pub const RATE_LIMITED: Family = Family::counter(
    Gateway,
    "hermod_rate_limited_total",
    "Client messages refused over a session's rate limit, by bucket (messages, bytes).",
)
.with_labels(&["reason"]);
pub const RATE_LIMIT_CLOSES: Family = Family::counter(
    Gateway,
    "hermod_rate_limit_closes_total",
    "Sessions closed 1008 for staying over their rate limit.",
);
pub const DATA_TOO_DEEP: Family = Family::counter(
    Gateway,
    "hermod_data_too_deep_total",
    "send/publish refused bad_request: data nested deeper than 64 levels.",
);
// Issue 12, room permissions and token lifetime.
pub const FORBIDDEN: Family = Family::counter(
    Gateway,
    "hermod_forbidden_total",
    "join, publish, send and refresh answered forbidden (no grant, or a refused token).",
);
// Issue 13, the server API.
pub const API_CALLS: Family = Family::counter(
    Gateway,
    "hermod_api_calls_total",
    "Server API calls answered 200.",
);
pub const API_UNAUTHORIZED: Family = Family::counter(
    Gateway,
    "hermod_api_unauthorized_total",
    "Server API requests refused 401: no API key, or an unknown one.",
);
pub const API_REFUSED: Family = Family::counter(
    Gateway,
    "hermod_api_refused_total",
    "Server API requests answered with an error other than 401 (bad body, too large, unavailable, ...).",
);
// Issue 13, events to backends by webhook (`--webhook-url`).
pub const WEBHOOK_EVENTS_SENT: Family = Family::counter(
    Gateway,
    "hermod_webhook_events_sent_total",
    "Webhook events delivered: in a POST the receiver answered 2xx.",
);
pub const WEBHOOK_EVENTS_DROPPED: Family = Family::counter(
    Gateway,
    "hermod_webhook_events_dropped_total",
    "Webhook events dropped because the queue (--webhook-queue) was full.",
);
pub const WEBHOOK_POSTS: Family = Family::counter(
    Gateway,
    "hermod_webhook_posts_total",
    "Webhook POSTs attempted, retries included.",
);
pub const WEBHOOK_POST_FAILURES: Family = Family::counter(
    Gateway,
    "hermod_webhook_post_failures_total",
    "Webhook POSTs that failed (no connection, timeout, or an answer other than 2xx) and will be retried.",
);
pub const WEBHOOK_QUEUE: Family = Family::gauge(
    Gateway,
    "hermod_webhook_queue_events",
    "Webhook events waiting: queued, and in the batch being delivered.",
);
// Issue 13, events to backends through a Redis stream (`--events-stream`).
pub const EVENTS_STREAM_APPENDED: Family = Family::counter(
    Gateway,
    "hermod_events_stream_appended_total",
    "Events appended to the Redis stream (--events-stream): every XADD of their batch answered with an entry id.",
);
pub const EVENTS_STREAM_DROPPED: Family = Family::counter(
    Gateway,
    "hermod_events_stream_dropped_total",
    "Events for the Redis stream dropped because its queue (--events-stream-queue) was full.",
);
pub const EVENTS_STREAM_FAILURES: Family = Family::counter(
    Gateway,
    "hermod_events_stream_failures_total",
    "Attempts at a batch of stream appends that failed (an XADD error, a timeout, a lost connection) and will be retried.",
);
pub const EVENTS_STREAM_QUEUE: Family = Family::gauge(
    Gateway,
    "hermod_events_stream_queue_events",
    "Events waiting for the Redis stream: queued, and in the batch being appended.",
);
pub const TOKEN_EXPIRED_CLOSES: Family = Family::counter(
    Gateway,
    "hermod_token_expired_closes_total",
    "Sessions closed 4001 because their token expired without a refresh.",
);
pub const READS_PAUSED: Family = Family::counter(
    Gateway,
    "hermod_reads_paused_total",
    "Times a session stopped reading because its output to the peer was blocked.",
);

// The gateway's tunnels (`--route`).
pub const TUNNELS_OPEN: Family = Family::gauge(
    Gateway,
    "hermod_tunnels_open",
    "Tunnels held now (connecting, upgrading or relaying).",
);
pub const TUNNEL_REQUESTS: Family = Family::counter(
    Gateway,
    "hermod_tunnel_requests_total",
    "Requests routed to a tunnel upstream.",
);
pub const TUNNELS: Family = Family::counter(
    Gateway,
    "hermod_tunnels_total",
    "Tunnels whose upstream answered 101.",
);
pub const TUNNEL_UPSTREAM_FAILURES: Family = Family::counter(
    Gateway,
    "hermod_tunnel_upstream_failures_total",
    "Routed requests answered 502 or 504.",
);
pub const TUNNEL_BYTES: Family = Family::counter(
    Gateway,
    "hermod_tunnel_bytes_total",
    "Bytes relayed by tunnels, by direction.",
)
.with_labels(&["direction"]);
// Issue 12, token keys: JWKS fetches (`--jwks-url`), at startup and by the refresher.
pub const JWKS_FETCHES: Family = Family::counter(
    Gateway,
    "hermod_jwks_fetches_total",
    "JWKS fetches, by result (ok: a usable key set was installed; failed: the previous keys stay).",
)
.with_labels(&["result"]);

// The gateway's links to brokers (`--brokers`, `--registry`).
pub const BROKER_LINKS_UP: Family = Family::gauge(
    GatewayLinks,
    "hermod_broker_links_up",
    "Broker links connected and not draining.",
);
pub const SESSIONS_UNPLACED: Family = Family::gauge(
    GatewayLinks,
    "hermod_sessions_unplaced",
    "Sessions waiting for a live broker.",
);
pub const SESSIONS_REHOMED: Family = Family::counter(
    GatewayLinks,
    "hermod_sessions_rehomed_total",
    "Sessions moved to another broker (link lost, draining, deregistered).",
);
pub const BROKER_LINK_ROUND_TRIPS: Family = Family::counter(
    GatewayLinks,
    "hermod_broker_link_round_trips_total",
    "Broker link heartbeats answered.",
);
pub const BROKER_LINKS_LOST: Family = Family::counter(
    GatewayLinks,
    "hermod_broker_links_lost_total",
    "Broker links lost after being up.",
);
pub const BROKER_OVERFLOWS: Family = Family::counter(
    GatewayLinks,
    "hermod_broker_overflows_total",
    "Sessions overflowed (worker mailbox full) and closed 1008.",
);
pub const BROKER_LINK_RTT_SUM: Family = Family::counter(
    GatewayLinks,
    "hermod_broker_link_rtt_seconds_sum",
    "Sum of heartbeat round-trip times (divide by round trips).",
);
pub const BROKER_LINK_UP: Family = Family::gauge(
    GatewayLinks,
    "hermod_broker_link_up",
    "1 while the link to this broker is up.",
)
.with_labels(&["broker"]);
pub const BROKER_LINK_SESSIONS: Family = Family::gauge(
    GatewayLinks,
    "hermod_broker_link_sessions",
    "Sessions homed on this broker.",
)
.with_labels(&["broker"]);
// Issue 11, the broker link: pushes a gateway refuses.
pub const BROKER_PUSHES_DROPPED: Family = Family::counter(
    GatewayLinks,
    "hermod_broker_pushes_dropped_total",
    "Broker pushes dropped, by reason (foreign_session: not placed on that link).",
)
.with_labels(&["reason"]);

// The Redis engine, in the proxy (`--redis`, `--sentinel`) and in the broker.
pub const REDIS_UP: Family = Family::gauge(
    Engine,
    "hermod_redis_up",
    "1 while Redis is reachable and set up (the broker is ready), else 0.",
);
pub const REDIS_ROUND_TRIPS: Family = Family::counter(
    Engine,
    "hermod_redis_round_trips_total",
    "Redis commands answered (each pipelined command counts once).",
);
pub const REDIS_FAILOVERS: Family = Family::counter(
    Engine,
    "hermod_redis_failovers_total",
    "Redis master changes (failovers) followed.",
);
pub const REDIS_RECONNECTS: Family = Family::counter(
    Engine,
    "hermod_redis_reconnects_total",
    "Connections (re)established to Redis.",
);
pub const REDIS_UNAVAILABLE: Family = Family::counter(
    Engine,
    "hermod_redis_unavailable_total",
    "Storage operations answered unavailable.",
);
pub const REDIS_PIPELINE_DEPTH: Family = Family::gauge(
    Engine,
    "hermod_redis_pipeline_depth",
    "Redis commands sent and not yet answered.",
);
pub const REDIS_PENDING_OPS: Family = Family::gauge(
    Engine,
    "hermod_redis_pending_ops",
    "Storage operations accepted and not yet completed.",
);
// Issue 11, storage budget: the in-memory engine's bytes held, its budget, and the writes it
// refused (`--memory-budget`, `--memory-per-user`).
pub const STORE_BYTES: Family = Family::gauge(
    MemoryEngine,
    "hermod_store_bytes",
    "In-memory engine: bytes its storage budget counts as held (messages, channels, cursors, dedupe).",
);
pub const STORE_BUDGET_BYTES: Family = Family::gauge(
    MemoryEngine,
    "hermod_store_budget_bytes",
    "In-memory engine: the storage budget (--memory-budget).",
);
pub const STORE_REFUSED: Family = Family::counter(
    MemoryEngine,
    "hermod_store_refused_total",
    "In-memory engine: writes refused unavailable, by reason: budget (the store is full) or sender_quota (--memory-per-user).",
)
.with_labels(&["reason"]);

// The process (read from /proc where there is one) and the build.
pub const PROCESS_RESIDENT_MEMORY: Family = Family::gauge(
    Process,
    "hermod_process_resident_memory_bytes",
    "Resident set size of the process.",
);
pub const PROCESS_THREADS: Family = Family::gauge(Process, "hermod_process_threads", "OS threads.");
pub const PROCESS_OPEN_FDS: Family =
    Family::gauge(Process, "hermod_process_open_fds", "Open file descriptors.");
pub const PROCESS_MAX_FDS: Family = Family::gauge(
    Process,
    "hermod_process_max_fds",
    "Limit on open file descriptors (soft).",
);
pub const BUILD_INFO: Family =
    Family::gauge(Process, "hermod_build_info", "Build of the running binary.")
        .with_labels(&["version"]);
// Issue 11, bounded connections (i11-conn): the admin server's limits.
pub const ADMIN_CONNECTIONS_CLOSED: Family = Family::counter(
    Process,
    "hermod_admin_connections_closed_total",
    "Admin connections closed by a limit: deadline, evicted (table full), bad_request.",
)
.with_labels(&["reason"]);

// The broker (`hermod-broker`): its gateway links and its place in the cluster.
pub const BROKER_GATEWAY_LINKS: Family =
    Family::gauge(Broker, "hermod_broker_links", "Gateway links connected.");
pub const BROKER_SESSIONS: Family = Family::gauge(
    Broker,
    "hermod_broker_sessions",
    "Sessions attached through gateway links.",
);
pub const BROKER_DRAINING: Family = Family::gauge(
    Broker,
    "hermod_broker_draining",
    "1 while the broker drains (SIGTERM).",
);
pub const BROKER_REGISTERED: Family = Family::gauge(
    Broker,
    "hermod_broker_registered",
    "1 while the registry entry is renewed.",
);
pub const BROKER_LINKS_ACCEPTED: Family = Family::counter(
    Broker,
    "hermod_broker_links_accepted_total",
    "Gateway links accepted.",
);
pub const BROKER_LINKS_DROPPED: Family = Family::counter(
    Broker,
    "hermod_broker_links_dropped_total",
    "Links closed by the broker: silence, protocol errors, auth refusals, limits.",
);
pub const BROKER_COMMANDS: Family = Family::counter(
    Broker,
    "hermod_broker_commands_total",
    "Link commands received.",
);
pub const BROKER_COMMAND_ERRORS: Family = Family::counter(
    Broker,
    "hermod_broker_command_errors_total",
    "Link commands answered with an error.",
);
pub const BROKER_EVENT_PUSHES: Family = Family::counter(
    Broker,
    "hermod_broker_event_pushes_total",
    "`ev` pushes written.",
);
pub const BROKER_MESSAGE_PUSHES: Family = Family::counter(
    Broker,
    "hermod_broker_message_pushes_total",
    "`msg` pushes written (one per message per link).",
);
pub const BROKER_MESSAGE_DELIVERIES: Family = Family::counter(
    Broker,
    "hermod_broker_message_deliveries_total",
    "Session deliveries carried by `msg` pushes.",
);
// Issue 11, the broker link: authentication and the bounds on what links buffer.
pub const BROKER_LINK_AUTH_REFUSALS: Family = Family::counter(
    Broker,
    "hermod_broker_link_auth_refusals_total",
    "Links closed before authenticating, by reason (wrong_secret, not_authenticated, deadline, frame, evicted).",
)
.with_labels(&["reason"]);
pub const BROKER_LINK_LIMIT_CLOSES: Family = Family::counter(
    Broker,
    "hermod_broker_link_limit_closes_total",
    "Authenticated links closed at a bound, by reason (frame, input_budget, output_budget, output).",
)
.with_labels(&["reason"]);
pub const BROKER_LINK_BUFFERED: Family = Family::gauge(
    Broker,
    "hermod_broker_link_buffered_bytes",
    "Bytes buffered across all gateway links, input and output.",
);

/// Every family, in the order docs/operations.md lists them.
pub const ALL: &[Family] = &[
    CONNECTIONS_OPEN,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_REFUSED,
    HANDSHAKES,
    HANDSHAKES_REJECTED,
    ADMISSION_REFUSED,
    HANDSHAKE_TIMEOUTS,
    MESSAGES_IN,
    MESSAGES_OUT,
    BYTES_IN,
    BYTES_OUT,
    SLOW_CONSUMER_CLOSES,
    BROKER_QUEUE_FULL,
    REQUEST_TIMEOUTS,
    SESSIONS_CLOSED_OTHER,
    SESSIONS_CLOSED,
    SEND_LATENCY,
    RATE_LIMITED,
    RATE_LIMIT_CLOSES,
    DATA_TOO_DEEP,
    FORBIDDEN,
    API_CALLS,
    API_UNAUTHORIZED,
    API_REFUSED,
    WEBHOOK_EVENTS_SENT,
    WEBHOOK_EVENTS_DROPPED,
    WEBHOOK_POSTS,
    WEBHOOK_POST_FAILURES,
    WEBHOOK_QUEUE,
    EVENTS_STREAM_APPENDED,
    EVENTS_STREAM_DROPPED,
    EVENTS_STREAM_FAILURES,
    EVENTS_STREAM_QUEUE,
    TOKEN_EXPIRED_CLOSES,
    READS_PAUSED,
    TUNNELS_OPEN,
    TUNNEL_REQUESTS,
    TUNNELS,
    TUNNEL_UPSTREAM_FAILURES,
    TUNNEL_BYTES,
    JWKS_FETCHES,
    BROKER_LINKS_UP,
    SESSIONS_UNPLACED,
    SESSIONS_REHOMED,
    BROKER_LINK_ROUND_TRIPS,
    BROKER_LINKS_LOST,
    BROKER_OVERFLOWS,
    BROKER_LINK_RTT_SUM,
    BROKER_LINK_UP,
    BROKER_LINK_SESSIONS,
    BROKER_PUSHES_DROPPED,
    REDIS_UP,
    REDIS_ROUND_TRIPS,
    REDIS_FAILOVERS,
    REDIS_RECONNECTS,
    REDIS_UNAVAILABLE,
    REDIS_PIPELINE_DEPTH,
    REDIS_PENDING_OPS,
    STORE_BYTES,
    STORE_BUDGET_BYTES,
    STORE_REFUSED,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_THREADS,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    BUILD_INFO,
    ADMIN_CONNECTIONS_CLOSED,
    BROKER_GATEWAY_LINKS,
    BROKER_SESSIONS,
    BROKER_DRAINING,
    BROKER_REGISTERED,
    BROKER_LINKS_ACCEPTED,
    BROKER_LINKS_DROPPED,
    BROKER_COMMANDS,
    BROKER_COMMAND_ERRORS,
    BROKER_EVENT_PUSHES,
    BROKER_MESSAGE_PUSHES,
    BROKER_MESSAGE_DELIVERIES,
    BROKER_LINK_AUTH_REFUSALS,
    BROKER_LINK_LIMIT_CLOSES,
    BROKER_LINK_BUFFERED,
];

/// The family named `name`, if the table lists it.
pub fn find(name: &str) -> Option<&'static Family> {
    ALL.iter().find(|f| f.name == name)
}
