//! What a soak run reports, as text for the terminal and as the Markdown section of
//! `docs/PERFORMANCE.md`, and how that section is kept between the markers that
//! `bench-report` preserves.

use std::fmt::Write as _;
use std::time::Duration;

use super::stats::{Histogram, OpKind};
use crate::perf::Machine;

/// The line that opens the soak section of `docs/PERFORMANCE.md`.
pub const SOAK_BEGIN: &str =
    "<!-- soak:begin (written by `cargo run -p xtask -- soak --write`; bench-report keeps it) -->";
/// The line that closes it.
pub const SOAK_END: &str = "<!-- soak:end -->";

/// One operation kind's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct KindFigures {
    /// The kind.
    pub kind: OpKind,
    /// Its latencies.
    pub latencies: Histogram,
}

/// What a soak run did and found.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakReport {
    /// `memory`, `sqlite` or `postgres`.
    pub store: String,
    /// Where the store was.
    pub store_description: String,
    /// Concurrent workers.
    pub workers: usize,
    /// Accounts the workers share.
    pub accounts: usize,
    /// How long the run was asked to last.
    pub duration: Duration,
    /// How long the workers ran: the run less the checks' pauses.
    pub elapsed: Duration,
    /// How long the checks paused the workers, in all.
    pub paused: Duration,
    /// Figures per operation kind, in [`OpKind::ALL`] order.
    pub kinds: Vec<KindFigures>,
    /// Commands sent (each try).
    pub commands_sent: u64,
    /// Concurrency conflicts the driver retried.
    pub conflicts: u64,
    /// Withdrawals refused for insufficient funds.
    pub refused: u64,
    /// Transfers completed.
    pub transfers_completed: u64,
    /// Transfers compensated.
    pub transfers_compensated: u64,
    /// Saga resumes after a failed refund.
    pub resumes: u64,
    /// Events in the store at the end.
    pub events: u64,
    /// Relayed deliveries to the auditor.
    pub relayed: u64,
    /// Invariant checks run (the last one after the load stopped).
    pub checks: u64,
    /// Resident memory after warm-up, at the end and at most, in bytes.
    pub rss: Option<(u64, u64, u64)>,
    /// The machine's one-minute load average when the run started and when it ended,
    /// from `/proc/loadavg`.
    pub load_average: Option<(f64, f64)>,
    /// Why resident memory was not judged, if it was not.
    pub rss_not_judged: Option<String>,
    /// Every invariant violation found.
    pub violations: Vec<String>,
    /// What the run could not tidy up (a schema left behind, say): no violation.
    pub notes: Vec<String>,
}

/// The invariants every check verifies, as the report lists them.
pub const INVARIANTS: [&str; 5] = [
    "every acknowledged command's events are in the store exactly once, where its append said; each stream's versions go 1, 2, 3… with no gap or repeat; no other account event is stored",
    "the read model equals a replay of the store once the projection has caught up (and a full replay from the first event at the end); money is conserved (balances = deposits − withdrawals)",
    "the relay's subscriber got every account event exactly once, by event id",
    "the buses' metric totals equal the operations the driver counted",
    "resident memory after warm-up stays within 10% + 32 MiB of its first reading (durable stores)",
];

