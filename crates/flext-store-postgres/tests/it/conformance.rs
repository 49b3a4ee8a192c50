//! The store conformance suite, each behaviour in a fresh schema.

async fn store() -> Option<flext_store_postgres::PostgresEventStore> {
    crate::fresh("postgres store conformance").await
}

flext_testing::store_conformance!(store);
