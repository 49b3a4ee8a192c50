//! Appends to a [`PostgresEventStore`]: one autocommit statement, no store-wide lock.
//!
//! Appends to different streams run side by side. Two appends to one stream meet at the
//! unique key on `(stream_id, version)`: both read the stream's version `n` and insert
//! `n + 1`, so the second waits for the first and fails with a unique violation once it
//! commits; that append runs again, reads the committed version, and either goes on (an
//! expectation the new version satisfies, such as `Any`) or ends in a
//! `CONCURRENCY_CONFLICT` with the expected and actual versions (or the original result,
//! when it is a retry of the winner). Positions come from the transaction id, so that
//! readers can stop at the read barrier (see `tables::barrier!` and ARCHITECTURE.md).

use flext_store::{
    accepted_versions, after_failed_insert, metadata_text, retry_or_conflict, timestamp_text,
    unsigned,
};
use flext_types::{AppendResult, ExpectedVersion, FlextError, FlextResult, NewEvent};
use time::OffsetDateTime;

use crate::PostgresEventStore;
use crate::tables::{MAX_APPEND_EVENTS, SLOT_LIMIT, STATEMENTS, TRANSACTION_BITS};

/// Lost races for a stream version after which an append backs off a little before it
/// runs again (before that it only yields): many writers on one hot stream then stop
/// colliding on every round.
const RACES_BEFORE_BACKOFF: u32 = 8;

/// The append, in one statement (so in one round trip, committing by itself): the
/// stream's version, the transaction's slot (its id plus the store's position offset) and
/// the highest stored position; the checks (the expected version, a slot whose positions
/// fit a `BIGINT` and lie above every stored one); the insert of every row (passed as
/// arrays, so a batch of any size is one statement) at positions `slot << 20 | n`. When a
/// check fails nothing is inserted and the last column is 0. It sends no notification:
/// PostgreSQL serializes the commits of every transaction that notified (one lock for the
/// whole database, held while the commit is flushed), which would line all appends up
/// again; the store's notifier task sends one after the commit instead.
const APPEND: &str = "WITH place AS ( \
         SELECT (SELECT COALESCE(MAX(version), 0) FROM flext_events \
                 WHERE stream_id = $1) AS current, \
                pg_current_xact_id()::text::bigint \
                    + (SELECT position_offset FROM flext_positions) AS slot, \
                (SELECT COALESCE(MAX(position), 0) FROM flext_events) AS highest \
     ), accepted AS ( \
         SELECT current, slot FROM place \
         WHERE current BETWEEN $2 AND $3 AND slot < $10 AND (slot << 20) > highest \
     ), inserted AS ( \
         INSERT INTO flext_events (event_id, stream_id, version, position, \
             event_type, schema_version, payload, metadata, recorded_at) \
         SELECT r.event_id::uuid, $1, a.current + r.n, (a.slot << 20) + r.n, r.event_type, \
                r.schema_version, r.payload::jsonb, r.metadata::jsonb, $4::timestamptz \
         FROM accepted a, \
              UNNEST($5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[]) \
              WITH ORDINALITY AS r(event_id, event_type, schema_version, payload, \
                                   metadata, n) \
         RETURNING 1 \
     ) \
     SELECT current, slot, highest, (SELECT COUNT(*) FROM inserted) FROM place";

/// The name PostgreSQL gives the unique key on `(stream_id, version)`.
const VERSION_KEY: &str = "flext_events_stream_id_version_key";

/// What one run of the append statement came to.
enum Placed {
    /// The rows are committed.
    Done(AppendResult),
    /// Another append took one of the stream versions first: run again.
    Raced,
}

