//! The contracts of a store on SQL tables, written once: a SQL store gives its
//! [`Statements`] (in its dialect) and runs them through [`SqlTables`]; the reads, snapshots,
//! checkpoints, dead letters and subscriptions around them — which arguments, which rows,
//! how a row decodes, which error says what — are here, and
//! [`sql_store_contracts!`](crate::sql_store_contracts) implements the three contracts with
//! them. The SQL itself stays in the adapter: this crate knows no dialect and no driver.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use flext_types::{
    AppendResult, DeadLetter, ExpectedVersion, FlextError, FlextResult, NewEvent, Snapshot,
    StoredEvent,
};

use crate::limits::StoreLimits;
use crate::rows::{RawEvent, RawSnapshot, dead_letter_text, decode_dead_letters, signed, unsigned};
use crate::rules::{StoredPlace, nothing_appended, retried_append, validate_batch};
use crate::tail::HeadSignal;

/// A value bound to a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'a> {
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(&'a str),
}

/// The statements a SQL store runs for the shared contract code, in its dialect. Each binds
/// the arguments its comment lists, in that order.
#[derive(Debug, Clone, Copy)]
pub struct Statements {
    /// The database's name in messages (`SQLite`).
    pub database: &'static str,
    /// `(stream_id, from_version, limit)` → event rows in `EVENT_COLUMNS` order, by version.
    pub read_stream: &'static str,
    /// `(from_position, limit)` → event rows, by position.
    pub read_all: &'static str,
    /// `(stream_id)` → one row: the stream's version, 0 for none.
    pub stream_version: &'static str,
    /// `(stream_id)` → one row, read at one moment: the stream's version (0 for none) and
    /// the head position (0 for an empty store).
    pub version_and_head: &'static str,
    /// `()` → one row: the head position, 0 for an empty store.
    pub head_position: &'static str,
    /// `(stream_id, version, schema_version, payload, taken_at)`: keeps the snapshot unless
    /// a newer one is stored.
    pub save_snapshot: &'static str,
    /// `(stream_id)` → at most one row: `version, schema_version, payload, taken_at`.
    pub load_snapshot: &'static str,
    /// `(name)` → at most one row: the checkpoint's position.
    pub load_checkpoint: &'static str,
    /// `(name, position)`: sets the checkpoint.
    pub save_checkpoint: &'static str,
    /// `(name, position, letter)`: adds the dead letter, replacing one at that position.
    pub add_dead_letter: &'static str,
    /// `(name)` → the letters' text, by position.
    pub dead_letters: &'static str,
    /// `(name, position)`: deletes that letter → one row (its position) if there was one.
    pub remove_dead_letter: &'static str,
    /// `(name)` each, in one transaction: forget the checkpoint, then the dead letters.
    pub reset: [&'static str; 2],
    /// `(ids)`, the event ids as one JSON array of text → the places (`event_id,
    /// stream_id, version, position`) of those that are stored.
    pub stored_places: &'static str,
    /// `(stream_id, version, count)` → up to `count` places of the stream from `version`
    /// on, by version.
    pub place_run: &'static str,
}

/// A row as a SQL store's driver returns it, read by column index. A column that does not
/// read is a `SERIALIZATION_ERROR` with the driver's explanation; the shared code says whose
/// row it was.
pub trait SqlRow: Send {
    /// The integer in column `index`.
    fn int(&self, index: usize) -> FlextResult<i64>;
    /// The text in column `index`.
    fn text(&self, index: usize) -> FlextResult<String>;
}

/// What a SQL store does for the shared contract code: its statements, and running them.
#[async_trait]
pub trait SqlTables: Send + Sync {
    /// The driver's row.
    type Row: SqlRow;

    /// The store's statements.
    fn statements(&self) -> &'static Statements;

    /// The head position commits advance and subscriptions wait on.
    fn head(&self) -> &HeadSignal;

    /// How often subscriptions poll for commits the head does not hear of.
    fn poll_interval(&self) -> Duration;

