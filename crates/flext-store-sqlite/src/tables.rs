//! The SQL of the contracts `flext-store` writes once for every SQL store (reads,
//! snapshots, checkpoints, dead letters, subscriptions), and the calls that run it.

use std::time::Duration;

use async_trait::async_trait;
use flext_store::{Arg, HeadSignal, SqlConnection, SqlRow, SqlTables, Statements, StoreLimits};
use flext_types::{FlextError, FlextResult};
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Arguments, Row as _};

use crate::SqliteEventStore;
use crate::schema::DATABASE;

/// Sets `name`'s checkpoint; [`SqliteEventStore::save_checkpoint_in`] runs it too.
pub(crate) const SAVE_CHECKPOINT: &str = "INSERT INTO flext_checkpoints (name, position) VALUES (?, ?) \
     ON CONFLICT (name) DO UPDATE SET position = excluded.position";

pub(crate) static STATEMENTS: Statements = Statements {
    database: DATABASE,
    read_stream: "SELECT event_id, stream_id, version, position, event_type, schema_version, \
                  payload, metadata, recorded_at FROM flext_events \
                  WHERE stream_id = ? AND version >= ? ORDER BY version LIMIT ?",
    read_all: "SELECT event_id, stream_id, version, position, event_type, schema_version, \
               payload, metadata, recorded_at FROM flext_events \
               WHERE position >= ? ORDER BY position LIMIT ?",
    stream_version: "SELECT COALESCE(MAX(version), 0) FROM flext_events WHERE stream_id = ?",
    version_and_head: "SELECT (SELECT COALESCE(MAX(version), 0) FROM flext_events \
                       WHERE stream_id = ?), (SELECT COALESCE(MAX(position), 0) FROM flext_events)",
    head_position: "SELECT COALESCE(MAX(position), 0) FROM flext_events",
    save_snapshot: "INSERT INTO flext_snapshots (stream_id, version, schema_version, payload, taken_at) \
                    VALUES (?, ?, ?, ?, ?) \
                    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
                    schema_version = excluded.schema_version, payload = excluded.payload, \
                    taken_at = excluded.taken_at WHERE excluded.version >= flext_snapshots.version",
    load_snapshot: "SELECT version, schema_version, payload, taken_at FROM flext_snapshots \
                    WHERE stream_id = ?",
    load_checkpoint: "SELECT position FROM flext_checkpoints WHERE name = ?",
    save_checkpoint: SAVE_CHECKPOINT,
    add_dead_letter: "INSERT OR REPLACE INTO flext_dead_letters (name, position, letter) \
                      VALUES (?, ?, ?)",
    dead_letters: "SELECT letter FROM flext_dead_letters WHERE name = ? ORDER BY position",
    remove_dead_letter: "DELETE FROM flext_dead_letters WHERE name = ? AND position = ? \
                         RETURNING position",
    reset: [
        "DELETE FROM flext_checkpoints WHERE name = ?",
        "DELETE FROM flext_dead_letters WHERE name = ?",
    ],
    stored_places: "SELECT event_id, stream_id, version, position FROM flext_events \
                    WHERE event_id IN (SELECT value FROM json_each(?))",
    place_run: "SELECT event_id, stream_id, version, position FROM flext_events \
                WHERE stream_id = ? AND version >= ? ORDER BY version LIMIT ?",
};

flext_store::sql_store_contracts!(SqliteEventStore);

impl SqliteEventStore {
    /// The store as the shared contract code sees it.
    pub(crate) fn tables(&self) -> Tables<'_> {
        Tables(self)
    }
}

/// The store as the shared contract code sees it: the SQL above, run on its pool.
pub(crate) struct Tables<'s>(&'s SqliteEventStore);

/// One of the store's connections (maybe in its append's transaction), for `find_retry`.
pub(crate) struct Connection<'c>(
    pub(crate) &'c SqliteEventStore,
    pub(crate) &'c mut SqliteConnection,
);

impl SqlConnection for Connection<'_> {
    type Row = Row;

    async fn fetch(&mut self, what: &str, sql: &str, args: &[Arg<'_>]) -> FlextResult<Vec<Row>> {
        let query = sqlx::query_with(sql, arguments(args)?);
        let rows = query.fetch_all(&mut *self.1).await;
        Ok(rows
            .map_err(|e| self.0.fail(what, e))?
            .into_iter()
            .map(Row)
            .collect())
    }
}

/// A row from SQLite's driver.
pub(crate) struct Row(SqliteRow);

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

/// `args` bound in order.
fn arguments<'a>(args: &[Arg<'a>]) -> FlextResult<SqliteArguments<'a>> {
    let mut bound = SqliteArguments::default();
    for arg in args {
        match *arg {
            Arg::Int(value) => bound.add(value),
            Arg::Text(value) => bound.add(value),
        }
        .map_err(|e| FlextError::invalid_argument(format!("An argument does not bind: {e}")))?;
    }
    Ok(bound)
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
        let Self(store) = self;
        let rows = sqlx::query_with(sql, arguments(args)?)
            .fetch_all(&store.inner.pool)
            .await
            .map_err(|e| store.fail(what, e))?;
        Ok(rows.into_iter().map(Row).collect())
    }

    async fn execute(&self, what: &str, statements: &[&str], args: &[Arg<'_>]) -> FlextResult<()> {
        let Self(store) = self;
        let fail = |e| store.fail(what, e);
        // One statement commits by itself; several share a transaction.
        if let [sql] = statements {
            let query = sqlx::query_with(sql, arguments(args)?);
            return query
                .execute(&store.inner.pool)
                .await
                .map(drop)
                .map_err(fail);
        }
        let mut tx = store.inner.pool.begin().await.map_err(fail)?;
        for sql in statements {
            let query = sqlx::query_with(sql, arguments(args)?);
            query.execute(&mut *tx).await.map_err(fail)?;
        }
        tx.commit().await.map_err(fail)
    }

    fn unreadable(&self, what: &str, error: FlextError) -> FlextError {
        self.0.fail_with(what, error)
    }
}
