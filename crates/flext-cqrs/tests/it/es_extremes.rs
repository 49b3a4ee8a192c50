//! Nothing panics across the API: projection configurations of `Duration::MAX`,
//! `usize::MAX` and `u32::MAX`, and a panicking error classifier.

use std::sync::Arc;
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_cqrs::{Backoff, InMemoryEventStore, ProjectionConfig, ProjectionRunner};
use flext_types::FlextError;

use crate::es_dead_letters::{Scripted, append};

#[tokio::test(start_paused = true)]
async fn a_projection_configured_with_the_largest_values_retries_and_catches_up() {
    let store = InMemoryEventStore::new();
    for stream in ["A-1", "A-2", "A-3"] {
        append(&store, stream).await;
    }
    let projection = Arc::new(Scripted::default());
    projection.plan(
        2,
        [FlextError::timeout("slow"), FlextError::storage("down")],
    );
    projection.plan(3, [FlextError::validation("odd")]);
    let runner = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        projection.clone(),
    )
    .with_config(
        ProjectionConfig::default()
            .with_batch_size(usize::MAX)
            .with_max_attempts(u32::MAX)
            .with_give_up_after(Duration::MAX)
            .with_backoff(
                Backoff::exponential(Duration::MAX)
                    .with_max_backoff(Duration::MAX)
                    .with_multiplier(f64::MAX),
            ),
    );
    let progress = runner.catch_up().await.unwrap();
    assert_eq!(
        (progress.applied, progress.dead_lettered, progress.position),
        (3, 0, 3)
    );
    assert_eq!(projection.tries_of(2).len(), 3);
    assert_eq!(projection.tries_of(3).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_error_classifier_stops_the_run_with_an_operation_error() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    append(&store, "A-2").await;
    let projection = Arc::new(Scripted::default());
    projection.plan(2, [FlextError::validation("odd")]);
    let runner = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        projection.clone(),
    )
    .with_error_classifier(|error| panic!("cannot classify '{}'", error.message()));
    let err = runner.catch_up().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "The error classifier of 'scripted' failed: Handler execution failed: cannot classify 'odd'"
    );
    // Nothing is recorded for the event: the checkpoint stays before it, no dead letter.
    assert_eq!(runner.position().await.unwrap(), 1);
    assert!(runner.dead_letters().await.unwrap().is_empty());
    assert_eq!(projection.tries_of(2).len(), 1);
}

#[tokio::test]
async fn a_checkpoint_at_the_last_position_there_is_catches_up_nothing_instead_of_overflowing() {
    use flext_protocols::CheckpointStore;

    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    store.save_checkpoint("scripted", u64::MAX).await.unwrap();
    let projection = Arc::new(Scripted::default());
    let runner = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        projection.clone(),
    );
    let progress = runner.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.position), (0, u64::MAX));
    assert!(projection.tries_of(1).is_empty());
    let live = runner.run_until(std::future::ready(())).await.unwrap();
    assert_eq!((live.applied, live.position), (0, u64::MAX));
}
