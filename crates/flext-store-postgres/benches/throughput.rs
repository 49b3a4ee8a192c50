//! PostgreSQL store throughput: single appends (sequential, and 8 writers on streams of
//! their own), batched appends of 100, stream reads and read-all, beside the same inserts
//! with raw sqlx on a table of the same shape (the physical limit) and with cqrs-es's
//! `postgres-es` event repository.
//!
//! `FLEXT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p
//! flext-store-postgres`; without the variable it says so and measures nothing. Each run
//! works in schemas of its own and drops them at the end.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::sync::Arc;

use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use criterion::{Criterion, criterion_group, criterion_main};
use flext_protocols::EventStore;
use flext_store_postgres::{PostgresEventStore, PostgresStoreOptions};
use flext_testing::bench::{self, Baseline, runtime};
use flext_testing::workload;
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Postgres, QueryBuilder};

fn server() -> Option<String> {
    let url = std::env::var("FLEXT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipped: FLEXT_TEST_POSTGRES_URL is not set");
    }
    url
}

fn schema(name: &str) -> String {
    format!("flext_bench_{name}_{}", std::process::id())
}

async fn store(url: &str, name: &str) -> Arc<dyn EventStore> {
    let options = PostgresStoreOptions::new(url).with_schema(schema(name));
    Arc::new(
        PostgresEventStore::connect_with(options)
            .await
            .expect("the store connects"),
    )
}

/// A pool whose connections work in `schema`, created empty.
async fn pool_in(url: &str, schema: &str) -> PgPool {
    let admin = PgPool::connect(url).await.expect("the server is reachable");
    admin
        .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}").as_str())
        .await
        .expect("the schema is created");
    let search_path = format!("SET search_path TO {schema}");
    PgPoolOptions::new()
        .max_connections(10)
        .after_connect(move |connection, _| {
            let search_path = search_path.clone();
            Box::pin(async move {
                connection.execute(search_path.as_str()).await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .expect("the pool connects")
}

/// The raw baseline: a table shaped like the store's.
async fn raw_pool(url: &str) -> PgPool {
    let pool = pool_in(url, &schema("raw")).await;
    pool.execute(
        "CREATE TABLE raw_events (
            position BIGSERIAL PRIMARY KEY,
            event_id TEXT NOT NULL UNIQUE,
            stream_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            event_type TEXT NOT NULL,
            schema_version BIGINT NOT NULL,
            payload TEXT NOT NULL,
            metadata TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            UNIQUE (stream_id, version)
        )",
    )
    .await
    .expect("the raw table is created");
    pool
}

/// Inserts `count` rows into `stream` after `version`, in one statement (autocommit).
async fn raw_insert(pool: &PgPool, stream: &str, version: u64, count: u64) {
    let events = workload::events(version, count).expect("benchmark events");
    let mut insert = QueryBuilder::<Postgres>::new(
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

/// The aggregate postgres-es needs to name its events' type; only `TYPE` matters here.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Deposited;

impl cqrs_es::DomainEvent for Deposited {
    fn event_type(&self) -> String {
        "Deposited".to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

impl cqrs_es::Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = ();
    type Event = Deposited;
    type Error = Never;
    type Services = ();

    async fn handle(
        &mut self,
        _command: (),
        _services: &(),
        _sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Never> {
        Ok(())
    }

    fn apply(&mut self, _event: Deposited) {}
}

async fn postgres_es_repository(url: &str) -> PostgresEventRepository {
    let pool = pool_in(url, &schema("pges")).await;
    pool.execute(
        "CREATE TABLE events (
            aggregate_type text NOT NULL,
            aggregate_id text NOT NULL,
            sequence bigint CHECK (sequence >= 0) NOT NULL,
            event_type text NOT NULL,
            event_version text NOT NULL,
            payload json NOT NULL,
            metadata json NOT NULL,
            PRIMARY KEY (aggregate_type, aggregate_id, sequence)
        );
        CREATE TABLE snapshots (
            aggregate_type text NOT NULL,
            aggregate_id text NOT NULL,
            last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
            current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
            payload json NOT NULL,
            PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
        )",
    )
    .await
    .expect("the postgres-es tables are created");
    PostgresEventRepository::new(pool)
}

/// `count` events for postgres-es, after `sequence`.
fn serialized(stream: &str, sequence: u64, count: u64) -> Vec<SerializedEvent> {
    workload::events(sequence, count)
        .expect("benchmark events")
        .into_iter()
        .zip(sequence + 1..)
        .map(|(event, sequence)| SerializedEvent {
            aggregate_id: stream.to_owned(),
            sequence: sequence as usize,
            aggregate_type: "Account".to_owned(),
            event_type: event.event_type,
            event_version: "1".to_owned(),
            payload: serde_json::from_str(event.payload.as_str()).expect("JSON"),
            metadata: serde_json::json!({}),
        })
        .collect()
}

/// Raw sqlx inserts into the baseline table.
fn raw_baseline(pool: PgPool) -> Baseline {
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

/// postgres-es persisting the same events, one call per insert.
fn postgres_es_baseline(repository: PostgresEventRepository) -> Baseline {
    let repository = Arc::new(repository);
    Baseline {
        single: "single/postgres_es",
        writers: Some("single_8_writers/postgres_es"),
        batch: "batch_100/postgres_es",
        insert: Arc::new(move |stream, sequence, count| {
            let repository = repository.clone();
            Box::pin(async move {
                repository
                    .persist::<Account>(&serialized(&stream, sequence, count), None)
                    .await
                    .expect("postgres-es persists");
            })
        }),
    }
}

fn appends(c: &mut Criterion) {
    let Some(url) = server() else {
        return;
    };
    let rt = runtime();
    let store = rt.block_on(store(&url, "appends"));
    let raw = raw_baseline(rt.block_on(raw_pool(&url)));
    let pges = postgres_es_baseline(rt.block_on(postgres_es_repository(&url)));
    bench::appends(c, &rt, "postgres_append", store, &[raw, pges]);
}

fn reads(c: &mut Criterion) {
    let Some(url) = server() else {
        return;
    };
    let rt = runtime();
    let store = rt.block_on(store(&url, "reads"));
    bench::reads(c, &rt, "postgres_read", store);
}

/// Drops the schemas this run made.
fn cleanup(_: &mut Criterion) {
    let Some(url) = server() else {
        return;
    };
    runtime().block_on(async {
        let admin = PgPool::connect(&url)
            .await
            .expect("the server is reachable");
        for name in ["appends", "reads", "raw", "pges"] {
            admin
                .execute(format!("DROP SCHEMA IF EXISTS {} CASCADE", schema(name)).as_str())
                .await
                .expect("the schema is dropped");
        }
    });
}

criterion_group!(benches, appends, reads, cleanup);
criterion_main!(benches);
