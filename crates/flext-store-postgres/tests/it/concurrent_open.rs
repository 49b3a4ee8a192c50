//! A fresh schema opened at the same moment by several stores in this process and by child
//! processes, as replicas of one service starting together: every one opens it, and the
//! schema is created once.

use flext_store_postgres::{PostgresEventStore, PostgresStoreOptions};
use flext_types::FlextResult;

use crate::url;

/// The name of a schema that does not exist yet; `None` without a server.
async fn fresh() -> Option<String> {
    url("concurrent opens")?;
    Some(format!(
        "flext_t_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    ))
}

async fn open(schema: String) -> FlextResult<PostgresEventStore> {
    let url = url("concurrent open").expect("the parent has the URL");
    PostgresEventStore::connect_with(PostgresStoreOptions::new(url).with_schema(schema)).await
}

/// Each migration is recorded once, successfully, and the tables are the schema's.
async fn schema(schema: String) {
    let store = open(schema.clone()).await.expect("the store opens");
    let migrations: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        migrations,
        [(1, true), (2, true), (3, true), (4, true)],
        "each migration once"
    );
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name LIKE 'flext_%' ORDER BY table_name",
    )
    .bind(&schema)
    .fetch_all(store.pool())
    .await
    .unwrap();
    let tables: Vec<&str> = tables.iter().map(|(name,)| name.as_str()).collect();
    assert_eq!(
        tables,
        [
            "flext_checkpoints",
            "flext_dead_letters",
            "flext_events",
            "flext_leases",
            "flext_positions",
            "flext_snapshots"
        ]
    );
}

flext_testing::concurrent_open_test!(
    env: "FLEXT_POSTGRES_OPEN_CHILD_SCHEMA",
    fresh: fresh,
    open: open,
    schema: schema
);
