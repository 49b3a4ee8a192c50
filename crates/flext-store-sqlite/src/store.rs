//! [`SqliteEventStore`].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flext_impl::{HeadSignal, tail_events};
use flext_protocols::{CheckpointStore, EventStore, EventStream, SnapshotStore};
use flext_types::{
    AppendResult, DeadLetter, ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent,
    RawEvent, Snapshot, StoredEvent, StoredPlace, accepted_versions, metadata_text, retried_append,
    timestamp_text, validate_batch,
};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use time::OffsetDateTime;

/// The schema, one migration per version.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "events, snapshots, checkpoints, dead letters",
    "CREATE TABLE flext_events (
        position INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        stream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        UNIQUE (stream_id, version)
    );
    CREATE TABLE flext_snapshots (
        stream_id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        payload TEXT NOT NULL,
        taken_at TEXT NOT NULL
    );
    CREATE TABLE flext_checkpoints (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    );
    CREATE TABLE flext_dead_letters (
        name TEXT NOT NULL,
        position INTEGER NOT NULL,
        letter TEXT NOT NULL,
        PRIMARY KEY (name, position)
    );",
)];

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> futures_core_box::BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

mod futures_core_box {
    pub(crate) type BoxFuture<'a, T> =
        std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// How to open a [`SqliteEventStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteStoreOptions {
    /// A file path, or `:memory:` for a private in-memory database.
    pub path: String,
    /// How long a writer waits for another to finish (default 5 s).
    pub busy_timeout: Duration,
    /// How often live subscriptions look for events written by other processes (default
    /// 200 ms); commits in this process wake them at once.
    pub poll_interval: Duration,
    /// Connections in the pool (default 4; always 1 for `:memory:`).
    pub max_connections: u32,
}

impl SqliteStoreOptions {
    /// The defaults for `path`.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            busy_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(200),
            max_connections: 4,
        }
    }
}

/// The event, snapshot and checkpoint stores in one SQLite database. Clones share it.
#[derive(Clone)]
pub struct SqliteEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    path: String,
    poll_interval: Duration,
    head: HeadSignal,
}

/// Rows per insert statement: 9 bound values a row stays far below SQLite's limit on
/// bound parameters.
const CHUNK: usize = 500;

const EVENT_COLUMNS: &str = "event_id, stream_id, version, position, event_type, schema_version, payload, metadata, recorded_at";

impl SqliteEventStore {
    /// Opens (creating if needed) the database at `path`, or a private in-memory one for
    /// `:memory:`, with the default options.
    pub async fn open(path: &str) -> FlextResult<Self> {
        Self::open_with(SqliteStoreOptions::new(path)).await
    }

