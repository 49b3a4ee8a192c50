//! A short run of the fuzz target `sqlite_row`: every committed corpus file written into a
//! row of a real store and read back, as `cargo fuzz run sqlite_row` does without libFuzzer.

use std::path::Path;

use flext_store_sqlite::SqliteEventStore;
use flext_testing::fuzz::{Cell, ROW_COLUMNS, stored_row};

/// Sets the event at position 1 to `cells`, bound with their own storage classes; the same
/// SQL as in `fuzz/fuzz_targets/sqlite_row.rs`.
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

#[tokio::test]
async fn the_sqlite_row_corpus_reads_back_through_the_store() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sqlite_row");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} reads: {e}", dir.display()))
        .map(|entry| entry.expect("an entry reads").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus of sqlite_row is empty");
    let store = SqliteEventStore::open(":memory:").await.unwrap();
    for file in &files {
        let data = std::fs::read(file).expect("a corpus file reads");
        stored_row(&store, &data, write).await;
    }
}
