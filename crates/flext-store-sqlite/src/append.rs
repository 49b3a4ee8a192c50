//! Appends to a [`SqliteEventStore`]: the common append in one statement, the
//! transactional path for conflicts, retries and big batches.

use flext_store::{
    EVENT_COLUMNS, accepted_versions, after_failed_insert, metadata_text, retry_or_conflict,
    timestamp_text,
};
use flext_types::{AppendResult, ExpectedVersion, FlextResult, NewEvent};
use sqlx::{QueryBuilder, Sqlite};
use time::OffsetDateTime;

use crate::SqliteEventStore;
use crate::tables::{Connection, STATEMENTS};

/// Rows per insert statement: 9 bound values a row stays far below SQLite's limit on
/// bound parameters.
const CHUNK: usize = 500;

impl SqliteEventStore {
    /// Appends a batch `flext_store::tables::check_batch` passed (valid, within the
    /// limits, with events).
    pub(crate) async fn append_now(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        if events.len() <= CHUNK
            && let Some(result) = self
                .append_in_one_statement(stream_id, expected, &events)
                .await?
        {
            self.inner.head.advance(result.last_position);
            return Ok(result);
        }
        let mut tx = self
            .inner
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.fail("cannot begin an append", e))?;
        // One round trip for the stream's version and the head position. Under the append
        // lock neither can move until this transaction ends.
        let (current, head): (i64, i64) = sqlx::query_as(STATEMENTS.version_and_head)
            .bind(stream_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.fail("cannot read the stream version", e))?;
        let current = u64::try_from(current).unwrap_or(0);
        let head = u64::try_from(head).unwrap_or(0);
        if !expected.accepts(current) {
            // A retry of an append that committed finds the stream moved on: answer with
            // the original result when the ids say it is one.
            let mut connection = Connection(self, &mut tx);
            return retry_or_conflict(
                &mut connection,
                &STATEMENTS,
                stream_id,
                expected,
                &events,
                current,
            )
            .await;
        }
        let recorded_at = timestamp_text(OffsetDateTime::now_utc())?;
        let count = events.len() as u64;
        for (chunk_index, chunk) in events.chunks(CHUNK).enumerate() {
            let offset = (chunk_index * CHUNK) as u64;
            let rows = chunk
                .iter()
                .enumerate()
                .map(|(i, event)| Ok((offset + i as u64, event, metadata_text(&event.metadata)?)))
                .collect::<FlextResult<Vec<_>>>()?;
            let mut insert =
                QueryBuilder::<Sqlite>::new(format!("INSERT INTO flext_events ({EVENT_COLUMNS}) "));
            insert.push_values(rows, |mut row, (i, event, metadata)| {
                row.push_bind(event.event_id.to_string())
                    .push_bind(stream_id)
                    .push_bind((current + i + 1) as i64)
                    .push_bind((head + i + 1) as i64)
                    .push_bind(event.event_type.as_str())
                    .push_bind(i64::from(event.schema_version))
                    .push_bind(event.payload.as_str())
                    .push_bind(metadata)
                    .push_bind(recorded_at.as_str());
            });
            if let Err(error) = insert.build().execute(&mut *tx).await {
                // A stored id may mean a retry of a committed append: with this
                // transaction rolled back, the stored ids decide.
                let unique =
                    matches!(&error, sqlx::Error::Database(db) if db.is_unique_violation());
                tx.rollback()
                    .await
                    .map_err(|e| self.fail("cannot roll back a failed append", e))?;
                let error = self.fail("cannot insert events", error);
                let tables = self.tables();
                return after_failed_insert(&tables, unique, stream_id, expected, &events, error)
                    .await;
            }
        }
        tx.commit()
            .await
            .map_err(|e| self.fail("cannot commit an append", e))?;
        let result = AppendResult::following(current, head, count);
        self.inner.head.advance(result.last_position);
        Ok(result)
    }

    /// The common append in one autocommit statement, so one trip to SQLite's worker
    /// thread (two for a batch) instead of four (`BEGIN IMMEDIATE`, read, insert,
    /// `COMMIT`): the statement reads the stream version and the head, checks the expected
    /// version and inserts every row, as one write transaction (SQLite has one writer at a time, so nothing
    /// moves between the read and the insert). `Ok(None)` when it inserted nothing: the
    /// check failed or an event id is stored already. The caller then takes the
    /// transactional path, which tells a conflict from a retry of a committed append.
    async fn append_in_one_statement(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> FlextResult<Option<AppendResult>> {
        let (lowest, highest) = accepted_versions(expected);
        let recorded_at = timestamp_text(OffsetDateTime::now_utc())?;
        let rows = events
            .iter()
            .enumerate()
            .map(|(i, event)| Ok((i as i64 + 1, event, metadata_text(&event.metadata)?)))
            .collect::<FlextResult<Vec<_>>>()?;
        let mut insert = QueryBuilder::<Sqlite>::new(
            "WITH place AS (SELECT (SELECT COALESCE(MAX(version), 0) FROM flext_events \
             WHERE stream_id = ",
        );
        insert.push_bind(stream_id).push(
            ") AS current, (SELECT COALESCE(MAX(position), 0) FROM flext_events) AS head), \
             batch(i, event_id, event_type, schema_version, payload, metadata) AS (",
        );
        insert.push_values(rows, |mut row, (i, event, metadata)| {
            row.push_bind(i)
                .push_bind(event.event_id.to_string())
                .push_bind(event.event_type.as_str())
                .push_bind(i64::from(event.schema_version))
                .push_bind(event.payload.as_str())
                .push_bind(metadata);
        });
        insert
            .push(format!(
                ") INSERT INTO flext_events ({EVENT_COLUMNS}) SELECT b.event_id, "
            ))
            .push_bind(stream_id)
            .push(
                ", p.current + b.i, p.head + b.i, b.event_type, b.schema_version, b.payload, \
                 b.metadata, ",
            )
            .push_bind(recorded_at.as_str())
            .push(" FROM place p, batch b WHERE p.current BETWEEN ")
            .push_bind(lowest)
            .push(" AND ")
            .push_bind(highest)
            .push(" ORDER BY b.i");
        let count = events.len() as u64;
        let unique_or = |error: sqlx::Error| match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => Ok(None),
            _ => Err(self.fail("cannot append", error)),
        };
        // The worker thread sends each returned row as its own message: one event
        // returns its place; a batch asks only for the last version afterwards (positions
        // are row ids, so the last one is the insert's last row id).
        let (last_version, last_position) = if count == 1 {
            insert.push(" RETURNING version, position");
            match insert
                .build_query_as::<(i64, i64)>()
                .fetch_optional(&self.inner.pool)
                .await
            {
                Ok(Some(place)) => place,
                Ok(None) => return Ok(None),
                Err(error) => return unique_or(error),
            }
        } else {
            let done = match insert.build().execute(&self.inner.pool).await {
                Ok(done) => done,
                Err(error) => return unique_or(error),
            };
            if done.rows_affected() == 0 {
                return Ok(None);
            }
            let last_position = done.last_insert_rowid();
            let (last_version,): (i64,) =
                sqlx::query_as("SELECT version FROM flext_events WHERE position = ?")
                    .bind(last_position)
                    .fetch_one(&self.inner.pool)
                    .await
                    .map_err(|e| self.fail("cannot read an appended event", e))?;
            (last_version, last_position)
        };
        let last_version = u64::try_from(last_version).unwrap_or(0);
        let last_position = u64::try_from(last_position).unwrap_or(0);
        Ok(Some(AppendResult {
            first_version: (last_version + 1).saturating_sub(count),
            last_version,
            first_position: (last_position + 1).saturating_sub(count),
            last_position,
        }))
    }
}
