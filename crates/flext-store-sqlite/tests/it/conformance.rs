//! The store conformance suite, each behaviour on a fresh database file, the event store's
//! on `:memory:`, and the behaviours of limits of its own.

use std::sync::Arc;

use flext_protocols::EventStore;
use flext_store::StoreLimits;
use flext_store_sqlite::{SqliteEventStore, SqliteStoreOptions};

async fn file() -> Option<SqliteEventStore> {
    Some(crate::fresh().await)
}

flext_testing::store_conformance!(file);

async fn in_memory() -> Option<Arc<dyn EventStore>> {
    Some(Arc::new(
        SqliteEventStore::open(":memory:")
            .await
            .expect(":memory: opens"),
    ))
}

mod in_memory_conformance {
    use super::in_memory;
    flext_testing::event_store_conformance!(in_memory);
}

async fn with_limits(limits: StoreLimits) -> Option<Arc<dyn EventStore>> {
    let options = SqliteStoreOptions::new(crate::temp_path()).with_limits(limits);
    let store = SqliteEventStore::open_with(options).await;
    Some(Arc::new(store.expect("a fresh database opens")))
}

mod limits_conformance {
    use super::with_limits;
    flext_testing::store_limits_conformance!(with_limits);
}
