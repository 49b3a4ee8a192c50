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
    /// Where the time goes, found by profiling: printed under the table when the target
    /// is missed, so the report says what the remaining gap is and why.
    pub cost: &'static str,
}

// Where each target's time goes, from `perf record` of the benchmark named (criterion's
// `--profile-time`) and the memory benchmark. Shown under the table when a target is missed.

const COST_SEND: &str = "the direct call is one boxed future (the object-safe handler \
    trait); `send` allocates nothing more (see Memory) but looks the route up by `TypeId`, \
    runs the command's validation, guards the handler future against panics \
    (`catch_unwind`), enters a `flext.dispatch` span and records metrics. Profile of \
    `send/command_bus` before the span fix below: the nested dispatch futures (send, route call, panic guard) about \
    45%, the two TSC reads of the latency timer 18%, histogram and counters 8%, creating \
    the disabled span 7%. Without metrics and tracing \
    (`send/command_bus_uninstrumented`) a send still costs four to five direct calls: 1.5x \
    would need a monomorphized path without the panic guard, and DESIGN §4 requires the \
    guard (nothing panics across the API). Fixed: sqlx turns on `tracing`'s `log` feature \
    (so this workspace-wide build has it), and with it even a disabled span formatted its \
    fields for the `log` crate when no subscriber was set, about 30 ns a send; spans are \
    now created only when a subscriber wants them. `CommandBus::send` returning the \
    route's future instead of wrapping it (one state machine less) took about 8 ns off.";

const COST_METRICS: &str = "instrumentation is two TSC reads (`quanta`), four uncontended \
    locked adds (histogram bucket and sum, route and bus success counters) and the check \
    that no subscriber wants the span: about 20 ns, a third of a `send` whose handler only \
    adds 1. Against a handler \
    that does real work (a microsecond or more) it is a few percent; \
    `Instrumentation::NONE` (or `metrics: false`) removes it from a hot bus.";

const COST_PUBLISH: &str = "a publish allocates the shared `Arc<E>`, the report's event \
    name and one boxed future per subscriber (12 allocations and 428 bytes for 10 \
    subscribers against tokio broadcast's one `Arc` of 24 bytes, see Memory), and each \
    delivery is a dispatch: type check, panic guard, span. It also runs and awaits every \
    subscriber and reports each outcome; broadcast only hands the value to a ring buffer \
    that each receiver reads.";

const COST_MIDDLEWARE: &str = "tower's `ServiceBuilder` stack is generic: the four \
    `map_request`/`map_response` layers inline into the handler and compile down to the \
    arithmetic, so 4 ns is the runtime's poll. flext middleware is a list of \
    `Arc<dyn Middleware>` chosen at run time; the profile puts 32% of the time in \
    `catch_panic_sync` around each of the 8 hook calls (a panicking hook is an \
    `OPERATION_ERROR`, not a crash) and 44% in `Layered::handle` walking the stack, plus \
    the handler's boxed future. Matching tower takes a static middleware API (serving \
    flext handlers as tower services), not a faster dynamic one.";

const COST_REPLAY: &str = "profile of `aggregate_load/without_snapshot/1000`: 58% decoding \
    each event's JSON payload into the event type (serde_json), 34% cloning events out of \
    the store and dropping them (four reference counts each: stream id, event type, \
    payload, metadata). cqrs-es's `MemStore` keeps typed events and only clones them. The \
    in-memory store keeps JSON text so that it behaves like the durable stores (upcasters \
    apply, the same bytes round-trip); 2x would need typed in-memory storage or a \
    borrowed read path. With snapshots the load is flat (see Cost growth).";

const COST_BREAKER: &str = "a closed breaker loads its state and generation, counts the \
    call and records the outcome in its sliding window (an atomic add and swap); a \
    count-based window no longer reads the clock, which took about 20 ns off.";

