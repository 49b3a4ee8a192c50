//! The SQL of the contracts `flext-store` writes once for every SQL store (reads,
//! snapshots, checkpoints, dead letters, subscriptions), and the calls that run it.

use std::time::Duration;

use async_trait::async_trait;
use flext_store::{Arg, HeadSignal, SqlRow, SqlTables, Statements, StoreLimits};
use flext_types::{FlextError, FlextResult};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, Row as _};

use crate::PostgresEventStore;
use crate::schema::DATABASE;

/// Sets `name`'s checkpoint; [`PostgresEventStore::save_checkpoint_in`] runs it too.
pub(crate) const SAVE_CHECKPOINT: &str = "INSERT INTO flext_checkpoints (name, position) \
     VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
     updated_at = now()";

/// How many low bits of a position number the events of one append: a position is
/// `(transaction id + offset) << TRANSACTION_BITS | n`, `n` from 1 (see `barrier!`).
pub(crate) const TRANSACTION_BITS: u32 = 20;

/// The most events one append can place: `n` runs from 1 to this.
pub(crate) const MAX_APPEND_EVENTS: u64 = (1 << TRANSACTION_BITS) - 1;

/// The first transaction slot (transaction id plus offset) whose positions would not fit
/// a `BIGINT`.
pub(crate) const SLOT_LIMIT: i64 = 1 << (63 - TRANSACTION_BITS);

/// The SQL of the read barrier: every position below it belongs to a transaction that
/// ended before the statement's snapshot was taken or never places events, and every
/// transaction that places events and is still running, or yet to start, places them at or
/// above it. Reads of the log stop there, so no event can later commit below what a reader
/// has seen. `position_offset` (0 unless the store's positions were ahead of the
/// cluster's transaction ids, as after a dump restored into another cluster) keeps
/// positions above every stored one. The shift is `TRANSACTION_BITS`.
///
/// The barrier is the lowest transaction id that may still place events, `writers!`; when
/// no committed event lies at or above the snapshot's `xmin` (the oldest transaction still
/// running anywhere in the cluster), `xmin` gives the same reads and is cheaper, so the
/// narrower bound is only worked out when it can show more. On a standby (a server in
/// recovery) the lock table does not show the primary's transactions, so it is `xmin`.
macro_rules! barrier {
    () => {
        concat!(
            "((CASE WHEN NOT pg_is_in_recovery() AND EXISTS (SELECT 1 FROM flext_events \
                 WHERE position >= ((pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                   + (SELECT position_offset FROM flext_positions)) << 20)) \
               THEN ",
            writers!(),
            " ELSE pg_snapshot_xmin(pg_current_snapshot())::text::bigint END \
             + (SELECT position_offset FROM flext_positions)) << 20)"
        )
    };
}

/// The lowest transaction id that may still place events, from the statement's snapshot,
/// one read of the lock table and, after it, a look at whether the transactions it found
/// quiet are still running: the snapshot's `xmax` (every transaction at or above it is
/// invisible to the statement), or a lower transaction running at the snapshot, unless the
/// lock table showed it holding its transaction-id lock and no write lock on
/// `flext_events` and it was still running after the lock table was read.
///
/// Why that skips no event: only the store's append places events, in a statement that
/// commits by itself, and PostgreSQL locks the table the statement writes before the
/// statement runs, so before its transaction has an id; the lock is held until the
/// transaction ends. A transaction running at the snapshot that places events therefore
/// held that lock from before the snapshot. An ending transaction is marked committed or
/// aborted, and leaves the running set, before it releases any lock; so one still running
/// after the lock table was read (`pg_xact_status`, evaluated on rows of the read, which
/// `pg_locks` makes in full before returning the first) held every lock it had while the
/// table was read, and the read shows a write lock if it places events. Every other
/// transaction running at the snapshot counts as a writer, also one that ended since (its
/// events, if any, are not in the snapshot; the next read shows them).
macro_rules! writers {
    () => {
        "(WITH locks AS MATERIALIZED ( \
             SELECT locktype, relation, transactionid, virtualtransaction, mode, granted \
             FROM pg_locks), \
           quiet AS MATERIALIZED ( \
             SELECT running FROM pg_snapshot_xip(pg_current_snapshot()) running, locks held \
             WHERE held.locktype = 'transactionid' AND held.mode = 'ExclusiveLock' \
               AND held.granted \
               AND held.transactionid = ((running::text::bigint % 4294967296)::text::xid) \
               AND NOT EXISTS ( \
                 SELECT 1 FROM locks w WHERE w.virtualtransaction = held.virtualtransaction \
                   AND w.locktype = 'relation' AND w.relation = 'flext_events'::regclass \
                   AND w.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', \
                                  'ExclusiveLock', 'AccessExclusiveLock'))) \
         SELECT LEAST(pg_snapshot_xmax(pg_current_snapshot())::text::bigint, \
                      MIN(running::text::bigint)) \
         FROM pg_snapshot_xip(pg_current_snapshot()) running \
         WHERE running NOT IN (SELECT q.running FROM quiet q \
                               WHERE pg_xact_status(q.running) = 'in progress'))"
    };
}

