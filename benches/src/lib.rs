//! # hermod-benches
//!
//! Hermod's measurements; nothing here ships in a program.
//!
//! - `benches/*.rs`: criterion micro-benchmarks of the hot paths (`cargo bench -p
//!   hermod-benches`): WebSocket framing (`frame`), the client protocol and JWT (`protocol`), RESP
//!   encode/decode (`resp`), the timer wheel (`timer`) and room fan-out (`fanout`).
//! - `compare.sh` + `compare/*.py`: the comparison of `hermod-proxy` in tunnel mode against nginx
//!   and HAProxy as WebSocket proxies, plus Hermod's terminating paths
//!   (`benches/compare.sh [--quick]`). Method and latest figures: `docs/benchmarks.md`.
