//! Writing `docs/PERFORMANCE.md`: the targets' outcomes, the cost-growth tables, the
//! memory figures and the machine they were measured on.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::criterion::{Outcome, elements_per_iteration, median_ns, read_if_present};
use super::targets::Growth;
use crate::error::{Error, ErrorKind};

/// `growth` as a Markdown table of medians (or of rates, for a rate table), each with its
/// ratio to the first row's figure of its column when the table is relative; a missing
/// result is shown as "not measured", a cell without a benchmark as "—".
pub fn render_growth(criterion_dir: &Path, growth: &Growth) -> Result<String, Error> {
    let mut out = format!(
        "### {}

| {} |",
        growth.title, growth.quantity
    );
    for column in growth.columns {
        let _ = write!(out, " {column} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(growth.columns.len()));
    out.push('\n');
    let mut first: Vec<Option<f64>> = vec![None; growth.columns.len()];
    for (row, (value, ids)) in growth.rows.iter().enumerate() {
        let _ = write!(out, "| {value} |");
        for (column, id) in ids.iter().enumerate() {
            if id.is_empty() {
                out.push_str(" — |");
                continue;
            }
            let median = median_ns(criterion_dir, id)?;
            // A rate table shows elements per second (the elements the benchmark declared
            // per iteration), a time table the median.
            let value = match (median, growth.rate) {
                (Some(m), true) => elements_per_iteration(criterion_dir, id)?
                    .filter(|_| m > 0.0)
                    .map(|elements| elements / (m * 1e-9)),
                (None, true) => None,
                (median, false) => median,
            };
            if row == 0 {
                first[column] = value;
            }
            let show = |v: f64| if growth.rate { rate(v) } else { time(v) };
            let cell = match (value, first[column]) {
                (None, _) => "not measured".to_owned(),
                (Some(v), Some(f)) if growth.relative && row > 0 && f > 0.0 => {
                    format!("{} ({:.2}x)", show(v), v / f)
                }
                (Some(v), _) => show(v),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    Ok(out)
}

/// The memory section, from the JSON the `memory` benchmark writes
/// (`target/flext-memory.json`); `Ok(None)` when it has not been run.
pub fn render_memory(path: &Path) -> Result<Option<String>, Error> {
    let Some(text) = read_if_present(path)? else {
        return Ok(None);
    };
    let bad = |what: &str| Error::new(ErrorKind::Json, format!("{} has no {what}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::new(
            ErrorKind::Json,
            format!("{} is not the memory benchmark's JSON: {e}", path.display()),
        )
    })?;
    let number = |pointer: &str| json.pointer(pointer).and_then(serde_json::Value::as_f64);
    let mut out = String::from(
        "| operation | allocations per operation | bytes allocated per operation |\n|---|---|---|\n",
    );
    for (key, name) in [
        ("direct_call", "direct handler call"),
        ("send", "CommandBus `send`"),
        ("publish_10", "EventBus `publish` to 10 subscribers"),
        ("tokio_broadcast_10", "tokio broadcast to 10 receivers"),
    ] {
        let allocations = number(&format!("/{key}/allocations_per_op"))
            .ok_or_else(|| bad(&format!("{key}.allocations_per_op")))?;
        let bytes = number(&format!("/{key}/bytes_per_op"))
            .ok_or_else(|| bad(&format!("{key}.bytes_per_op")))?;
        let _ = writeln!(out, "| {name} | {allocations:.1} | {bytes:.0} B |");
    }
    // Synchronous subscribers: the allocations of a publish do not grow with their number.
    for (key, name) in [
        (
            "publish_sync_1",
            "EventBus `publish` to 1 synchronous subscriber",
        ),
        (
            "publish_sync_10",
            "EventBus `publish` to 10 synchronous subscribers",
        ),
        (
            "publish_sync_100",
            "EventBus `publish` to 100 synchronous subscribers",
        ),
    ] {
        if let (Some(allocations), Some(bytes)) = (
            number(&format!("/{key}/allocations_per_op")),
            number(&format!("/{key}/bytes_per_op")),
        ) {
            let _ = writeln!(out, "| {name} | {allocations:.1} | {bytes:.0} B |");
        }
    }
    let events = number("/in_memory_store/events").ok_or_else(|| bad("in_memory_store.events"))?;
    let heap =
        number("/in_memory_store/heap_bytes").ok_or_else(|| bad("in_memory_store.heap_bytes"))?;
    let payload = number("/in_memory_store/payload_bytes")
        .ok_or_else(|| bad("in_memory_store.payload_bytes"))?;
    let rss = number("/in_memory_store/rss_bytes");
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    let _ = write!(
        out,
        "\nAn `InMemoryEventStore` holding {events:.0} events ({:.0}-byte JSON payloads on average, \
         1000 streams): {:.1} MiB of heap, {:.0} bytes per event",
        payload / events,
        mib(heap),
        heap / events
    );
    match rss {
        Some(rss) => {
            let _ = writeln!(out, "; resident memory grew by {:.1} MiB.", mib(rss));
        }
        None => out.push_str("; resident memory was not readable here.\n"),
    }
    Ok(Some(out))
}
/// Where the NATS benchmark writes the percentiles of its remote round trips, under
/// criterion's directory.
pub const LATENCY_FILE: &str = "nats_remote/percentiles.json";

/// The remote round trip's latency section, from the JSON the NATS benchmark writes
/// ([`LATENCY_FILE`] under criterion's directory: `round_trips`, and `p50_ns` and `p99_ns`
/// of `flext` and `raw_request`); `Ok(None)` when it has not been run.
pub fn render_latency(path: &Path) -> Result<Option<String>, Error> {
    let Some(text) = read_if_present(path)? else {
        return Ok(None);
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::new(
            ErrorKind::Json,
            format!("{} is not the NATS benchmark's JSON: {e}", path.display()),
        )
    })?;
    let number = |pointer: &str| {
        json.pointer(pointer)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Json,
                    format!(
                        "{} has no {}",
                        path.display(),
                        pointer.trim_start_matches('/').replace('/', ".")
                    ),
                )
            })
    };
    let calls = number("/round_trips")?;
    let (flext_p50, flext_p99) = (number("/flext/p50_ns")?, number("/flext/p99_ns")?);
    let (raw_p50, raw_p99) = (
        number("/raw_request/p50_ns")?,
        number("/raw_request/p99_ns")?,
    );
    let mut out = format!(
        "{calls:.0} sequential round trips of each, timed one by one, after the criterion \
         measurement of the same run.\n\n| round trip | p50 | p99 |\n|---|---|---|\n"
    );
    let _ = writeln!(
        out,
        "| `CommandBus::register_remote` → `NatsWorker` | {} | {} |",
        time(flext_p50),
        time(flext_p99)
    );
    let _ = writeln!(
        out,
        "| raw `client.request` → raw responder | {} | {} |",
        time(raw_p50),
        time(raw_p99)
    );
    let ratio = |ours: f64, raw: f64| {
        if raw > 0.0 {
            format!("{:.2}x", ours / raw)
        } else {
            "—".to_owned()
        }
    };
    let _ = writeln!(
        out,
        "| ratio | {} | {} |",
        ratio(flext_p50, raw_p50),
        ratio(flext_p99, raw_p99)
    );
    Ok(Some(out))
}

