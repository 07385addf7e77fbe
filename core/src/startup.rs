//! Process startup and stop plumbing shared by `hermod-proxy` and `hermod-broker`: the one-line
//! [`StartError`] with its exit code, binding the admin listener, and the signal thread (the
//! first SIGTERM/SIGINT starts a graceful stop, a second one exits at once).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Why a server could not start. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("--{setting} {addr}: cannot listen: {source}")]
    Bind {
        /// The flag that named the address, e.g. `admin-listen`.
        setting: &'static str,
        /// The address that could not be bound.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A thread, a signal handler or another OS resource could not be had.
    #[error("cannot start {what}: {source}")]
    Resource {
        /// What was being started, e.g. `the admin thread`.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

impl StartError {
    /// 2 when the address itself is wrong (a configuration error), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrNotAvailable => {
                2
            }
            _ => 1,
        }
    }

    /// Maps an I/O error binding `addr` (named by `--setting`) to [`StartError::Bind`].
    pub fn bind(setting: &'static str, addr: SocketAddr) -> impl FnOnce(io::Error) -> Self {
        move |source| StartError::Bind {
            setting,
            addr,
            source,
        }
    }
}

/// Maps an I/O error starting `what` to [`StartError::Resource`].
pub fn resource(what: &'static str) -> impl FnOnce(io::Error) -> StartError {
    move |source| StartError::Resource { what, source }
}

/// Binds the (blocking) admin HTTP listener named by `--admin-listen`.
pub fn bind_admin(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(StartError::bind("admin-listen", addr))
}

/// Installs the SIGTERM and SIGINT handlers (first thing at startup, so a signal at any later
/// point is a graceful stop, never a kill).
pub fn termination_signals() -> Result<Signals, StartError> {
    Signals::new([SIGTERM, SIGINT]).map_err(resource("signal handlers"))
}

/// Starts `hermod-signals`: the first signal is handed to `on_first`; a second one exits the
/// process at once with `128 + signal`, saying so as `program`.
pub fn spawn_signal_thread(
    mut signals: Signals,
    program: &'static str,
    on_first: impl FnOnce(i32) + Send + 'static,
) -> Result<(), StartError> {
    thread::Builder::new()
        .name("hermod-signals".to_owned())
        .spawn(move || {
            let mut on_first = Some(on_first);
            for sig in signals.forever() {
                match on_first.take() {
                    Some(first) => first(sig),
                    None => {
                        eprintln!("{program}: second signal ({sig}): exiting now");
                        std::process::exit(128 + sig);
                    }
                }
            }
        })
        .map(drop)
        .map_err(resource("the signal thread"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_messages() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let unusable = io::Error::from(io::ErrorKind::AddrNotAvailable);
        let e = StartError::bind("listen", addr)(unusable);
        assert_eq!(e.exit_code(), 2);
        assert!(e
            .to_string()
            .starts_with("--listen 127.0.0.1:1: cannot listen: "));
        let taken = io::Error::from(io::ErrorKind::AddrInUse);
        assert_eq!(StartError::bind("listen", addr)(taken).exit_code(), 1);
        let e = resource("a worker")(io::Error::other("no"));
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "cannot start a worker: no");
    }

    #[test]
    fn admin_bind_names_the_setting() {
        let first = bind_admin("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        match bind_admin(addr) {
            Err(e @ StartError::Bind { .. }) => {
                assert!(e
                    .to_string()
                    .starts_with(&format!("--admin-listen {addr}: ")))
            }
            other => panic!("expected a bind error, got {other:?}"),
        }
    }
}