    /// Opens the database `options` describe and brings its schema up to date. A path that
    /// cannot be opened, or a database of a newer schema, is a `STORAGE_ERROR` naming the
    /// path.
    pub async fn open_with(options: SqliteStoreOptions) -> FlextResult<Self> {
        let path = options.path.clone();
        let in_memory = path == ":memory:";
        let connect = if in_memory {
            SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(|e| storage(&path, "cannot read the path", e))?
        } else {
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
        }
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(options.busy_timeout)
        .foreign_keys(true);
        let pool_options =
            SqlitePoolOptions::new().acquire_timeout(options.busy_timeout + Duration::from_secs(5));
        let pool_options = if in_memory {
            // Every connection to :memory: is its own database: keep exactly one, forever.
            pool_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool_options.max_connections(options.max_connections.max(1))
        };
        let pool = pool_options
            .connect_with(connect)
            .await
            .map_err(|e| storage(&path, "cannot open the database", e))?;
        migrate(&pool, &path).await?;
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM flext_events")
            .fetch_one(&pool)
            .await
            .map_err(|e| storage(&path, "cannot read the head position", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                path,
                poll_interval: options.poll_interval,
                head: HeadSignal::new(u64::try_from(head).unwrap_or(0)),
            }),
        })
    }

    /// The connection pool, for read models kept in the same database.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// Saves `name`'s checkpoint on `connection`, inside the caller's transaction, so a
    /// projection's read model and its checkpoint commit (or roll back) together.
    pub async fn save_checkpoint_in(
        connection: &mut SqliteConnection,
        name: &str,
        position: u64,
    ) -> FlextResult<()> {
        sqlx::query("INSERT INTO flext_checkpoints (name, position) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET position = excluded.position")
            .bind(name)
            .bind(signed(position)?)
            .execute(connection)
            .await
            .map_err(|e| FlextError::storage(format!("Cannot save checkpoint {name}: {e}")).with_source(e))?;
        Ok(())
    }

    fn fail(&self, what: &str, error: sqlx::Error) -> FlextError {
        storage(&self.inner.path, what, error)
    }

    async fn append_now(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        validate_batch(stream_id, &events)?;
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
        let (current, head): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COALESCE(MAX(version), 0) FROM flext_events WHERE stream_id = ?), \
             (SELECT COALESCE(MAX(position), 0) FROM flext_events)",
        )
        .bind(stream_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.fail("cannot read the stream version", e))?;
        let current = u64::try_from(current).unwrap_or(0);
        let head = u64::try_from(head).unwrap_or(0);
        if !expected.accepts(current) {
            // A retry of an append that committed finds the stream moved on: answer with
            // the original result when the ids say it is one.
            if let Some(original) = self.retried(&mut tx, stream_id, expected, &events).await? {
                return Ok(original);
            }
            return Err(expected.conflict(stream_id, current));
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
                return self
                    .insert_failed(tx, stream_id, expected, &events, error)
                    .await;
            }
        }
        tx.commit()
            .await
            .map_err(|e| self.fail("cannot commit an append", e))?;
        let result = AppendResult {
            first_version: current + 1,
            last_version: current + count,
            first_position: head + 1,
            last_position: head + count,
        };
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

    /// An insert failed. When it hit a stored event id, the batch may be a retry of an
    /// append that committed: with this transaction rolled back (its own rows would
    /// otherwise look stored), the stored ids decide between the original result and a
    /// `DUPLICATE`. Any other failure is a `STORAGE_ERROR`.
    async fn insert_failed(
        &self,
        tx: sqlx::Transaction<'_, Sqlite>,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        error: sqlx::Error,
    ) -> FlextResult<AppendResult> {
        let unique = matches!(&error, sqlx::Error::Database(db) if db.is_unique_violation());
        tx.rollback()
            .await
            .map_err(|e| self.fail("cannot roll back a failed append", e))?;
        if unique {
            let mut connection = self
                .inner
                .pool
                .acquire()
                .await
                .map_err(|e| self.fail("cannot look for stored ids", e))?;
            if let Some(original) = self
                .retried(&mut connection, stream_id, expected, events)
                .await?
            {
                return Ok(original);
            }
        }
        Err(self.fail("cannot insert events", error))
    }

    async fn retried(
        &self,
        tx: &mut SqliteConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> FlextResult<Option<AppendResult>> {
        // The ids go in as one JSON array: a batch of any size is one bound parameter
        // (SQLite allows at most 32,766).
        let ids = serde_json::to_string(
            &events
                .iter()
                .map(|e| e.event_id.to_string())
                .collect::<Vec<_>>(),
        )
        .map_err(|e| FlextError::serialization(format!("Event ids do not encode: {e}")))?;
        let found: Vec<StoredPlace> = sqlx::query(
            "SELECT event_id, stream_id, version, position FROM flext_events \
             WHERE event_id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.fail("cannot look for stored ids", e))?
        .iter()
        .map(place)
        .collect::<FlextResult<_>>()?;
        let Some(first) = events
            .iter()
            .find_map(|e| found.iter().find(|p| p.event_id == e.event_id))
        else {
            return Ok(None);
        };
        let run: Vec<StoredPlace> = sqlx::query("SELECT event_id, stream_id, version, position FROM flext_events WHERE stream_id = ? AND version >= ? ORDER BY version LIMIT ?")
            .bind(&first.stream_id)
            .bind(signed(first.version)?)
            .bind(events.len() as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.fail("cannot read a retried batch", e))?
            .iter()
            .map(place)
            .collect::<FlextResult<_>>()?;
        retried_append(stream_id, expected, events, first, &run).map(Some)
    }

    async fn read(
        &self,
        sql: &str,
        key: Option<&str>,
        from: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let query = sqlx::query(sql);
        let query = match key {
            Some(stream) => query.bind(stream),
            None => query,
        };
        query
            .bind(signed(from.max(1))?)
            .bind(limit)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| self.fail("cannot read events", e))?
            .iter()
            .map(|row| raw(row)?.decode())
            .collect()
    }
}

