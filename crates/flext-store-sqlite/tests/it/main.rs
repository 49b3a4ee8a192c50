//! Integration tests of the SQLite store: the conformance suite and SQLite specifics.

mod concurrent_open;
mod conformance;
mod crash;
mod fuzz_corpus;
mod projection;
mod specifics;

use flext_store_sqlite::SqliteEventStore;

/// A fresh database file in the temporary directory.
pub(crate) fn temp_path() -> String {
    std::env::temp_dir()
        .join(format!("flext-sqlite-{}.db", uuid::Uuid::new_v4().simple()))
        .to_string_lossy()
        .into_owned()
}

pub(crate) async fn fresh() -> SqliteEventStore {
    SqliteEventStore::open(&temp_path())
        .await
        .expect("a fresh database opens")
}
