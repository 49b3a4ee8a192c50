//! The performance report: every target of the issues, checked against criterion's saved
//! results (`target/criterion/<id>/new/estimates.json`) and written as
//! `docs/PERFORMANCE.md`.
//!
//! Each [`Target`] names the benchmark ids it reads; ids use criterion's directory layout
//! (`group/function[/parameter]`, with `/` inside a function name stored as `_`). A target
//! whose results are missing is reported as not measured, never as passed.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, ErrorKind};

/// How a target judges its measurements (all medians).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// `ours` takes at most `max` times as long as `baseline`.
    SlowdownAtMost {
        /// Our benchmark.
        ours: &'static str,
        /// What it is compared with.
        baseline: &'static str,
        /// The largest acceptable time ratio ours / baseline.
        max: f64,
    },
    /// `ours` is at least `min` times as fast as `baseline` (baseline time / our time).
    SpeedupAtLeast {
        /// Our benchmark.
        ours: &'static str,
        /// What it is compared with.
        baseline: &'static str,
        /// The smallest acceptable ratio baseline / ours.
        min: f64,
    },
    /// `ours` takes at most `max_ns` nanoseconds.
    TimeAtMost {
        /// Our benchmark.
        ours: &'static str,
        /// The limit, in nanoseconds.
        max_ns: f64,
    },
    /// `ours` minus `base` is at most `max_ns` nanoseconds (the cost a wrapper adds).
    OverheadAtMost {
        /// The wrapped call.
        ours: &'static str,
        /// The bare call.
        base: &'static str,
        /// The limit, in nanoseconds.
        max_ns: f64,
    },
    /// `ours`, doing `elements` per iteration, reaches at least `min_per_second`.
    ThroughputAtLeast {
        /// Our benchmark.
        ours: &'static str,
        /// Elements (events) per iteration.
        elements: f64,
        /// The smallest acceptable elements per second.
        min_per_second: f64,
    },
}

/// One performance target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// What is promised, in words.
    pub name: &'static str,
    /// How it is checked.
    pub check: Check,
}

/// The targets the issues set, in the order the report lists them.
pub const TARGETS: [Target; 12] = [
    Target {
        name: "bus `send` ≤ 1.5x a direct call",
        check: Check::SlowdownAtMost {
            ours: "send/command_bus",
            baseline: "send/direct_call",
            max: 1.5,
        },
    },
    Target {
        name: "bus `send` < 100 ns",
        check: Check::TimeAtMost {
            ours: "send/command_bus",
            max_ns: 100.0,
        },
    },
    Target {
        name: "`publish` to 10 subscribers ≤ 1.5x tokio broadcast",
        check: Check::SlowdownAtMost {
            ours: "publish/event_bus/10",
            baseline: "publish/tokio_broadcast/10",
            max: 1.5,
        },
    },
    Target {
        name: "4 middleware ≤ 1.0x tower ServiceBuilder",
        check: Check::SlowdownAtMost {
            ours: "middleware/flext_layered",
            baseline: "middleware/tower_service_builder",
            max: 1.0,
        },
    },
    Target {
        name: "repository at 1000 events ≥ 2x cqrs-es, no snapshots",
        check: Check::SpeedupAtLeast {
            ours: "execute/flext_no_snapshots/1000",
            baseline: "execute/cqrs_es_mem_store/1000",
            min: 2.0,
        },
    },
    Target {
        name: "repository at 1000 events ≥ 20x cqrs-es, snapshots",
        check: Check::SpeedupAtLeast {
            ours: "execute/flext_snapshots_every_100/1000",
            baseline: "execute/cqrs_es_mem_store/1000",
            min: 20.0,
        },
    },
    Target {
        name: "circuit breaker overhead ≤ 60 ns",
        check: Check::OverheadAtMost {
            ours: "resilience/circuit_breaker_closed",
            base: "resilience/bare_handler",
            max_ns: 60.0,
        },
    },
    Target {
        name: "registry lookup ≤ 50 ns",
        check: Check::TimeAtMost {
            ours: "registry/lookup_by_name",
            max_ns: 50.0,
        },
    },
    Target {
        name: "PostgreSQL single appends ≥ 1.0x postgres-es",
        check: Check::SpeedupAtLeast {
            ours: "postgres_append/single_flext",
            baseline: "postgres_append/single_postgres_es",
            min: 1.0,
        },
    },
    Target {
        name: "PostgreSQL batched appends ≥ 0.7x raw sqlx",
        check: Check::SpeedupAtLeast {
            ours: "postgres_append/batch_100_flext",
            baseline: "postgres_append/batch_100_raw_sqlx",
            min: 0.7,
        },
    },
    Target {
        name: "SQLite ≥ 20k single appends/s",
        check: Check::ThroughputAtLeast {
            ours: "sqlite_append/single_flext",
            elements: 1.0,
            min_per_second: 20_000.0,
        },
    },
    Target {
        name: "SQLite ≥ 150k events/s batched",
        check: Check::ThroughputAtLeast {
            ours: "sqlite_append/batch_100_flext",
            elements: 100.0,
            min_per_second: 150_000.0,
        },
    },
];

/// The median time of one benchmark, in nanoseconds, from criterion's `estimates.json`
/// under `criterion_dir`; `Ok(None)` when that benchmark has not been run.
pub fn median_ns(criterion_dir: &Path, id: &str) -> Result<Option<f64>, Error> {
    let path = criterion_dir.join(id).join("new").join("estimates.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::new(
                ErrorKind::Io,
                format!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    let estimates: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::new(
            ErrorKind::Json,
            format!("{} is not criterion's JSON: {e}", path.display()),
        )
    })?;
    estimates["median"]["point_estimate"]
        .as_f64()
        .map(Some)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Json,
                format!("{} has no median.point_estimate", path.display()),
            )
        })
}

