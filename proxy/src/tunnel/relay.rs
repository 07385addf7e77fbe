//! The byte relay of a tunnel: one [`Pipe`] per direction, its buffer lent by the worker's
//! [`BufPool`] only while bytes are in flight.
//!
//! A pipe reads from its source into an empty buffer and writes that buffer to its destination
//! until it is empty or the destination would block; it reads again only once the buffer is
//! empty. So a destination that does not drain stops the reading from the source, the source's
//! TCP receive window fills, and the backpressure reaches the sending peer: no more than one
//! buffer per direction is ever held. An empty buffer goes back to the pool at once, so an idle
//! tunnel holds none.
//!
//! Readiness is edge-triggered: a [`Ready`] flag stays set until an operation hits `WouldBlock`
//! (no new edge comes for bytes already waiting), and each call does at most [`READ_BUDGET`]
//! reads, reporting [`Flow::more`] when it stopped with input possibly left.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use hermod_core::reactor::{interrupted, would_block};

/// Size of a relay buffer. nginx's tunnel uses 4 KiB (`proxy_buffer_size`); larger reads cost
/// fewer syscalls under bulk transfer, and since buffers are only held while bytes are in flight
/// the size costs no memory per idle tunnel.
pub const BUF_SIZE: usize = 16 * 1024;
/// Reads per direction per call before the tunnel yields to other connections.
pub const READ_BUDGET: usize = 16;

/// A worker's free relay buffers.
#[derive(Debug)]
pub struct BufPool {
    /// Buffers ready for reuse; allocating and faulting in fresh pages for every burst would cost
    /// more than the memory kept here.
    free: Vec<Box<[u8]>>,
    /// How many free buffers are kept; more are freed, so a burst across many tunnels does not
    /// leave the worker holding its peak forever.
    keep: usize,
}

impl BufPool {
    /// An empty pool that keeps up to `keep` free buffers.
    pub fn new(keep: usize) -> Self {
        BufPool {
            free: Vec::new(),
            keep,
        }
    }

    /// A buffer of [`BUF_SIZE`] bytes: a free one, or a new one. At most two are out per tunnel,
    /// so the total is bounded by the connection limit.
    pub fn take(&mut self) -> Box<[u8]> {
        self.free
            .pop()
            .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
    }

    /// Returns a buffer.
    pub fn give(&mut self, buf: Box<[u8]>) {
        if self.free.len() < self.keep {
            self.free.push(buf);
        }
    }

    /// Free buffers held now.
    pub fn free_len(&self) -> usize {
        self.free.len()
    }
}

/// What the reactor last learnt about one socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// A read may return bytes or EOF (set by an event; cleared by `WouldBlock`, or by a short
    /// read: the receive queue was empty then, and bytes arriving later raise a new edge).
    pub readable: bool,
    /// A write may be accepted (set by an event; cleared by `WouldBlock` or a short write).
    pub writable: bool,
    /// The peer's FIN or an error was reported (`EPOLLRDHUP`/`EPOLLERR`): no new edge will come
    /// for it, so a short read must not clear `readable` (the EOF is still to be read).
    pub closed: bool,
}

impl Ready {
    /// Adds what an event reported.
    pub fn merge(&mut self, event: Ready) {
        self.readable |= event.readable;
        self.writable |= event.writable;
        self.closed |= event.closed;
    }
}

/// The socket operations a pipe needs: bytes, and the half-close that passes an EOF on.
pub trait Endpoint: Read + Write {
    /// Shuts down the write side: the peer reads EOF once what was written has been read.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Endpoint for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// What one call moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    /// Bytes written to the destination.
    pub moved: u64,
    /// The read budget ran out while the source was still readable: call again next tick.
    pub more: bool,
}

/// One direction of a tunnel.
#[derive(Debug, Default)]
pub struct Pipe {
    /// Bytes read and not yet written, in `[start, end)`; `None` while empty (the buffer is back
    /// in the pool).
    buf: Option<Box<[u8]>>,
    /// Written up to here.
    start: usize,
    /// Read up to here.
    end: usize,
    /// Bytes still to read from the source before the direction ends as if at EOF (`None`: no
    /// limit). Set for a non-101 answer with a `Content-Length`.
    limit: Option<u64>,
    /// The source's EOF was read (or the limit reached): shut the destination once drained.
    eof: bool,
    /// The destination's write side is shut down: this direction is finished.
    shut: bool,
}

impl Pipe {
    /// A pipe that starts with `len` bytes already in `buf` (e.g. the upstream's 101 response and
    /// whatever followed it in the same read), then reads at most `limit` more.
    pub fn with(buf: Box<[u8]>, len: usize, limit: Option<u64>) -> Self {
        let end = len.min(buf.len());
        Pipe {
            buf: Some(buf),
            start: 0,
            end,
            limit,
            eof: false,
            shut: false,
        }
    }

