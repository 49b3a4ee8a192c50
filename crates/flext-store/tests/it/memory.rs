//! The in-memory store passes the whole store conformance suite.

use std::sync::Arc;

use flext_protocols::{CheckpointStore, EventStore, SnapshotStore};
use flext_store::{InMemoryEventStore, StoreLimits};

async fn events() -> Option<Arc<dyn EventStore>> {
    Some(Arc::new(InMemoryEventStore::new()))
}

async fn snapshots() -> Option<Arc<dyn SnapshotStore>> {
    Some(Arc::new(InMemoryEventStore::new()))
}

async fn checkpoints() -> Option<Arc<dyn CheckpointStore>> {
    Some(Arc::new(InMemoryEventStore::new()))
}

async fn with_limits(limits: StoreLimits) -> Option<Arc<dyn EventStore>> {
    Some(Arc::new(InMemoryEventStore::with_limits(limits)))
}

mod limits_conformance {
    use super::with_limits;
    flext_testing::store_limits_conformance!(with_limits);
}

mod events_conformance {
    use super::events;
    flext_testing::event_store_conformance!(events);
}

mod snapshots_conformance {
    use super::snapshots;
    flext_testing::snapshot_store_conformance!(snapshots);
}

mod checkpoints_conformance {
    use super::checkpoints;
    flext_testing::checkpoint_store_conformance!(checkpoints);
}

/// One store shared by every behaviour at once, as a database would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_suite_passes_on_one_shared_store_in_parallel() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let runs = vec![
        tokio::spawn(flext_testing::event_store::append_to_new_stream(
            store.clone(),
        )),
        tokio::spawn(flext_testing::event_store::idempotent_retry(store.clone())),
        tokio::spawn(flext_testing::event_store::empty_batch_is_a_no_op(
            store.clone(),
        )),
        tokio::spawn(flext_testing::event_store::reads_past_the_end_are_empty(
            store.clone(),
        )),
        tokio::spawn(flext_testing::event_store::read_ranges_and_limits(
            store.clone(),
        )),
        tokio::spawn(
            flext_testing::event_store::positions_increase_and_batches_do_not_interleave(
                store.clone(),
            ),
        ),
        tokio::spawn(
            flext_testing::event_store::concurrent_writers_on_shared_streams(store.clone()),
        ),
        tokio::spawn(
            flext_testing::event_store::subscription_sees_every_event_once_in_order(store.clone()),
        ),
    ];
    for run in runs {
        run.await.unwrap();
    }
}
