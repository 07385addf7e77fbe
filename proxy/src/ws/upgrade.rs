//! A WebSocket upgrade in progress ([`Handshaking`]): tungstenite's server handshake driven
//! as far as the socket allows, with our routing and admission callback ([`Gate`]); the
//! session's life after it is `session.rs`.

use std::time::Instant;

use mio::net::TcpStream;
use tungstenite::error::Error as WsError;
use tungstenite::handshake::server::ServerHandshake;
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::WebSocket;

use super::handshake::{Admission, Endpoint, Gate};

/// The tungstenite handshake in progress, with our routing callback.
pub type Mid = MidHandshake<ServerHandshake<TcpStream, Gate>>;

/// HTTP upgrade in progress.
#[derive(Debug)]
pub struct Handshaking {
    /// tungstenite's machine; taken while it runs (it is consumed by value), `None` only then.
    pub mid: Option<Mid>,
    /// Where the callback leaves the admitted endpoint.
    pub admission: Admission,
    /// When an unfinished handshake is dropped.
    pub deadline: Instant,
}

/// The result of driving a handshake.
pub enum Step {
    /// Waiting for the socket.
    Pending,
    /// Upgraded: the WebSocket and what it was admitted to.
    Upgraded(Box<WebSocket<TcpStream>>, Endpoint),
    /// Refused with this HTTP status (after the response was written), or failed (`None`).
    Failed(Option<u16>),
}

impl Handshaking {
    /// Runs the handshake as far as the socket allows; a token is checked against `now_unix`
    /// (Unix seconds).
    pub fn drive(&mut self, now_unix: u64) -> Step {
        let Some(mid) = self.mid.take() else {
            return Step::Failed(None);
        };
        self.admission.lock().now_unix = now_unix;
        match mid.handshake() {
            Ok(ws) => match self.admission.lock().endpoint.take() {
                Some(endpoint) => Step::Upgraded(Box::new(ws), endpoint),
                None => Step::Failed(None),
            },
            Err(HandshakeError::Interrupted(mid)) => {
                self.mid = Some(mid);
                Step::Pending
            }
            Err(HandshakeError::Failure(WsError::Http(resp))) => {
                Step::Failed(Some(resp.status().as_u16()))
            }
            Err(HandshakeError::Failure(_)) => Step::Failed(None),
        }
    }
}
