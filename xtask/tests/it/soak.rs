//! The soak run: a short run on each embedded store holds every invariant, and the checker
//! catches each kind of planted violation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flext_handlers::Types::{AppendResult, EventMetadata, JsonPayload, StoredEvent};
use uuid::Uuid;
use xtask::soak::{
    Ack, Balances, Checker, Histogram, SOAK_BEGIN, SOAK_END, SoakConfig, StoreKind, parse_args,
    rss_allowance, run, soak_section, with_soak_section,
};

/// Runs the soak for two seconds on `store` and fails listing any violation.
async fn short_run(store: StoreKind) {
    let config = SoakConfig {
        duration: Duration::from_secs(2),
        store,
        workers: 4,
    };
    let report = run(&config, |_| {}).await.expect("the soak runs");
    let text = report.render_text();
    assert!(report.passed(), "{text}");
    assert!(
        report.checks >= 2,
        "checked during the run and at the end: {text}"
    );
    for figures in &report.kinds {
        assert!(figures.latencies.count() > 0, "every kind ran: {text}");
    }
    assert!(report.transfers_completed > 0, "{text}");
    assert!(report.relayed > 0 && report.events > 0, "{text}");
    assert!(report.notes.is_empty(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_on_the_in_memory_store_holds_every_invariant() {
    short_run(StoreKind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_on_sqlite_holds_every_invariant_and_removes_its_directory() {
    short_run(StoreKind::Sqlite).await;
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("the temporary directory is readable")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("flext-soak-{}_", std::process::id())))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A stored account event: `Deposited { amount: 1 }` (or `Opened` at version 1).
fn event(stream: &str, version: u64, position: u64) -> StoredEvent {
    let payload = if version == 1 {
        serde_json::json!("Opened")
    } else {
        serde_json::json!({ "Deposited": { "amount": 1 } })
    };
    StoredEvent {
        event_id: Uuid::now_v7(),
        stream_id: stream.into(),
        version,
        position,
        event_type: if version == 1 {
            "AccountOpened"
        } else {
            "MoneyDeposited"
        }
        .into(),
        schema_version: 1,
        payload: JsonPayload::encode(&payload).expect("the payload encodes"),
        timestamp: time::OffsetDateTime::now_utc(),
        metadata: Arc::new(EventMetadata::default()),
    }
}

fn ack(stream: &str, version: u64, position: u64) -> Ack {
    Ack {
        stream: stream.to_owned(),
        append: AppendResult {
            first_version: version,
            last_version: version,
            first_position: position,
            last_position: position,
        },
    }
}

fn delivered_once(events: &[StoredEvent]) -> HashMap<Uuid, u32> {
    events.iter().map(|event| (event.event_id, 1)).collect()
}

/// Three events of two streams, each acknowledged and delivered once.
fn clean() -> (Vec<StoredEvent>, Vec<Ack>) {
    let events = vec![
        event("Account-a", 1, 1),
        event("Account-b", 1, 2),
        event("Account-a", 2, 3),
    ];
    let acks = vec![
        ack("Account-a", 1, 1),
        ack("Account-b", 1, 2),
        ack("Account-a", 2, 3),
    ];
    (events, acks)
}

#[track_caller]
fn assert_one_violation(checker: &Checker, needle: &str) {
    let matching = checker
        .violations()
        .iter()
        .filter(|violation| violation.contains(needle))
        .count();
    assert!(
        matching >= 1,
        "expected a violation naming {needle:?}, got {:?}",
        checker.violations()
    );
}

#[test]
fn checker_accepts_a_clean_window_and_replays_the_balances() {
    let (events, acks) = clean();
    let mut checker = Checker::new();
    checker.observe(&events);
    checker.settle(&acks, &delivered_once(&events));
    assert!(
        checker.violations().is_empty(),
        "{:?}",
        checker.violations()
    );
    assert_eq!(checker.position(), 3);
    assert_eq!(checker.events(), 3);
    assert_eq!(checker.replay().total(), 1);
    assert_eq!(checker.replay().accounts["Account-a"].version, 2);
}

#[test]
fn checker_catches_a_doubled_event() {
    let (mut events, acks) = clean();
    let mut doubled = events[2].clone();
    doubled.position = 4;
    doubled.event_id = Uuid::now_v7();
    events.push(doubled);
    let mut checker = Checker::new();
    checker.observe(&events);
    checker.settle(&acks, &delivered_once(&events));
    assert_one_violation(&checker, "Account-a version 2 at position 4 is doubled");
    assert_one_violation(&checker, "written by no acknowledged command");
}

#[test]
fn checker_catches_an_event_id_stored_twice() {
    let (mut events, _) = clean();
    events[1].event_id = events[0].event_id;
    let mut checker = Checker::new();
    checker.observe(&events);
    assert_one_violation(&checker, "is stored twice");
}

#[test]
fn checker_catches_a_lost_acknowledged_event_and_a_gap() {
    let (events, mut acks) = clean();
    acks.push(ack("Account-b", 2, 4));
    let mut checker = Checker::new();
    checker.observe(&[events[0].clone(), events[2].clone()]);
    checker.settle(&acks, &delivered_once(&events));
    assert_one_violation(
        &checker,
        "Account-b version 1 (position 2) is not in the store",
    );
    assert_one_violation(
        &checker,
        "Account-b version 2 (position 4) is not in the store",
    );

    let mut gap = Checker::new();
    gap.observe(&[events[0].clone(), event("Account-a", 3, 2)]);
    assert_one_violation(&gap, "Account-a version 3 at position 2 is after a gap");
}

#[test]
fn checker_catches_an_append_reported_at_the_wrong_place() {
    let (events, mut acks) = clean();
    acks[2] = ack("Account-a", 2, 2);
    let mut checker = Checker::new();
    checker.observe(&events);
    checker.settle(&acks, &delivered_once(&events));
    assert_one_violation(
        &checker,
        "should be at position 2, which holds Account-b version 1",
    );
}

#[test]
fn checker_catches_a_relay_delivery_doubled_missed_or_from_an_earlier_window() {
    let (events, acks) = clean();
    let mut delivered = delivered_once(&events);
    delivered.insert(events[0].event_id, 2);
    delivered.remove(&events[1].event_id);
    let mut checker = Checker::new();
    checker.observe(&events);
    checker.settle(&acks, &delivered);
    assert_one_violation(&checker, "got Account-a version 1");
    assert_one_violation(&checker, "2 times");
    assert_one_violation(&checker, "never got Account-b version 1");

    // The next window: the first window's event delivered again.
    let next = [event("Account-b", 2, 4)];
    checker.observe(&next);
    let mut again = delivered_once(&next);
    again.insert(events[2].event_id, 1);
    checker.settle(&[ack("Account-b", 2, 4)], &again);
    assert_one_violation(&checker, "delivered again, or never stored");
}

#[test]
fn checker_forgets_finished_saga_streams_but_catches_a_late_record() {
    let mut checker = Checker::new();
    let saga = |version, position| {
        let mut record = event("Saga-transfer-1", version, position);
        record.event_type = "SagaStarted".into();
        record
    };
    checker.observe(&[saga(1, 1), saga(2, 2)]);
    checker.settle(&[], &HashMap::new());
    assert!(
        checker.violations().is_empty(),
        "{:?}",
        checker.violations()
    );
    checker.observe(&[saga(3, 3)]);
    assert_one_violation(
        &checker,
        "Saga-transfer-1 version 3 at position 3 is after a gap",
    );
}

#[test]
fn a_read_model_that_missed_or_doubled_an_event_differs_from_the_replay() {
    let (events, _) = clean();
    let mut replay = Balances::default();
    for event in &events {
        replay.apply(event).expect("a clean log folds");
    }
    let mut missed = Balances::default();
    missed.apply(&events[0]).expect("folds");
    missed.apply(&events[1]).expect("folds");
    let difference = missed.difference(&replay).expect("they differ");
    assert!(difference.starts_with("Account-a:"), "{difference}");
    assert_eq!(replay.difference(&replay.clone()), None);

    let mut doubled = replay.clone();
    doubled.apply(&events[2]).expect("a redelivery is skipped");
    assert_eq!(doubled.redelivered, 1);
    assert_eq!(
        doubled.difference(&replay),
        None,
        "a redelivery changes nothing"
    );
    let skipped = doubled.apply(&event("Account-b", 3, 9));
    assert!(
        skipped.is_err_and(|error| error.contains("last version of the stream is 1")),
        "a version that skips one is refused"
    );
}

#[test]
fn histogram_percentiles_are_within_their_bucket_width() {
    let mut histogram = Histogram::new();
    for micros in 1..=1_000u64 {
        histogram.record(Duration::from_micros(micros));
    }
    assert_eq!(histogram.count(), 1_000);
    assert_eq!(histogram.max(), Duration::from_millis(1));
    for (quantile, exact) in [(0.5, 500.0), (0.99, 990.0), (0.01, 10.0)] {
        let read = histogram.percentile(quantile).as_nanos() as f64 / 1_000.0;
        assert!(
            read >= exact && read <= exact * 1.07,
            "p{quantile}: read {read} µs, exact {exact} µs"
        );
    }
    assert_eq!(histogram.percentile(1.0), Duration::from_millis(1));
    assert_eq!(Histogram::new().percentile(0.5), Duration::ZERO);

    let mut small = Histogram::new();
    small.record(Duration::from_nanos(7));
    small.merge(&histogram);
    assert_eq!(small.count(), 1_001);
    assert_eq!(small.percentile(0.0), Duration::from_nanos(7));
}

#[test]
fn rss_allowance_is_a_tenth_plus_32_mib() {
    assert_eq!(rss_allowance(0), 32 * 1024 * 1024);
    assert_eq!(rss_allowance(100 * 1024 * 1024), 42 * 1024 * 1024);
}

#[test]
fn the_soak_section_is_replaced_in_place_or_appended_and_kept_by_bench_report() {
    let section = format!("{SOAK_BEGIN}\n## Soak\n\nold figures\n{SOAK_END}\n");
    let document = format!("# Performance\n\nbench figures\n\n{section}");
    assert_eq!(soak_section(&document), Some(section.as_str()));
    assert_eq!(soak_section("# Performance\n"), None);

    let new = format!("{SOAK_BEGIN}\n## Soak\n\nnew figures\n{SOAK_END}\n");
    let replaced = with_soak_section(&document, Some(&new));
    assert_eq!(replaced, format!("# Performance\n\nbench figures\n\n{new}"));

    // bench-report writes a fresh document and carries the old section over.
    let fresh = "# Performance\n\nfresh bench figures\n";
    let kept = with_soak_section(fresh, soak_section(&document));
    assert_eq!(
        kept,
        format!("# Performance\n\nfresh bench figures\n\n{section}")
    );
    assert_eq!(with_soak_section(fresh, None), fresh);
}

#[test]
fn soak_flags_parse_and_bad_ones_are_named() {
    let args = |flags: &[&str]| {
        parse_args(
            &flags
                .iter()
                .map(|flag| (*flag).to_owned())
                .collect::<Vec<_>>(),
        )
    };
    let parsed = args(&[
        "--minutes",
        "10",
        "--store",
        "postgres",
        "--workers",
        "3",
        "--write",
    ])
    .expect("valid flags");
    assert_eq!(parsed.config.duration, Duration::from_secs(600));
    assert_eq!(parsed.config.store, StoreKind::Postgres);
    assert_eq!(parsed.config.workers, 3);
    assert!(parsed.write);
    let defaults = args(&[]).expect("no flags");
    assert_eq!(defaults.config.duration, Duration::from_secs(60));
    assert_eq!(defaults.config.store, StoreKind::Sqlite);
    assert_eq!(defaults.config.workers, 8);
    assert!(!defaults.write);
    assert_eq!(
        args(&["--seconds", "5"]).expect("seconds").config.duration,
        Duration::from_secs(5)
    );
    for (flags, needle) in [
        (&["--store", "mysql"][..], "--store \"mysql\""),
        (&["--workers", "0"][..], "--workers \"0\""),
        (&["--workers", "5000"][..], "at most 1000"),
        (&["--minutes"][..], "--minutes needs a value"),
        (&["--minutes", "ten"][..], "--minutes \"ten\""),
        (&["--fast", "1"][..], "unknown flag \"--fast\""),
    ] {
        let error = args(flags).expect_err("refused");
        assert!(error.contains(needle), "{flags:?}: {error}");
    }
}

#[tokio::test]
async fn a_postgres_soak_without_its_url_is_refused_naming_the_variable() {
    if std::env::var_os(xtask::soak::POSTGRES_URL_VAR).is_some() {
        return;
    }
    let config = SoakConfig {
        duration: Duration::from_secs(1),
        store: StoreKind::Postgres,
        workers: 1,
    };
    let error = run(&config, |_| {}).await.expect_err("no URL");
    assert!(
        error.to_string().contains("FLEXT_TEST_POSTGRES_URL"),
        "{error}"
    );
}

#[test]
fn checker_judges_multi_event_appends_by_every_version_and_position() {
    let events = vec![
        event("Account-a", 1, 1),
        event("Account-a", 2, 2),
        event("Account-a", 3, 3),
    ];
    let batch = |first_version, last_version, first_position, last_position| Ack {
        stream: "Account-a".to_owned(),
        append: AppendResult {
            first_version,
            last_version,
            first_position,
            last_position,
        },
    };
    let mut clean = Checker::new();
    clean.observe(&events);
    clean.settle(
        &[batch(1, 1, 1, 1), batch(2, 3, 2, 3)],
        &delivered_once(&events),
    );
    assert!(clean.violations().is_empty(), "{:?}", clean.violations());

    let mut inconsistent = Checker::new();
    inconsistent.observe(&events);
    inconsistent.settle(
        &[batch(1, 1, 1, 1), batch(2, 3, 2, 2)],
        &delivered_once(&events),
    );
    assert_one_violation(
        &inconsistent,
        "the append to Account-a of versions 2..=3 reports positions 2..=2",
    );

    let mut shifted = Checker::new();
    shifted.observe(&events);
    shifted.settle(
        &[batch(1, 1, 1, 1), batch(3, 4, 2, 3)],
        &delivered_once(&events),
    );
    assert_one_violation(
        &shifted,
        "event Account-a version 3 should be at position 2, which holds Account-a version 2",
    );
}

#[test]
fn a_violation_found_outside_the_checker_is_kept() {
    let mut checker = Checker::new();
    checker.violation("metrics: deliveries is 3, the driver counted 4");
    assert_eq!(
        checker.violations(),
        ["metrics: deliveries is 3, the driver counted 4"]
    );
}
