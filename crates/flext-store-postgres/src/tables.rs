//! The SQL of the contracts `flext-store` writes once for every SQL store (reads,
//! snapshots, checkpoints, dead letters, subscriptions), and the calls that run it.

use std::time::Duration;

use async_trait::async_trait;
use flext_store::{Arg, HeadSignal, SqlConnection, SqlRow, SqlTables, Statements, StoreLimits};
use flext_types::{FlextError, FlextResult};
use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::{Arguments, Row as _};

use crate::PostgresEventStore;
use crate::schema::DATABASE;

/// Sets `name`'s checkpoint; [`PostgresEventStore::save_checkpoint_in`] runs it too.
pub(crate) const SAVE_CHECKPOINT: &str = "INSERT INTO flext_checkpoints (name, position) \
     VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET position = excluded.position";

pub(crate) static STATEMENTS: Statements = Statements {
    database: DATABASE,
    read_stream: "SELECT event_id, stream_id, version, position, event_type, schema_version, \
                  payload, metadata, recorded_at FROM flext_events \
                  WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3",
    read_all: "SELECT event_id, stream_id, version, position, event_type, schema_version, \
               payload, metadata, recorded_at FROM flext_events \
               WHERE position >= $1 ORDER BY position LIMIT $2",
    stream_version: "SELECT COALESCE(MAX(version), 0) FROM flext_events WHERE stream_id = $1",
    version_and_head: "SELECT (SELECT COALESCE(MAX(version), 0) FROM flext_events \
                       WHERE stream_id = $1), (SELECT COALESCE(MAX(position), 0) FROM flext_events)",
    head_position: "SELECT COALESCE(MAX(position), 0) FROM flext_events",
    save_snapshot: "INSERT INTO flext_snapshots (stream_id, version, schema_version, payload, taken_at) \
                    VALUES ($1, $2, $3, $4, $5) \
                    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
                    schema_version = excluded.schema_version, payload = excluded.payload, \
                    taken_at = excluded.taken_at WHERE excluded.version >= flext_snapshots.version",
    load_snapshot: "SELECT version, schema_version, payload, taken_at FROM flext_snapshots \
                    WHERE stream_id = $1",
    load_checkpoint: "SELECT position FROM flext_checkpoints WHERE name = $1",
    save_checkpoint: SAVE_CHECKPOINT,
    add_dead_letter: "INSERT INTO flext_dead_letters (name, position, letter) VALUES ($1, $2, $3) \
                      ON CONFLICT (name, position) DO UPDATE SET letter = excluded.letter",
    dead_letters: "SELECT letter FROM flext_dead_letters WHERE name = $1 ORDER BY position",
    remove_dead_letter: "DELETE FROM flext_dead_letters WHERE name = $1 AND position = $2 \
                         RETURNING position",
    reset: [
        "DELETE FROM flext_checkpoints WHERE name = $1",
        "DELETE FROM flext_dead_letters WHERE name = $1",
    ],
    stored_places: "SELECT event_id, stream_id, version, position FROM flext_events \
                    WHERE event_id IN (SELECT jsonb_array_elements_text($1::jsonb))",
    place_run: "SELECT event_id, stream_id, version, position FROM flext_events \
                WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3",
};

flext_store::sql_store_contracts!(PostgresEventStore);

impl PostgresEventStore {
    /// The store as the shared contract code sees it.
    pub(crate) fn tables(&self) -> Tables<'_> {
        Tables(self)
    }
}

/// The store as the shared contract code sees it: the SQL above, run on its pool (whose
/// connections use the store's schema).
pub(crate) struct Tables<'s>(&'s PostgresEventStore);

/// One of the store's connections (maybe in its append's transaction), for `find_retry`.
pub(crate) struct Connection<'c>(
    pub(crate) &'c PostgresEventStore,
    pub(crate) &'c mut PgConnection,
);

impl SqlConnection for Connection<'_> {
    type Row = Row;

    async fn fetch(&mut self, what: &str, sql: &str, args: &[Arg<'_>]) -> FlextResult<Vec<Row>> {
        let mut bound = PgArguments::default();
        bind(&mut bound, args)?;
        match sqlx::query_with(sql, bound).fetch_all(&mut *self.1).await {
            Ok(rows) => Ok(rows.into_iter().map(Row).collect()),
            Err(error) => Err(self.0.fail(what, error)),
        }
    }
}

/// A row from PostgreSQL's driver; every integer column is a `BIGINT`.
pub(crate) struct Row(PgRow);

impl SqlRow for Row {
    fn int(&self, index: usize) -> FlextResult<i64> {
        self.0.try_get(index).map_err(unreadable)
    }

    fn text(&self, index: usize) -> FlextResult<String> {
        self.0.try_get(index).map_err(unreadable)
    }
}

fn unreadable(error: sqlx::Error) -> FlextError {
    FlextError::serialization(error.to_string()).with_source(error)
}

#[async_trait]
impl SqlTables for Tables<'_> {
    type Row = Row;

    fn statements(&self) -> &'static Statements {
        &STATEMENTS
    }

    fn head(&self) -> &HeadSignal {
        &self.0.inner.head
    }

    fn poll_interval(&self) -> Duration {
        self.0.inner.poll_interval
    }

    fn limits(&self) -> &StoreLimits {
        &self.0.inner.limits
    }

    async fn fetch(&self, what: &str, sql: &str, args: &[Arg<'_>]) -> FlextResult<Vec<Row>> {
        let mut bound = PgArguments::default();
        bind(&mut bound, args)?;
        match sqlx::query_with(sql, bound)
            .fetch_all(&self.0.inner.pool)
            .await
        {
            Ok(rows) => Ok(rows.into_iter().map(Row).collect()),
            Err(error) => Err(self.0.fail(what, error)),
        }
    }

    async fn execute(&self, what: &str, statements: &[&str], args: &[Arg<'_>]) -> FlextResult<()> {
        let mut connection = match statements.len() {
            // One statement commits by itself; several share a transaction.
            1 => self.0.inner.pool.acquire().await.map(sqlx::Either::Left),
            _ => self.0.inner.pool.begin().await.map(sqlx::Either::Right),
        }
        .map_err(|e| self.0.fail(what, e))?;
        for sql in statements {
            let mut bound = PgArguments::default();
            bind(&mut bound, args)?;
            let query = sqlx::query_with(sql, bound);
            let done = match &mut connection {
                sqlx::Either::Left(single) => query.execute(&mut **single).await,
                sqlx::Either::Right(tx) => query.execute(&mut **tx).await,
            };
            done.map_err(|e| self.0.fail(what, e))?;
        }
        match connection {
            sqlx::Either::Right(tx) => tx.commit().await.map_err(|e| self.0.fail(what, e)),
            sqlx::Either::Left(_) => Ok(()),
        }
    }
    fn unreadable(&self, what: &str, error: FlextError) -> FlextError {
        self.0.fail_with(what, error)
    }
}

/// Adds `args` to `bound`, in order.
fn bind<'a>(bound: &mut PgArguments, args: &[Arg<'a>]) -> FlextResult<()> {
    args.iter().try_for_each(|arg| {
        let added = match *arg {
            Arg::Int(value) => bound.add(value),
            Arg::Text(value) => bound.add(value),
        };
        added.map_err(|e| FlextError::invalid_argument(format!("An argument does not bind: {e}")))
    })
}
