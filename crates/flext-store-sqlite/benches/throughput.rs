//! SQLite store throughput: single appends (sequential, and 8 writers on streams of their
//! own), batched appends of 100, stream reads and read-all, each beside the same inserts
//! done with raw sqlx on a table of the same shape (the physical limit).
//!
//! `cargo bench -p flext-store-sqlite`. Files live in a temporary directory, with the
//! store's settings (WAL, `synchronous = NORMAL`).

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use flext_protocols::EventStore;
use flext_store_sqlite::{SqliteEventStore, SqliteStoreOptions};
use flext_testing::bench::{self, Baseline, runtime};
use flext_testing::workload;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};

/// A fresh directory for one benchmark's database files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("flext-sqlite-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp directory is writable");
    dir
}

async fn store(name: &str) -> Arc<dyn EventStore> {
    let path = scratch(name).join("events.db");
    let options = SqliteStoreOptions::new(&path);
    Arc::new(
        SqliteEventStore::open_with(options)
            .await
            .expect("the store opens"),
    )
}

/// The raw baseline: a table shaped like the store's, with the same pragmas.
async fn raw_pool(name: &str) -> SqlitePool {
    let connect = SqliteConnectOptions::new()
        .filename(scratch(&format!("{name}-raw")).join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let pool = SqlitePool::connect_with(connect)
        .await
        .expect("the raw database opens");
    sqlx::query(
        "CREATE TABLE raw_events (
            position INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL UNIQUE,
            stream_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            event_type TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            payload TEXT NOT NULL,
            metadata TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            UNIQUE (stream_id, version)
        )",
    )
    .execute(&pool)
    .await
    .expect("the raw table is created");
    pool
}

/// Inserts `count` rows into `stream` after `version`, in one statement and transaction.
async fn raw_insert(pool: &SqlitePool, stream: &str, version: u64, count: u64) {
    let events = workload::events(version, count).expect("benchmark events");
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO raw_events (event_id, stream_id, version, event_type, schema_version, \
         payload, metadata, recorded_at) ",
    );
    let mut next = version;
    insert.push_values(&events, |mut row, event| {
        next += 1;
        row.push_bind(event.event_id.to_string())
            .push_bind(stream)
            .push_bind(next as i64)
            .push_bind(&event.event_type)
            .push_bind(i64::from(event.schema_version))
            .push_bind(event.payload.as_str())
            .push_bind("{}")
            .push_bind("2026-01-01T00:00:00Z");
    });
    insert
        .build()
        .execute(pool)
        .await
        .expect("the raw insert succeeds");
}

/// Raw sqlx inserts into the baseline table.
fn raw_baseline(pool: SqlitePool) -> Baseline {
    Baseline {
        single: "single/raw_sqlx",
        writers: None,
        batch: "batch_100/raw_sqlx",
        insert: Arc::new(move |stream, version, count| {
            let pool = pool.clone();
            Box::pin(async move { raw_insert(&pool, &stream, version, count).await })
        }),
    }
}

fn appends(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(store("appends"));
    let raw = raw_baseline(rt.block_on(raw_pool("appends")));
    bench::appends(c, &rt, "sqlite_append", store, &[raw]);
}

fn reads(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(store("reads"));
    bench::reads(c, &rt, "sqlite_read", store);
}

criterion_group!(benches, appends, reads);
criterion_main!(benches);