impl PostgresEventStore {
    /// Appends a batch `flext_store::tables::check_batch` passed (valid, within the
    /// limits, with events).
    pub(crate) async fn append_now(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        let count = events.len() as u64;
        if count > MAX_APPEND_EVENTS {
            return Err(FlextError::invalid_argument(format!(
                "PostgreSQL store {} ({}): a batch of {count} events for stream {stream_id} \
                 is more than the {MAX_APPEND_EVENTS} one append can place",
                self.inner.target, self.inner.schema
            )));
        }
        // A slot of its own among the appends, so that appends waiting on a lock can
        // never hold every pooled connection: reads and checkpoints keep theirs.
        let _slot = self.append_slot().await?;
        let rows = Rows::of(&events)?;
        // A lost race is another append's commit to the stream: the store made progress,
        // and running again either places the batch, finds it already stored (an
        // idempotent retry), or fails the expected-version check. So an append that
        // accepts any version is never refused for losing races, however many writers
        // share the stream; each run is bounded by the statement timeout.
        let mut races: u32 = 0;
        loop {
            match self.place(stream_id, expected, &events, &rows).await? {
                Placed::Done(result) => return Ok(result),
                Placed::Raced if races < RACES_BEFORE_BACKOFF => tokio::task::yield_now().await,
                Placed::Raced => {
                    // 0.1 to 2 ms, spread by the clock's nanoseconds so that the racers do
                    // not meet again.
                    let spread = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |since| since.subsec_nanos() % 1_900);
                    let pause = std::time::Duration::from_micros(100 + u64::from(spread));
                    tokio::time::sleep(pause).await;
                }
            }
            races = races.saturating_add(1);
        }
    }

    /// One run of the append statement.
    async fn place(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        rows: &Rows<'_>,
    ) -> FlextResult<Placed> {
        let count = events.len() as u64;
        let (lowest, highest) = accepted_versions(expected);
        let recorded_at = timestamp_text(microseconds(OffsetDateTime::now_utc()))?;
        let placed: Result<(i64, i64, i64, i64), sqlx::Error> = sqlx::query_as(APPEND)
            .bind(stream_id)
            .bind(lowest)
            .bind(highest)
            .bind(recorded_at.as_str())
            .bind(&rows.event_ids)
            .bind(&rows.event_types)
            .bind(&rows.schema_versions)
            .bind(&rows.payloads)
            .bind(&rows.metadata)
            .bind(SLOT_LIMIT)
            .fetch_one(&self.inner.pool)
            .await;
        let (current, slot, stored, inserted) = match placed {
            Ok(placed) => placed,
            Err(error) => {
                let violated = match &error {
                    sqlx::Error::Database(db) if db.is_unique_violation() => {
                        Some(db.constraint() == Some(VERSION_KEY))
                    }
                    _ => None,
                };
                return match violated {
                    // The version was taken by an append that committed meanwhile.
                    Some(true) => Ok(Placed::Raced),
                    // A stored id: a retry of a committed append, or a duplicate.
                    Some(false) => {
                        let error = self.fail("cannot insert events", error);
                        let tables = self.tables();
                        after_failed_insert(&tables, true, stream_id, expected, events, error)
                            .await
                            .map(Placed::Done)
                    }
                    // JSON that jsonb cannot keep: every other value of the statement is
                    // the store's own (ids from `Uuid`, times it formats, integers in
                    // range), so a refused input is a payload's or metadata's.
                    None if JSONB_REFUSALS.iter().any(|code| is_code(&error, code)) => {
                        Err(FlextError::invalid_argument(format!(
                            "PostgreSQL store {} ({}): an event for stream {stream_id} has a \
                             payload or metadata that a jsonb column cannot keep ({}): {}",
                            self.inner.target,
                            self.inner.schema,
                            refusal(&error),
                            described(&error)
                        ))
                        .with_source(error))
                    }
                    None => Err(self.fail("cannot insert events", error)),
                };
            }
        };
        if inserted > 0 {
            // Subscriptions in this process and, through a notification, in others.
            self.inner.committed.notify_one();
            let first = (slot << TRANSACTION_BITS) + 1;
            return Ok(Placed::Done(AppendResult::following(
                unsigned(current),
                unsigned(first - 1),
                count,
            )));
        }
        if slot >= SLOT_LIMIT {
            return Err(self.storage(format!(
                "transaction id {slot} (with the position offset) is beyond what positions \
                 can hold ({SLOT_LIMIT})"
            )));
        }
        if slot << TRANSACTION_BITS <= stored {
            return Err(self.storage(format!(
                "the transaction's positions (from {}) would not follow the stored ones \
                 (up to {stored}): the database's transaction ids are behind the store's, \
                 as after a restore into another cluster; open the store again to move \
                 its positions on",
                slot << TRANSACTION_BITS
            )));
        }
        // The version check failed. A retry of an append that committed finds the stream
        // moved on: answer with the original result when the ids say it is one.
        let tables = self.tables();
        retry_or_conflict(
            &mut &tables,
            &STATEMENTS,
            stream_id,
            expected,
            events,
            unsigned(current),
        )
        .await
        .map(Placed::Done)
    }

    /// A `STORAGE_ERROR` naming this store.
    fn storage(&self, what: String) -> FlextError {
        FlextError::storage(format!(
            "PostgreSQL store {} ({}): {what}",
            self.inner.target, self.inner.schema
        ))
    }
}

