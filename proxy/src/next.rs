//! What every kind of connection hands back to the worker loop after a handler ran: [`Next`],
//! and the reasons the gateway closes a WebSocket ([`CloseReason`]: the close code and its text,
//! as the client sees them in the close frame).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

/// Close code recorded when the peer's close frame had no code (RFC 6455, "Status Codes").
pub const NO_STATUS: u16 = 1005;
/// Close code recorded when the connection ended without a close frame (RFC 6455, "Status
/// Codes": abnormal closure).
pub const ABNORMAL: u16 = 1006;
/// Close code recorded when the connection ended cleanly after the close handshake.
pub const NORMAL: u16 = 1000;

/// Why the gateway closes a WebSocket: each reason has one close code and one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent nothing (not even a pong) for `--idle-timeout`.
    IdleTimeout,
    /// The peer broke the WebSocket protocol (e.g. an unmasked frame).
    ProtocolError,
    /// A binary frame on the client protocol, which is text only.
    BinaryUnsupported,
    /// A text frame that is not UTF-8.
    InvalidUtf8,
    /// The client does not read fast enough: its queue passed `--max-outbound-bytes`, or the
    /// broker overflowed it. What it did not ack waits in its inbox.
    SlowConsumer,
    /// A message or frame larger than `--max-message-size`.
    MessageTooBig,
    /// The gateway shuts down (the client should reconnect).
    ServiceRestart,
    /// Kept sending past the per-session rate limits (`ws/limits.rs`).
    RateLimited,
    /// The session's token expired without a `refresh` (`ws/protocol/access.rs`). What it did
    /// not ack waits in its inbox; the client reconnects with a new token.
    TokenExpired,
    /// The server API disconnected the user (`POST /api/disconnect`); its reason went out in a
    /// `disconnect` frame just before.
    Disconnected,
}

impl CloseReason {
    /// The close code sent in the close frame.
    pub const fn code(self) -> u16 {
        match self {
            CloseReason::IdleTimeout => 1001,
            CloseReason::ProtocolError => 1002,
            CloseReason::BinaryUnsupported => 1003,
            CloseReason::InvalidUtf8 => 1007,
            CloseReason::SlowConsumer => 1008,
            CloseReason::MessageTooBig => 1009,
            CloseReason::ServiceRestart => 1012,
            CloseReason::RateLimited => 1008,
            CloseReason::TokenExpired => 4001,
            CloseReason::Disconnected => 4002,
        }
    }

    /// The reason text sent in the close frame.
    pub const fn text(self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::BinaryUnsupported => "binary frames are not supported",
            CloseReason::InvalidUtf8 => "invalid UTF-8",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::ServiceRestart => "service restart",
            CloseReason::RateLimited => "rate limit exceeded",
            CloseReason::TokenExpired => "token expired",
            CloseReason::Disconnected => "disconnected",
        }
    }
}

/// What the worker must do after a handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing special: wait for the next event.
    Continue,
    /// The read budget ran out with input possibly still buffered: read again next tick.
    MoreToRead,
    /// Start the close handshake for this reason.
    Close(CloseReason),
    /// The connection is over (the close code is for metrics, possibly the peer's): drop it now.
    Drop(u16),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes and texts clients see (docs/protocol.md, "Limits and closing"): a restructure must not
    /// change them.
    #[test]
    fn close_reasons_keep_their_codes_and_texts() {
        let all = [
            (CloseReason::IdleTimeout, 1001, "idle timeout"),
            (CloseReason::ProtocolError, 1002, "protocol error"),
            (
                CloseReason::BinaryUnsupported,
                1003,
                "binary frames are not supported",
            ),
            (CloseReason::InvalidUtf8, 1007, "invalid UTF-8"),
            (CloseReason::SlowConsumer, 1008, "slow consumer"),
            (CloseReason::MessageTooBig, 1009, "message too big"),
            (CloseReason::ServiceRestart, 1012, "service restart"),
            (CloseReason::RateLimited, 1008, "rate limit exceeded"),
            (CloseReason::TokenExpired, 4001, "token expired"),
        ];
        for (reason, code, text) in all {
            assert_eq!((reason.code(), reason.text()), (code, text), "{reason:?}");
        }
    }
}