/// The head: the highest position below the barrier, 0 when there is none. What
/// `read_all` returns ends there, so "caught up to the head" means what it says.
pub(crate) const HEAD_POSITION: &str = concat!(
    "SELECT COALESCE(MAX(position), 0) FROM flext_events WHERE position < ",
    barrier!()
);

/// The head and the highest committed position: when the second is higher, committed
/// events wait above the barrier for an older transaction to end.
pub(crate) const HEAD_AND_TOP: &str = concat!(
    "SELECT COALESCE(MAX(position), 0), (SELECT COALESCE(MAX(position), 0) FROM flext_events) \
     FROM flext_events WHERE position < ",
    barrier!()
);

/// An event row's columns in `flext_store::EVENT_COLUMNS` order, as the text and integers
/// `RawEvent` reads: the id, payload and metadata as their text, the time as RFC 3339 in
/// UTC with microseconds (what `timestamptz` keeps).
macro_rules! event_columns {
    () => {
        "event_id::text, stream_id, version, position, event_type, schema_version, \
         payload::text, metadata::text, \
         to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    };
}

pub(crate) static STATEMENTS: Statements = Statements {
    database: DATABASE,
    // A stream needs no barrier: its version n + 1 is inserted only once version n is
    // committed (the unique key on stream and version), so a stream read has no gaps.
    read_stream: concat!(
        "SELECT ",
        event_columns!(),
        " FROM flext_events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
    ),
    read_all: concat!(
        "SELECT ",
        event_columns!(),
        " FROM flext_events WHERE position >= $1 AND position < ",
        barrier!(),
        " ORDER BY position LIMIT $2"
    ),
    stream_version: "SELECT COALESCE(MAX(version), 0) FROM flext_events WHERE stream_id = $1",
    version_and_head: concat!(
        "SELECT (SELECT COALESCE(MAX(version), 0) FROM flext_events WHERE stream_id = $1), \
         (SELECT COALESCE(MAX(position), 0) FROM flext_events WHERE position < ",
        barrier!(),
        ")"
    ),
    head_position: HEAD_POSITION,
    save_snapshot: "INSERT INTO flext_snapshots (stream_id, version, schema_version, payload, taken_at) \
                    VALUES ($1, $2, $3, $4::jsonb, $5::timestamptz) \
                    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
                    schema_version = excluded.schema_version, payload = excluded.payload, \
                    taken_at = excluded.taken_at WHERE excluded.version >= flext_snapshots.version",
    load_snapshot: "SELECT version, schema_version, payload::text, \
                    to_char(taken_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
                    FROM flext_snapshots WHERE stream_id = $1",
    load_checkpoint: "SELECT position FROM flext_checkpoints WHERE name = $1",
    save_checkpoint: SAVE_CHECKPOINT,
    add_dead_letter: "INSERT INTO flext_dead_letters (name, position, letter) \
                      VALUES ($1, $2, $3::jsonb) \
                      ON CONFLICT (name, position) DO UPDATE SET letter = excluded.letter",
    dead_letters: "SELECT letter::text FROM flext_dead_letters WHERE name = $1 ORDER BY position",
    remove_dead_letter: "DELETE FROM flext_dead_letters WHERE name = $1 AND position = $2 \
                         RETURNING position",
    reset: [
        "DELETE FROM flext_checkpoints WHERE name = $1",
        "DELETE FROM flext_dead_letters WHERE name = $1",
    ],
    stored_places: "SELECT event_id::text, stream_id, version, position FROM flext_events \
                    WHERE event_id IN (SELECT jsonb_array_elements_text($1::jsonb)::uuid)",
    place_run: "SELECT event_id::text, stream_id, version, position FROM flext_events \
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_barrier_shifts_by_the_transaction_bits() {
        assert!(barrier!().ends_with(&format!("<< {TRANSACTION_BITS})")));
        assert_eq!(MAX_APPEND_EVENTS, 1_048_575);
        // The largest position, slot `SLOT_LIMIT - 1` with every event, fits a BIGINT.
        let largest = ((SLOT_LIMIT - 1) << TRANSACTION_BITS) | MAX_APPEND_EVENTS as i64;
        assert_eq!(largest, i64::MAX);
    }
}