/// The crates whose versions a report names: what is measured and what it is compared with.
pub const VERSIONED: [&str; 8] = [
    "tokio",
    "tower",
    "cqrs-es",
    "postgres-es",
    "sqlx",
    "serde_json",
    "quanta",
    "criterion",
];

/// The machine, toolchain and versions a report was measured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Logical cores.
    pub cores: usize,
    /// The CPU model, as the OS names it.
    pub cpu: String,
    /// `rustc --version`.
    pub rustc: String,
    /// The workspace's commit (`git rev-parse --short HEAD`), marked when the working tree
    /// has uncommitted changes (other than to `docs/PERFORMANCE.md`).
    pub commit: String,
    /// Locked versions of the [`VERSIONED`] crates, as `(name, version)`.
    pub versions: Vec<(String, String)>,
}

impl Machine {
    /// Reads the facts of this machine and of the workspace at `root` (`unknown` where
    /// they cannot be read).
    pub fn current(root: &Path) -> Self {
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
        let output = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .current_dir(root)
                .output()
                .ok()
                .filter(|out| out.status.success())
                .and_then(|out| String::from_utf8(out.stdout).ok())
                .map(|text| text.trim().to_owned())
        };
        let rustc_program = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
        let rustc = output(&rustc_program, &["--version"]).unwrap_or_else(|| "unknown".to_owned());
        let commit = match output("git", &["rev-parse", "--short", "HEAD"]) {
            // The report's own file does not count as a change.
            Some(commit) => match output(
                "git",
                &["status", "--porcelain", "--", ".", ":!docs/PERFORMANCE.md"],
            ) {
                Some(changes) if !changes.is_empty() => {
                    format!("{commit} with uncommitted changes")
                }
                _ => commit,
            },
            None => "unknown".to_owned(),
        };
        let versions = std::fs::read_to_string(root.join("Cargo.lock"))
            .map(|lock| locked_versions(&lock, &VERSIONED))
            .unwrap_or_default();
        Self {
            cores,
            cpu,
            rustc,
            commit,
            versions,
        }
    }
}

