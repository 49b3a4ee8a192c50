//! Appends to a [`PostgresEventStore`]: one statement under the schema's advisory lock.

use flext_store::{
    accepted_versions, after_failed_insert, metadata_text, retry_or_conflict, signed,
    timestamp_text, unsigned,
};
use flext_types::{AppendResult, ExpectedVersion, FlextResult, NewEvent};
use time::OffsetDateTime;

use crate::PostgresEventStore;
use crate::schema::DATABASE;
use crate::tables::{Connection, STATEMENTS};

impl PostgresEventStore {
    /// Appends a batch `flext_store::tables::check_batch` passed (valid, within the
    /// limits, with events).
    pub(crate) async fn append_now(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        // BEGIN and the append lock in one round trip. READ COMMITTED whatever the server's
        // default, so the reads after the lock see every append committed before it. The
        // key is this store's own integer (from its schema name), not input, so writing it
        // into the statement is safe.
        let mut tx = self
            .inner
            .pool
            .begin_with(format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({})",
                self.inner.lock_key
            ))
            .await
            .map_err(|e| self.fail("cannot begin an append and take its lock", e))?;
        // One round trip for the rest: the stream's version and the head position, the
        // expected-version check, the insert of every row (passed as arrays, so a batch of
        // any size is one statement) and the notification of the new head (NOTIFY is
        // transactional: it is sent on commit only). Under the append lock neither the
        // version nor the head can move until this transaction ends. When the check fails
        // nothing is inserted or notified and `inserted` is 0. (`0 * (SELECT COUNT(*) FROM
        // notified)` is there so that PostgreSQL runs the notification, which nothing else
        // reads.)
        let count = events.len() as u64;
        let (lowest, highest) = accepted_versions(expected);
        let recorded_at = timestamp_text(OffsetDateTime::now_utc())?;
        let mut event_ids = Vec::with_capacity(events.len());
        let mut event_types = Vec::with_capacity(events.len());
        let mut schema_versions = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        let mut metadata = Vec::with_capacity(events.len());
        for event in &events {
            event_ids.push(event.event_id.to_string());
            event_types.push(event.event_type.as_str());
            schema_versions.push(i64::from(event.schema_version));
            payloads.push(event.payload.as_str());
            metadata.push(metadata_text(&event.metadata)?);
        }
        let placed: Result<(i64, i64, i64), sqlx::Error> = sqlx::query_as(
            "WITH place AS ( \
                 SELECT (SELECT COALESCE(MAX(version), 0) FROM flext_events \
                         WHERE stream_id = $1) AS current, \
                        (SELECT COALESCE(MAX(position), 0) FROM flext_events) AS head \
             ), accepted AS ( \
                 SELECT current, head FROM place WHERE current BETWEEN $2 AND $3 \
             ), inserted AS ( \
                 INSERT INTO flext_events (event_id, stream_id, version, position, \
                     event_type, schema_version, payload, metadata, recorded_at) \
                 SELECT r.event_id, $1, a.current + r.n, a.head + r.n, r.event_type, \
                        r.schema_version, r.payload, r.metadata, $4 \
                 FROM accepted a, \
                      UNNEST($5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[]) \
                      WITH ORDINALITY AS r(event_id, event_type, schema_version, payload, \
                                           metadata, n) \
                 RETURNING 1 \
             ), notified AS ( \
                 SELECT pg_notify($10, (head + $11)::text) FROM accepted \
             ) \
             SELECT current, head, \
                    (SELECT COUNT(*) FROM inserted) + 0 * (SELECT COUNT(*) FROM notified) \
             FROM place",
        )
        .bind(stream_id)
        .bind(lowest)
        .bind(highest)
        .bind(recorded_at.as_str())
        .bind(&event_ids)
        .bind(&event_types)
        .bind(&schema_versions)
        .bind(&payloads)
        .bind(&metadata)
        .bind(&self.inner.channel)
        .bind(signed(count, DATABASE)?)
        .fetch_one(&mut *tx)
        .await;
        let (current, head, inserted) = match placed {
            Ok(placed) => placed,
            Err(error) => {
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
        };
        let (current, head) = (unsigned(current), unsigned(head));
        if inserted == 0 {
            // The check failed. A retry of an append that committed finds the stream
            // moved on: answer with the original result when the ids say it is one.
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
        let result = AppendResult::following(current, head, count);
        tx.commit()
            .await
            .map_err(|e| self.fail("cannot commit an append", e))?;
        self.inner.head.advance(result.last_position);
        Ok(result)
    }
}
