//! A fresh database file opened at the same moment by several pools in this process and by
//! child processes: every one opens it, and the schema is created once.

use flext_store_sqlite::SqliteEventStore;
use flext_types::FlextResult;

/// A path where no database exists yet.
async fn fresh() -> Option<String> {
    Some(crate::temp_path())
}

async fn open(path: String) -> FlextResult<SqliteEventStore> {
    SqliteEventStore::open(&path).await
}

/// Each migration is recorded once, successfully, each table exists once, and the file is
/// in WAL mode.
async fn schema(path: String) {
    let store = open(path).await.expect("the store opens");
    let migrations: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(migrations, [(1, true)], "each migration once");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal", "the file is in WAL mode");
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'flext_%' ORDER BY name",
    )
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
            "flext_snapshots"
        ]
    );
}

flext_testing::concurrent_open_test!(
    env: "FLEXT_SQLITE_OPEN_CHILD_DB",
    fresh: fresh,
    open: open,
    schema: schema
);
