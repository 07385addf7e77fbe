//! `Sock`: a mio TCP stream that remembers when the kernel's receive queue was emptied, to save
//! the extra `recv` that would only return EAGAIN.
//!
//! With edge-triggered readiness a reader must read until WouldBlock. But a `read` that returns
//! fewer bytes than asked for has already emptied the queue: bytes arriving later raise a new
//! edge. So after a short read, `Sock` answers WouldBlock itself until the owner calls
//! [`Sock::on_readable`] for the next event. On loopback this is one syscall per reply saved.
//!
//! Every read also keeps the kernel's receive timestamp of the bytes it returned (the socket
//! asks for them when wrapped), so a reply's arrival time does not depend on when the loop
//! got round to reading it.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

use crate::sys;

/// A non-blocking TCP stream with short-read tracking and receive timestamps.
#[derive(Debug)]
pub struct Sock {
    /// The socket.
    pub inner: TcpStream,
    /// The last read was short: the queue is empty until the next readable event.
    drained: bool,
    /// `CLOCK_REALTIME` nanoseconds at which the kernel received the last segment of the last
    /// read that returned bytes; `None` if that read carried no stamp.
    rx_stamp: Option<u64>,
}

impl Sock {
    /// Wraps a stream and turns on its receive timestamps; nothing is known about its queue yet.
    pub fn new(inner: TcpStream) -> Self {
        sys::enable_rx_timestamps(inner.as_raw_fd());
        Sock {
            inner,
            drained: false,
            rx_stamp: None,
        }
    }

    /// A readiness event arrived: reads go to the kernel again.
    pub fn on_readable(&mut self) {
        self.drained = false;
    }

    /// When the kernel received the newest bytes read so far (`CLOCK_REALTIME` nanoseconds).
    /// A read returning several frames stamps them all with its last segment's time: never
    /// earlier than the truth. `None` until a stamped segment was read (the kernel turns
    /// stamping on asynchronously when the first socket on the machine asks for it).
    pub fn rx_stamp(&self) -> Option<u64> {
        self.rx_stamp
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let (n, stamp) = loop {
            match sys::recv_stamped(self.inner.as_raw_fd(), buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n > 0 {
            // An unstamped read must not leave an older stamp behind: that would date its
            // bytes too early.
            self.rx_stamp = stamp;
        }
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

    #[test]
    fn a_read_carries_the_time_the_bytes_arrived_not_the_time_they_were_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut sock = Sock::new(TcpStream::from_std(server));
        assert_eq!(sock.rx_stamp(), None);
        let mut buf = [0u8; 64];
        // The first socket on the machine to ask for stamps switches them on asynchronously:
        // until then segments arrive unstamped (and replies fall back to the read time).
        for _ in 0..200 {
            client.write_all(b"x").unwrap();
            assert_eq!(read_eventually(&mut sock, &mut buf), 1);
            if sock.rx_stamp().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = sys::realtime_ns();
        client.write_all(b"stamped").unwrap();
        let after = sys::realtime_ns();
        // The bytes wait in the receive queue while the reader is busy elsewhere.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(read_eventually(&mut sock, &mut buf), 7);
        let read_at = sys::realtime_ns();
        let stamp = sock
            .rx_stamp()
            .expect("loopback TCP carries receive timestamps");
        assert!(
            stamp >= before && stamp <= after,
            "{before} <= {stamp} <= {after}"
        );
        assert!(
            read_at - stamp >= 150_000_000,
            "stamped when read, not when received"
        );
    }
}
