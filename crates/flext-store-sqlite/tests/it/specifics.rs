//! SQLite specifics: schema versions, hostile input, corrupt rows, checkpoints in the read
//! model's transaction, reopening, bad paths.

use std::error::Error as _;
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_protocols::{CheckpointStore, EventStore};
use flext_store::StoreLimits;
use flext_store_sqlite::{SqliteEventStore, SqliteStoreOptions};
use flext_types::{ExpectedVersion, JsonPayload, NewEvent};
use serde_json::json;
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::{fresh, temp_path};

fn event(value: serde_json::Value) -> NewEvent {
    NewEvent::new("Noted", JsonPayload::encode(&value).unwrap())
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused_with_a_clear_error() {
    let path = temp_path();
    let store = SqliteEventStore::open(&path).await.unwrap();
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) VALUES (2, 'from the future', datetime('now'), 1, x'00', 0)")
        .execute(store.pool())
        .await
        .unwrap();
    drop(store);
    let err = SqliteEventStore::open(&path).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageError);
    assert!(
        err.message().contains(
            "the database has schema version 2, newer than this flext-store-sqlite knows (1)"
        ),
        "{err}"
    );
    assert!(err.message().contains(&path), "the error names the file");
}

#[tokio::test]
async fn hostile_ids_and_payloads_are_stored_and_read_back_verbatim() {
    flext_testing::sql::hostile_input_round_trips(&fresh().await).await;
}

#[tokio::test]
async fn a_corrupt_payload_row_is_a_serialization_error_not_a_panic() {
    let corrupt = async |store: &SqliteEventStore, position: i64| {
        sqlx::query("UPDATE flext_events SET payload = '{broken' WHERE position = ?")
            .bind(position)
            .execute(store.pool())
            .await
            .unwrap();
    };
    flext_testing::sql::a_corrupt_payload_is_named(&fresh().await, corrupt).await;
}

#[tokio::test]
async fn a_value_that_does_not_read_is_a_storage_error_naming_the_store_and_the_read() {
    let path = temp_path();
    let store = SqliteEventStore::open(&path).await.unwrap();
    // SQLite keeps whatever it is given: text where the checkpoint's position should be.
    sqlx::query("INSERT INTO flext_checkpoints (name, position) VALUES ('broken', 'abc')")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.load_checkpoint("broken").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageError, "{err}");
    assert!(
        err.message()
            .starts_with(&format!("SQLite store {path}: cannot load a checkpoint: ")),
        "{err}"
    );
    assert!(
        err.source().is_some(),
        "the driver's error is kept as the source"
    );
}

#[tokio::test]
async fn a_checkpoint_commits_or_rolls_back_with_its_read_model() {
    let store = fresh().await;
    sqlx::query("CREATE TABLE balances (account TEXT PRIMARY KEY, total INTEGER NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    let write = async |store: &SqliteEventStore, total: i64, checkpoint: u64, commit: bool| {
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("INSERT OR REPLACE INTO balances VALUES ('a', ?)")
            .bind(total)
            .execute(&mut *tx)
            .await
            .unwrap();
        SqliteEventStore::save_checkpoint_in(&mut tx, "balances", checkpoint)
            .await
            .unwrap();
        if commit {
            tx.commit().await
        } else {
            tx.rollback().await
        }
        .unwrap();
    };
    let total = async |store: &SqliteEventStore| -> i64 {
        let sql = "SELECT total FROM balances";
        sqlx::query_scalar(sql)
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    flext_testing::sql::a_checkpoint_moves_with_its_read_model(&store, write, total).await;
}

#[tokio::test]
async fn events_survive_closing_and_reopening_the_file() {
    let path = temp_path();
    let store = SqliteEventStore::open(&path).await.unwrap();
    store
        .append(
            "s",
            ExpectedVersion::NoStream,
            vec![event(json!("a")), event(json!("b"))],
        )
        .await
        .unwrap();
    store.save_checkpoint("p", 2).await.unwrap();
    drop(store);
    let reopened = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(reopened.stream_version("s").await.unwrap(), 2);
    assert_eq!(reopened.load_checkpoint("p").await.unwrap(), Some(2));
    let appended = reopened
        .append("s", ExpectedVersion::Exact(2), vec![event(json!("c"))])
        .await
        .unwrap();
    assert_eq!(
        appended.last_position, 3,
        "positions continue after a reopen"
    );
}

#[tokio::test]
async fn a_path_that_cannot_be_opened_is_named_in_the_error() {
    let path = "/nonexistent-directory/flext/store.db";
    let err = SqliteEventStore::open(path).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageError);
    assert!(
        err.message()
            .starts_with(&format!("SQLite store {path}: cannot open the database")),
        "{err}"
    );
}

