//! A tiny blocking echo server for the integration tests: one thread per connection, tungstenite
//! `accept`, echoes data messages back as received. Listens on an ephemeral 127.0.0.1 port.

use std::net::{SocketAddr, TcpListener};
use std::thread;

use tungstenite::Message;

/// Starts the echo server in the background and returns its address.
pub fn start_echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                while let Ok(msg) = ws.read() {
                    if matches!(msg, Message::Binary(_) | Message::Text(_)) && ws.send(msg).is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    addr
}
