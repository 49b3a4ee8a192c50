//! ProjectionRunner status and metrics: position, head, lag and dead letters, and the
//! counts of a run with a failing event.

use std::sync::Arc;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::{Backoff, InMemoryEventStore, ProjectionConfig, ProjectionRunner};
use flext_protocols::{CheckpointStore, MetricsSource};
use flext_types::{DeadLetter, FlextError, FlextResult, MetricSet, MetricValue};

use crate::es_dead_letters::{Scripted, append};

fn counter(set: &MetricSet, name: &str) -> u64 {
    match set.get(name) {
        Some(MetricValue::Counter(n)) => *n,
        other => panic!("{name}: not a counter: {other:?}"),
    }
}

fn gauge(set: &MetricSet, name: &str) -> f64 {
    match set.get(name) {
        Some(MetricValue::Gauge(v)) => *v,
        other => panic!("{name}: not a gauge: {other:?}"),
    }
}

/// Streams A, B, A, B, A at positions 1 to 5; position 1 fails for good.
async fn poisoned() -> (InMemoryEventStore, Arc<Scripted>, ProjectionRunner) {
    let store = InMemoryEventStore::new();
    for stream in ["A-1", "B-1", "A-1", "B-1", "A-1"] {
        append(&store, stream).await;
    }
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let runner = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        projection.clone(),
    )
    .with_config(
        ProjectionConfig::default()
            .with_max_attempts(3)
            .with_backoff(Backoff::none()),
    );
    (store, projection, runner)
}

#[tokio::test(start_paused = true)]
async fn status_and_metrics_after_a_catch_up_with_a_failing_event() {
    let (store, projection, runner) = poisoned().await;
    let before = runner.status().await.unwrap();
    assert_eq!(
        (
            before.name.as_str(),
            before.position,
            before.head,
            before.lag
        ),
        ("scripted", 0, 5, 5)
    );
    assert_eq!(before.dead_letters, 0);

    runner.catch_up().await.unwrap();
    let status = runner.status().await.unwrap();
    assert_eq!((status.position, status.head, status.lag), (5, 5, 0));
    assert_eq!(
        status.dead_letters, 3,
        "one given up on, two parked behind it"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["name"], "scripted");
    assert_eq!(json["lag"], 0);

    let set = runner.metric_set();
    assert_eq!(set.source, "scripted");
    assert_eq!(counter(&set, "projection_events_applied"), 2);
    assert_eq!(counter(&set, "projection_failures"), 3);
    assert_eq!(counter(&set, "projection_retries"), 2);
    assert_eq!(counter(&set, "projection_dead_lettered"), 1);
    assert_eq!(counter(&set, "projection_parked"), 2);
    assert_eq!(gauge(&set, "projection_position"), 5.0);
    assert_eq!(gauge(&set, "projection_dead_letters"), 3.0);

    // New events: the lag grows until the runner catches up.
    append(&store, "B-1").await;
    append(&store, "B-1").await;
    let status = runner.status().await.unwrap();
    assert_eq!((status.position, status.head, status.lag), (5, 7, 2));

    // The letters retried: applied, and no longer held.
    projection.cure(1);
    let retry = runner.retry_dead_letter(1).await.unwrap();
    assert_eq!(retry.applied, [1, 3, 5]);
    runner.catch_up().await.unwrap();
    let status = runner.status().await.unwrap();
    assert_eq!(
        (status.position, status.lag, status.dead_letters),
        (7, 0, 0)
    );
    let set = runner.metric_set();
    assert_eq!(counter(&set, "projection_events_applied"), 2 + 3 + 2);
    assert_eq!(counter(&set, "projection_failures"), 3);
    assert_eq!(gauge(&set, "projection_position"), 7.0);
    assert_eq!(gauge(&set, "projection_dead_letters"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_running_runner_reports_its_own_position_ahead_of_the_checkpoint() {
    let (store, projection, runner) = poisoned().await;
    projection.cure(1);
    let gate = projection.gate(4);
    let runner = Arc::new(runner);
    let run = tokio::spawn({
        let runner = runner.clone();
        async move { runner.catch_up().await }
    });
    gate.reached().await;
    // Three events finished, none saved yet (the checkpoint is saved every 100 events).
    assert_eq!(runner.position().await.unwrap(), 0);
    let status = runner.status().await.unwrap();
    assert_eq!((status.position, status.head, status.lag), (3, 5, 2));
    assert_eq!(gauge(&runner.metric_set(), "projection_position"), 3.0);
    gate.open();
    run.await.unwrap().unwrap();
    assert_eq!(store.load_checkpoint("scripted").await.unwrap(), Some(5));
    let status = runner.status().await.unwrap();
    assert_eq!((status.position, status.lag), (5, 0));
}

/// Checkpoints that cannot be read.
struct Unreadable;

#[async_trait]
impl CheckpointStore for Unreadable {
    async fn load_checkpoint(&self, _: &str) -> FlextResult<Option<u64>> {
        Err(FlextError::storage("checkpoint table unreachable"))
    }
    async fn save_checkpoint(&self, _: &str, _: u64) -> FlextResult<()> {
        Ok(())
    }
    async fn add_dead_letter(&self, _: &str, _: DeadLetter) -> FlextResult<()> {
        Ok(())
    }
    async fn dead_letters(&self, _: &str) -> FlextResult<Vec<DeadLetter>> {
        Err(FlextError::storage("dead letter table unreachable"))
    }
    async fn remove_dead_letter(&self, _: &str, _: u64) -> FlextResult<bool> {
        Ok(false)
    }
    async fn reset(&self, _: &str) -> FlextResult<()> {
        Ok(())
    }
}

#[tokio::test]
async fn status_fails_with_the_stores_error_when_it_cannot_read_the_checkpoint() {
    let store = InMemoryEventStore::new();
    let runner = ProjectionRunner::new(
        Arc::new(store),
        Arc::new(Unreadable),
        Arc::new(Scripted::default()),
    );
    let error = runner.status().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageError);
    assert!(error.message().contains("checkpoint"), "{error}");
    // The metrics need no store: a runner that never ran reports zeros.
    let set = runner.metric_set();
    assert_eq!(counter(&set, "projection_events_applied"), 0);
    assert_eq!(gauge(&set, "projection_dead_letters"), 0.0);
}