#[tokio::test]
async fn a_retried_batch_beyond_sqlites_parameter_limit_is_still_recognised() {
    // More events than SQLite allows bound parameters in one statement (32,766), and than
    // the default batch limit: raised for this store.
    let limits = StoreLimits::new().with_max_batch_events(40_000);
    let options = SqliteStoreOptions::new(temp_path()).with_limits(limits);
    let store = SqliteEventStore::open_with(options).await.unwrap();
    let batch: Vec<NewEvent> = (0..33_000).map(|n| event(json!(n))).collect();
    let first = store
        .append("big", ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(first.last_version, 33_000);
    let retried = store
        .append("big", ExpectedVersion::NoStream, batch)
        .await
        .expect("the same batch again is a retry, not a storage error");
    assert_eq!(retried, first);
    let conflicting = store
        .append("big", ExpectedVersion::NoStream, vec![event(json!("new"))])
        .await
        .unwrap_err();
    assert_eq!(conflicting.code(), ErrorCode::ConcurrencyConflict);
}

/// A raw connection to `path` (created if missing) holding SQLite's write lock: a
/// `BEGIN IMMEDIATE` transaction left open, as a long writer in another process would.
async fn writer_holding_the_lock(path: &str) -> SqliteConnection {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let mut writer = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut writer)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    writer
}

