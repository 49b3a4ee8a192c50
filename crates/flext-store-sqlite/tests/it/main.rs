//! Integration tests of the SQLite store: the conformance suite and SQLite specifics.

mod concurrent_open;
mod conformance;
mod crash;
mod fuzz_corpus;
mod group_commit;
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

#[tokio::test]
async fn a_store_opens_from_a_path_as_from_text() {
    use flext_store_sqlite::SqliteStoreOptions;
    use std::path::{Path, PathBuf};

    let path: PathBuf =
        std::env::temp_dir().join(format!("flext-sqlite-{}.db", uuid::Uuid::new_v4().simple()));
    let first = SqliteEventStore::open(&path)
        .await
        .expect("opens from a PathBuf");
    drop(first);
    let options = SqliteStoreOptions::new(Path::new(&path));
    assert_eq!(options.path, path);
    SqliteEventStore::open_with(options)
        .await
        .expect("opens from a Path");
    let text = path.to_str().expect("a UTF-8 path").to_owned();
    SqliteEventStore::open(text)
        .await
        .expect("opens from a String");
    let _ = std::fs::remove_file(&path);
}
