//! SQLite store throughput: single appends (sequential, and 8 writers on streams of their
//! own), batched appends of 100, 1 to 16 writers (`sqlite_writers`), stream reads and
//! read-all, each beside the same inserts and reads done with raw rusqlite on a table of
//! the same shape (the physical limit).
//!
//! `cargo bench -p flext-store-sqlite`. Files live in a temporary directory, with the
//! store's settings (WAL, `synchronous = NORMAL`).

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use criterion::{Criterion, criterion_group, criterion_main};
use flext_protocols::EventStore;
use flext_store_sqlite::{SqliteEventStore, SqliteStoreOptions};
use flext_testing::bench::{self, Baseline, ReadBaseline, runtime};
use flext_testing::workload;
use rusqlite::{Connection, params};

/// A fresh directory for one benchmark's database files.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("flext-sqlite-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp directory is writable");
    dir
}

async fn store(path: &Path) -> Arc<dyn EventStore> {
    let options = SqliteStoreOptions::new(path);
    Arc::new(
        SqliteEventStore::open_with(options)
            .await
            .expect("the store opens"),
    )
}

/// A rusqlite connection with the store's settings.
fn raw_connection(path: &Path) -> Connection {
    let connection = Connection::open(path).expect("the raw database opens");
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .expect("WAL mode");
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous = NORMAL");
    connection
}

/// The raw baseline: a table shaped like the store's, with the same pragmas, written
/// through one connection (SQLite has one writer at a time; concurrent writers take turns
/// on it).
fn raw_database(name: &str) -> Arc<Mutex<Connection>> {
    let connection = raw_connection(&scratch(&format!("{name}-raw")).join("raw.db"));
    connection
        .execute_batch(
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
        .expect("the raw table is created");
    Arc::new(Mutex::new(connection))
}

/// Inserts `count` rows into `stream` after `version`, one cached statement a row, in one
/// transaction.
fn raw_insert(connection: &Connection, stream: &str, version: u64, count: u64) {
    let events = workload::events(version, count).expect("benchmark events");
    connection
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the raw transaction begins");
    let mut insert = connection
        .prepare_cached(
            "INSERT INTO raw_events (event_id, stream_id, version, event_type, schema_version, \
             payload, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .expect("the raw insert prepares");
    let mut id = [0u8; 36];
    for (next, event) in (version + 1..).zip(&events) {
        insert
            .execute(params![
                &*event.event_id.hyphenated().encode_lower(&mut id),
                stream,
                next as i64,
                event.event_type.as_str(),
                i64::from(event.schema_version),
                event.payload.as_str(),
                "{}",
                "2026-01-01T00:00:00Z",
            ])
            .expect("the raw insert succeeds");
    }
    drop(insert);
    connection
        .execute_batch("COMMIT")
        .expect("the raw transaction commits");
}

/// Raw rusqlite inserts into the baseline table.
fn raw_baseline(connection: Arc<Mutex<Connection>>) -> Baseline {
    Baseline {
        single: "single/raw_rusqlite",
        writers: Some("single_8_writers/raw_rusqlite"),
        batch: "batch_100/raw_rusqlite",
        insert: Arc::new(move |stream, version, count| {
            let connection = connection.clone();
            Box::pin(async move {
                let connection = connection.lock().expect("the raw connection");
                raw_insert(&connection, &stream, version, count);
            })
        }),
    }
}

/// An event row as raw rusqlite reads it: its nine columns, owned.
type RawRow = (
    String,
    String,
    i64,
    i64,
    String,
    i64,
    String,
    String,
    String,
);

/// Raw rusqlite reads of the store's file: every event row from the start, a page at a
/// time, into owned values (no decoding).
fn raw_read_all(path: PathBuf) -> ReadBaseline {
    let connection = Arc::new(Mutex::new(raw_connection(&path)));
    ReadBaseline {
        all: "all_10000_pages_of_1000_raw_rusqlite",
        read: Arc::new(move |page| {
            let connection = connection.clone();
            Box::pin(async move {
                let connection = connection.lock().expect("the raw connection");
                let mut read = connection
                    .prepare_cached(
                        "SELECT event_id, stream_id, version, position, event_type, \
                         schema_version, payload, metadata, recorded_at FROM flext_events \
                         WHERE position >= ? ORDER BY position LIMIT ?",
                    )
                    .expect("the raw read prepares");
                let (mut from, mut total) = (1i64, 0u64);
                loop {
                    let rows: Vec<RawRow> = read
                        .query_map(params![from, page as i64], |row| {
                            Ok((
                                row.get(0)?,
                                row.get(1)?,
                                row.get(2)?,
                                row.get(3)?,
                                row.get(4)?,
                                row.get(5)?,
                                row.get(6)?,
                                row.get(7)?,
                                row.get(8)?,
                            ))
                        })
                        .expect("the raw read runs")
                        .collect::<Result<_, _>>()
                        .expect("the raw rows read");
                    let Some(last) = rows.last() else {
                        return total;
                    };
                    from = last.3 + 1;
                    total += rows.len() as u64;
                }
            })
        }),
    }
}

fn appends(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(store(&scratch("appends").join("events.db")));
    let raw = raw_baseline(raw_database("appends"));
    bench::appends(c, &rt, "sqlite_append", store, &[raw]);
}

/// 1 to 16 writers, each appending single events to a stream of its own, beside raw
/// rusqlite inserts taking turns on one connection: appends per second against writers
/// (group commit lets the store's one writer thread commit many writers' appends at once).
fn writers(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(store(&scratch("writers").join("events.db")));
    let raw = raw_baseline(raw_database("writers"));
    bench::writers(
        c,
        &rt,
        "sqlite_writers",
        store,
        &[("raw_rusqlite", raw.insert)],
        &[1, 2, 4, 8, 16],
    );
}

fn reads(c: &mut Criterion) {
    let rt = runtime();
    let path = scratch("reads").join("events.db");
    let store = rt.block_on(store(&path));
    bench::reads_beside(c, &rt, "sqlite_read", store, &[raw_read_all(path)]);
}

criterion_group!(benches, appends, writers, reads);
criterion_main!(benches);
