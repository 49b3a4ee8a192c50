//! Criterion benchmarks of flext-handlers side by side with other crates.
//!
//! The benchmarks are in `benches/`; run them with `cargo bench -p flext-benches`. This
//! library is empty: the package exists so that the crates compared against are
//! dev-dependencies of the benchmarks alone.
