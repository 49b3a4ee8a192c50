//! PostgreSQL store throughput: single appends (sequential, and 1 to 16 writers on streams
//! of their own), batched appends of 100, stream reads and read-all, beside the same inserts
//! with raw sqlx on a table of the same shape (the physical limit: a multi-row insert, and
//! for batches also one `UNNEST` insert) and with cqrs-es's `postgres-es` event repository;
//! and a transactional projection catching up (`PostgresProjectionRunner`), updating one row
//! per event, with one statement per event and with one per batch.
//!
//! `FLEXT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p
//! flext-store-postgres`; without the variable it says so and measures nothing. Each run
//! works in schemas of its own and drops them at the end.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use criterion::{Criterion, criterion_group, criterion_main};
use criterion::{SamplingMode, Throughput};
use flext_protocols::EventStore;
use flext_store_postgres::{
    PostgresEventStore, PostgresProjection, PostgresProjectionRunner, PostgresStoreOptions,
};
use flext_testing::bench::{self, Baseline, Insert, runtime};
use flext_testing::workload;
use flext_types::{FlextError, FlextResult, StoredEvent};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Postgres, QueryBuilder, Transaction};

/// Connections of every pool here: enough for 16 writers, with the store's two kept for
/// reads and checkpoints.
const CONNECTIONS: u32 = 20;

/// The writer counts of `postgres_writers`.
const WRITER_COUNTS: [u64; 5] = [1, 2, 4, 8, 16];

/// Events a transactional projection catches up on in `postgres_projection`.
const PROJECTED: u64 = 5_000;

/// The streams (accounts) those events are spread over: the rows the projection updates.
const ACCOUNTS: u64 = 100;

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
    Arc::new(postgres_store(url, name).await)
}

async fn postgres_store(url: &str, name: &str) -> PostgresEventStore {
    let options = PostgresStoreOptions::new(url)
        .with_schema(schema(name))
        .with_max_connections(CONNECTIONS);
    PostgresEventStore::connect_with(options)
        .await
        .expect("the store connects")
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
        .max_connections(CONNECTIONS)
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
            event_id UUID NOT NULL UNIQUE,
            stream_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            event_type TEXT NOT NULL,
            schema_version BIGINT NOT NULL,
            payload JSONB NOT NULL,
            metadata JSONB NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL,
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
            .push_unseparated("::uuid")
            .push_bind(stream)
            .push_bind(next as i64)
            .push_bind(&event.event_type)
            .push_bind(i64::from(event.schema_version))
            .push_bind(event.payload.as_str())
            .push_unseparated("::jsonb")
            .push_bind("{}")
            .push_unseparated("::jsonb")
            .push_bind("2026-01-01T00:00:00Z")
            .push_unseparated("::timestamptz");
    });
    insert
        .build()
        .execute(pool)
        .await
        .expect("the raw insert succeeds");
}

/// Inserts `count` rows into `stream` after `version` with one `INSERT … SELECT FROM
/// UNNEST` of column arrays (autocommit): the shape of the store's own append, without
/// its checks.
async fn raw_unnest(pool: &PgPool, stream: &str, version: u64, count: u64) {
    let events = workload::events(version, count).expect("benchmark events");
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    let versions: Vec<i64> = (version + 1..=version + count).map(|v| v as i64).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    sqlx::query(
        "INSERT INTO raw_events (event_id, stream_id, version, event_type, schema_version, \
         payload, metadata, recorded_at) \
         SELECT r.event_id::uuid, $1, r.version, r.event_type, 1, r.payload::jsonb, '{}', \
                '2026-01-01T00:00:00Z' \
         FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[]) \
              AS r(event_id, version, event_type, payload)",
    )
    .bind(stream)
    .bind(&ids)
    .bind(&versions)
    .bind(&types)
    .bind(&payloads)
    .execute(pool)
    .await
    .expect("the raw UNNEST insert succeeds");
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
        insert: raw_inserts(pool),
    }
}

fn raw_inserts(pool: PgPool) -> Insert {
    Arc::new(move |stream, version, count| {
        let pool = pool.clone();
        Box::pin(async move { raw_insert(&pool, &stream, version, count).await })
    })
}

/// Raw sqlx `UNNEST` inserts into the baseline table.
fn unnest_baseline(pool: PgPool) -> Baseline {
    Baseline {
        single: "single/raw_unnest",
        writers: None,
        batch: "batch_100/raw_unnest",
        insert: Arc::new(move |stream, version, count| {
            let pool = pool.clone();
            // The multi-row baseline writes the same stream names to the same table.
            let stream = format!("unnest-{stream}");
            Box::pin(async move { raw_unnest(&pool, &stream, version, count).await })
        }),
    }
}

/// postgres-es persisting the same events, one call per insert.
fn postgres_es_baseline(repository: PostgresEventRepository) -> Baseline {
    Baseline {
        single: "single/postgres_es",
        writers: Some("single_8_writers/postgres_es"),
        batch: "batch_100/postgres_es",
        insert: postgres_es_inserts(repository),
    }
}

fn postgres_es_inserts(repository: PostgresEventRepository) -> Insert {
    let repository = Arc::new(repository);
    Arc::new(move |stream, sequence, count| {
        let repository = repository.clone();
        Box::pin(async move {
            repository
                .persist::<Account>(&serialized(&stream, sequence, count), None)
                .await
                .expect("postgres-es persists");
        })
    })
}

