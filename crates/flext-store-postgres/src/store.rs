//! [`PostgresEventStore`].

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
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, Postgres, Row};
use time::OffsetDateTime;

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "events, snapshots, checkpoints, dead letters",
    "CREATE TABLE flext_events (
        position BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        stream_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        schema_version BIGINT NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        UNIQUE (stream_id, version)
    );
    CREATE TABLE flext_snapshots (
        stream_id TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        schema_version BIGINT NOT NULL,
        payload TEXT NOT NULL,
        taken_at TEXT NOT NULL
    );
    CREATE TABLE flext_checkpoints (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL
    );
    CREATE TABLE flext_dead_letters (
        name TEXT NOT NULL,
        position BIGINT NOT NULL,
        letter TEXT NOT NULL,
        PRIMARY KEY (name, position)
    );",
)];

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
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

/// How to open a [`PostgresEventStore`]. `Debug` shows the URL without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresStoreOptions {
    /// The server, as a `postgres://user:password@host:port/database` URL.
    pub url: String,
    /// The schema that holds the store's tables (default `public`); letters, digits and
    /// `_` only, not starting with a digit.
    pub schema: String,
    /// Connections in the pool (default 10).
    pub max_connections: u32,
    /// How long connecting may take before it is an error (default 5 s).
    pub connect_timeout: Duration,
    /// How often live subscriptions poll when no notification comes (default 500 ms).
    pub poll_interval: Duration,
}

impl fmt::Debug for PostgresStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreOptions")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl PostgresStoreOptions {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "public".to_owned(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(500),
        }
    }

    /// The same options with the tables in `schema`.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
}

/// The event, snapshot and checkpoint stores in one PostgreSQL schema. Clones share it.
#[derive(Clone)]
pub struct PostgresEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    target: String,
    schema: String,
    channel: String,
    lock_key: i64,
    poll_interval: Duration,
    head: HeadSignal,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

const EVENT_COLUMNS: &str = "event_id, stream_id, version, position, event_type, schema_version, payload, metadata, recorded_at";

