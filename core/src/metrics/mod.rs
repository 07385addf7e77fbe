//! Prometheus metrics of both server binaries: the one table that names every metric
//! ([`names`]), the one writer of the text exposition format ([`Exposition`]), and a checker
//! that reads it back ([`check`]).
//!
//! A binary keeps its figures in its own atomics (written on its threads' hot paths) and,
//! when `/metrics` is scraped, writes them on the admin thread into one `String`:
//!
//! ```
//! use hermod_core::metrics::{names, Exposition};
//! let mut out = String::new();
//! let mut w = Exposition::new(&mut out);
//! w.gauge(&names::CONNECTIONS_OPEN, 3);
//! w.header(&names::SESSIONS_CLOSED);
//! w.sample(&names::SESSIONS_CLOSED, &[&1000], 12);
//! assert!(out.ends_with("hermod_sessions_closed_total{code=\"1000\"} 12\n"));
//! ```
//!
//! Adding a metric: add its [`Family`] to [`names`] (and to [`names::ALL`]), write it with
//! [`Exposition`], then regenerate the list in docs/operations.md
//! (`HERMOD_BLESS_DOCS=1 cargo test -p hermod-core --lib metrics`).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod check;
pub mod docs;
mod family;
pub mod names;
mod writer;

pub use check::{check, is_valid_name, ExpositionError};
pub use family::{Family, Kind, Source};
pub use writer::{Exposition, Number};

#[cfg(test)]
mod tests;
