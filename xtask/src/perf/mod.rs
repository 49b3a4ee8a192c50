//! The performance report: every target of the issues, checked against criterion's saved
//! results (`target/criterion/<id>/new/estimates.json`) and written as
//! `docs/PERFORMANCE.md`.
//!
//! Each [`Target`] names the benchmark ids it reads; ids use criterion's directory layout
//! (`group/function[/parameter]`, with `/` inside a function name stored as `_`). A target
//! whose results are missing is reported as not measured, never as passed.
//!
//! Three parts: `targets` holds what is expected ([`TARGETS`], [`GROWTH`]), `criterion`
//! reads the saved medians and judges each target ([`evaluate`]), and `report` writes the
//! Markdown ([`render`]).

mod criterion;
mod report;
mod targets;

pub use criterion::{Outcome, evaluate, median_ns};
pub use report::{
    LATENCY_FILE, Machine, VERSIONED, locked_versions, render, render_growth, render_latency,
    render_memory,
};
pub use targets::{Check, GROWTH, Growth, TARGETS, Target};
