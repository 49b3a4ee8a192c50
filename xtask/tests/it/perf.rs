//! The performance report: targets judged from criterion results on disk.

use std::path::{Path, PathBuf};

use xtask::perf::{
    Check, GROWTH, LATENCY_FILE, Machine, TARGETS, Target, evaluate, locked_versions, median_ns,
    render, render_growth, render_latency, render_memory,
};

/// A scratch criterion directory, removed when dropped.
struct Results(PathBuf);

impl Results {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xtask-perf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Saves a result as criterion does, with median `ns`.
    fn save(&self, id: &str, ns: f64) -> &Self {
        self.save_text(
            id,
            &format!(
                r#"{{"mean":{{"point_estimate":{}}},"median":{{"point_estimate":{ns}}}}}"#,
                ns * 2.0
            ),
        )
    }

    fn save_text(&self, id: &str, text: &str) -> &Self {
        let dir = self.0.join(id).join("new");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("estimates.json"), text).unwrap();
        self
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Results {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The report of every target judged from `results`, on a test machine, without growth
/// tables or memory figures.
fn report_of(results: &Results, fresh: bool) -> String {
    let outcomes: Vec<_> = TARGETS
        .iter()
        .map(|t| evaluate(results.path(), *t).unwrap())
        .collect();
    let machine = Machine {
        cores: 2,
        cpu: "Test CPU".to_owned(),
        rustc: "rustc 1.95.0".to_owned(),
        commit: "abc1234".to_owned(),
        versions: vec![("tokio".to_owned(), "1.47.1".to_owned())],
    };
    let run = fresh.then_some(std::time::Duration::from_secs(25 * 60));
    render(&outcomes, &[], None, None, &machine, run)
}

fn target(name: &str) -> Target {
    *TARGETS
        .iter()
        .find(|t| t.name.contains(name))
        .unwrap_or_else(|| panic!("no target named {name}"))
}

#[test]
fn the_median_is_read_and_a_missing_result_is_none() {
    let results = Results::new("median");
    results.save("send/command_bus", 91.6);
    assert_eq!(
        median_ns(results.path(), "send/command_bus").unwrap(),
        Some(91.6)
    );
    assert_eq!(median_ns(results.path(), "send/direct_call").unwrap(), None);
}

#[test]
fn a_corrupt_result_is_an_error_naming_the_file() {
    let results = Results::new("corrupt");
    results.save_text("send/command_bus", "{not json");
    results.save_text("send/direct_call", r#"{"mean":{"point_estimate":1.0}}"#);
    let error = median_ns(results.path(), "send/command_bus").unwrap_err();
    assert!(error.to_string().contains("command_bus"), "{error}");
    let error = median_ns(results.path(), "send/direct_call").unwrap_err();
    assert!(
        error.to_string().contains("no median.point_estimate"),
        "{error}"
    );
}

#[test]
fn ratios_are_judged_in_the_direction_of_each_goal() {
    let results = Results::new("ratios");
    results
        .save("send/command_bus", 91.6)
        .save("send/direct_call", 15.3)
        .save("execute/flext_snapshots_every_100/1000", 3_500.0)
        .save("execute/cqrs_es_mem_store/1000", 112_300.0)
        .save("postgres_append/single_flext", 612_000.0)
        .save("postgres_append/single_postgres_es", 512_000.0);

    let send = evaluate(results.path(), target("≤ 1.5x a direct call")).unwrap();
    assert_eq!(send.met, Some(false));
    assert_eq!(send.measured, "5.99x (goal ≤ 1.5x)");
    assert_eq!(send.ours, "91.6 ns");
    assert_eq!(send.baseline.as_deref(), Some("15.3 ns"));

    let under_100 = evaluate(results.path(), target("< 100 ns")).unwrap();
    assert_eq!(under_100.met, Some(true));

    let snapshots = evaluate(results.path(), target("20x cqrs-es, snapshots")).unwrap();
    assert_eq!(snapshots.met, Some(true));
    assert_eq!(snapshots.measured, "32.09x (goal ≥ 20x)");

    let postgres = evaluate(results.path(), target("single appends ≥ 1.0x")).unwrap();
    assert_eq!(postgres.met, Some(false));
    assert_eq!(postgres.measured, "0.84x (goal ≥ 1x)");
}

#[test]
fn overheads_and_throughputs_are_computed_from_the_medians() {
    let results = Results::new("overheads");
    results
        .save("resilience/circuit_breaker_closed", 80.0)
        .save("resilience/bare_handler", 15.4)
        .save("sqlite_append/single_flext", 40_000.0)
        .save("sqlite_append/single_raw_rusqlite", 20_000.0)
        .save("sqlite_append/batch_100_flext", 500_000.0)
        .save("sqlite_append/batch_100_raw_rusqlite", 250_000.0)
        .save("sqlite_append/single_8_writers_flext", 100_000.0);

    let breaker = evaluate(results.path(), target("circuit breaker")).unwrap();
    assert_eq!(breaker.met, Some(false));
    assert_eq!(breaker.measured, "+64.6 ns (goal ≤ 60.0 ns)");

    // Our rate is judged; the raw driver's is shown beside it.
    let single = evaluate(results.path(), target("30k single appends")).unwrap();
    assert_eq!(single.met, Some(false));
    assert_eq!(single.ours, "25.00k/s");
    assert_eq!(single.baseline.as_deref(), Some("50.00k/s"));
    assert_eq!(
        single.measured,
        "25.00k/s (goal ≥ 30.00k/s; 0.50x the comparison)"
    );

    let batched = evaluate(results.path(), target("batches of 100")).unwrap();
    assert_eq!(batched.met, Some(false));
    assert_eq!(batched.ours, "200.00k/s");
    assert_eq!(batched.baseline.as_deref(), Some("400.00k/s"));

    // Eight appends an iteration; a missing comparison leaves the target unmeasured.
    let writers = evaluate(results.path(), target("SQLite, 8 writers")).unwrap();
    assert_eq!(writers.met, None);
    assert!(
        writers.measured.contains("single_8_writers_raw_rusqlite"),
        "{}",
        writers.measured
    );
    results.save("sqlite_append/single_8_writers_raw_rusqlite", 50_000.0);
    let writers = evaluate(results.path(), target("SQLite, 8 writers")).unwrap();
    assert_eq!(
        (writers.met, writers.ours.as_str()),
        (Some(true), "80.00k/s")
    );

    let projection = evaluate(results.path(), target("transactional projection")).unwrap();
    assert_eq!(projection.met, None);
    results.save(
        "postgres_projection/catch_up_one_statement_per_batch",
        100_000_000.0,
    );
    let projection = evaluate(results.path(), target("transactional projection")).unwrap();
    assert_eq!(
        (projection.met, projection.baseline.as_deref()),
        (Some(true), None)
    );
    assert_eq!(projection.measured, "50.00k/s (goal ≥ 20.00k/s)");
}

#[test]
fn the_dispatch_targets_judge_time_overhead_and_ratio() {
    let results = Results::new("dispatch");
    results
        .save("send/command_bus", 48.0)
        .save("send/command_bus_uninstrumented", 36.0)
        .save("send/direct_call", 17.0)
        .save("middleware/flext_layered", 61.0);
    let time = evaluate(results.path(), target("instrumented `send` ≤ 50 ns")).unwrap();
    assert_eq!((time.met, time.ours.as_str()), (Some(true), "48.0 ns"));
    let overhead = evaluate(results.path(), target("add ≤ 10 ns")).unwrap();
    assert_eq!(overhead.met, Some(false));
    assert_eq!(overhead.measured, "+12.0 ns (goal ≤ 10.0 ns)");
    let ratio = evaluate(results.path(), target("uninstrumented `send` ≤ 2x")).unwrap();
    assert_eq!(ratio.met, Some(false));
    assert_eq!(ratio.measured, "2.12x (goal ≤ 2x)");
    let hooks = evaluate(results.path(), target("hook middleware")).unwrap();
    assert_eq!(hooks.met, Some(false));
}

#[test]
fn a_target_without_results_is_not_measured_never_met() {
    let results = Results::new("missing");
    results.save("send/command_bus", 50.0);
    let outcome = evaluate(results.path(), target("≤ 1.5x a direct call")).unwrap();
    assert_eq!(outcome.met, None);
    assert!(
        outcome.measured.contains("send/direct_call"),
        "{}",
        outcome.measured
    );
}

#[test]
fn the_report_lists_every_target_with_its_result_and_the_machine() {
    let results = Results::new("report");
    results
        .save("registry/lookup_by_name", 31.0)
        .save("send/command_bus", 150.0);
    let report = report_of(&results, false);
    assert!(
        report.contains("2 logical cores, Test CPU; rustc 1.95.0; commit abc1234."),
        "{report}"
    );
    assert!(report.contains("Versions: tokio 1.47.1."), "{report}");
    assert!(
        report
            .contains("| registry lookup ≤ 50 ns | 31.0 ns | — | 31.0 ns (goal ≤ 50.0 ns) | met |"),
        "{report}"
    );
    assert!(
        report.contains(
            "| bus `send` < 100 ns | 150.0 ns | — | 150.0 ns (goal ≤ 100.0 ns) | **missed** |"
        ),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "1 met, 2 missed, {} not measured.",
            TARGETS.len() - 3
        )),
        "{report}"
    );
    for target in TARGETS {
        assert!(report.contains(target.name), "{} is listed", target.name);
    }
    // The missed target says where its time goes; met and unmeasured ones do not.
    let send = target("bus `send` < 100 ns");
    assert!(
        report.contains(&format!("- {}: {}", send.name, send.cost)),
        "{report}"
    );
    let registry = target("registry lookup");
    assert!(!report.contains(registry.cost), "{report}");
    assert!(
        report.contains("Not measured: run `cargo bench -p flext-benches --bench memory`"),
        "{report}"
    );
}

#[test]
fn a_cost_shared_by_two_missed_targets_is_written_once() {
    let results = Results::new("shared-cost");
    results
        .save("send/command_bus", 150.0)
        .save("send/direct_call", 15.0);
    let report = report_of(&results, true);
    let cost = target("≤ 1.5x a direct call").cost;
    assert_eq!(report.matches(cost).count(), 1, "{report}");
    assert!(
        report.contains("- bus `send` < 100 ns: as above."),
        "{report}"
    );
    assert!(report.contains(
        "measured by the run that wrote this file; running every benchmark took 25.0 minutes"
    ));
}

#[test]
fn every_target_explains_its_cost() {
    for target in TARGETS {
        assert!(
            target.cost.len() > 40 && target.cost.ends_with('.'),
            "{}: {:?}",
            target.name,
            target.cost
        );
    }
}

#[test]
fn growth_tables_show_medians_and_ratios_to_the_first_row() {
    let results = Results::new("growth");
    results
        .save("publish/event_bus/1", 100.0)
        .save("publish/event_bus/10", 700.0)
        .save("publish/event_bus/100", 6_500.0)
        .save("publish/tokio_broadcast/1", 40.0)
        .save("publish/tokio_broadcast/10", 230.0);
    let publish = GROWTH.iter().find(|g| g.quantity == "subscribers").unwrap();
    let table = render_growth(results.path(), publish).unwrap();
    assert!(
        table.starts_with("### `publish` against subscribers"),
        "{table}"
    );
    assert!(
        table.contains(
            "| subscribers | EventBus `publish`, async subscribers | EventBus `publish`, \
             synchronous subscribers | tokio broadcast |\n|---|---|---|---|\n"
        ),
        "{table}"
    );
    assert!(
        table.contains("| 1 | 100.0 ns | not measured | 40.0 ns |"),
        "{table}"
    );
    assert!(
        table.contains("| 10 | 700.0 ns (7.00x) | not measured | 230.0 ns (5.75x) |"),
        "{table}"
    );
    assert!(
        table.contains("| 100 | 6.50 µs (65.00x) | not measured | not measured |"),
        "{table}"
    );

    results
        .save("sqlite_append/single_flext", 150_000.0)
        .save("sqlite_append/single_raw_rusqlite", 140_000.0);
    let stores = GROWTH.iter().find(|g| !g.relative && !g.rate).unwrap();
    let table = render_growth(results.path(), stores).unwrap();
    assert!(
        table.contains("| SQLite, 1 event | 150.00 µs | 140.00 µs | — |"),
        "{table}"
    );
}

#[test]
fn rate_tables_show_the_elements_each_benchmark_declared_per_second() {
    let results = Results::new("rates");
    // 4 writers: each iteration is 4 appends, in 100 µs.
    results
        .save("sqlite_writers/4_flext", 100_000.0)
        .save("sqlite_writers/1_flext", 50_000.0)
        .save("postgres_writers/1_flext", 1_000_000.0);
    let throughput = |id: &str, elements: u64| {
        let dir = results.path().join(id).join("new");
        std::fs::write(
            dir.join("benchmark.json"),
            format!(r#"{{"group_id":"g","throughput":{{"Elements":{elements}}}}}"#),
        )
        .unwrap();
    };
    throughput("sqlite_writers/4_flext", 4);
    throughput("sqlite_writers/1_flext", 1);
    let writers = GROWTH
        .iter()
        .find(|g| g.rate && g.quantity == "writers")
        .unwrap();
    let table = render_growth(results.path(), writers).unwrap();
    assert!(table.contains("| 1 | 20.00k/s | not measured |"), "{table}");
    assert!(table.contains("| 4 | 40.00k/s |"), "{table}");
    // A result saved without a throughput has no rate.
    assert!(
        table.contains("| 1 | 20.00k/s | not measured | not measured |"),
        "{table}"
    );
    let projections = GROWTH
        .iter()
        .find(|g| g.rate && g.title.starts_with("Projection catch-up"))
        .unwrap();
    assert_eq!(projections.columns, ["events/s"]);
}

#[test]
fn growth_tables_name_benchmarks_the_workspace_defines() {
    let root = xtask::workspace_root();
    let mut sources = String::new();
    for dir in ["benches/benches", "crates"] {
        collect_bench_sources(&root.join(dir), &mut sources);
    }
    // The stores' benchmarks are written once, in the test kit, for every store.
    let shared = root.join("crates/flext-testing/src/bench.rs");
    sources.push_str(&std::fs::read_to_string(shared).expect("the shared store benchmarks"));
    for growth in GROWTH {
        for (_, ids) in growth.rows {
            assert_eq!(ids.len(), growth.columns.len(), "{}", growth.title);
            for id in ids.iter().filter(|id| !id.is_empty()) {
                let group = id.split('/').next().unwrap();
                assert!(
                    sources.contains(&format!("\"{group}\"")),
                    "{}: no benchmark group {group:?}",
                    growth.title
                );
            }
        }
    }
}

#[test]
fn the_memory_section_reads_the_memory_benchmark_json() {
    let results = Results::new("memory");
    let path = results.path().join("flext-memory.json");
    assert_eq!(render_memory(&path).unwrap(), None);

    let per_op = |allocations: f64, bytes: f64| serde_json::json!({"operations": 100_000, "allocations_per_op": allocations, "bytes_per_op": bytes});
    let json = serde_json::json!({
        "direct_call": per_op(1.0, 40.0),
        "send": per_op(1.0, 40.0),
        "publish_10": per_op(12.0, 428.0),
        "tokio_broadcast_10": per_op(1.0, 24.0),
        "in_memory_store": {
            "events": 1_000_000, "streams": 1000, "payload_bytes": 17_000_000,
            "heap_bytes": 329_000_000u64, "rss_bytes": 364_740_608u64
        }
    });
    std::fs::write(&path, json.to_string()).unwrap();
    let section = render_memory(&path).unwrap().unwrap();
    assert!(
        section.contains("| CommandBus `send` | 1.0 | 40 B |"),
        "{section}"
    );
    assert!(
        section.contains("| EventBus `publish` to 10 subscribers | 12.0 | 428 B |"),
        "{section}"
    );
    assert!(
        section.contains("holding 1000000 events (17-byte JSON payloads on average"),
        "{section}"
    );
    assert!(
        section.contains("313.8 MiB of heap, 329 bytes per event"),
        "{section}"
    );
    assert!(
        section.contains("resident memory grew by 347.8 MiB"),
        "{section}"
    );

    std::fs::write(&path, r#"{"send": {}}"#).unwrap();
    let error = render_memory(&path).unwrap_err();
    assert!(
        error.to_string().contains("direct_call.allocations_per_op"),
        "{error}"
    );
}

#[test]
fn every_target_names_benchmarks_the_workspace_defines() {
    // Each id's function name must appear in some bench source, so a renamed benchmark
    // cannot leave a target silently unmeasured.
    let root = xtask::workspace_root();
    let mut sources = String::new();
    for dir in ["benches/benches", "crates"] {
        collect_bench_sources(&root.join(dir), &mut sources);
    }
    // The stores' benchmarks are written once, in the test kit, for every store.
    let shared = root.join("crates/flext-testing/src/bench.rs");
    sources.push_str(&std::fs::read_to_string(shared).expect("the shared store benchmarks"));
    for target in TARGETS {
        let ids: Vec<&str> = match target.check {
            Check::SlowdownAtMost { ours, baseline, .. }
            | Check::SpeedupAtLeast { ours, baseline, .. } => vec![ours, baseline],
            Check::OverheadAtMost { ours, base, .. } => vec![ours, base],
            Check::TimeAtMost { ours, .. } => vec![ours],
            Check::ThroughputAtLeast { ours, beside, .. } => {
                std::iter::once(ours).chain(beside).collect()
            }
        };
        for id in ids {
            let mut parts = id.split('/');
            let group = parts.next().unwrap();
            let function = parts.next().unwrap();
            assert!(
                sources.contains(&format!("\"{group}\"")),
                "{}: no benchmark group {group:?}",
                target.name
            );
            // criterion stores "batch_100/raw_sqlx" as "batch_100_raw_sqlx": any `_` may
            // have been a `/`.
            let spelled: Vec<String> = std::iter::once(function.to_owned())
                .chain(
                    function
                        .match_indices('_')
                        .map(|(at, _)| format!("{}/{}", &function[..at], &function[at + 1..])),
                )
                .collect();
            // A benchmark per count ("8_postgres_es" from `format!("{writers}/{label}")`)
            // is found by its label: a literal, or the end of a `format!` string.
            let per_count = function
                .split_once('_')
                .filter(|(count, _)| count.chars().all(|c| c.is_ascii_digit()))
                .is_some_and(|(_, label)| {
                    sources.contains(&format!("\"{label}\""))
                        || sources.contains(&format!("}}/{label}\""))
                });
            assert!(
                per_count
                    || spelled
                        .iter()
                        .any(|f| sources.contains(&format!("\"{f}\""))),
                "{}: no benchmark function {function:?}",
                target.name
            );
        }
    }
}

fn collect_bench_sources(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_bench_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.components().any(|c| c.as_os_str() == "benches")
        {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

#[test]
fn the_nats_targets_compare_with_raw_async_nats_in_the_direction_of_each_goal() {
    let results = Results::new("nats");
    results
        .save("nats_relay/publish_1000_flext", 15_000_000.0)
        .save("nats_relay/publish_1000_raw_async_publish", 10_000_000.0)
        .save("nats_remote/round_trip_flext", 130_000.0)
        .save("nats_remote/round_trip_raw_request", 100_000.0);
    let relay = evaluate(results.path(), target("relay ≥ 0.7x")).unwrap();
    assert_eq!(relay.met, Some(false));
    assert_eq!(relay.measured, "0.67x (goal ≥ 0.7x)");
    let remote = evaluate(results.path(), target("remote command round trip")).unwrap();
    assert_eq!(remote.met, Some(true));
    assert_eq!(remote.measured, "1.30x (goal ≤ 1.5x)");
    assert_eq!(remote.ours, "130.00 µs");
}

#[test]
fn the_latency_section_reads_the_nats_benchmark_percentiles() {
    let results = Results::new("latency");
    let path = results.path().join(LATENCY_FILE);
    assert_eq!(render_latency(&path).unwrap(), None);
    let machine = Machine {
        cores: 2,
        cpu: "Test CPU".to_owned(),
        rustc: "rustc 1.95.0".to_owned(),
        commit: "abc1234".to_owned(),
        versions: vec![],
    };
    let report = render(&[], &[], None, None, &machine, None);
    assert!(
        report.contains("## Remote round trip latency\n\nNot measured: run `cargo bench -p flext-bus-nats --bench nats`"),
        "{report}"
    );

    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let json = serde_json::json!({
        "round_trips": 2000,
        "flext": {"p50_ns": 106_300.0, "p99_ns": 1_168_900.0},
        "raw_request": {"p50_ns": 85_000.0, "p99_ns": 1_000_000.0},
    });
    std::fs::write(&path, json.to_string()).unwrap();
    let section = render_latency(&path).unwrap().unwrap();
    assert!(
        section.starts_with("2000 sequential round trips"),
        "{section}"
    );
    assert!(
        section.contains("| `CommandBus::register_remote` → `NatsWorker` | 106.30 µs | 1.17 ms |"),
        "{section}"
    );
    assert!(
        section.contains("| raw `client.request` → raw responder | 85.00 µs | 1.00 ms |"),
        "{section}"
    );
    assert!(section.contains("| ratio | 1.25x | 1.17x |"), "{section}");
    let report = render(&[], &[], Some(&section), None, &machine, None);
    assert!(
        report.contains(&format!("## Remote round trip latency\n\n{section}")),
        "{report}"
    );

    std::fs::write(&path, r#"{"round_trips": 2000, "flext": {}}"#).unwrap();
    let error = render_latency(&path).unwrap_err();
    assert!(error.to_string().contains("flext.p50_ns"), "{error}");
}

#[test]
fn versions_are_read_from_the_lock_file() {
    let lock = "version = 4\n\n[[package]]\nname = \"tokio\"\nversion = \"1.47.1\"\n\
                source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n\
                [[package]]\nname = \"tokio-util\"\nversion = \"0.7.16\"\n\n\
                [[package]]\nname = \"tower\"\nversion = \"0.5.3\"\n";
    assert_eq!(
        locked_versions(lock, &["tower", "tokio", "cqrs-es"]),
        vec![
            ("tower".to_owned(), "0.5.3".to_owned()),
            ("tokio".to_owned(), "1.47.1".to_owned()),
        ]
    );
}