    /// The limits appends are checked against.
    fn limits(&self) -> &StoreLimits;

    /// The rows of `sql` with `args`; a failure is a `STORAGE_ERROR` saying `what` failed.
    async fn fetch(&self, what: &str, sql: &str, args: &[Arg<'_>]) -> FlextResult<Vec<Self::Row>>;

    /// Runs each of `statements` with `args`, in one transaction when there are several.
    async fn execute(&self, what: &str, statements: &[&str], args: &[Arg<'_>]) -> FlextResult<()>;

    /// The `STORAGE_ERROR` for a column of a fetched row that does not read as its type
    /// (`error`, from [`SqlRow`]), naming the store and saying `what` failed, as a failed
    /// statement's error does.
    fn unreadable(&self, what: &str, error: FlextError) -> FlextError;
}

/// A connection of a SQL store, maybe inside its open transaction, for the reads that must
/// see what it sees: those of [`find_retry`].
pub trait SqlConnection: Send {
    /// The driver's row.
    type Row: SqlRow;

    /// The rows of `sql` with `args` on this connection; a failure is a `STORAGE_ERROR`
    /// saying `what` failed.
    fn fetch(
        &mut self,
        what: &str,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = FlextResult<Vec<Self::Row>>> + Send;
}

/// When an id of `events` is already stored: the original result of an exact retry, or the
/// `DUPLICATE` of [`retried_append`]; `None` when no id is stored. A SQL store calls it on
/// the connection of its append when the version check fails (the transaction sees the
/// committed batch) or, after rolling back, on a fresh one when the insert hit a stored id.
pub async fn find_retry(
    connection: &mut impl SqlConnection,
    statements: &Statements,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> FlextResult<Option<AppendResult>> {
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    // One JSON array: a batch of any size is one bound parameter.
    let ids = serde_json::to_string(&ids)
        .map_err(|e| FlextError::serialization(format!("Event ids do not encode: {e}")))?;
    let what = "cannot look for stored ids";
    let found = places(
        connection
            .fetch(what, statements.stored_places, &[Arg::Text(&ids)])
            .await?,
    )?;
    let Some(first) = events
        .iter()
        .find_map(|e| found.iter().find(|p| p.event_id == e.event_id))
    else {
        return Ok(None);
    };
    let args = [
        Arg::Text(&first.stream_id),
        Arg::Int(signed(first.version, statements.database)?),
        Arg::Int(i64::try_from(events.len()).unwrap_or(i64::MAX)),
    ];
    let what = "cannot read a retried batch";
    let run = places(connection.fetch(what, statements.place_run, &args).await?)?;
    retried_append(stream_id, expected, events, first, &run).map(Some)
}

/// An append's version check failed on `connection`, in the append's transaction, with the
/// stream at `current`: a retry of an append that committed finds the stream moved on, so
/// the original result when the ids say the batch is one, otherwise the
/// `CONCURRENCY_CONFLICT` (or the `DUPLICATE` of a reused id).
pub async fn retry_or_conflict(
    connection: &mut impl SqlConnection,
    statements: &Statements,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
    current: u64,
) -> FlextResult<AppendResult> {
    match find_retry(connection, statements, stream_id, expected, events).await? {
        Some(original) => Ok(original),
        None => Err(expected.conflict(stream_id, current)),
    }
}

/// A SQL store's pool answers a retry's reads as any of its connections would.
impl<T: SqlTables> SqlConnection for &T {
    type Row = T::Row;

    async fn fetch(&mut self, what: &str, sql: &str, args: &[Arg<'_>]) -> FlextResult<Vec<T::Row>> {
        SqlTables::fetch(*self, what, sql, args).await
    }
}

/// After an append's insert failed with `error` and its transaction was rolled back (its
/// own rows would otherwise look stored): when the insert hit a stored event id (`unique`),
/// the batch may be a retry of an append that committed, and the stored ids decide between
/// the original result and a `DUPLICATE`; otherwise, and when no id is stored, `error`.
pub async fn after_failed_insert(
    tables: &impl SqlTables,
    unique: bool,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
    error: FlextError,
) -> FlextResult<AppendResult> {
    if unique {
        let statements = tables.statements();
        if let Some(original) =
            find_retry(&mut &*tables, statements, stream_id, expected, events).await?
        {
            return Ok(original);
        }
    }
    Err(error)
}

/// Place rows (`event_id, stream_id, version, position`).
fn places(rows: Vec<impl SqlRow>) -> FlextResult<Vec<StoredPlace>> {
    let unreadable = |e: FlextError| {
        FlextError::serialization(format!("Stored event row does not read: {}", e.message()))
    };
    rows.iter()
        .map(|row| {
            let id = row.text(0).map_err(unreadable)?;
            let stream_id = row.text(1).map_err(unreadable)?;
            let (version, position) = (
                row.int(2).map_err(unreadable)?,
                row.int(3).map_err(unreadable)?,
            );
            StoredPlace::from_row(&id, stream_id, version, position)
        })
        .collect()
}

/// An event row in `EVENT_COLUMNS` order.
fn raw_event(row: &impl SqlRow) -> FlextResult<RawEvent> {
    Ok(RawEvent {
        event_id: row.text(0)?,
        stream_id: row.text(1)?,
        version: row.int(2)?,
        position: row.int(3)?,
        event_type: row.text(4)?,
        schema_version: row.int(5)?,
        payload: row.text(6)?,
        metadata: row.text(7)?,
        recorded_at: row.text(8)?,
    })
}

async fn events(
    tables: &impl SqlTables,
    sql: &str,
    args: &[Arg<'_>],
) -> FlextResult<Vec<StoredEvent>> {
    let rows = tables.fetch("cannot read events", sql, args).await?;
    let unreadable = |e: FlextError| {
        FlextError::serialization(format!("Stored event row does not read: {}", e.message()))
    };
    rows.iter()
        .map(|row| raw_event(row).map_err(unreadable)?.decode())
        .collect()
}

/// The integer of the first row's first column, if there is a row.
async fn integer(
    tables: &impl SqlTables,
    what: &str,
    sql: &str,
    args: &[Arg<'_>],
) -> FlextResult<Option<u64>> {
    let rows = tables.fetch(what, sql, args).await?;
    rows.first()
        .map(|row| row.int(0).map(unsigned))
        .transpose()
        .map_err(|e| tables.unreadable(what, e))
}

/// `limit` as a SQL integer (beyond `i64::MAX` is no limit).
fn limit(limit: usize) -> Arg<'static> {
    Arg::Int(i64::try_from(limit).unwrap_or(i64::MAX))
}

/// What every SQL store's `EventStore::append` does before its own append: `validate_batch`
/// against the store's limits, then, for a batch of no events, the whole answer — the
/// stream's version and the head, read at one moment and checked against `expected`, as
/// `nothing_appended` (nothing written, nobody woken). `None`: the batch is valid and has
/// events to write.
pub async fn check_batch(
    tables: &impl SqlTables,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> FlextResult<Option<AppendResult>> {
    validate_batch(stream_id, events, tables.limits())?;
    if !events.is_empty() {
        return Ok(None);
    }
    let sql = tables.statements().version_and_head;
    let what = "cannot read the stream version";
    let rows = tables.fetch(what, sql, &[Arg::Text(stream_id)]).await?;
    let read = |index| {
        rows.first()
            .map_or(Ok(0), |row| row.int(index))
            .map(unsigned)
            .map_err(|e| tables.unreadable(what, e))
    };
    let (current, head) = (read(0)?, read(1)?);
    if !expected.accepts(current) {
        return Err(expected.conflict(stream_id, current));
    }
    Ok(Some(nothing_appended(current, head)))
}

/// Where a read starts (a version or a position; 0 reads as 1) as a SQL integer, or `None`
/// when it is beyond `i64::MAX`: no SQL store keeps a version or position that far, so the
/// read is empty, as a read past the end is.
fn start(from: u64) -> Option<Arg<'static>> {
    i64::try_from(from.max(1)).ok().map(Arg::Int)
}

/// `EventStore::read_stream`; from beyond the end, nothing.
pub async fn read_stream(
    tables: &impl SqlTables,
    stream_id: &str,
    from_version: u64,
    count: usize,
) -> FlextResult<Vec<StoredEvent>> {
    let sql = tables.statements();
    let Some(from) = start(from_version) else {
        return Ok(Vec::new());
    };
    events(
        tables,
        sql.read_stream,
        &[Arg::Text(stream_id), from, limit(count)],
    )
    .await
}

/// `EventStore::read_all`; from beyond the end, nothing.
pub async fn read_all(
    tables: &impl SqlTables,
    from_position: u64,
    count: usize,
) -> FlextResult<Vec<StoredEvent>> {
    let sql = tables.statements();
    let Some(from) = start(from_position) else {
        return Ok(Vec::new());
    };
    events(tables, sql.read_all, &[from, limit(count)]).await
}

/// `EventStore::stream_version`.
pub async fn stream_version(tables: &impl SqlTables, stream_id: &str) -> FlextResult<u64> {
    let sql = tables.statements().stream_version;
    let what = "cannot read the stream version";
    Ok(integer(tables, what, sql, &[Arg::Text(stream_id)])
        .await?
        .unwrap_or(0))
}

/// `EventStore::head_position`: never lower than a head this handle has shown before (a
/// store's read barrier may, for one read, sit lower than an earlier one did; every event
/// below an earlier barrier is final, so the earlier head still holds).
pub async fn head_position(tables: &impl SqlTables) -> FlextResult<u64> {
    let sql = tables.statements().head_position;
    let read = integer(tables, "cannot read the head position", sql, &[])
        .await?
        .unwrap_or(0);
    tables.head().advance(read);
    Ok(tables.head().get())
}

/// `SnapshotStore::save_snapshot`.
pub async fn save_snapshot(tables: &impl SqlTables, snapshot: &Snapshot) -> FlextResult<()> {
    let sql = tables.statements();
    let row = RawSnapshot::encode(snapshot, sql.database)?;
    let args = [
        Arg::Text(&row.stream_id),
        Arg::Int(row.version),
        Arg::Int(row.schema_version),
        Arg::Text(&row.payload),
        Arg::Text(&row.taken_at),
    ];
    tables
        .execute("cannot save a snapshot", &[sql.save_snapshot], &args)
        .await
}

/// `SnapshotStore::load_snapshot`.
pub async fn load_snapshot(
    tables: &impl SqlTables,
    stream_id: &str,
) -> FlextResult<Option<Snapshot>> {
    let sql = tables.statements().load_snapshot;
    let rows = tables
        .fetch("cannot load a snapshot", sql, &[Arg::Text(stream_id)])
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let unreadable = |e: FlextError| {
        FlextError::serialization(format!(
            "Snapshot of {stream_id} does not read: {}",
            e.message()
        ))
    };
    let raw = RawSnapshot {
        stream_id: stream_id.to_owned(),
        version: row.int(0).map_err(unreadable)?,
        schema_version: row.int(1).map_err(unreadable)?,
        payload: row.text(2).map_err(unreadable)?,
        taken_at: row.text(3).map_err(unreadable)?,
    };
    raw.decode().map(Some)
}

/// `CheckpointStore::load_checkpoint`.
pub async fn load_checkpoint(tables: &impl SqlTables, name: &str) -> FlextResult<Option<u64>> {
    let sql = tables.statements().load_checkpoint;
    integer(tables, "cannot load a checkpoint", sql, &[Arg::Text(name)]).await
}

/// `CheckpointStore::save_checkpoint`.
pub async fn save_checkpoint(
    tables: &impl SqlTables,
    name: &str,
    position: u64,
) -> FlextResult<()> {
    let sql = tables.statements();
    let args = [Arg::Text(name), Arg::Int(signed(position, sql.database)?)];
    tables
        .execute("cannot save a checkpoint", &[sql.save_checkpoint], &args)
        .await
}

/// `CheckpointStore::add_dead_letter`.
pub async fn add_dead_letter(
    tables: &impl SqlTables,
    name: &str,
    letter: &DeadLetter,
) -> FlextResult<()> {
    let sql = tables.statements();
    let text = dead_letter_text(letter)?;
    let position = Arg::Int(signed(letter.position, sql.database)?);
    let args = [Arg::Text(name), position, Arg::Text(&text)];
    tables
        .execute("cannot add a dead letter", &[sql.add_dead_letter], &args)
        .await
}

/// `CheckpointStore::dead_letters`.
pub async fn dead_letters(tables: &impl SqlTables, name: &str) -> FlextResult<Vec<DeadLetter>> {
    let sql = tables.statements().dead_letters;
    let what = "cannot read dead letters";
    let rows = tables.fetch(what, sql, &[Arg::Text(name)]).await?;
    let texts = rows
        .iter()
        .map(|row| row.text(0))
        .collect::<FlextResult<Vec<_>>>()
        .map_err(|e| tables.unreadable(what, e))?;
    decode_dead_letters(&texts)
}

/// `CheckpointStore::remove_dead_letter`.
pub async fn remove_dead_letter(
    tables: &impl SqlTables,
    name: &str,
    position: u64,
) -> FlextResult<bool> {
    let sql = tables.statements();
    let args = [Arg::Text(name), Arg::Int(signed(position, sql.database)?)];
    let rows = tables
        .fetch("cannot remove a dead letter", sql.remove_dead_letter, &args)
        .await?;
    Ok(!rows.is_empty())
}

/// `CheckpointStore::reset`.
pub async fn reset(tables: &impl SqlTables, name: &str) -> FlextResult<()> {
    let sql = tables.statements();
    tables
        .execute("cannot reset", &sql.reset, &[Arg::Text(name)])
        .await
}

/// Implements `EventStore`, `SnapshotStore` and `CheckpointStore` for a SQL store `$store`
/// (`Clone + 'static`) with two inherent methods: `fn tables(&self) -> impl SqlTables`
/// (usually a private view of the store, so that the driver's row type stays private) and
/// `async fn append_now(&self, &str, ExpectedVersion, Vec<NewEvent>) -> FlextResult<AppendResult>`
/// (appends are each database's own; it is given only batches [`check_batch`] passed: valid,
/// within the limits, with events). Everything else is this module's.
#[macro_export]
macro_rules! sql_store_contracts {
    ($store:ty) => {
        const _: () = {
            use $crate::__private::{
                AppendResult, CheckpointStore, DeadLetter, EventStore, EventStream,
                ExpectedVersion, FlextResult, NewEvent, Snapshot, SnapshotStore, SqlTables,
                StoredEvent, async_trait, tables,
            };

            #[async_trait]
            impl EventStore for $store {
                async fn append(
                    &self,
                    stream_id: &str,
                    expected: ExpectedVersion,
                    events: Vec<NewEvent>,
                ) -> FlextResult<AppendResult> {
                    let checked =
                        tables::check_batch(&self.tables(), stream_id, expected, &events).await?;
                    match checked {
                        Some(nothing) => Ok(nothing),
                        None => self.append_now(stream_id, expected, events).await,
                    }
                }

                async fn read_stream(
                    &self,
                    stream_id: &str,
                    from_version: u64,
                    limit: usize,
                ) -> FlextResult<Vec<StoredEvent>> {
                    tables::read_stream(&self.tables(), stream_id, from_version, limit).await
                }

                async fn read_all(
                    &self,
                    from_position: u64,
                    limit: usize,
                ) -> FlextResult<Vec<StoredEvent>> {
                    tables::read_all(&self.tables(), from_position, limit).await
                }

                async fn stream_version(&self, stream_id: &str) -> FlextResult<u64> {
                    tables::stream_version(&self.tables(), stream_id).await
                }

                async fn head_position(&self) -> FlextResult<u64> {
                    tables::head_position(&self.tables()).await
                }

                async fn subscribe(&self, from_position: u64) -> FlextResult<EventStream> {
                    let tables = self.tables();
                    let (head, poll) = (tables.head(), tables.poll_interval());
                    Ok($crate::follow(self.clone(), from_position, head, poll))
                }
            }

            #[async_trait]
            impl SnapshotStore for $store {
                async fn save_snapshot(&self, snapshot: Snapshot) -> FlextResult<()> {
                    tables::save_snapshot(&self.tables(), &snapshot).await
                }

                async fn load_snapshot(&self, stream_id: &str) -> FlextResult<Option<Snapshot>> {
                    tables::load_snapshot(&self.tables(), stream_id).await
                }
            }

            #[async_trait]
            impl CheckpointStore for $store {
                async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
                    tables::load_checkpoint(&self.tables(), name).await
                }

                async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
                    tables::save_checkpoint(&self.tables(), name, position).await
                }

                async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()> {
                    tables::add_dead_letter(&self.tables(), name, &letter).await
                }

                async fn dead_letters(&self, name: &str) -> FlextResult<Vec<DeadLetter>> {
                    tables::dead_letters(&self.tables(), name).await
                }

                async fn remove_dead_letter(&self, name: &str, position: u64) -> FlextResult<bool> {
                    tables::remove_dead_letter(&self.tables(), name, position).await
                }

                async fn reset(&self, name: &str) -> FlextResult<()> {
                    tables::reset(&self.tables(), name).await
                }
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables whose every query answers one row holding `answer`.
    struct Answering {
        answer: i64,
        head: HeadSignal,
        limits: StoreLimits,
    }

    struct Int(i64);

    impl SqlRow for Int {
        fn int(&self, _index: usize) -> FlextResult<i64> {
            Ok(self.0)
        }

        fn text(&self, _index: usize) -> FlextResult<String> {
            Ok(self.0.to_string())
        }
    }

    static NONE: Statements = Statements {
        database: "test",
        read_stream: "",
        read_all: "",
        stream_version: "",
        version_and_head: "",
        head_position: "head",
        save_snapshot: "",
        load_snapshot: "",
        load_checkpoint: "",
        save_checkpoint: "",
        add_dead_letter: "",
        dead_letters: "",
        remove_dead_letter: "",
        reset: ["", ""],
        stored_places: "",
        place_run: "",
    };

    #[async_trait]
    impl SqlTables for Answering {
        type Row = Int;

        fn statements(&self) -> &'static Statements {
            &NONE
        }

        fn head(&self) -> &HeadSignal {
            &self.head
        }

        fn poll_interval(&self) -> Duration {
            Duration::from_secs(1)
        }

        fn limits(&self) -> &StoreLimits {
            &self.limits
        }

        async fn fetch(&self, _: &str, _: &str, _: &[Arg<'_>]) -> FlextResult<Vec<Int>> {
            Ok(vec![Int(self.answer)])
        }

        async fn execute(&self, _: &str, _: &[&str], _: &[Arg<'_>]) -> FlextResult<()> {
            Ok(())
        }

        fn unreadable(&self, _: &str, error: FlextError) -> FlextError {
            error
        }
    }

    #[tokio::test]
    async fn the_head_never_reads_lower_than_one_shown_before() {
        let tables = Answering {
            answer: 5,
            head: HeadSignal::new(10),
            limits: StoreLimits::default(),
        };
        assert_eq!(head_position(&tables).await.unwrap(), 10);
        let tables = Answering {
            answer: 12,
            ..tables
        };
        assert_eq!(head_position(&tables).await.unwrap(), 12);
        assert_eq!(
            tables.head.get(),
            12,
            "a higher head read moves the signal on"
        );
    }
}