    /// Whether this direction is finished (EOF passed on).
    pub fn is_done(&self) -> bool {
        self.shut
    }

    /// Whether a buffer is held (bytes in flight).
    pub fn holds_buffer(&self) -> bool {
        self.buf.is_some()
    }

    /// Gives the buffer back, if any (the tunnel is going away).
    pub fn release(&mut self, pool: &mut BufPool) {
        if let Some(buf) = self.buf.take() {
            pool.give(buf);
        }
        self.start = 0;
        self.end = 0;
    }

    /// Moves bytes from `src` to `dst` as far as readiness, the buffer and the budget allow.
    /// An error means the tunnel is broken (a reset, a failed write): close both sides.
    pub fn pump<S: Read, D: Endpoint>(
        &mut self,
        src: &mut S,
        src_ready: &mut Ready,
        dst: &mut D,
        dst_ready: &mut Ready,
        pool: &mut BufPool,
    ) -> io::Result<Flow> {
        let mut flow = Flow::default();
        let mut reads = 0;
        while !self.shut {
            if self.start < self.end {
                if !dst_ready.writable || !self.write_some(dst, dst_ready, &mut flow)? {
                    break;
                }
                continue;
            }
            self.start = 0;
            self.end = 0;
            if self.eof || self.limit == Some(0) {
                self.eof = true;
                dst.shutdown_write()?;
                self.shut = true;
                break;
            }
            if !src_ready.readable {
                break;
            }
            if reads == READ_BUDGET {
                flow.more = true;
                break;
            }
            reads += 1;
            self.read_some(src, src_ready, pool)?;
        }
        if self.start == self.end {
            self.release(pool);
        }
        Ok(flow)
    }

    /// One write of the pending bytes; `false` when the destination would block.
    fn write_some<D: Write>(
        &mut self,
        dst: &mut D,
        dst_ready: &mut Ready,
        flow: &mut Flow,
    ) -> io::Result<bool> {
        let Some(buf) = &self.buf else {
            return Ok(false);
        };
        match dst.write(&buf[self.start..self.end]) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                // A short write filled the send buffer: the next one would block.
                dst_ready.writable = self.start + n == self.end;
                self.start += n;
                flow.moved += n as u64;
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                dst_ready.writable = false;
                Ok(false)
            }
            Err(e) if interrupted(&e) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// One read into the (empty) buffer, taken from the pool if need be.
    fn read_some<S: Read>(
        &mut self,
        src: &mut S,
        src_ready: &mut Ready,
        pool: &mut BufPool,
    ) -> io::Result<()> {
        let buf = self.buf.get_or_insert_with(|| pool.take());
        let cap = self.limit.map_or(buf.len(), |l| {
            buf.len().min(usize::try_from(l).unwrap_or(usize::MAX))
        });
        match src.read(&mut buf[..cap]) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                self.end = n;
                if let Some(l) = &mut self.limit {
                    *l = l.saturating_sub(n as u64);
                }
                // Saves the read that would only say WouldBlock (one syscall per message).
                if n < cap && !src_ready.closed {
                    src_ready.readable = false;
                }
            }
            Err(e) if would_block(&e) => src_ready.readable = false,
            Err(e) if interrupted(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// An in-memory socket end: reads come from `input` as a TCP socket gives them (as much as
    /// queued; an empty chunk is a WouldBlock, running out is EOF once `eof` is set), writes go
    /// to `output` up to `room` bytes (then WouldBlock).
    #[derive(Default)]
    struct Mock {
        input: VecDeque<Vec<u8>>,
        eof: bool,
        output: Vec<u8>,
        room: usize,
        shut: bool,
    }

    impl Read for Mock {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(mut chunk) = self.input.pop_front() else {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            };
            if chunk.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            loop {
                let take = chunk.len().min(buf.len() - n);
                buf[n..n + take].copy_from_slice(&chunk[..take]);
                n += take;
                if take < chunk.len() {
                    self.input.push_front(chunk.split_off(take));
                    return Ok(n);
                }
                match self.input.pop_front() {
                    Some(next) if !next.is_empty() => chunk = next,
                    Some(marker) => {
                        self.input.push_front(marker);
                        return Ok(n);
                    }
                    None => return Ok(n),
                }
            }
        }
    }