/// One target's line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The target.
    pub target: Target,
    /// Our figure, formatted (`91.6 ns`, `3.65k/s`).
    pub ours: String,
    /// The comparison's figure, formatted, when there is one.
    pub baseline: Option<String>,
    /// The measured ratio or figure the goal is about, formatted.
    pub measured: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub met: Option<bool>,
}

/// Checks `target` against the results under `criterion_dir`.
pub fn evaluate(criterion_dir: &Path, target: Target) -> Result<Outcome, Error> {
    let read = |id| median_ns(criterion_dir, id);
    let missing = |ids: &[&str]| Outcome {
        target,
        ours: "not measured".to_owned(),
        baseline: None,
        measured: format!("run the benchmarks that save {}", ids.join(", ")),
        met: None,
    };
    Ok(match target.check {
        Check::SlowdownAtMost {
            ours,
            baseline,
            max,
        } => match (read(ours)?, read(baseline)?) {
            (Some(o), Some(b)) => Outcome {
                target,
                ours: time(o),
                baseline: Some(time(b)),
                measured: format!("{:.2}x (goal ≤ {max}x)", o / b),
                met: Some(o / b <= max),
            },
            _ => missing(&[ours, baseline]),
        },
        Check::SpeedupAtLeast {
            ours,
            baseline,
            min,
        } => match (read(ours)?, read(baseline)?) {
            (Some(o), Some(b)) => Outcome {
                target,
                ours: time(o),
                baseline: Some(time(b)),
                measured: format!("{:.2}x (goal ≥ {min}x)", b / o),
                met: Some(b / o >= min),
            },
            _ => missing(&[ours, baseline]),
        },
        Check::TimeAtMost { ours, max_ns } => match read(ours)? {
            Some(o) => Outcome {
                target,
                ours: time(o),
                baseline: None,
                measured: format!("{} (goal ≤ {})", time(o), time(max_ns)),
                met: Some(o <= max_ns),
            },
            None => missing(&[ours]),
        },
        Check::OverheadAtMost { ours, base, max_ns } => match (read(ours)?, read(base)?) {
            (Some(o), Some(b)) => Outcome {
                target,
                ours: time(o),
                baseline: Some(time(b)),
                measured: format!("+{} (goal ≤ {})", time(o - b), time(max_ns)),
                met: Some(o - b <= max_ns),
            },
            _ => missing(&[ours, base]),
        },
        Check::ThroughputAtLeast {
            ours,
            elements,
            min_per_second,
        } => match read(ours)? {
            Some(o) => {
                let per_second = elements / (o * 1e-9);
                Outcome {
                    target,
                    ours: rate(per_second),
                    baseline: None,
                    measured: format!("{} (goal ≥ {})", rate(per_second), rate(min_per_second)),
                    met: Some(per_second >= min_per_second),
                }
            }
            None => missing(&[ours]),
        },
    })
}

/// The machine and toolchain a report was measured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Logical cores.
    pub cores: usize,
    /// The CPU model, as the OS names it.
    pub cpu: String,
    /// `rustc --version`.
    pub rustc: String,
}

impl Machine {
    /// Reads this machine's facts (`unknown` where the OS does not say).
    pub fn current() -> Self {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or("rustc".into()))
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        Self { cores, cpu, rustc }
    }
}

/// The report's Markdown. `fresh` says whether the benchmarks were just run (each ratio
/// then compares figures of one run) or the results are older saved ones.
pub fn render(outcomes: &[Outcome], machine: &Machine, fresh: bool) -> String {
    let mut out = String::from(
        "# Performance\n\n\
         Written by `cargo run -p xtask -- bench-report` (`just bench-report`) from the \
         criterion results saved in `target/criterion`; do not edit by hand. Medians. \
         Without `--no-run` the command runs every benchmark first, so each ratio compares \
         figures measured in the same run.\n\n",
    );
    let _ = writeln!(
        out,
        "Machine: {} logical cores, {}; {}.\n",
        machine.cores, machine.cpu, machine.rustc
    );
    out.push_str(if fresh {
        "Results: measured by the run that wrote this file.\n\n"
    } else {
        "Results: saved by earlier benchmark runs (`--no-run`); a ratio may compare figures \
         of different runs.\n\n"
    });
    out.push_str("| target | ours | compared with | measured | result |\n");
    out.push_str("|---|---|---|---|---|\n");
    for outcome in outcomes {
        let result = match outcome.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            outcome.target.name,
            outcome.ours,
            outcome.baseline.as_deref().unwrap_or("—"),
            outcome.measured,
            result
        );
    }
    let met = outcomes.iter().filter(|o| o.met == Some(true)).count();
    let missed = outcomes.iter().filter(|o| o.met == Some(false)).count();
    let _ = writeln!(
        out,
        "\n{met} met, {missed} missed, {} not measured.\n\n\
         To reproduce: `FLEXT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
         cargo run -p xtask -- bench-report` (runs `cargo bench --workspace`, then writes \
         this file); `-- bench-report --no-run` rewrites it from the saved results.",
        outcomes.len() - met - missed
    );
    out
}

fn time(ns: f64) -> String {
    if ns.abs() >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns.abs() >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.1} ns")
    }
}

fn rate(per_second: f64) -> String {
    if per_second >= 1_000_000.0 {
        format!("{:.2}M/s", per_second / 1_000_000.0)
    } else if per_second >= 1_000.0 {
        format!("{:.2}k/s", per_second / 1_000.0)
    } else {
        format!("{per_second:.0}/s")
    }
}