/// The locked versions of `names` in a `Cargo.lock` text, in the order given (the first
/// entry of a name locked twice); a name not in the lock is left out.
pub fn locked_versions(lock: &str, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|name| {
            let wanted = format!("name = \"{name}\"");
            let mut lines = lock.lines().map(str::trim);
            lines.find(|line| *line == wanted)?;
            let version = lines
                .next()?
                .strip_prefix("version = \"")?
                .strip_suffix('"')?;
            Some(((*name).to_owned(), version.to_owned()))
        })
        .collect()
}

/// The report's Markdown: the targets, why each missed one is missed, the `growth` tables
/// (from [`render_growth`]), the remote round trip's `latency` (from [`render_latency`])
/// and the `memory` section (from [`render_memory`]). `run` is how long running every
/// benchmark took (build included) when this command just ran them (each ratio then
/// compares figures of one run), `None` when the results are older saved ones.
pub fn render(
    outcomes: &[Outcome],
    growth: &[String],
    latency: Option<&str>,
    memory: Option<&str>,
    machine: &Machine,
    run: Option<Duration>,
) -> String {
    let mut out = String::from(
        "# Performance\n\n\
         Written by `cargo run -p xtask -- bench-report` (`just bench-report`) from the \
         criterion results saved in `target/criterion`; do not edit by hand. Medians. \
         Without `--no-run` the command runs every benchmark first, so each ratio compares \
         figures measured in the same run.\n\n",
    );
    let _ = writeln!(
        out,
        "Machine: {} logical cores, {}; {}; commit {}.\n",
        machine.cores, machine.cpu, machine.rustc, machine.commit
    );
    if !machine.versions.is_empty() {
        let versions: Vec<String> = machine
            .versions
            .iter()
            .map(|(name, version)| format!("{name} {version}"))
            .collect();
        let _ = writeln!(out, "Versions: {}.\n", versions.join(", "));
    }
    match run {
        Some(took) => {
            let _ = writeln!(
                out,
                "Results: measured by the run that wrote this file; running every benchmark \
                 took {:.1} minutes, the build included.\n",
                took.as_secs_f64() / 60.0
            );
        }
        None => out.push_str(
            "Results: saved by earlier benchmark runs (`--no-run`); a ratio may compare \
             figures of different runs.\n\n",
        ),
    }
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
        "\n{met} met, {missed} missed, {} not measured.",
        outcomes.len() - met - missed
    );
    if missed > 0 {
        out.push_str("\n## Where the missed targets lose their time\n\n");
        let mut explained: Vec<&str> = Vec::new();
        for outcome in outcomes.iter().filter(|o| o.met == Some(false)) {
            let cost = outcome.target.cost;
            if explained.contains(&cost) {
                let _ = writeln!(out, "- {}: as above.", outcome.target.name);
            } else {
                explained.push(cost);
                let _ = writeln!(out, "- {}: {cost}", outcome.target.name);
            }
        }
    }
    out.push_str(
        "\n## Cost growth\n\nMedians; in brackets, the ratio to the first row of the column.\n",
    );
    for table in growth {
        let _ = write!(out, "\n{table}");
    }
    out.push_str("\n## Remote round trip latency\n\n");
    out.push_str(latency.unwrap_or(
        "Not measured: run `cargo bench -p flext-bus-nats --bench nats` with \
         `FLEXT_TEST_NATS_URL` set.\n",
    ));
    out.push_str("\n## Memory\n\n");
    out.push_str(
        memory.unwrap_or("Not measured: run `cargo bench -p flext-benches --bench memory`.\n"),
    );
    let _ = writeln!(
        out,
        "\nTo reproduce: `FLEXT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
         FLEXT_TEST_NATS_URL=nats://127.0.0.1:4222 cargo run -p xtask -- bench-report` (runs \
         `cargo bench --workspace`, then writes this file); `-- bench-report --no-run` \
         rewrites it from the saved results."
    );
    out
}

pub(super) fn time(ns: f64) -> String {
    if ns.abs() >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns.abs() >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.1} ns")
    }
}

pub(super) fn rate(per_second: f64) -> String {
    if per_second >= 1_000_000.0 {
        format!("{:.2}M/s", per_second / 1_000_000.0)
    } else if per_second >= 1_000.0 {
        format!("{:.2}k/s", per_second / 1_000.0)
    } else {
        format!("{per_second:.0}/s")
    }
}