const COST_REGISTRY: &str = "a `DashMap` read by name (hash, shard read lock) and an `Arc` \
    clone of the handler.";

const COST_PG_SINGLE: &str = "an append is now three round trips, as many as postgres-es \
    takes (`BEGIN` with the advisory lock; one statement that reads the version and head, \
    checks, inserts and notifies; `COMMIT`), up from four (0.76x). With round trips \
    equal, the remaining gap is server work postgres-es does not do: the per-schema \
    advisory lock that keeps global positions gap-free for readers, the `pg_notify` that \
    wakes subscriptions, and two more unique indexes (event id, for idempotent retries, \
    and position).";

const COST_PG_BATCH: &str = "a batch is one statement whatever its size (rows bound as \
    arrays and expanded with `UNNEST`); against raw sqlx's multi-row insert it adds the \
    lock, the version check and the notification.";

const COST_SQLITE_SINGLE: &str = "sqlx runs SQLite on a worker thread and every statement \
    is a round trip to it: the profile of a single append shows three quarters of the time \
    in the kernel switching threads and 1–2% in SQLite. An append is now one statement (it \
    was four, at 3.5k/s), 0.8–1.0x raw sqlx single inserts across runs here (see Store \
    appends side by side below). 20k/s takes fewer thread switches than one \
    per append: a different SQLite driver, or group commit of many callers' appends.";

const COST_SQLITE_BATCH: &str = "a batch is two statements (the checked insert, then its \
    last version: returned rows would each be a message of their own from the worker \
    thread), up from four (about 100k/s). Raw sqlx inserts the same rows into a table of \
    the same shape in one unchecked statement; ours also takes the second trip, \
    serializes each event's metadata to JSON, formats each UUID, and reads the version and \
    head and numbers the rows inside the statement.";

/// The targets the issues set, in the order the report lists them.
pub const TARGETS: [Target; 13] = [
    Target {
        name: "bus `send` ≤ 1.5x a direct call",
        check: Check::SlowdownAtMost {
            ours: "send/command_bus",
            baseline: "send/direct_call",
            max: 1.5,
        },
        cost: COST_SEND,
    },
    Target {
        name: "bus `send` < 100 ns",
        check: Check::TimeAtMost {
            ours: "send/command_bus",
            max_ns: 100.0,
        },
        cost: COST_SEND,
    },
    Target {
        name: "metrics and tracing (no subscriber) add ≤ 10% to `send`",
        check: Check::SlowdownAtMost {
            ours: "send/command_bus",
            baseline: "send/command_bus_uninstrumented",
            max: 1.1,
        },
        cost: COST_METRICS,
    },
    Target {
        name: "`publish` to 10 subscribers ≤ 1.5x tokio broadcast",
        check: Check::SlowdownAtMost {
            ours: "publish/event_bus/10",
            baseline: "publish/tokio_broadcast/10",
            max: 1.5,
        },
        cost: COST_PUBLISH,
    },
    Target {
        name: "4 middleware ≤ 1.0x tower ServiceBuilder",
        check: Check::SlowdownAtMost {
            ours: "middleware/flext_layered",
            baseline: "middleware/tower_service_builder",
            max: 1.0,
        },
        cost: COST_MIDDLEWARE,
    },
    Target {
        name: "repository at 1000 events ≥ 2x cqrs-es, no snapshots",
        check: Check::SpeedupAtLeast {
            ours: "execute/flext_no_snapshots/1000",
            baseline: "execute/cqrs_es_mem_store/1000",
            min: 2.0,
        },
        cost: COST_REPLAY,
    },
    Target {
        name: "repository at 1000 events ≥ 20x cqrs-es, snapshots",
        check: Check::SpeedupAtLeast {
            ours: "execute/flext_snapshots_every_100/1000",
            baseline: "execute/cqrs_es_mem_store/1000",
            min: 20.0,
        },
        cost: COST_REPLAY,
    },
    Target {
        name: "circuit breaker overhead ≤ 60 ns",
        check: Check::OverheadAtMost {
            ours: "resilience/circuit_breaker_closed",
            base: "resilience/bare_handler",
            max_ns: 60.0,
        },
        cost: COST_BREAKER,
    },
    Target {
        name: "registry lookup ≤ 50 ns",
        check: Check::TimeAtMost {
            ours: "registry/lookup_by_name",
            max_ns: 50.0,
        },
        cost: COST_REGISTRY,
    },
    Target {
        name: "PostgreSQL single appends ≥ 1.0x postgres-es",
        check: Check::SpeedupAtLeast {
            ours: "postgres_append/single_flext",
            baseline: "postgres_append/single_postgres_es",
            min: 1.0,
        },
        cost: COST_PG_SINGLE,
    },
    Target {
        name: "PostgreSQL batched appends ≥ 0.7x raw sqlx",
        check: Check::SpeedupAtLeast {
            ours: "postgres_append/batch_100_flext",
            baseline: "postgres_append/batch_100_raw_sqlx",
            min: 0.7,
        },
        cost: COST_PG_BATCH,
    },
    Target {
        name: "SQLite ≥ 20k single appends/s",
        check: Check::ThroughputAtLeast {
            ours: "sqlite_append/single_flext",
            elements: 1.0,
            min_per_second: 20_000.0,
        },
        cost: COST_SQLITE_SINGLE,
    },
    Target {
        name: "SQLite ≥ 150k events/s batched",
        check: Check::ThroughputAtLeast {
            ours: "sqlite_append/batch_100_flext",
            elements: 100.0,
            min_per_second: 150_000.0,
        },
        cost: COST_SQLITE_BATCH,
    },
];

