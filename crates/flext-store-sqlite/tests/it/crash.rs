//! Crash safety: a child process appends in a loop, reporting each acknowledged append; it
//! is killed with SIGKILL; every acknowledged event must be there, and no batch partial.

use flext_store_sqlite::SqliteEventStore;

/// A fresh database file for the child to write.
async fn prepare() -> Option<String> {
    Some(crate::temp_path())
}

async fn open(path: String) -> SqliteEventStore {
    SqliteEventStore::open(&path)
        .await
        .expect("the store opens (again after the kill)")
}

flext_testing::crash_test!(
    env: "FLEXT_SQLITE_CRASH_CHILD_DB",
    prepare: prepare,
    open: open,
    acks: 50..=200
);