#[tokio::test]
async fn an_up_to_date_database_opens_while_another_connection_holds_the_write_lock() {
    let path = temp_path();
    let store = SqliteEventStore::open(&path).await.unwrap();
    store
        .append("before", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .unwrap();
    store.pool().close().await;
    drop(store);

    let mut writer = writer_holding_the_lock(&path).await;
    sqlx::query("INSERT INTO flext_checkpoints (name, position) VALUES ('held', 1)")
        .execute(&mut writer)
        .await
        .unwrap();
    // Far shorter than the writer holds its lock: an open that waited for it would fail.
    let options =
        SqliteStoreOptions::new(path.as_str()).with_busy_timeout(Duration::from_millis(100));
    let opened = SqliteEventStore::open_with(options)
        .await
        .expect("an up-to-date database opens without the write lock");
    assert_eq!(
        opened.read_all(1, 10).await.unwrap().len(),
        1,
        "it reads while the writer holds its lock"
    );

    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
    opened
        .append("after", ExpectedVersion::NoStream, vec![event(json!(2))])
        .await
        .expect("it writes once the writer is done");
    assert_eq!(opened.load_checkpoint("held").await.unwrap(), Some(1));
}

#[tokio::test]
async fn a_database_that_needs_its_migrations_waits_for_the_write_lock_and_says_so() {
    let path = temp_path();
    let mut writer = writer_holding_the_lock(&path).await;
    let options =
        SqliteStoreOptions::new(path.as_str()).with_busy_timeout(Duration::from_millis(100));
    let err = SqliteEventStore::open_with(options.clone())
        .await
        .expect_err("the migrations need the write lock the writer holds");
    assert_eq!(err.code(), ErrorCode::StorageError, "{err}");
    assert!(
        err.message().starts_with(&format!(
            "SQLite store {path}: cannot begin the migrations: "
        )),
        "{err}"
    );

    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
    let store = SqliteEventStore::open_with(options)
        .await
        .expect("the migrations run once the writer is done");
    store
        .append("s", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_busy_timeout_of_duration_max_opens_instead_of_panicking() {
    for path in [temp_path(), ":memory:".to_owned()] {
        let options = SqliteStoreOptions::new(path.as_str()).with_busy_timeout(Duration::MAX);
        let store = SqliteEventStore::open_with(options)
            .await
            .expect("the longest busy timeout opens");
        store
            .append("s", ExpectedVersion::NoStream, vec![event(json!(1))])
            .await
            .unwrap();
        assert_eq!(store.stream_version("s").await.unwrap(), 1, "{path}");
    }
}

#[tokio::test]
async fn a_retry_of_a_batch_committed_under_higher_limits_is_refused_by_lower_ones() {
    // Limits apply to every append, a retry included (documented on StoreLimits).
    let path = temp_path();
    let store = SqliteEventStore::open(&path).await.unwrap();
    let batch = vec![event(json!("a")), event(json!("b"))];
    let first = store
        .append("s", ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(
        store
            .append("s", ExpectedVersion::NoStream, batch.clone())
            .await
            .unwrap(),
        first,
        "under the same limits the retry answers the original result"
    );
    drop(store);
    let lower = StoreLimits::new().with_max_batch_events(1);
    let store =
        SqliteEventStore::open_with(SqliteStoreOptions::new(path.as_str()).with_limits(lower))
            .await
            .unwrap();
    let err = store
        .append("s", ExpectedVersion::NoStream, batch)
        .await
        .expect_err("the retry is over the lower limit");
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    assert!(err.message().contains("max_batch_events"), "{err}");
    assert_eq!(store.stream_version("s").await.unwrap(), 2, "stored once");
}

#[tokio::test]
async fn a_changed_half_applied_or_newer_schema_is_refused_without_the_write_lock() {
    // Refused by the read before any write lock: a writer holding it changes nothing.
    let refused = async |change: &str| {
        let path = temp_path();
        let store = SqliteEventStore::open(&path).await.unwrap();
        sqlx::query(change).execute(store.pool()).await.unwrap();
        store.pool().close().await;
        drop(store);
        let _writer = writer_holding_the_lock(&path).await;
        let options =
            SqliteStoreOptions::new(path.as_str()).with_busy_timeout(Duration::from_millis(100));
        let err = SqliteEventStore::open_with(options).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::StorageError, "{err}");
        assert!(
            err.message().starts_with(&format!("SQLite store {path}: ")),
            "{err}"
        );
        err
    };
    let changed = refused("UPDATE _sqlx_migrations SET checksum = x'00'").await;
    assert!(
        changed.message().contains(": migrations failed: "),
        "{changed}"
    );
    assert!(changed.source().is_some(), "sqlx's error is the source");
    assert!(
        format!("{changed:?}").contains("source: VersionMismatch(1)"),
        "{changed:?}"
    );
    let half = refused("UPDATE _sqlx_migrations SET success = 0").await;
    assert!(half.message().contains(": migrations failed: "), "{half}");
    assert!(format!("{half:?}").contains("source: Dirty(1)"), "{half:?}");
    let newer = refused("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) VALUES (2, 'from the future', datetime('now'), 1, x'00', 0)").await;
    assert!(
        newer.message().contains(
            "the database has schema version 2, newer than this flext-store-sqlite knows (1)"
        ),
        "{newer}"
    );
}

#[tokio::test]
async fn an_in_memory_store_is_one_database_for_sqlx_and_its_own_connections() {
    let store = SqliteEventStore::open(":memory:").await.unwrap();
    // Written through sqlx's pool (a projection's transaction), read by the store's readers.
    let mut connection = store.pool().acquire().await.unwrap();
    SqliteEventStore::save_checkpoint_in(&mut connection, "mem", 7)
        .await
        .unwrap();
    drop(connection);
    assert_eq!(store.load_checkpoint("mem").await.unwrap(), Some(7));
    // Appended by the writer thread, read through sqlx's pool.
    store
        .append("s", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM flext_events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_reset_that_fails_halfway_leaves_no_transaction_open() {
    let store = SqliteEventStore::open_with(
        SqliteStoreOptions::new(temp_path()).with_busy_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    store.save_checkpoint("p", 3).await.unwrap();
    // The reset deletes the checkpoint, then fails deleting the dead letters.
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE DELETE ON flext_dead_letters \
         BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let letter = flext_types::DeadLetter {
        position: 1,
        event_id: uuid::Uuid::new_v4(),
        stream_id: "s".to_owned(),
        event_type: "Noted".to_owned(),
        attempts: 1,
        error: flext_types::FlextError::validation("failed"),
        parked_behind: None,
    };
    store.add_dead_letter("p", letter).await.unwrap();
    let error = store.reset("p").await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageError);
    // Rolled back whole, and the read connection holds no write lock: appends go on.
    assert_eq!(store.load_checkpoint("p").await.unwrap(), Some(3));
    store
        .append("after", ExpectedVersion::NoStream, vec![event(json!(1))])
        .await
        .expect("no transaction left open blocks the writer");
}