impl SoakReport {
    /// Whether no invariant was violated.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The report as text for the terminal.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "soak on {} ({}), {} workers, {} accounts, {:.1} s of load; the checks paused \
             it {:.1} s more\n\n",
            self.store,
            self.store_description,
            self.workers,
            self.accounts,
            self.elapsed.as_secs_f64(),
            self.paused.as_secs_f64()
        );
        out.push_str(&self.table());
        out.push('\n');
        out.push_str(&self.totals());
        out.push('\n');
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        if self.violations.is_empty() {
            let _ = writeln!(out, "invariants: all held over {} checks ✔", self.checks);
        } else {
            let _ = writeln!(
                out,
                "invariants: {} VIOLATIONS over {} checks:",
                self.violations.len(),
                self.checks
            );
            for violation in self.violations.iter().take(50) {
                let _ = writeln!(out, "  - {violation}");
            }
            if self.violations.len() > 50 {
                let _ = writeln!(out, "  … and {} more", self.violations.len() - 50);
            }
        }
        out
    }

    /// The section of `docs/PERFORMANCE.md`, between [`SOAK_BEGIN`] and [`SOAK_END`].
    pub fn render_markdown(&self, machine: &Machine, date: &str) -> String {
        let mut out = format!("{SOAK_BEGIN}\n## Soak\n\n");
        let seconds = self.duration.as_secs();
        let length = if seconds.is_multiple_of(60) {
            format!("--minutes {}", seconds / 60)
        } else {
            format!("--seconds {seconds}")
        };
        let _ = writeln!(
            out,
            "`cargo run --release -p xtask -- soak {length} --store {} --workers {} --write`, \
             run on {date}: {} logical cores, {}; {}; commit {}. The machine was shared with \
             other builds during the run{}, so the figures are a floor, not a capacity. \
             Throughput is over the {:.0} s the workers ran; the checks paused them {:.0} s \
             more, mostly waiting for the projection and the relay (each saves a checkpoint \
             per event) to catch up with the log.\n",
            self.store,
            self.workers,
            machine.cores,
            machine.cpu,
            machine.rustc,
            machine.commit,
            self.load_average
                .map_or_else(String::new, |(start, end)| format!(
                    " (load average {start:.1} at the start, {end:.1} at the end)"
                )),
            self.elapsed.as_secs_f64(),
            self.paused.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "{} workers share {} accounts, so commands on one account conflict; each worker \
             runs 35% deposits and 20% withdrawals (commands through the `CommandBus` to the \
             `Repository`, a conflict sent again), 30% balance queries (`QueryBus`, answered \
             by the read model a `ProjectionRunner` keeps), 10% heartbeats published on the \
             `EventBus`, and 5% transfers (a `Saga`: debit, credit; a fifth of credits are \
             refused and the debit refunded, and half of those refunds fail once and are \
             resumed). An `EventRelay` delivers every account event to a subscriber of the \
             bus. Latency is the operation as the worker sees it, conflict retries \
             included.\n",
            self.workers, self.accounts
        );
        out.push_str(&self.table());
        out.push('\n');
        out.push_str(&self.totals());
        out.push_str(
            "\nInvariants, checked every few seconds with the workers paused, and at the end:\n\n",
        );
        for invariant in INVARIANTS {
            let _ = writeln!(out, "- {invariant}");
        }
        let verdict = if self.violations.is_empty() {
            format!("all held over {} checks", self.checks)
        } else {
            format!(
                "**{} violations** over {} checks (see the run's output)",
                self.violations.len(),
                self.checks
            )
        };
        let _ = writeln!(out, "\nVerdict: {verdict}.");
        out.push_str(SOAK_END);
        out.push('\n');
        out
    }

    fn table(&self) -> String {
        let seconds = self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let mut out = String::from(
            "| operation | count | throughput | p50 | p99 | max |\n|---|---|---|---|---|---|\n",
        );
        let mut total = 0;
        for figures in &self.kinds {
            let latencies = &figures.latencies;
            total += latencies.count();
            let _ = writeln!(
                out,
                "| {} | {} | {:.0}/s | {} | {} | {} |",
                figures.kind.name(),
                latencies.count(),
                latencies.count() as f64 / seconds,
                time(latencies.percentile(0.50)),
                time(latencies.percentile(0.99)),
                time(latencies.max()),
            );
        }
        let _ = writeln!(
            out,
            "| all | {total} | {:.0}/s | | | |",
            total as f64 / seconds
        );
        out
    }

    fn totals(&self) -> String {
        let mut out = format!(
            "Commands sent {} (conflicts retried {}, withdrawals refused {}); transfers \
             completed {}, compensated {}, resumed {}; events stored {}; relayed deliveries \
             {}.\n\n",
            self.commands_sent,
            self.conflicts,
            self.refused,
            self.transfers_completed,
            self.transfers_compensated,
            self.resumes,
            self.events,
            self.relayed
        );
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        match (self.rss, &self.rss_not_judged) {
            (Some((start, end, max)), None) => {
                let _ = writeln!(
                    out,
                    "Resident memory: {:.1} MiB after warm-up, {:.1} MiB at the end ({:+.1} MiB), \
                     {:.1} MiB at most.",
                    mib(start),
                    mib(end),
                    mib(end) - mib(start),
                    mib(max)
                );
            }
            (Some((start, end, max)), Some(why)) => {
                let _ = writeln!(
                    out,
                    "Resident memory: {:.1} MiB after warm-up, {:.1} MiB at the end, {:.1} MiB \
                     at most; not judged: {why}.",
                    mib(start),
                    mib(end),
                    mib(max)
                );
            }
            (None, _) => out.push_str("Resident memory: not readable here.\n"),
        }
        out
    }
}

fn time(latency: Duration) -> String {
    let ns = latency.as_nanos() as f64;
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else {
        format!("{:.1} µs", ns / 1_000.0)
    }
}

/// The soak section of `document` (markers included), if it has one.
pub fn soak_section(document: &str) -> Option<&str> {
    let start = document.find(SOAK_BEGIN)?;
    let end = document[start..].find(SOAK_END)? + start + SOAK_END.len();
    let end = if document[end..].starts_with('\n') {
        end + 1
    } else {
        end
    };
    Some(&document[start..end])
}

/// `document` with its soak section replaced by `section` (or `section` appended, after a
/// blank line, when it has none); `None` as `section` removes nothing and adds nothing.
pub fn with_soak_section(document: &str, section: Option<&str>) -> String {
    let Some(section) = section else {
        return document.to_owned();
    };
    match soak_section(document) {
        Some(old) => document.replacen(old, section, 1),
        None => {
            let mut out = document.trim_end().to_owned();
            out.push_str("\n\n");
            out.push_str(section);
            out
        }
    }
}
