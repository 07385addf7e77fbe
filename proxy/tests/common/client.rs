//! The WebSocket client side: [`Client`] (tungstenite's blocking client, frames read as JSON),
//! refused handshakes, and raw client frames for protocol-error tests.

#![allow(dead_code)]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use super::{tcp, TIMEOUT};

/// Client-side WebSocket config: a small read buffer so thousands of clients stay cheap.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// What the HTTP upgrade produced when it was refused: the status code, or an I/O-level failure.
pub fn handshake_status(url: &str, addr: SocketAddr) -> Result<(), String> {
    handshake_status_with(url, addr, &[])
}

/// Like [`handshake_status`], with extra request headers.
pub fn handshake_status_with(
    url: &str,
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<(), String> {
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("request");
    for (k, v) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    match tungstenite::client::client_with_config(request, tcp(addr), Some(client_config())) {
        Ok(_) => Ok(()),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(resp.status().as_u16().to_string())
        }
        Err(e) => Err(format!("handshake error: {e}")),
    }
}

/// One WebSocket client connection.
pub struct Client {
    /// The tungstenite client over a blocking std stream with read timeouts.
    pub ws: WebSocket<TcpStream>,
    /// The welcome frame the server sent first.
    pub welcome: Value,
}

/// How a connection ended, as seen by the client.
#[derive(Debug)]
pub enum Ending {
    /// A close frame with this code and reason.
    Close(u16, String),
    /// A close frame without a code.
    CloseNoCode,
    /// The connection ended without a close frame (EOF or reset): the error text.
    Dropped(String),
}

impl Client {
    /// Runs the client handshake over `stream`.
    pub fn handshake(url: &str, stream: TcpStream) -> Result<Client, String> {
        match tungstenite::client::client_with_config(url, stream, Some(client_config())) {
            Ok((ws, _)) => Ok(Client {
                ws,
                welcome: Value::Null,
            }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                Err(format!("HTTP {}", resp.status()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads the first frame and checks it is the welcome for `user`/`device`.
    pub fn expect_welcome(&mut self, user: &str, device: &str) {
        let w = self.recv();
        assert_eq!(w["op"], "welcome", "first frame: {w}");
        assert_eq!(w["user"], user, "welcome: {w}");
        assert_eq!(w["device"], device, "welcome: {w}");
        assert!(w.get("session").is_some(), "welcome without session: {w}");
        self.welcome = w;
    }

    /// Sends one JSON frame.
    pub fn send_json(&mut self, v: &Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .unwrap_or_else(|e| panic!("send {v}: {e}"));
    }

    /// Sends a raw text frame.
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .unwrap_or_else(|e| panic!("send text: {e}"));
    }

    /// The next data message, or how the connection ended; `None` after [`TIMEOUT`] of silence.
    pub fn next(&mut self, limit: Duration) -> Option<Result<Message, Ending>> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = self.ws.get_ref().set_read_timeout(Some(left));
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => {
                    return Some(Err(Ending::Close(u16::from(f.code), f.reason.to_string())))
                }
                Ok(Message::Close(None)) => return Some(Err(Ending::CloseNoCode)),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(m) => return Some(Ok(m)),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Some(Err(Ending::Dropped(e.to_string()))),
            }
        }
    }

    /// The next text frame as JSON; panics on timeout, close or a non-text message.
    pub fn recv(&mut self) -> Value {
        match self.next(TIMEOUT) {
            Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str())
                .unwrap_or_else(|e| panic!("server sent non-JSON text {t:?}: {e}")),
            Some(Ok(other)) => panic!("expected a text frame, got {other:?}"),
            Some(Err(end)) => panic!("expected a text frame, connection ended: {end:?}"),
            None => panic!("no frame within {TIMEOUT:?}"),
        }
    }

    /// The next frame, which must have this `op`.
    pub fn recv_op(&mut self, op: &str) -> Value {
        let v = self.recv();
        assert_eq!(v["op"], op, "expected op {op}, got {v}");
        v
    }

    /// Asserts nothing arrives for `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        if let Some(got) = self.next(quiet) {
            panic!("expected no frame, got {got:?}");
        }
    }

    /// Reads until the connection ends; data frames before the end are returned too.
    pub fn read_to_end(&mut self) -> (Vec<Value>, Ending) {
        let mut frames = Vec::new();
        loop {
            match self.next(TIMEOUT) {
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str(t.as_str()).expect("JSON frame"))
                }
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
                Some(Err(end)) => return (frames, end),
                None => panic!(
                    "connection did not end within {TIMEOUT:?} (after {} frames)",
                    frames.len()
                ),
            }
        }
    }

    /// Waits for the close frame (skipping data) and returns its code and reason.
    pub fn expect_close(&mut self) -> (u16, String) {
        match self.read_to_end().1 {
            Ending::Close(code, reason) => (code, reason),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// `send` to `to`; returns the `sent` answer's id.
    pub fn send_to(&mut self, to: &str, cid: &str, data: Value) -> String {
        self.send_json(&json!({"op":"send","to":to,"cid":cid,"data":data}));
        let sent = self.recv_op("sent");
        assert_eq!(sent["cid"], cid, "sent answer: {sent}");
        id_of(&sent)
    }

    /// Reads `n` frames that must be direct messages.
    pub fn recv_msgs(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.recv_op("msg")).collect()
    }

    /// Acks `id`.
    pub fn ack(&mut self, id: &str) {
        self.send_json(&json!({"op":"ack","id":id}));
    }

    /// Closes cleanly and waits for the server's close reply (or the end of the stream).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(_) => return,
            }
        }
    }

    /// Round trip through the broker: a `send` to a user no test reads, whose `sent` answer
    /// means every request this session made before it has been taken (acks have no answer
    /// of their own). Returns the frames that arrived before the `sent`.
    pub fn barrier(&mut self, cid: &str) -> Vec<Value> {
        self.send_json(&json!({"op":"send","to":"barrier-sink","cid":cid,"data":"barrier"}));
        let mut others = Vec::new();
        loop {
            let v = self.recv();
            if v["op"] == "sent" && v["cid"] == cid {
                return others;
            }
            others.push(v);
        }
    }
}

/// The `id` field of a frame as a string.
pub fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("frame without string id: {v}"))
        .to_owned()
}

/// A masked client frame: FIN set, `opcode`, `payload` (any length).
pub fn raw_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame_with(true, true, opcode, payload)
}

/// A client frame with the FIN and MASK bits as given (a client must mask: unmasked is a
/// protocol error).
pub fn raw_frame_with(fin: bool, masked: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}
