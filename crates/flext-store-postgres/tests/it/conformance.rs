//! The store conformance suite, each behaviour in a fresh schema.

use std::sync::Arc;

use flext_protocols::{CheckpointStore, EventStore, SnapshotStore};

use crate::fresh;

async fn events() -> Option<Arc<dyn EventStore>> {
    Some(Arc::new(fresh("postgres event store conformance").await?))
}

async fn snapshots() -> Option<Arc<dyn SnapshotStore>> {
    Some(Arc::new(
        fresh("postgres snapshot store conformance").await?,
    ))
}

async fn checkpoints() -> Option<Arc<dyn CheckpointStore>> {
    Some(Arc::new(
        fresh("postgres checkpoint store conformance").await?,
    ))
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
