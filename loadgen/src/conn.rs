//! One client connection's life, driven by mio readiness: TCP connect, then the tungstenite client
//! handshake driven incrementally (`MidHandshake` on WouldBlock), then an open WebSocket.
//!
//! ```text
//! start() -> Connecting --writable, connected--> Handshaking --101--> Open
//!                 \                                   \
//!                  `-- refused / timeout ------------- `-- bad response --> Failed
//! ```

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tungstenite::handshake::client::{ClientHandshake, Response};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::WebSocket;

use crate::sock::Sock;
use crate::sys;

/// Starts a non-blocking TCP connect to `addr`, from `source` (port chosen at connect time) when
/// given: binding several 127.0.0.x sources gets past the ~28k ports of one address pair.
pub fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(addr);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    sys::bind_address_no_port(socket.as_raw_fd());
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// A client WebSocket over a non-blocking mio stream.
pub type Ws = WebSocket<Sock>;

/// Interests every connection is registered with, once: edge-triggered both ways.
pub const INTERESTS: Interest = Interest::READABLE.add(Interest::WRITABLE);

/// The WebSocket settings of every load connection: small read buffers so that thousands of idle
/// connections stay cheap (tungstenite's default 128 KiB becomes resident on the first read), and
/// a bound on what a peer may send.
pub fn ws_config(max_message: usize) -> WebSocketConfig {
    let max_message = max_message.max(64 * 1024);
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Where a connection stands.
enum State {
    /// TCP connect in progress; `url` is the request to send once connected.
    Connecting { stream: Sock, url: String },
    /// HTTP upgrade sent, waiting for (the rest of) the 101 response.
    Handshaking(MidHandshake<ClientHandshake<Sock>>),
    /// Upgraded: messages flow.
    Open(Ws),
    /// Failed or closed; the socket is gone.
    Done,
}

/// What one `advance` did.
#[derive(Debug)]
pub enum Step {
    /// Still connecting or handshaking: wait for the next event.
    Pending,
    /// The handshake just completed.
    Opened,
    /// The attempt failed.
    Failed(ConnectError),
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect or a socket operation failed.
    #[error("connect: {0}")]
    Io(#[from] io::Error),
    /// The server refused the upgrade or broke the handshake.
    #[error("handshake: {0}")]
    Handshake(#[from] tungstenite::Error),
    /// The attempt was advanced after it had already ended.
    #[error("connection already finished")]
    Finished,
}

/// One load connection.
pub struct Conn {
    /// Global connection index: `{i}` in its URL and the `conn` field of its payloads.
    pub index: u32,
    /// When the TCP connect started; the connect time runs from here to the 101.
    pub started: Instant,
    /// The connection's stage.
    state: State,
    /// Settings the WebSocket is created with.
    config: WebSocketConfig,
}

impl Conn {
    /// Starts a non-blocking TCP connect (from `source` if given) and registers the socket under
    /// `token`.
    pub fn start(
        index: u32,
        (addr, source): (SocketAddr, Option<IpAddr>),
        url: String,
        config: WebSocketConfig,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Conn> {
        let mut stream = tcp_connect(addr, source)?;
        registry.register(&mut stream, token, INTERESTS)?;
        let stream = Sock::new(stream);
        Ok(Conn {
            index,
            started: Instant::now(),
            state: State::Connecting { stream, url },
            config,
        })
    }

    /// A readiness event arrived for this connection: let reads reach the kernel again.
    pub fn on_event(&mut self) {
        match &mut self.state {
            State::Connecting { stream, .. } => stream.on_readable(),
            State::Handshaking(mid) => mid.get_mut().get_mut().on_readable(),
            State::Open(ws) => ws.get_mut().on_readable(),
            State::Done => {}
        }
    }

    /// Pushes the connect or handshake forward after a readiness event (spurious ones are fine).
    pub fn advance(&mut self) -> Step {
        match mem::replace(&mut self.state, State::Done) {
            State::Connecting { stream, url } => self.on_connecting(stream, url),
            State::Handshaking(mid) => self.on_handshake(mid.handshake()),
            open @ State::Open(_) => {
                self.state = open;
                Step::Opened
            }
            State::Done => Step::Failed(ConnectError::Finished),
        }
    }

    /// The TCP connect may have completed: check, then send the upgrade request.
    fn on_connecting(&mut self, stream: Sock, url: String) -> Step {
        match stream.inner.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Step::Failed(e.into()),
        }
        match stream.inner.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                self.state = State::Connecting { stream, url };
                return Step::Pending;
            }
            Err(e) => return Step::Failed(e.into()),
        }
        if let Err(e) = stream.inner.set_nodelay(true) {
            return Step::Failed(e.into());
        }
        let config = self.config;
        self.on_handshake(tungstenite::client::client_with_config(
            url.as_str(),
            stream,
            Some(config),
        ))
    }

    /// Stores the outcome of one handshake round.
    fn on_handshake(
        &mut self,
        result: Result<(Ws, Response), HandshakeError<ClientHandshake<Sock>>>,
    ) -> Step {
        match result {
            Ok((ws, _response)) => {
                self.state = State::Open(ws);
                Step::Opened
            }
            Err(HandshakeError::Interrupted(mid)) => {
                self.state = State::Handshaking(mid);
                Step::Pending
            }
            Err(HandshakeError::Failure(e)) => Step::Failed(e.into()),
        }
    }

    /// True while connecting or handshaking.
    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Connecting { .. } | State::Handshaking(_))
    }

    /// True once upgraded and until closed.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// The open WebSocket, if the connection is open.
    pub fn ws(&mut self) -> Option<&mut Ws> {
        match &mut self.state {
            State::Open(ws) => Some(ws),
            _ => None,
        }
    }

    /// Takes the open WebSocket out, leaving the connection finished.
    pub fn take_ws(&mut self) -> Option<Ws> {
        match mem::replace(&mut self.state, State::Done) {
            State::Open(ws) => Some(ws),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// A connection whose TCP connect could not even start; keeps token numbering dense.
    pub fn failed(index: u32) -> Conn {
        Conn {
            index,
            started: Instant::now(),
            state: State::Done,
            config: WebSocketConfig::default(),
        }
    }

    /// Drops the socket (closing it).
    pub fn abort(&mut self) {
        self.state = State::Done;
    }
}

/// Reads an idle connection until WouldBlock, answering pings, ignoring data. Returns `Err` once
/// the connection is closed or broken.
pub fn drain_idle(ws: &mut Ws) -> Result<(), tungstenite::Error> {
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    flush(ws).map(|_| ())
}

/// Flushes queued frames; `Ok(false)` when the socket is full (the rest stays queued).
pub fn flush(ws: &mut Ws) -> Result<bool, tungstenite::Error> {
    match ws.flush() {
        Ok(()) => Ok(true),
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends a close frame and flushes what fits, best effort, before the socket is dropped.
pub fn close_politely(ws: &mut Ws) {
    let _ = ws.close(None);
    let _ = ws.flush();
}