/// A batch's columns, bound as arrays.
struct Rows<'e> {
    event_ids: Vec<String>,
    event_types: Vec<&'e str>,
    schema_versions: Vec<i64>,
    payloads: Vec<&'e str>,
    metadata: Vec<String>,
}

impl<'e> Rows<'e> {
    fn of(events: &'e [NewEvent]) -> FlextResult<Self> {
        let mut rows = Self {
            event_ids: Vec::with_capacity(events.len()),
            event_types: Vec::with_capacity(events.len()),
            schema_versions: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
            metadata: Vec::with_capacity(events.len()),
        };
        for event in events {
            rows.event_ids.push(event.event_id.to_string());
            rows.event_types.push(event.event_type.as_str());
            rows.schema_versions.push(i64::from(event.schema_version));
            rows.payloads.push(event.payload.as_str());
            rows.metadata.push(metadata_text(&event.metadata)?);
        }
        Ok(rows)
    }
}

/// The SQLSTATEs of JSON text that jsonb refuses although it is JSON: `22P05` for a
/// `\u0000` (which text cannot hold), `22P02` for a lone surrogate escape such as
/// `"\ud800"`, `22003` for a number beyond what `numeric` holds (`1e200000`).
const JSONB_REFUSALS: [&str; 3] = ["22P05", "22P02", "22003"];

/// What jsonb refused, in words, by its SQLSTATE.
fn refusal(error: &sqlx::Error) -> &'static str {
    if is_code(error, "22P05") {
        "a \\u0000, which text cannot hold"
    } else if is_code(error, "22003") {
        "a number beyond what numeric holds"
    } else {
        "an escape it does not accept, such as a lone surrogate"
    }
}

/// The database's message with its detail (which says what in the JSON it refused).
fn described(error: &sqlx::Error) -> String {
    let detail = match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.detail())
            .map(|detail| format!(" ({detail})")),
        _ => None,
    };
    format!("{error}{}", detail.unwrap_or_default())
}

/// `time` as a `timestamptz` keeps it: cut, not rounded, to microseconds, as the upgrade
/// of an older store cuts the times it converts. (The server rounds the digits beyond
/// microseconds, so 23:59:59.9999995 would become midnight of the next day.)
fn microseconds(time: OffsetDateTime) -> OffsetDateTime {
    let cut = time.nanosecond() / 1_000 * 1_000;
    // A nanosecond below the one it replaces is always valid.
    time.replace_nanosecond(cut).unwrap_or(time)
}

/// Whether `error` is the database's error with SQLSTATE `code`.
fn is_code(error: &sqlx::Error, code: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap()
    }

    #[test]
    fn a_time_is_cut_to_microseconds_not_rounded() {
        let last = at("2026-12-31T23:59:59.999999999Z");
        assert_eq!(
            timestamp_text(microseconds(last)).unwrap(),
            "2026-12-31T23:59:59.999999Z"
        );
        let half = at("2026-03-04T05:06:07.0000025Z");
        assert_eq!(microseconds(half), at("2026-03-04T05:06:07.000002Z"));
        let whole = at("2026-03-04T05:06:07.123456Z");
        assert_eq!(microseconds(whole), whole);
    }
}
