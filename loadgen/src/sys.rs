//! The few operating-system calls std and mio do not offer: a microsecond-precise timer that mio
//! can poll (timerfd), the process's CPU time (getrusage), the thread's timer slack, the raw
//! monotonic clock (shared by every process of a run, so worker processes agree on t0) and a
//! sleep until an instant of it, `IP_BIND_ADDRESS_NO_PORT` for source-address binding, and the
//! kernel's receive timestamps (`SO_TIMESTAMPNS`, read with `recvmsg`).
//!
//! Why a timerfd: mio's poll timeout has millisecond granularity, which would make every open-loop
//! message up to a millisecond late and bury a loopback round trip (tens of microseconds) under the
//! loadgen's own lateness. A timerfd registered in the same `Poll` wakes the loop at the due time
//! while replies keep being read the moment they arrive.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// A one-shot monotonic timer whose expiry makes its descriptor readable.
#[derive(Debug)]
pub struct Timer {
    /// The timerfd; a `File` so that reading and closing need no unsafe code.
    file: File,
}

impl Timer {
    /// A new, disarmed, non-blocking timer.
    pub fn new() -> io::Result<Self> {
        // SAFETY: timerfd_create takes no pointers; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a valid descriptor just created above, owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        Ok(Timer { file })
    }

    /// Arms the timer to fire once, `after` from now (at least one nanosecond), replacing any
    /// earlier setting.
    pub fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: the descriptor is a live timerfd owned by `self`; `spec` is a valid itimerspec
        // that outlives the call, and a null old-value pointer is allowed.
        let rc =
            unsafe { libc::timerfd_settime(self.file.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consumes an expiry so the descriptor is not readable any more. Not needed between
    /// `arm` calls: re-arming resets the expiry count, and every expiry raises a new edge.
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        // WouldBlock (nothing expired: a spurious event) is fine to ignore.
        let _ = (&self.file).read(&mut buf);
    }

    /// The descriptor, for registration.
    fn raw(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl Source for Timer {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.raw()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.raw()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.raw()).deregister(registry)
    }
}

/// CPU seconds (user + system) used so far by the whole process, all threads.
pub fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Asks the kernel to fire this thread's timers within a microsecond of their expiry instead of
/// the default 50 us slack. Best effort: failure only costs precision.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0) };
}

/// Nanoseconds of `CLOCK_MONOTONIC`: the same clock in every process on the machine, so a t0 taken
/// in the parent means the same instant in its worker processes.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// The run's clock: nanoseconds since a t0 on the monotonic clock every process shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// `monotonic_ns()` at t0; chosen by the parent, passed to worker processes as a number.
    t0_ns: u64,
}

impl Clock {
    /// A clock whose t0 is `t0_ns` on the monotonic clock.
    pub fn at(t0_ns: u64) -> Clock {
        Clock { t0_ns }
    }

    /// A clock starting `delay` from now (time for every worker to be told the start).
    pub fn starting_in(delay: Duration) -> Clock {
        Clock::at(monotonic_ns() + delay.as_nanos() as u64)
    }

    /// t0 on the monotonic clock.
    pub fn t0_ns(&self) -> u64 {
        self.t0_ns
    }

    /// Nanoseconds since t0 (0 before it).
    pub fn now(&self) -> u64 {
        monotonic_ns().saturating_sub(self.t0_ns)
    }

    /// Sleeps until t0.
    pub fn wait_start(&self) {
        self.sleep_until(0);
    }

    /// Sleeps until `at` nanoseconds after t0 (an absolute deadline: no drift from the time the
    /// call itself takes); returns at once if that time has passed.
    pub fn sleep_until(&self, at: u64) {
        let deadline = self.t0_ns.saturating_add(at);
        let ts = libc::timespec {
            tv_sec: (deadline / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
            tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
        };
        // EINTR: a signal cut the sleep short; the loop simply wakes a little early.
        // SAFETY: `ts` is a valid timespec that outlives the call; a null remainder is allowed
        // with TIMER_ABSTIME.
        let _ = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
    }
}

/// Nanoseconds of `CLOCK_REALTIME`, the clock of the kernel's receive timestamps.
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Asks the kernel to stamp every segment this socket receives with the time it arrived
/// (`SO_TIMESTAMPNS`, `CLOCK_REALTIME`), read back by [`recv_stamped`]. Best effort: without it
/// replies are stamped when the loop reads them.
pub fn enable_rx_timestamps(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is a live socket owned by the caller; the option value points to a c_int
    // that outlives the call, and its size is passed alongside.
    let _ = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// `recv` that also returns the kernel's receive timestamp (nanoseconds of `CLOCK_REALTIME`) of
/// the last segment read, when the socket has [`enable_rx_timestamps`] and one came with it.
pub fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one cmsg carrying a timespec, 8-byte aligned as cmsghdr requires.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is a valid value of this plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points to `iov` (covering `buf`) and `control`, all live and writable for
    // the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, timestamp_of(&msg)))
}

/// The `SCM_TIMESTAMPNS` of a received message, if it carries one.
fn timestamp_of(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: `msg` was filled by recvmsg: its control pointer and length describe the cmsgs
    // the kernel wrote into our buffer, which the CMSG_* walkers stay within.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let len = c.cmsg_len as usize;
            let want = libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as u32) as usize;
            if c.cmsg_level == libc::SOL_SOCKET
                && c.cmsg_type == libc::SCM_TIMESTAMPNS
                && len >= want
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let secs = u64::try_from(ts.tv_sec).ok()?;
                let nanos = u64::try_from(ts.tv_nsec).ok()?;
                return Some(secs.saturating_mul(1_000_000_000) + nanos);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

/// Lets a socket bound to a source address with port 0 pick its port at `connect` time, per
/// destination, instead of at `bind` time from the shared pool (which would cap one source
/// address at ~28k connections over all destinations). Best effort.
pub fn bind_address_no_port(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is a live socket owned by the caller; the option value points to a c_int
    // that outlives the call, and its size is passed alongside.
    let _ = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Instant;

    #[test]
    fn timer_wakes_poll_with_sub_millisecond_precision() {
        tighten_timer_slack();
        let mut poll = Poll::new().unwrap();
        let mut timer = Timer::new().unwrap();
        poll.registry()
            .register(&mut timer, Token(1), Interest::READABLE)
            .unwrap();
        let start = Instant::now();
        timer.arm(Duration::from_micros(300)).unwrap();
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == Token(1)));
        assert!(start.elapsed() >= Duration::from_micros(300));
        timer.clear();
    }

    #[test]
    fn cpu_time_is_monotonic() {
        let a = cpu_seconds();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() >= a);
    }
}
