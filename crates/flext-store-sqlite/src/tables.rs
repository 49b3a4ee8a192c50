//! The SQL of the contracts `flext-store` writes once for every SQL store (reads,
//! snapshots, checkpoints, dead letters, subscriptions), and the calls that run it on the
//! store's rusqlite read connections.

use std::time::Duration;

use async_trait::async_trait;
use flext_store::{Arg, HeadSignal, SqlTables, Statements, StoreLimits};
use flext_types::{FlextError, FlextResult};

use crate::lite::{Row, fetch_rows, values};

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

/// The store as the shared contract code sees it: the SQL above, run on its read
/// connections.
pub(crate) struct Tables<'s>(&'s SqliteEventStore);

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
        let (sql, args) = (sql.to_owned(), values(args));
        self.0
            .inner
            .readers
            .run(what, move |connection| fetch_rows(connection, &sql, &args))
            .await
    }

    async fn execute(&self, what: &str, statements: &[&str], args: &[Arg<'_>]) -> FlextResult<()> {
        let statements: Vec<String> = statements.iter().map(|sql| (*sql).to_owned()).collect();
        let args = values(args);
        self.0
            .inner
            .readers
            .run(what, move |connection| {
                let params = || rusqlite::params_from_iter(&args);
                // One statement commits by itself; several share a write transaction.
                if let [sql] = statements.as_slice() {
                    return connection.prepare_cached(sql)?.execute(params()).map(drop);
                }
                connection.execute_batch("BEGIN IMMEDIATE")?;
                for sql in &statements {
                    connection.prepare_cached(sql)?.execute(params())?;
                }
                connection.execute_batch("COMMIT")
            })
            .await
    }

    fn unreadable(&self, what: &str, error: FlextError) -> FlextError {
        self.0.fail_with(what, error)
    }
}
