//! SQLite transactional projection catch-up: a `SqliteProjectionRunner` rebuilds a read
//! model of balances from the first of 5000 events over 100 streams, in batches of 1000
//! (each batch and its checkpoint in one transaction), writing one statement per event or
//! one per batch. The same work as the PostgreSQL benchmark's `postgres_projection` group.
//!
//! `cargo bench -p flext-store-sqlite --bench projection`. The database file lives in a
//! temporary directory, with the store's settings (WAL, `synchronous = NORMAL`).

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use flext_store_sqlite::sqlx::{self, Executor, QueryBuilder, Sqlite, Transaction};
use flext_store_sqlite::{SqliteEventStore, SqliteProjection, SqliteProjectionRunner};
use flext_testing::bench::{self, runtime};
use flext_testing::workload;
use flext_types::{FlextError, FlextResult, StoredEvent};
use serde::Deserialize;

/// Events the projection catches up on, per rebuild.
const PROJECTED: u64 = 5_000;

/// The streams (accounts) those events are spread over: the rows the projection updates.
const ACCOUNTS: u64 = 100;

/// A deposit's amount, all a balance needs of its payload.
#[derive(Deserialize)]
struct Deposit {
    amount: i64,
}

/// Balances per account (stream): each event adds its amount to its account's row.
/// `batched` writes a batch in one statement, otherwise one statement per event.
struct Balances {
    name: &'static str,
    table: &'static str,
    batched: bool,
}

fn failed(error: sqlx::Error) -> FlextError {
    FlextError::storage(error.to_string())
}

#[async_trait]
impl SqliteProjection for Balances {
    fn name(&self) -> &str {
        self.name
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        event: &StoredEvent,
    ) -> FlextResult<()> {
        let deposit: Deposit = event.payload.decode()?;
        let upsert = format!(
            "INSERT INTO {0} (account, balance, events) VALUES (?, ?, 1) \
             ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance, \
             events = events + 1",
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
        tx: &mut Transaction<'_, Sqlite>,
        events: &[StoredEvent],
    ) -> FlextResult<()> {
        if !self.batched {
            for event in events {
                self.apply(tx, event).await?;
            }
            return Ok(());
        }
        // One row per account, as PostgreSQL's `GROUP BY` makes them.
        let mut sums: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for event in events {
            let amount = event.payload.decode::<Deposit>()?.amount;
            let sum = sums.entry(&event.stream_id).or_default();
            *sum = (sum.0 + amount, sum.1 + 1);
        }
        if sums.is_empty() {
            return Ok(());
        }
        let mut upsert = QueryBuilder::<Sqlite>::new(format!(
            "INSERT INTO {} (account, balance, events) ",
            self.table
        ));
        upsert.push_values(sums, |mut row, (account, (balance, count))| {
            row.push_bind(account).push_bind(balance).push_bind(count);
        });
        upsert.push(
            " ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance, \
             events = events + excluded.events",
        );
        upsert
            .build()
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn reset(&self, tx: &mut Transaction<'_, Sqlite>) -> FlextResult<()> {
        sqlx::query(&format!("DELETE FROM {}", self.table))
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(failed)
    }
}

fn projection(c: &mut Criterion) {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!(
        "flext-sqlite-bench-projection-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp directory is writable");
    let store = rt.block_on(async {
        let store = SqliteEventStore::open(dir.join("events.db"))
            .await
            .expect("the store opens");
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
                        "CREATE TABLE {table} (account TEXT PRIMARY KEY, balance INTEGER NOT NULL, \
                         events INTEGER NOT NULL)"
                    )
                    .as_str(),
                )
                .await
                .expect("the read model's table is created");
        }
        store
    });
    let mut group = c.benchmark_group("sqlite_projection");
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
            SqliteProjectionRunner::new(
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
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, projection);
criterion_main!(benches);