/// A table of how one cost grows with one quantity: each row is a value of the quantity,
/// each column a benchmark measured at that value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// The table's heading, saying what shape is expected.
    pub title: &'static str,
    /// The quantity's name (the first column's heading).
    pub quantity: &'static str,
    /// The other columns' headings.
    pub columns: &'static [&'static str],
    /// Each row: the quantity's value, then one benchmark id per column (`""` where
    /// there is no such benchmark).
    pub rows: &'static [(&'static str, &'static [&'static str])],
    /// Whether each cell also shows its ratio to the first row of its column.
    pub relative: bool,
}

/// The cost-growth tables of the report.
pub const GROWTH: [Growth; 5] = [
    Growth {
        title: "Dispatch against registered command types (expected: flat)",
        quantity: "command types",
        columns: &["`send`"],
        rows: &[
            ("1", &["dispatch_growth/command_bus/1"]),
            ("100", &["dispatch_growth/command_bus/100"]),
            ("10 000", &["dispatch_growth/command_bus/10000"]),
        ],
        relative: true,
    },
    Growth {
        title: "`publish` against subscribers (expected: linear)",
        quantity: "subscribers",
        columns: &["EventBus `publish`", "tokio broadcast"],
        rows: &[
            ("1", &["publish/event_bus/1", "publish/tokio_broadcast/1"]),
            (
                "10",
                &["publish/event_bus/10", "publish/tokio_broadcast/10"],
            ),
            (
                "100",
                &["publish/event_bus/100", "publish/tokio_broadcast/100"],
            ),
        ],
        relative: true,
    },
    Growth {
        title: "Aggregate load against events since the last snapshot (expected: linear)",
        quantity: "events since the snapshot",
        columns: &["`Repository::load`"],
        rows: &[
            ("0", &["aggregate_load/since_snapshot/0"]),
            ("10", &["aggregate_load/since_snapshot/10"]),
            ("100", &["aggregate_load/since_snapshot/100"]),
            ("1000", &["aggregate_load/since_snapshot/1000"]),
        ],
        relative: true,
    },
    Growth {
        title: "Aggregate load against events in all (expected: flat with snapshots, \
                linear without)",
        quantity: "events in all",
        columns: &["snapshot 10 events back", "no snapshots"],
        rows: &[
            (
                "100",
                &[
                    "aggregate_load/with_snapshot/100",
                    "aggregate_load/without_snapshot/100",
                ],
            ),
            (
                "1000",
                &[
                    "aggregate_load/with_snapshot/1000",
                    "aggregate_load/without_snapshot/1000",
                ],
            ),
            (
                "10 000",
                &[
                    "aggregate_load/with_snapshot/10000",
                    "aggregate_load/without_snapshot/10000",
                ],
            ),
        ],
        relative: true,
    },
    Growth {
        title: "Store appends side by side (median time of one append)",
        quantity: "append",
        columns: &["flext", "raw sqlx", "postgres-es"],
        rows: &[
            (
                "SQLite, 1 event",
                &[
                    "sqlite_append/single_flext",
                    "sqlite_append/single_raw_sqlx",
                    "",
                ],
            ),
            (
                "SQLite, 1 event, 8 writers",
                &["sqlite_append/single_8_writers_flext", "", ""],
            ),
            (
                "SQLite, 100 events",
                &[
                    "sqlite_append/batch_100_flext",
                    "sqlite_append/batch_100_raw_sqlx",
                    "",
                ],
            ),
            (
                "PostgreSQL, 1 event",
                &[
                    "postgres_append/single_flext",
                    "postgres_append/single_raw_sqlx",
                    "postgres_append/single_postgres_es",
                ],
            ),
            (
                "PostgreSQL, 1 event, 8 writers",
                &[
                    "postgres_append/single_8_writers_flext",
                    "",
                    "postgres_append/single_8_writers_postgres_es",
                ],
            ),
            (
                "PostgreSQL, 100 events",
                &[
                    "postgres_append/batch_100_flext",
                    "postgres_append/batch_100_raw_sqlx",
                    "postgres_append/batch_100_postgres_es",
                ],
            ),
        ],
        relative: false,
    },
];

