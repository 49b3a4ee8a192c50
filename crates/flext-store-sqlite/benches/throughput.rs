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
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flext_protocols::EventStore;
use flext_store_sqlite::{SqliteEventStore, SqliteStoreOptions};
use flext_testing::workload;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};
use tokio::runtime::Runtime;

const WRITERS: u64 = 8;
const BATCH: u64 = 100;
const STREAM_LEN: u64 = 1_000;
const READ_ALL_EVENTS: u64 = 10_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

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
    let options = SqliteStoreOptions::new(path.to_string_lossy().into_owned());
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

/// Times `work(round, iters)` as one criterion sample; `round` numbers the samples so each
/// writes to streams of its own.
fn timed<F, Fut>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    id: &str,
    mut work: F,
) where
    F: FnMut(u64, u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut round = 0;
    group.bench_function(id, |b| {
        b.to_async(rt).iter_custom(|iters| {
            round += 1;
            let work = work(round, iters);
            async move {
                let start = Instant::now();
                work.await;
                start.elapsed()
            }
        });
    });
}

fn appends(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(store("appends"));
    let raw = rt.block_on(raw_pool("appends"));
    let mut group = c.benchmark_group("sqlite_append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(1));
    timed(&mut group, &rt, "single/flext", |round, iters| {
        let store = store.clone();
        async move {
            workload::append_one_by_one(&*store, &format!("single-{round}"), iters)
                .await
                .expect("appends succeed");
        }
    });
    timed(&mut group, &rt, "single/raw_sqlx", |round, iters| {
        let raw = raw.clone();
        async move {
            let stream = format!("single-{round}");
            for version in 0..iters {
                raw_insert(&raw, &stream, version, 1).await;
            }
        }
    });

    group.throughput(Throughput::Elements(WRITERS));
    timed(&mut group, &rt, "single_8_writers/flext", |round, iters| {
        let store = store.clone();
        async move {
            workload::append_concurrently(store, &format!("writers-{round}"), WRITERS, iters)
                .await
                .expect("appends succeed");
        }
    });

    group.throughput(Throughput::Elements(BATCH));
    timed(&mut group, &rt, "batch_100/flext", |round, iters| {
        let store = store.clone();
        async move {
            workload::append_in_batches(&*store, &format!("batch-{round}"), iters, BATCH)
                .await
                .expect("appends succeed");
        }
    });
    timed(&mut group, &rt, "batch_100/raw_sqlx", |round, iters| {
        let raw = raw.clone();
        async move {
            let stream = format!("batch-{round}");
            for batch in 0..iters {
                raw_insert(&raw, &stream, batch * BATCH, BATCH).await;
            }
        }
    });
    group.finish();
}

fn reads(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(store("reads"));
    rt.block_on(async {
        workload::append_in_batches(&*store, "long", STREAM_LEN / BATCH, BATCH).await?;
        workload::append_in_batches(
            &*store,
            "other",
            (READ_ALL_EVENTS - STREAM_LEN) / BATCH,
            BATCH,
        )
        .await
    })
    .expect("the read fixture is written");
    let mut group = c.benchmark_group("sqlite_read");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(STREAM_LEN));
    group.bench_function("stream_1000", |b| {
        b.to_async(&rt).iter(|| async {
            assert_eq!(
                workload::read_stream(&*store, "long").await.ok(),
                Some(STREAM_LEN)
            );
        });
    });
    group.throughput(Throughput::Elements(READ_ALL_EVENTS));
    group.bench_function("all_10000_pages_of_1000", |b| {
        b.to_async(&rt).iter(|| async {
            assert_eq!(
                workload::read_all(&*store, 1_000).await.ok(),
                Some(READ_ALL_EVENTS)
            );
        });
    });
    group.finish();
}

criterion_group!(benches, appends, reads);
criterion_main!(benches);