async fn migrate(pool: &SqlitePool, path: &str) -> FlextResult<()> {
    let migrator = Migrator::new(Embedded).await.map_err(|e| {
        FlextError::storage(format!(
            "SQLite store {path}: embedded migrations do not load: {e}"
        ))
    })?;
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => FlextError::storage(format!(
            "SQLite store {path}: the database has schema version {version}, newer than this flext-store-sqlite knows ({}); open it with a newer version",
            MIGRATIONS.len()
        )),
        other => FlextError::storage(format!("SQLite store {path}: migrations failed: {other}")).with_source(other),
    })
}

fn storage(path: &str, what: &str, error: sqlx::Error) -> FlextError {
    FlextError::storage(format!("SQLite store {path}: {what}: {error}")).with_source(error)
}

fn signed(value: u64) -> FlextResult<i64> {
    i64::try_from(value)
        .map_err(|_| FlextError::invalid_argument(format!("{value} is beyond what SQLite stores")))
}

fn place(row: &SqliteRow) -> FlextResult<StoredPlace> {
    let column =
        |e: sqlx::Error| FlextError::serialization(format!("Stored event row does not read: {e}"));
    StoredPlace::from_row(
        &row.try_get::<String, _>("event_id").map_err(column)?,
        row.try_get("stream_id").map_err(column)?,
        row.try_get("version").map_err(column)?,
        row.try_get("position").map_err(column)?,
    )
}

fn raw(row: &SqliteRow) -> FlextResult<RawEvent> {
    let column =
        |e: sqlx::Error| FlextError::serialization(format!("Stored event row does not read: {e}"));
    Ok(RawEvent {
        event_id: row.try_get("event_id").map_err(column)?,
        stream_id: row.try_get("stream_id").map_err(column)?,
        version: row.try_get("version").map_err(column)?,
        position: row.try_get("position").map_err(column)?,
        event_type: row.try_get("event_type").map_err(column)?,
        schema_version: row.try_get("schema_version").map_err(column)?,
        payload: row.try_get("payload").map_err(column)?,
        metadata: row.try_get("metadata").map_err(column)?,
        recorded_at: row.try_get("recorded_at").map_err(column)?,
    })
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        self.append_now(stream_id, expected, events).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM flext_events WHERE stream_id = ? AND version >= ? ORDER BY version LIMIT ?"
        );
        self.read(&sql, Some(stream_id), from_version, limit).await
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM flext_events WHERE position >= ? ORDER BY position LIMIT ?"
        );
        self.read(&sql, None, from_position, limit).await
    }

    async fn stream_version(&self, stream_id: &str) -> FlextResult<u64> {
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM flext_events WHERE stream_id = ?",
        )
        .bind(stream_id)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| self.fail("cannot read the stream version", e))?;
        Ok(u64::try_from(version).unwrap_or(0))
    }

    async fn head_position(&self) -> FlextResult<u64> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM flext_events")
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| self.fail("cannot read the head position", e))?;
        Ok(u64::try_from(head).unwrap_or(0))
    }

    async fn subscribe(&self, from_position: u64) -> FlextResult<EventStream> {
        let reader = self.clone();
        let head = self.inner.head.clone();
        let poll = self.inner.poll_interval;
        // Woken by commits in this process; other processes' commits are found by polling.
        Ok(tail_events(
            from_position,
            512,
            move |from, limit| {
                let reader = reader.clone();
                async move { reader.read_all(from, limit).await }
            },
            move |next| head.wait_for(next, poll),
        ))
    }
}

