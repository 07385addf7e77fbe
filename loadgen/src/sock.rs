//! `Sock`: a mio TCP stream that remembers when the kernel's receive queue was emptied, to save
//! the extra `recv` that would only return EAGAIN.
//!
//! With edge-triggered readiness a reader must read until WouldBlock. But a `read` that returns
//! fewer bytes than asked for has already emptied the queue: bytes arriving later raise a new
//! edge. So after a short read, `Sock` answers WouldBlock itself until the owner calls
//! [`Sock::on_readable`] for the next event. On loopback this is one syscall per reply saved.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// A non-blocking TCP stream with short-read tracking.
#[derive(Debug)]
pub struct Sock {
    /// The socket.
    pub inner: TcpStream,
    /// The last read was short: the queue is empty until the next readable event.
    drained: bool,
}

impl Sock {
    /// Wraps a stream; nothing is known about its queue yet.
    pub fn new(inner: TcpStream) -> Self {
        Sock {
            inner,
            drained: false,
        }
    }

    /// A readiness event arrived: reads go to the kernel again.
    pub fn on_readable(&mut self) {
        self.drained = false;
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.inner.read(buf)?;
        if n > 0 && n < buf.len() {
            self.drained = true;
        }
        Ok(n)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.inner.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Reads, treating every WouldBlock as a fresh readiness event, until data comes.
    fn read_eventually(sock: &mut Sock, buf: &mut [u8]) -> usize {
        for _ in 0..1000 {
            sock.on_readable();
            match sock.read(buf) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no data within 10 s");
    }

    #[test]
    fn a_short_read_blocks_until_the_next_event() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut sock = Sock::new(TcpStream::from_std(server));
        client.write_all(b"hello").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(read_eventually(&mut sock, &mut buf), 5);
        client.write_all(b"more").unwrap();
        // The short read emptied the queue: no syscall until the next event.
        let e = sock.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(read_eventually(&mut sock, &mut buf), 4);
    }
}
