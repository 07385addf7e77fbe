//! Micro-benchmarks of Hermod's hot paths live in `benches/` (`cargo bench -p hermod-benches`).
