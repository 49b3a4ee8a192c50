//! The store conformance suite, each behaviour on a fresh database file, and the event
//! store's on `:memory:`.

use std::sync::Arc;

use flext_protocols::EventStore;

async fn file() -> Option<flext_store_sqlite::SqliteEventStore> {
    Some(crate::fresh().await)
}

flext_testing::store_conformance!(file);

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
