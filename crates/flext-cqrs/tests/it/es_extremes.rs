//! Extreme settings never panic: projection configurations of `Duration::MAX`,
//! `usize::MAX` and `u32::MAX`.

use std::sync::Arc;
use std::time::Duration;

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