#[async_trait]
impl SnapshotStore for SqliteEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> FlextResult<()> {
        sqlx::query(
            "INSERT INTO flext_snapshots (stream_id, version, schema_version, payload, taken_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, schema_version = excluded.schema_version,
                 payload = excluded.payload, taken_at = excluded.taken_at
             WHERE excluded.version >= flext_snapshots.version",
        )
        .bind(&snapshot.stream_id)
        .bind(signed(snapshot.version)?)
        .bind(i64::from(snapshot.schema_version))
        .bind(snapshot.payload.as_str())
        .bind(timestamp_text(snapshot.timestamp)?)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| self.fail("cannot save a snapshot", e))?;
        Ok(())
    }

    async fn load_snapshot(&self, stream_id: &str) -> FlextResult<Option<Snapshot>> {
        let row = sqlx::query("SELECT version, schema_version, payload, taken_at FROM flext_snapshots WHERE stream_id = ?")
            .bind(stream_id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| self.fail("cannot load a snapshot", e))?;
        let Some(row) = row else { return Ok(None) };
        let column = |e: sqlx::Error| {
            FlextError::serialization(format!("Snapshot of {stream_id} does not read: {e}"))
        };
        let taken_at: String = row.try_get("taken_at").map_err(column)?;
        Ok(Some(Snapshot {
            stream_id: stream_id.to_owned(),
            version: u64::try_from(row.try_get::<i64, _>("version").map_err(column)?).unwrap_or(0),
            schema_version: u32::try_from(row.try_get::<i64, _>("schema_version").map_err(column)?)
                .unwrap_or(0),
            payload: JsonPayload::from_text(row.try_get::<String, _>("payload").map_err(column)?)?,
            timestamp: OffsetDateTime::parse(
                &taken_at,
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|e| {
                FlextError::serialization(format!(
                    "Snapshot of {stream_id} has a malformed time: {e}"
                ))
            })?,
        }))
    }
}

#[async_trait]
impl CheckpointStore for SqliteEventStore {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM flext_checkpoints WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(|e| self.fail("cannot load a checkpoint", e))?;
        Ok(position.map(|p| u64::try_from(p).unwrap_or(0)))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        let mut connection = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(|e| self.fail("cannot save a checkpoint", e))?;
        Self::save_checkpoint_in(&mut connection, name, position).await
    }

    async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()> {
        let text = serde_json::to_string(&letter)?;
        sqlx::query(
            "INSERT OR REPLACE INTO flext_dead_letters (name, position, letter) VALUES (?, ?, ?)",
        )
        .bind(name)
        .bind(signed(letter.position)?)
        .bind(text)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| self.fail("cannot add a dead letter", e))?;
        Ok(())
    }

    async fn dead_letters(&self, name: &str) -> FlextResult<Vec<DeadLetter>> {
        let letters: Vec<String> = sqlx::query_scalar(
            "SELECT letter FROM flext_dead_letters WHERE name = ? ORDER BY position",
        )
        .bind(name)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.fail("cannot read dead letters", e))?;
        letters
            .iter()
            .map(|text| serde_json::from_str(text).map_err(FlextError::from))
            .collect()
    }

    async fn reset(&self, name: &str) -> FlextResult<()> {
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(|e| self.fail("cannot reset", e))?;
        for sql in [
            "DELETE FROM flext_checkpoints WHERE name = ?",
            "DELETE FROM flext_dead_letters WHERE name = ?",
        ] {
            sqlx::query(sql)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.fail("cannot reset", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| self.fail("cannot reset", e))?;
        Ok(())
    }
}

impl fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}
