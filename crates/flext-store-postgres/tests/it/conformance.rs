//! The store conformance suite, each behaviour in a fresh schema, and the behaviours of
//! limits of its own.

use std::sync::Arc;

use flext_protocols::EventStore;
use flext_store::StoreLimits;
use flext_store_postgres::{PostgresEventStore, PostgresStoreOptions};

async fn store() -> Option<PostgresEventStore> {
    crate::fresh("postgres store conformance").await
}

flext_testing::store_conformance!(store);

async fn with_limits(limits: StoreLimits) -> Option<Arc<dyn EventStore>> {
    let url = crate::url("postgres store limits conformance")?;
    let schema = format!(
        "flext_t_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let options = PostgresStoreOptions::new(url)
        .with_schema(schema)
        .with_limits(limits);
    let store = PostgresEventStore::connect_with(options).await;
    Some(Arc::new(store.expect("the test server is reachable")))
}

mod limits_conformance {
    use super::with_limits;
    flext_testing::store_limits_conformance!(with_limits);
}