/// `url` with its password replaced by `***`, for messages and logs: the password of the
/// user part and any `password` query parameter. A string that is not a URL is not echoed
/// at all.
///
/// ```
/// use flext_store_postgres::redact;
///
/// assert_eq!(redact("postgres://app:s3cret@db:5432/orders"), "postgres://app:***@db:5432/orders");
/// assert_eq!(
///     redact("postgres://app@db/orders?sslmode=require&password=s3cret"),
///     "postgres://app@db/orders?sslmode=require&password=***"
/// );
/// assert_eq!(redact("host=db password=s3cret"), "(a connection string that is not a URL)");
/// ```
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a connection string that is not a URL)".to_owned();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            match credentials.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***")),
                None => out.push_str(credentials),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(rest),
    }
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl PostgresEventStore {
    /// Connects to `url` with the default options (schema `public`).
    pub async fn connect(url: &str) -> FlextResult<Self> {
        Self::connect_with(PostgresStoreOptions::new(url)).await
    }

    /// Connects as `options` say, creates the schema if needed and brings it up to date. A
    /// bad URL, an unreachable server (within the connect timeout) or a newer schema is a
    /// `STORAGE_ERROR` naming the server without its password; a bad schema name is an
    /// `INVALID_ARGUMENT`.
    pub async fn connect_with(options: PostgresStoreOptions) -> FlextResult<Self> {
        let target = redact(&options.url);
        let schema = options.schema.clone();
        let valid_schema = !schema.is_empty()
            && schema.len() <= 40
            && !schema.starts_with(|c: char| c.is_ascii_digit())
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_schema {
            return Err(FlextError::invalid_argument(format!(
                "Invalid schema name {schema:?}: letters, digits and _ only, not starting with a digit, at most 40"
            )));
        }
        let connect = PgConnectOptions::from_str(&options.url)
            .map_err(|e| {
                FlextError::storage(format!(
                    "PostgreSQL store {target}: the URL does not parse: {e}"
                ))
            })?
            .application_name("flext-store-postgres");
        let fail = |what: &str, e: sqlx::Error| {
            FlextError::storage(format!("PostgreSQL store {target}: {what}: {e}")).with_source(e)
        };

        // Create the schema on a plain connection before the pool points every connection at it.
        let bootstrap = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect.clone());
        let bootstrap = tokio::time::timeout(options.connect_timeout, bootstrap)
            .await
            .map_err(|_| {
                FlextError::storage(format!(
                    "PostgreSQL store {target}: cannot connect within {} ms",
                    options.connect_timeout.as_millis()
                ))
            })?
            .map_err(|e| fail("cannot connect", e))?;
        // CREATE SCHEMA needs the CREATE privilege on the database even when the schema
        // exists, so look first; two processes creating it at once is not an error.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&schema)
                .fetch_one(&bootstrap)
                .await
                .map_err(|e| fail("cannot look for the schema", e))?;
        if !exists {
            let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&bootstrap)
                .await;
            let raced = |e: &sqlx::Error| {
                matches!(e, sqlx::Error::Database(db)
                    if matches!(db.code().as_deref(), Some("42P06" | "23505")))
            };
            match created {
                Ok(_) => {}
                Err(e) if raced(&e) => {}
                Err(e) => return Err(fail("cannot create the schema", e)),
            }
        }
        bootstrap.close().await;

        let search_path = format!("SET search_path TO \"{schema}\"");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            .after_connect(move |connection, _meta| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    connection.execute(search_path.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(connect.clone())
            .await
            .map_err(|e| fail("cannot connect", e))?;
        migrate(&pool, &target, &schema).await?;
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM flext_events")
            .fetch_one(&pool)
            .await
            .map_err(|e| fail("cannot read the head position", e))?;
        // The append lock's key comes from the server's own text hash (the one hash
        // partitioning relies on), so every process on this schema agrees on it whatever
        // it was compiled with.
        let lock_key: i64 = sqlx::query_scalar("SELECT hashtextextended($1, 0)")
            .bind(format!("flext-store-postgres appends {schema}"))
            .fetch_one(&pool)
            .await
            .map_err(|e| fail("cannot derive the append lock key", e))?;
        let head = HeadSignal::new(u64::try_from(head).unwrap_or(0));
        let channel = format!("flext_events_{schema}");
        // LISTEN holds its connection for good: it gets a pool of its own, so the store's
        // pool keeps every connection it was given.
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(connect);
        let listener = tokio::spawn(listen(
            listener_pool,
            channel.clone(),
            head.clone(),
            options.poll_interval,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                target,
                schema,
                channel,
                lock_key,
                poll_interval: options.poll_interval,
                head,
                listener,
            }),
        })
    }

    /// The connection pool (its connections use the store's schema), for read models kept
    /// in the same database.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema the store's tables are in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Saves `name`'s checkpoint on `connection`, inside the caller's transaction, so a
    /// projection's read model and its checkpoint commit (or roll back) together.
    pub async fn save_checkpoint_in(
        connection: &mut PgConnection,
        name: &str,
        position: u64,
    ) -> FlextResult<()> {
        sqlx::query("INSERT INTO flext_checkpoints (name, position) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET position = excluded.position")
            .bind(name)
            .bind(signed(position)?)
            .execute(connection)
            .await
            .map_err(|e| FlextError::storage(format!("Cannot save checkpoint {name}: {e}")).with_source(e))?;
        Ok(())
    }

    /// The advisory-lock key that serializes appends in this store's schema (for tests and
    /// tools that must write alongside the store).
    pub fn append_lock_key(&self) -> i64 {
        self.inner.lock_key
    }

    fn fail(&self, what: &str, error: sqlx::Error) -> FlextError {
        FlextError::storage(format!(
            "PostgreSQL store {} ({}): {what}: {error}",
            self.inner.target, self.inner.schema
        ))
        .with_source(error)
    }

    async fn append_now(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        validate_batch(stream_id, &events)?;
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
        .bind(signed(count)?)
        .fetch_one(&mut *tx)
        .await;
        let (current, head, inserted) = match placed {
            Ok(placed) => placed,
            Err(error) => {
                return self
                    .insert_failed(tx, stream_id, expected, &events, error)
                    .await;
            }
        };
        let current = u64::try_from(current).unwrap_or(0);
        let head = u64::try_from(head).unwrap_or(0);
        if inserted == 0 {
            // The check failed. A retry of an append that committed finds the stream
            // moved on: answer with the original result when the ids say it is one.
            if let Some(original) = self.retried(&mut tx, stream_id, expected, &events).await? {
                return Ok(original);
            }
            return Err(expected.conflict(stream_id, current));
        }
        let result = AppendResult {
            first_version: current + 1,
            last_version: current + count,
            first_position: head + 1,
            last_position: head + count,
        };
        tx.commit()
            .await
            .map_err(|e| self.fail("cannot commit an append", e))?;
        self.inner.head.advance(result.last_position);
        Ok(result)
    }

    /// An insert failed. When it hit a stored event id, the batch may be a retry of an
    /// append that committed: with this transaction rolled back (its own rows would
    /// otherwise look stored), the stored ids decide between the original result and a
    /// `DUPLICATE`. Any other failure is a `STORAGE_ERROR`.
    async fn insert_failed(
        &self,
        tx: sqlx::Transaction<'_, Postgres>,
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
        tx: &mut PgConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> FlextResult<Option<AppendResult>> {
        let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        let found: Vec<StoredPlace> = sqlx::query("SELECT event_id, stream_id, version, position FROM flext_events WHERE event_id = ANY($1)")
            .bind(&ids)
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
        let run: Vec<StoredPlace> = sqlx::query("SELECT event_id, stream_id, version, position FROM flext_events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3")
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

/// Forwards `NOTIFY`s of new positions into `head`; `PgListener` reconnects by itself. A
/// listener that cannot start leaves subscriptions to polling.
async fn listen(pool: PgPool, channel: String, head: HeadSignal, retry: Duration) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "LISTEN unavailable; subscriptions poll");
                tokio::time::sleep(retry.max(Duration::from_secs(1))).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(&channel).await {
            tracing::warn!(%error, channel, "LISTEN failed; subscriptions poll");
            tokio::time::sleep(retry.max(Duration::from_secs(1))).await;
            continue;
        }
        while let Ok(notification) = listener.recv().await {
            if let Ok(position) = notification.payload().parse::<u64>() {
                head.advance(position);
            }
        }
    }
}

