//! A plain `ProjectionRunner` whose checkpoints go through a PostgreSQL lease's
//! `FencedCheckpoints`: once the lease is lost (its owner paused past the TTL and another
//! took it), the runner's next checkpoint write is refused with a `CONCURRENCY_CONFLICT`
//! and the run stops with it, the checkpoint left where the owner last saved it. Before
//! leases, a paused runner saved its checkpoint over the new owner's when it woke.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flext_handlers::cqrs::ProjectionConfig;
use flext_handlers::prelude::*;
use flext_handlers::protocols::CheckpointStore;
use flext_handlers::stores::{LeaseConfig, PostgresEventStore, PostgresStoreOptions};
use flext_handlers::types::{ExpectedVersion, JsonPayload, NewEvent};

use crate::saga_processes::DroppedSchema;

/// Counts the events it is given.
#[derive(Default)]
struct Count(AtomicU64);

#[async_trait]
impl Projection for Count {
    fn name(&self) -> &str {
        "count"
    }

    async fn apply(&self, _event: &StoredEvent) -> FlextResult<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn reset(&self) -> FlextResult<()> {
        self.0.store(0, Ordering::SeqCst);
        Ok(())
    }
}

async fn append(store: &PostgresEventStore, n: u64) -> u64 {
    let mut last = 0;
    for i in 0..n {
        let event = NewEvent::new("Tick", JsonPayload::encode(&i).unwrap());
        last = store
            .append("Tick-1", ExpectedVersion::Any, vec![event])
            .await
            .unwrap()
            .last_position;
    }
    // A commit may show a moment late while an older append to the store is still open.
    while store.head_position().await.unwrap() < last {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last
}

#[tokio::test]
async fn a_plain_runner_stops_at_its_first_checkpoint_after_its_lease_is_lost() {
    let Some(schema) = DroppedSchema::of_its_own("fence") else {
        return;
    };
    let url = schema.url.clone();
    let open = || {
        PostgresEventStore::connect_with(
            PostgresStoreOptions::new(url.clone()).with_schema(schema.name.clone()),
        )
    };
    let (a, b) = (open().await.unwrap(), open().await.unwrap());
    let config = LeaseConfig::new("a").with_ttl(Duration::from_millis(300));
    let saved = append(&a, 3).await;

    let lease = a.acquire_lease("count", config.clone()).await.unwrap();
    let count = Arc::new(Count::default());
    let runner = ProjectionRunner::new(
        Arc::new(a.clone()),
        Arc::new(a.fenced_checkpoints(lease.fence())),
        count.clone(),
    )
    .with_config(ProjectionConfig::default().with_checkpoint_every(1));
    assert_eq!(runner.catch_up().await.unwrap().applied, 3);
    assert_eq!(a.load_checkpoint("count").await.unwrap(), Some(saved));

    // The owner pauses past its lease; another process takes it.
    drop(lease);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let taken = b.acquire_lease("count", config).await.unwrap();
    assert_eq!(taken.token(), 2);
    append(&a, 2).await;

    let error = runner.catch_up().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ConcurrencyConflict, "{error}");
    assert!(error.message().contains("Lease 'count'"), "{error}");
    assert_eq!(
        a.load_checkpoint("count").await.unwrap(),
        Some(saved),
        "the paused owner's checkpoint write was refused"
    );
}
