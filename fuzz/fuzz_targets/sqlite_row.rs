//! Fuzz target: a row of a real SQLite store (`:memory:`) overwritten with any values and
//! read back, through `flext_testing::fuzz::stored_row(`; the store's corpus test
//! (`crates/flext-store-sqlite/tests/it/fuzz_corpus.rs`) replays the corpus with the same
//! SQL.

#![no_main]

use std::sync::LazyLock;

use flext_store_sqlite::SqliteEventStore;
use flext_testing::fuzz::{Cell, ROW_COLUMNS};
use tokio::runtime::Runtime;

static STORE: LazyLock<(Runtime, SqliteEventStore)> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime starts");
    let store = runtime
        .block_on(SqliteEventStore::open(":memory:"))
        .expect("an in-memory store opens");
    (runtime, store)
});

/// Sets the event at position 1 to `cells`, bound with their own storage classes.
async fn write(store: &SqliteEventStore, cells: &[Cell]) -> bool {
    let columns: Vec<String> = ROW_COLUMNS.iter().map(|c| format!("{c} = ?")).collect();
    let sql = format!(
        "UPDATE flext_events SET {} WHERE position = 1",
        columns.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for cell in cells {
        query = match cell {
            Cell::Null => query.bind(None::<String>),
            Cell::Int(value) => query.bind(*value),
            Cell::Real(value) => query.bind(*value),
            Cell::Text(value) => query.bind(value.clone()),
            Cell::Blob(value) => query.bind(value.clone()),
        };
    }
    query.execute(store.pool()).await.is_ok()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (runtime, store) = &*STORE;
    runtime.block_on(flext_testing::fuzz::stored_row(store, data, write));
});
