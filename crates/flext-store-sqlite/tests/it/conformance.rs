//! The store conformance suite, each behaviour on a fresh database file.

use std::sync::Arc;

use flext_protocols::{CheckpointStore, EventStore, SnapshotStore};

use crate::fresh;

async fn events() -> Option<Arc<dyn EventStore>> {
    Some(Arc::new(fresh().await))
}

async fn snapshots() -> Option<Arc<dyn SnapshotStore>> {
    Some(Arc::new(fresh().await))
}

async fn checkpoints() -> Option<Arc<dyn CheckpointStore>> {
    Some(Arc::new(fresh().await))
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

async fn in_memory() -> Option<Arc<dyn EventStore>> {
    Some(Arc::new(
        flext_store_sqlite::SqliteEventStore::open(":memory:")
            .await
            .expect(":memory: opens"),
    ))
}

mod in_memory_conformance {
    use super::in_memory;
    flext_testing::event_store_conformance!(in_memory);
}
