//! Reading criterion's saved results (`target/criterion/<id>/new/estimates.json`) and
//! judging each [`Target`] against them.

use std::path::Path;

use super::report::{rate, time};
use super::targets::{Check, Target};
use crate::error::{Error, ErrorKind};

/// The median time of one benchmark, in nanoseconds, from criterion's `estimates.json`
/// under `criterion_dir`; `Ok(None)` when that benchmark has not been run.
pub fn median_ns(criterion_dir: &Path, id: &str) -> Result<Option<f64>, Error> {
    let path = criterion_dir.join(id).join("new").join("estimates.json");
    let Some(estimates) = saved_json(&path)? else {
        return Ok(None);
    };
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

/// The elements one iteration of benchmark `id` handles, from the throughput criterion
/// saved with it (`benchmark.json`); `Ok(None)` when it has not been run or declared none.
pub(super) fn elements_per_iteration(criterion_dir: &Path, id: &str) -> Result<Option<f64>, Error> {
    let path = criterion_dir.join(id).join("new").join("benchmark.json");
    Ok(saved_json(&path)?.and_then(|benchmark| benchmark["throughput"]["Elements"].as_f64()))
}

/// One of criterion's JSON files; `Ok(None)` when the benchmark has not been run.
fn saved_json(path: &Path) -> Result<Option<serde_json::Value>, Error> {
    let Some(text) = read_if_present(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::new(
            ErrorKind::Json,
            format!("{} is not criterion's JSON: {e}", path.display()),
        )
    })
}

/// The text of the file at `path`; `Ok(None)` when there is none (that benchmark has not
/// been run).
pub(super) fn read_if_present(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::new(
            ErrorKind::Io,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
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
            beside,
            elements,
            min_per_second,
        } => {
            let per_second = |ns: f64| elements / (ns * 1e-9);
            // The comparison is shown, not judged, but a target shown without it would
            // hide that half of the run is missing.
            let compared = match beside {
                Some(id) => match read(id)? {
                    Some(b) => Some(per_second(b)),
                    None => return Ok(missing(&[ours, id])),
                },
                None => None,
            };
            match read(ours)? {
                Some(o) => {
                    let ours_rate = per_second(o);
                    let share = compared
                        .map(|b| format!("; {:.2}x the comparison", ours_rate / b))
                        .unwrap_or_default();
                    Outcome {
                        target,
                        ours: rate(ours_rate),
                        baseline: compared.map(rate),
                        measured: format!(
                            "{} (goal ≥ {}{share})",
                            rate(ours_rate),
                            rate(min_per_second)
                        ),
                        met: Some(ours_rate >= min_per_second),
                    }
                }
                None => missing(&[ours]),
            }
        }
    })
}