async fn migrate(pool: &PgPool, target: &str, schema: &str) -> FlextResult<()> {
    let migrator = Migrator::new(Embedded).await.map_err(|e| {
        FlextError::storage(format!(
            "PostgreSQL store {target}: embedded migrations do not load: {e}"
        ))
    })?;
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => FlextError::storage(format!(
            "PostgreSQL store {target} ({schema}): the database has schema version {version}, newer than this flext-store-postgres knows ({}); open it with a newer version",
            MIGRATIONS.len()
        )),
        other => FlextError::storage(format!("PostgreSQL store {target} ({schema}): migrations failed: {other}")).with_source(other),
    })
}

fn signed(value: u64) -> FlextResult<i64> {
    i64::try_from(value).map_err(|_| {
        FlextError::invalid_argument(format!("{value} is beyond what PostgreSQL stores"))
    })
}

fn place(row: &PgRow) -> FlextResult<StoredPlace> {
    let column =
        |e: sqlx::Error| FlextError::serialization(format!("Stored event row does not read: {e}"));
    StoredPlace::from_row(
        &row.try_get::<String, _>("event_id").map_err(column)?,
        row.try_get("stream_id").map_err(column)?,
        row.try_get("version").map_err(column)?,
        row.try_get("position").map_err(column)?,
    )
}

fn raw(row: &PgRow) -> FlextResult<RawEvent> {
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
impl EventStore for PostgresEventStore {
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
            "SELECT {EVENT_COLUMNS} FROM flext_events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
        );
        self.read(&sql, Some(stream_id), from_version, limit).await
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM flext_events WHERE position >= $1 ORDER BY position LIMIT $2"
        );
        self.read(&sql, None, from_position, limit).await
    }

    async fn stream_version(&self, stream_id: &str) -> FlextResult<u64> {
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM flext_events WHERE stream_id = $1",
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
impl SnapshotStore for PostgresEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> FlextResult<()> {
        sqlx::query(
            "INSERT INTO flext_snapshots (stream_id, version, schema_version, payload, taken_at) VALUES ($1, $2, $3, $4, $5)
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
        let row = sqlx::query("SELECT version, schema_version, payload, taken_at FROM flext_snapshots WHERE stream_id = $1")
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
impl CheckpointStore for PostgresEventStore {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM flext_checkpoints WHERE name = $1")
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
        sqlx::query("INSERT INTO flext_dead_letters (name, position, letter) VALUES ($1, $2, $3) ON CONFLICT (name, position) DO UPDATE SET letter = excluded.letter")
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
            "SELECT letter FROM flext_dead_letters WHERE name = $1 ORDER BY position",
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
            "DELETE FROM flext_checkpoints WHERE name = $1",
            "DELETE FROM flext_dead_letters WHERE name = $1",
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

impl fmt::Debug for PostgresEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresEventStore")
            .field("target", &self.inner.target)
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}