/// `growth` as a Markdown table of medians, each with its ratio to the first row's median
/// of its column when the table is relative; a missing result is shown as "not measured",
/// a cell without a benchmark as "—".
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
            if row == 0 {
                first[column] = median;
            }
            let cell = match (median, first[column]) {
                (None, _) => "not measured".to_owned(),
                (Some(m), Some(f)) if growth.relative && row > 0 && f > 0.0 => {
                    format!("{} ({:.2}x)", time(m), m / f)
                }
                (Some(m), _) => time(m),
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

/// The median time of one benchmark, in nanoseconds, from criterion's `estimates.json`
/// under `criterion_dir`; `Ok(None)` when that benchmark has not been run.
pub fn median_ns(criterion_dir: &Path, id: &str) -> Result<Option<f64>, Error> {
    let path = criterion_dir.join(id).join("new").join("estimates.json");
    let Some(text) = read_if_present(&path)? else {
        return Ok(None);
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

/// The text of the file at `path`; `Ok(None)` when there is none (that benchmark has not
/// been run).
fn read_if_present(path: &Path) -> Result<Option<String>, Error> {
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
/// (from [`render_growth`]) and the `memory` section (from [`render_memory`]). `fresh`
/// says whether the benchmarks were just run (each ratio then compares figures of one run)
/// or the results are older saved ones.
pub fn render(
    outcomes: &[Outcome],
    growth: &[String],
    memory: Option<&str>,
    machine: &Machine,
    fresh: bool,
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
    out.push_str("\n## Memory\n\n");
    out.push_str(
        memory.unwrap_or("Not measured: run `cargo bench -p flext-benches --bench memory`.\n"),
    );
    let _ = writeln!(
        out,
        "\nTo reproduce: `FLEXT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
         cargo run -p xtask -- bench-report` (runs `cargo bench --workspace`, then writes \
         this file); `-- bench-report --no-run` rewrites it from the saved results."
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