    impl Write for Mock {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            assert!(!self.shut, "write after shutdown");
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.output.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Endpoint for Mock {
        fn shutdown_write(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn ready() -> Ready {
        Ready {
            readable: true,
            writable: true,
            closed: false,
        }
    }

    #[test]
    fn copies_until_would_block_and_returns_the_buffer() {
        let mut pool = BufPool::new(4);
        let (mut src, mut dst) = (Mock::default(), Mock::default());
        src.input = vec![b"hello ".to_vec(), b"world".to_vec()].into();
        dst.room = usize::MAX;
        let (mut sr, mut dr) = (ready(), ready());
        let mut pipe = Pipe::default();
        let flow = pipe
            .pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert_eq!(flow.moved, 11);
        assert!(!flow.more);
        assert_eq!(dst.output, b"hello world");
        assert!(!sr.readable, "a short read means drained");
        assert!(!pipe.holds_buffer());
        assert_eq!(pool.free_len(), 1);
    }

    #[test]
    fn a_short_read_waits_for_the_next_edge_unless_closed() {
        let mut pool = BufPool::new(4);
        let (mut src, mut dst) = (Mock::default(), Mock::default());
        src.input = vec![b"ab".to_vec()].into();
        src.eof = true;
        dst.room = usize::MAX;
        let (mut sr, mut dr) = (ready(), ready());
        let mut pipe = Pipe::default();
        pipe.pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert!(
            !sr.readable && !pipe.is_done(),
            "no read after the short one"
        );
        sr.merge(Ready {
            readable: true,
            writable: false,
            closed: true,
        });
        pipe.pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert!(pipe.is_done(), "the EOF was read");
    }

    #[test]
    fn a_short_write_waits_for_writable() {
        let mut pool = BufPool::new(4);
        let (mut src, mut dst) = (Mock::default(), Mock::default());
        src.input = vec![b"abcdef".to_vec()].into();
        dst.room = 4;
        let (mut sr, mut dr) = (ready(), ready());
        let mut pipe = Pipe::default();
        pipe.pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert!(!dr.writable);
        assert_eq!(dst.output, b"abcd");
        assert!(pipe.holds_buffer());
    }

    #[test]
    fn a_blocked_destination_stops_reading_until_writable() {
        let mut pool = BufPool::new(4);
        let (mut src, mut dst) = (Mock::default(), Mock::default());
        src.input = vec![vec![1u8; BUF_SIZE], vec![2u8; 100]].into();
        dst.room = 1000;
        let (mut sr, mut dr) = (ready(), ready());
        let mut pipe = Pipe::default();
        let flow = pipe
            .pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert_eq!(flow.moved, 1000);
        assert!(!dr.writable && sr.readable, "source left unread");
        assert_eq!(src.input.len(), 1, "second chunk not read");
        assert!(pipe.holds_buffer());
        dst.room = usize::MAX;
        dr.writable = true;
        let flow = pipe
            .pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert_eq!(flow.moved, (BUF_SIZE - 1000 + 100) as u64);
        assert_eq!(dst.output.len(), BUF_SIZE + 100);
        assert!(!pipe.holds_buffer());
    }

    #[test]
    fn eof_is_passed_on_after_the_last_byte() {
        let mut pool = BufPool::new(4);
        let (mut src, mut dst) = (Mock::default(), Mock::default());
        src.input = vec![b"bye".to_vec()].into();
        src.eof = true;
        dst.room = 2;
        let (mut sr, mut dr) = (ready(), ready());
        // The FIN came with the bytes: only `closed` says a read is still due after the short one.
        sr.closed = true;
        let mut pipe = Pipe::default();
        pipe.pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert!(!pipe.is_done(), "one byte still buffered");
        dst.room = 10;
        dr.writable = true;
        pipe.pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert!(pipe.is_done());
        assert_eq!(dst.output, b"bye");
    }

    #[test]
    fn the_budget_yields_with_more_to_do() {
        let mut pool = BufPool::new(4);
        let (mut src, mut dst) = (Mock::default(), Mock::default());
        src.input = (0..READ_BUDGET + 3).map(|_| vec![7u8; BUF_SIZE]).collect();
        dst.room = usize::MAX;
        let (mut sr, mut dr) = (ready(), ready());
        let mut pipe = Pipe::default();
        let flow = pipe
            .pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert!(flow.more);
        assert_eq!(flow.moved, (READ_BUDGET * BUF_SIZE) as u64);
        let flow = pipe
            .pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert!(!flow.more);
        assert_eq!(dst.output.len(), (READ_BUDGET + 3) * BUF_SIZE);
    }

    #[test]
    fn a_limited_pipe_ends_after_its_length() {
        let mut pool = BufPool::new(4);
        let (mut src, mut dst) = (Mock::default(), Mock::default());
        src.input = vec![b"56789abc".to_vec()].into();
        dst.room = usize::MAX;
        let mut head = pool.take();
        head[..5].copy_from_slice(b"01234");
        let mut pipe = Pipe::with(head, 5, Some(5));
        let (mut sr, mut dr) = (ready(), ready());
        pipe.pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert!(pipe.is_done());
        assert_eq!(dst.output, b"0123456789");
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound() {
        let mut pool = BufPool::new(1);
        let (a, b) = (pool.take(), pool.take());
        assert_eq!(a.len(), BUF_SIZE);
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.free_len(), 1);
    }
}