fn appends(c: &mut Criterion) {
    let Some(url) = server() else {
        return;
    };
    let rt = runtime();
    let store = rt.block_on(store(&url, "appends"));
    let pool = rt.block_on(raw_pool(&url));
    let raw = raw_baseline(pool.clone());
    let unnest = unnest_baseline(pool);
    let pges = postgres_es_baseline(rt.block_on(postgres_es_repository(&url)));
    bench::appends(c, &rt, "postgres_append", store, &[raw, unnest, pges]);
}

/// 1, 2, 4, 8 and 16 writers on streams of their own, side by side.
fn writers(c: &mut Criterion) {
    let Some(url) = server() else {
        return;
    };
    let rt = runtime();
    let store = rt.block_on(store(&url, "writers"));
    let raw = raw_inserts(rt.block_on(raw_pool(&url)));
    let pges = postgres_es_inserts(rt.block_on(postgres_es_repository(&url)));
    bench::writers(
        c,
        &rt,
        "postgres_writers",
        store,
        &[("raw_sqlx", raw), ("postgres_es", pges)],
        &WRITER_COUNTS,
    );
}

/// A deposit's amount, all a balance needs of its payload.
#[derive(Deserialize)]
struct Deposit {
    amount: i64,
}

/// Balances per account (stream) in a table of the store's database: each event adds its
/// amount to its account's row. `batched` writes a batch in one statement, otherwise one
/// statement per event.
struct Balances {
    name: &'static str,
    table: &'static str,
    batched: bool,
}

fn failed(error: sqlx::Error) -> FlextError {
    FlextError::storage(error.to_string())
}

#[async_trait]
impl PostgresProjection for Balances {
    fn name(&self) -> &str {
        self.name
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &StoredEvent,
    ) -> FlextResult<()> {
        let deposit: Deposit = event.payload.decode()?;
        let upsert = format!(
            "INSERT INTO {0} (account, balance, events) VALUES ($1, $2, 1) \
             ON CONFLICT (account) DO UPDATE SET balance = {0}.balance + excluded.balance, \
             events = {0}.events + 1",
            self.table
        );
        sqlx::query(&upsert)
            .bind(&*event.stream_id)
            .bind(deposit.amount)
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn apply_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[StoredEvent],
    ) -> FlextResult<()> {
        if !self.batched {
            for event in events {
                self.apply(tx, event).await?;
            }
            return Ok(());
        }
        let mut accounts = Vec::with_capacity(events.len());
        let mut amounts = Vec::with_capacity(events.len());
        for event in events {
            accounts.push(&*event.stream_id);
            amounts.push(event.payload.decode::<Deposit>()?.amount);
        }
        let upsert = format!(
            "INSERT INTO {0} (account, balance, events) \
             SELECT account, SUM(amount), COUNT(*) \
             FROM UNNEST($1::text[], $2::bigint[]) AS e(account, amount) GROUP BY account \
             ON CONFLICT (account) DO UPDATE SET balance = {0}.balance + excluded.balance, \
             events = {0}.events + excluded.events",
            self.table
        );
        sqlx::query(&upsert)
            .bind(&accounts)
            .bind(&amounts)
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn reset(&self, tx: &mut Transaction<'_, Postgres>) -> FlextResult<()> {
        sqlx::query(&format!("DELETE FROM {}", self.table))
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(failed)
    }
}

/// A transactional projection rebuilt from the first of `PROJECTED` events, in batches of
/// 1000 (one transaction each, with its checkpoint).
fn projection(c: &mut Criterion) {
    let Some(url) = server() else {
        return;
    };
    let rt = runtime();
    let store = rt.block_on(async {
        let store = postgres_store(&url, "projection").await;
        for account in 0..ACCOUNTS {
            workload::append_in_batches(&store, &format!("acc-{account}"), 1, PROJECTED / ACCOUNTS)
                .await
                .expect("the events are appended");
        }
        for table in ["balances_per_event", "balances_batched"] {
            store
                .pool()
                .execute(
                    format!(
                        "CREATE TABLE {table} (account TEXT PRIMARY KEY, balance BIGINT NOT NULL, \
                         events BIGINT NOT NULL)"
                    )
                    .as_str(),
                )
                .await
                .expect("the read model's table is created");
        }
        store
    });
    let mut group = c.benchmark_group("postgres_projection");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(PROJECTED));
    for (id, name, table, batched) in [
        (
            "catch_up/one_statement_per_event",
            "per-event",
            "balances_per_event",
            false,
        ),
        (
            "catch_up/one_statement_per_batch",
            "batched",
            "balances_batched",
            true,
        ),
    ] {
        let runner = Arc::new(
            PostgresProjectionRunner::new(
                store.clone(),
                Arc::new(Balances {
                    name,
                    table,
                    batched,
                }),
            )
            .with_batch_size(1_000),
        );
        bench::timed(&mut group, &rt, id, |_, iters| {
            let runner = runner.clone();
            async move {
                for _ in 0..iters {
                    let progress = runner.rebuild().await.expect("the projection rebuilds");
                    assert_eq!(progress.applied, PROJECTED);
                }
            }
        });
    }
    group.finish();
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
        for name in ["appends", "writers", "projection", "reads", "raw", "pges"] {
            admin
                .execute(format!("DROP SCHEMA IF EXISTS {} CASCADE", schema(name)).as_str())
                .await
                .expect("the schema is dropped");
        }
    });
}

criterion_group!(benches, appends, writers, projection, reads, cleanup);
criterion_main!(benches);
