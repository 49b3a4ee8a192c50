//! Connecting a [`PostgresEventStore`]: its options (and the limits every wait is bounded
//! by), the schema, the connection pools, the embedded migrations, and the tasks that wake
//! subscriptions: the notifier, the `LISTEN` task and the head keeper.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use flext_store::{HeadSignal, Migrations, StoreLimits, migrations_failed, signed};
use flext_types::{FlextError, FlextResult};
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor};

use crate::redact;
use crate::tables::{HEAD_AND_TOP, HEAD_POSITION, SAVE_CHECKPOINT};

/// The database's name in messages about values it cannot keep.
pub(crate) const DATABASE: &str = "PostgreSQL";

/// The schema, one migration per version.
const MIGRATIONS: Migrations = &[
    (
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
    ),
    (
        2,
        "positions from transaction ids",
        // Positions are now `(transaction id + offset) << 20 | n` (see `tables::barrier!`);
        // the offset starts where the stored positions end, so that every new position is
        // above them (0 unless a store holds more than 2^20 positions per transaction id
        // the cluster has used).
        "CREATE TABLE flext_positions (
            id SMALLINT PRIMARY KEY CHECK (id = 1),
            position_offset BIGINT NOT NULL
        );
        INSERT INTO flext_positions (id, position_offset)
        SELECT 1, GREATEST(0, (COALESCE(MAX(position), 0) >> 20) + 1
                              - pg_current_xact_id()::text::bigint)
        FROM flext_events;",
    ),
    (
        3,
        "native types: uuid, jsonb, timestamptz",
        // Each table is rewritten in place: no row is added, lost or moved (positions are
        // kept). A payload or time that does not convert (a corrupt row) fails the
        // upgrade, which names it and leaves the store as it was. Times are cut to
        // microseconds before they convert, as a fresh append keeps them: the server
        // would round the digits beyond (23:59:59.9999995 would become the next day). Its
        // checksum is the one of `NATIVE_TYPES_AS_SHIPPED`.
        "ALTER TABLE flext_events
            ALTER COLUMN event_id TYPE UUID USING event_id::uuid,
            ALTER COLUMN payload TYPE JSONB USING payload::jsonb,
            ALTER COLUMN metadata TYPE JSONB USING metadata::jsonb,
            ALTER COLUMN recorded_at TYPE TIMESTAMPTZ
                USING regexp_replace(recorded_at, '(\\.[0-9]{6})[0-9]+', '\\1')::timestamptz;
        ALTER TABLE flext_snapshots
            ALTER COLUMN payload TYPE JSONB USING payload::jsonb,
            ALTER COLUMN taken_at TYPE TIMESTAMPTZ
                USING regexp_replace(taken_at, '(\\.[0-9]{6})[0-9]+', '\\1')::timestamptz;
        ALTER TABLE flext_dead_letters
            ALTER COLUMN letter TYPE JSONB USING letter::jsonb;
        ALTER TABLE flext_checkpoints
            ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();",
    ),
    (
        4,
        "leases",
        // One row per lease name: who holds it, until when (the server's clock decides),
        // and the fencing token, raised by one at every acquisition.
        "CREATE TABLE flext_leases (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            token BIGINT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        );",
    ),
];

/// The third migration as it first shipped, converting times with the server's rounding.
/// Stores it upgraded are at version 3 as much as those the current one upgrades (only
/// their times' last rounded microsecond can differ, which nothing can undo now), so the
/// current SQL keeps this text's checksum: sqlx refuses a store whose applied migration's
/// checksum differs from the embedded one's.
const NATIVE_TYPES_AS_SHIPPED: (i64, &str) = (
    3,
    "ALTER TABLE flext_events
            ALTER COLUMN event_id TYPE UUID USING event_id::uuid,
            ALTER COLUMN payload TYPE JSONB USING payload::jsonb,
            ALTER COLUMN metadata TYPE JSONB USING metadata::jsonb,
            ALTER COLUMN recorded_at TYPE TIMESTAMPTZ USING recorded_at::timestamptz;
        ALTER TABLE flext_snapshots
            ALTER COLUMN payload TYPE JSONB USING payload::jsonb,
            ALTER COLUMN taken_at TYPE TIMESTAMPTZ USING taken_at::timestamptz;
        ALTER TABLE flext_dead_letters
            ALTER COLUMN letter TYPE JSONB USING letter::jsonb;
        ALTER TABLE flext_checkpoints
            ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();",
);

/// The offset that places the next transaction's positions above every stored one.
macro_rules! next_offset {
    () => {
        "(((SELECT COALESCE(MAX(position), 0) FROM flext_events) >> 20) + 1 \
          - pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
    };
}

/// Moves the position offset on when the stored positions are ahead of what this
/// cluster's transaction ids give (a dump restored into another cluster starts its ids
/// low): afterwards every new position is above every stored one. Otherwise it changes
/// nothing. When [`REBASE_NEEDED`] says it would move the offset, it runs after `LOCK
/// TABLE flext_events IN SHARE MODE` in the same transaction, so no append commits between
/// its read of the highest position and the update.
const REBASE: &str = concat!(
    "UPDATE flext_positions SET position_offset = fresh.next_offset FROM (SELECT ",
    next_offset!(),
    " AS next_offset) fresh WHERE fresh.next_offset > position_offset"
);

/// Whether [`REBASE`] would move the offset on.
const REBASE_NEEDED: &str = concat!(
    "SELECT ",
    next_offset!(),
    " > (SELECT position_offset FROM flext_positions)"
);

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    let migration = |sql: &'static str| {
                        Migration::new(
                            *version,
                            Cow::Borrowed(*description),
                            MigrationType::Simple,
                            Cow::Borrowed(sql),
                            false,
                        )
                    };
                    let mut current = migration(sql);
                    if *version == NATIVE_TYPES_AS_SHIPPED.0 {
                        current.checksum = migration(NATIVE_TYPES_AS_SHIPPED.1).checksum;
                    }
                    current
                })
                .collect())
        })
    }
}

/// How to open a [`PostgresEventStore`]: [`PostgresStoreOptions::new`] and the `with_*`
/// setters. `Debug` shows the URL without its password.
///
/// ```
/// use std::time::Duration;
/// use flext_store_postgres::PostgresStoreOptions;
///
/// let options = PostgresStoreOptions::new("postgres://app@127.0.0.1/orders")
///     .with_schema("billing")
///     .with_max_connections(4)
///     .with_connect_timeout(Duration::from_secs(2))
///     .with_lock_timeout(Duration::from_secs(1));
/// assert_eq!(options.schema, "billing");
/// assert_eq!(options.poll_interval, Duration::from_millis(500));
/// assert_eq!(options.statement_timeout, Duration::from_secs(15));
/// assert_eq!(options.migration_timeout, Duration::from_secs(600));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresStoreOptions {
    /// The server, as a `postgres://user:password@host:port/database` URL.
    pub url: String,
    /// The schema that holds the store's tables (default `public`); letters, digits and
    /// `_` only, not starting with a digit.
    pub schema: String,
    /// Connections in the pool (default 10).
    pub max_connections: u32,
    /// How long connecting may take before it is an error (default 5 s); a longer one
    /// than a year (up to `Duration::MAX`) is a year.
    pub connect_timeout: Duration,
    /// How often live subscriptions poll when no notification comes (default 500 ms).
    pub poll_interval: Duration,
    /// How big an append may be (default [`StoreLimits::default`]).
    pub limits: StoreLimits,
    /// How long a statement waits for a lock — an append for a stream version another
    /// transaction holds, say — before it fails with a `TIMEOUT` (default 5 s;
    /// `PostgreSQL`'s `lock_timeout` on every connection of the store; zero waits forever).
    pub lock_timeout: Duration,
    /// How long one statement may run before it fails with a `TIMEOUT` (default 15 s;
    /// `statement_timeout`; zero is no limit). The upgrade on open has a limit of its own,
    /// [`migration_timeout`](Self::migration_timeout).
    pub statement_timeout: Duration,
    /// How long each statement of the upgrade on open (the migrations, moving the position
    /// offset on) may run, and how long it may wait for each lock — a table another
    /// session uses, or the migration lock while another replica upgrades the schema —
    /// before the open fails with a `TIMEOUT` naming the store and leaves it as it was
    /// (default 10 min). It must be at least 1 ms and at most `i32::MAX` ms (about 24.8
    /// days, what the server keeps): anything else is an `INVALID_ARGUMENT` at connect.
    pub migration_timeout: Duration,
    /// How long a transaction on the store's connections (one of [`PostgresEventStore::pool`]'s
    /// users, say) may sit idle before the server ends its session (default 30 s;
    /// `idle_in_transaction_session_timeout`; zero is no limit). An idle transaction
    /// holds every reader of the cluster back (see the crate documentation).
    pub idle_in_transaction_timeout: Duration,
    /// How long a call waits for a pooled connection, or an append for one of the append
    /// slots, before it fails with a `TIMEOUT` (default 5 s).
    pub acquire_timeout: Duration,
}

/// The longest value the server keeps for a timeout setting: `i32::MAX` milliseconds.
const LONGEST_SETTING: Duration = Duration::from_millis(i32::MAX as u64);

/// The longest connect timeout kept: a year. The pool adds the timeout to the current
/// instant, which a longer one (`Duration::MAX`, say) would overflow.
const LONGEST_CONNECT_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

impl fmt::Debug for PostgresStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreOptions")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("limits", &self.limits)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("migration_timeout", &self.migration_timeout)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl PostgresStoreOptions {
    /// The defaults for `url` (a `&str`, a `String`, or a URL type that is `AsRef<str>`,
    /// such as `url::Url`).
    pub fn new(url: impl AsRef<str>) -> Self {
        Self {
            url: url.as_ref().to_owned(),
            schema: "public".to_owned(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(500),
            limits: StoreLimits::default(),
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(15),
            migration_timeout: Duration::from_secs(10 * 60),
            idle_in_transaction_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(5),
        }
    }

    /// The same options with lock waits failing after `lock_timeout` (zero: never).
    #[must_use]
    pub fn with_lock_timeout(mut self, lock_timeout: Duration) -> Self {
        self.lock_timeout = lock_timeout;
        self
    }

    /// The same options with statements failing after `statement_timeout` (zero: never).
    #[must_use]
    pub fn with_statement_timeout(mut self, statement_timeout: Duration) -> Self {
        self.statement_timeout = statement_timeout;
        self
    }

    /// The same options with each statement and each lock wait of the upgrade on open
    /// failing after `migration_timeout` (at least 1 ms, at most `i32::MAX` ms).
    #[must_use]
    pub fn with_migration_timeout(mut self, migration_timeout: Duration) -> Self {
        self.migration_timeout = migration_timeout;
        self
    }

    /// The same options with idle transactions ended after `idle_in_transaction_timeout`
    /// (zero: never).
    #[must_use]
    pub fn with_idle_in_transaction_timeout(
        mut self,
        idle_in_transaction_timeout: Duration,
    ) -> Self {
        self.idle_in_transaction_timeout = idle_in_transaction_timeout;
        self
    }

    /// The same options with waits for a connection or an append slot failing after
    /// `acquire_timeout`.
    #[must_use]
    pub fn with_acquire_timeout(mut self, acquire_timeout: Duration) -> Self {
        self.acquire_timeout = acquire_timeout;
        self
    }

    /// The `SET` statements every connection of the store runs first: its schema, its
    /// timeouts (in milliseconds, a non-zero one at least 1 ms, at most what the server
    /// keeps) and `READ COMMITTED` (which the append and the read barrier rely on).
    fn session(&self) -> String {
        let millis = |limit: Duration| match limit.min(LONGEST_SETTING).as_millis() {
            0 if !limit.is_zero() => 1,
            millis => millis,
        };
        format!(
            "SET search_path TO \"{}\"; SET lock_timeout = {}; SET statement_timeout = {}; \
             SET idle_in_transaction_session_timeout = {}; \
             SET default_transaction_isolation = 'read committed'",
            self.schema,
            millis(self.lock_timeout),
            millis(self.statement_timeout),
            millis(self.idle_in_transaction_timeout),
        )
    }

    /// The same options with the tables in `schema`.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The same options with `max_connections` pooled connections.
    #[must_use]
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// The same options with connecting failing after `connect_timeout`.
    #[must_use]
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// The same options with live subscriptions polling every `poll_interval` when no
    /// notification comes.
    #[must_use]
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// The same options with appends checked against `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: StoreLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// The event, snapshot and checkpoint stores in one PostgreSQL schema. Clones share it.
#[derive(Clone)]
pub struct PostgresEventStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) target: String,
    pub(crate) schema: String,
    pub(crate) poll_interval: Duration,
    /// One permit per append that may hold a pooled connection at once: two fewer than
    /// the pool has (one fewer for a pool of two, all for a pool of one), so appends
    /// waiting on locks never take the connections reads and checkpoints need.
    pub(crate) append_slots: tokio::sync::Semaphore,
    pub(crate) acquire_timeout: Duration,
    pub(crate) lock_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) idle_in_transaction_timeout: Duration,
    pub(crate) head: HeadSignal,
    pub(crate) limits: StoreLimits,
    /// Woken by each commit of this store: the notifier tells the head keeper and, by a
    /// `NOTIFY`, every other process.
    pub(crate) committed: Arc<tokio::sync::Notify>,
    /// The `LISTEN` task, the head keeper and the notifier.
    tasks: [tokio::task::JoinHandle<()>; 3],
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

impl PostgresEventStore {
    /// Connects to `url` (a `&str`, a `String`, a URL type that is `AsRef<str>`) with the
    /// default options (schema `public`).
    pub async fn connect(url: impl AsRef<str>) -> FlextResult<Self> {
        Self::connect_with(PostgresStoreOptions::new(url)).await
    }

    /// Connects as `options` say, creates the schema if needed and brings it up to date. A
    /// bad URL, an unreachable server or a newer schema is a `STORAGE_ERROR` naming the
    /// server without its password; a server that refuses the connection is one at once,
    /// saying so and naming host and port, one that does not answer is one after the
    /// connect timeout. A `password` query parameter followed by a parameter PostgreSQL does
    /// not know (the rest of a password holding a raw `&`, most likely) is refused too. A
    /// bad schema name or migration timeout is an `INVALID_ARGUMENT`. The upgrade is one
    /// transaction: a lock wait or statement past the migration timeout is a `TIMEOUT`, a
    /// row the native types refuse a `SERIALIZATION_ERROR` naming it, and either leaves
    /// the store as it was.
    pub async fn connect_with(options: PostgresStoreOptions) -> FlextResult<Self> {
        let target = redact(&options.url);
        let schema = options.schema.clone();
        let connect_timeout = options.connect_timeout.min(LONGEST_CONNECT_TIMEOUT);
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
        let migration_timeout = options.migration_timeout;
        if migration_timeout < Duration::from_millis(1) || migration_timeout > LONGEST_SETTING {
            return Err(FlextError::invalid_argument(format!(
                "Invalid migration_timeout of {migration_timeout:?} for PostgreSQL store {target} \
                 ({schema}): at least 1 ms and at most {} ms",
                LONGEST_SETTING.as_millis()
            )));
        }
        if redact::unknown_after_password(&options.url) {
            return Err(FlextError::storage(format!(
                "PostgreSQL store {target}: the URL has a parameter PostgreSQL does not know \
                 after password=; write & in a password as %26"
            )));
        }
        let connect = PgConnectOptions::from_str(&options.url)
            .map_err(|e| {
                // A parser's message may quote the URL, so it is shown only when the URL
                // holds no password.
                let why = if redact::has_secrets(&options.url) {
                    "reserved characters (@ : / ? # &) in a user name or password must be \
                     percent-encoded"
                        .to_owned()
                } else {
                    e.to_string()
                };
                FlextError::storage(format!(
                    "PostgreSQL store {target}: the URL does not parse: {why}"
                ))
            })?
            .application_name("flext-store-postgres");
        let url = options.url.as_str();
        let fail = |what: &str, e: sqlx::Error| {
            let message = redact::scrub(&format!("{what}: {e}"), url);
            FlextError::storage(format!("PostgreSQL store {target}: {message}")).with_source(e)
        };

        // The first connection is made alone, not through a pool, so a server that refuses
        // it is an error at once: a pool would retry until its acquire timeout and then
        // only say that it timed out. It creates the schema before the pool points every
        // connection at it.
        let server = match connect.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => format!("{}:{}", connect.get_host(), connect.get_port()),
        };
        let server = redact::scrub(&server, url);
        let mut bootstrap = tokio::time::timeout(connect_timeout, PgConnection::connect_with(&connect))
            .await
            .map_err(|_| {
                FlextError::storage(format!(
                    "PostgreSQL store {target}: the server at {server} is unreachable: no answer within {} ms",
                    connect_timeout.as_millis()
                ))
            })?
            .map_err(|e| match &e {
                sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    fail(&format!("the server at {server} refused the connection"), e)
                }
                sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                    fail(&format!("the server at {server} is unreachable"), e)
                }
                _ => fail(&format!("cannot connect to {server}"), e),
            })?;
        // CREATE SCHEMA needs the CREATE privilege on the database even when the schema
        // exists, so look first; two processes creating it at once is not an error.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&schema)
                .fetch_one(&mut bootstrap)
                .await
                .map_err(|e| fail("cannot look for the schema", e))?;
        if !exists {
            let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&mut bootstrap)
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
        // The upgrade runs on the first connection, bounded by the migration timeout: an
        // upgrade of a big store may take long, but a lock held elsewhere (a table in use,
        // another replica's upgrade) must not hold the open forever.
        let store = format!("PostgreSQL store {target} ({schema})");
        let bounded = format!(
            "SET search_path TO \"{schema}\"; SET lock_timeout = {millis}; \
             SET statement_timeout = {millis}; \
             SET default_transaction_isolation = 'read committed'",
            millis = migration_timeout.as_millis()
        );
        let upgraded = match bootstrap.execute(bounded.as_str()).await {
            Ok(_) => upgrade(&mut bootstrap, &store, migration_timeout).await,
            Err(e) => Err(fail("cannot prepare the migrations", e)),
        };
        // A connection that does not close cleanly is dropped: nothing is lost, and the
        // server releases its locks.
        let _ = bootstrap.close().await;
        upgraded?;

        let session = options.session();
        let max_connections = options.max_connections.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(options.acquire_timeout.min(LONGEST_CONNECT_TIMEOUT))
            .after_connect(on_connect(session.clone()))
            .connect_with(connect.clone())
            .await
            .map_err(|e| fail("cannot connect", e))?;
        let head: i64 = sqlx::query_scalar(HEAD_POSITION)
            .fetch_one(&pool)
            .await
            .map_err(|e| fail("cannot read the head position", e))?;
        let head = HeadSignal::new(u64::try_from(head).unwrap_or(0));
        let channel = format!("flext_events_{schema}");
        // LISTEN holds its connection for good, and the head keeper and the notifier use
        // one each: they get a pool of their own, so the store's pool keeps every connection it was given.
        let listener_pool = PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(connect_timeout)
            // A notification's commit need not wait for the disk: a crash loses only the
            // wake-up, and the reads on these connections write nothing.
            .after_connect(on_connect(format!(
                "{session}; SET synchronous_commit = off"
            )))
            .connect_lazy_with(connect);
        let woken = Arc::new(tokio::sync::Notify::new());
        let committed = Arc::new(tokio::sync::Notify::new());
        let notifier = tokio::spawn(notify_commits(
            listener_pool.clone(),
            channel.clone(),
            committed.clone(),
            woken.clone(),
        ));
        let listener = tokio::spawn(listen(
            listener_pool.clone(),
            channel.clone(),
            woken.clone(),
            options.poll_interval,
        ));
        let keeper = tokio::spawn(keep_head(listener_pool, head.clone(), woken));
        let reserved = match max_connections {
            1 => 0,
            2 => 1,
            _ => 2,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                target,
                schema,
                poll_interval: options.poll_interval,
                append_slots: tokio::sync::Semaphore::new((max_connections - reserved) as usize),
                acquire_timeout: options.acquire_timeout.min(LONGEST_CONNECT_TIMEOUT),
                lock_timeout: options.lock_timeout,
                statement_timeout: options.statement_timeout,
                idle_in_transaction_timeout: options.idle_in_transaction_timeout,
                head,
                limits: options.limits,
                committed,
                tasks: [listener, keeper, notifier],
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

    /// The limits appends are checked against.
    pub fn limits(&self) -> &StoreLimits {
        &self.inner.limits
    }

    /// Saves `name`'s checkpoint on `connection`, inside the caller's transaction, so a
    /// projection's read model and its checkpoint commit (or roll back) together.
    pub async fn save_checkpoint_in(
        connection: &mut PgConnection,
        name: &str,
        position: u64,
    ) -> FlextResult<()> {
        sqlx::query(SAVE_CHECKPOINT)
            .bind(name)
            .bind(signed(position, DATABASE)?)
            .execute(connection)
            .await
            .map_err(|e| {
                FlextError::storage(format!("Cannot save checkpoint {name}: {e}")).with_source(e)
            })?;
        Ok(())
    }

    /// Waits (at most the acquire timeout) for one of the append slots.
    pub(crate) async fn append_slot(&self) -> FlextResult<tokio::sync::SemaphorePermit<'_>> {
        let slots = &self.inner.append_slots;
        match tokio::time::timeout(self.inner.acquire_timeout, slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed.
            Ok(Err(closed)) => Err(self.fail_with("cannot take an append slot", closed)),
            Err(_) => Err(FlextError::timeout(format!(
                "PostgreSQL store {} ({}): every append slot stayed busy for {} ms \
                 (appends waiting on locks?)",
                self.inner.target,
                self.inner.schema,
                self.inner.acquire_timeout.as_millis()
            ))),
        }
    }

    /// The error of a statement that failed: a `TIMEOUT` naming the store and the limit
    /// when a limit ended it (a lock wait, the statement's time, an idle transaction, the
    /// wait for a pooled connection), otherwise the `STORAGE_ERROR` of
    /// [`fail_with`](Self::fail_with).
    pub(crate) fn fail(&self, what: &str, error: sqlx::Error) -> FlextError {
        let inner = &self.inner;
        let limit = match &error {
            sqlx::Error::PoolTimedOut => {
                Some(("waiting for a pooled connection", inner.acquire_timeout))
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("55P03") => Some(("waiting for a lock", inner.lock_timeout)),
                Some("57014") => Some(("running one statement", inner.statement_timeout)),
                Some("25P03") => Some(("idle in a transaction", inner.idle_in_transaction_timeout)),
                _ => None,
            },
            _ => None,
        };
        match limit {
            Some((doing, limit)) => FlextError::timeout(format!(
                "PostgreSQL store {} ({}): {what}: timed out {doing} (the limit is {} ms): {error}",
                inner.target,
                inner.schema,
                limit.as_millis()
            ))
            .with_source(error),
            None => self.fail_with(what, error),
        }
    }

    /// The `STORAGE_ERROR` naming this store and saying `what` failed, with `error` as its
    /// source.
    pub(crate) fn fail_with(
        &self,
        what: &str,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> FlextError {
        FlextError::storage(format!(
            "PostgreSQL store {} ({}): {what}: {error}",
            self.inner.target, self.inner.schema
        ))
        .with_source(error)
    }
}

/// The `after_connect` hook of the store's pools: runs `session` (the settings of
/// `PostgresStoreOptions::session`) on every new connection.
fn on_connect(
    session: String,
) -> impl for<'c> Fn(
    &'c mut PgConnection,
    PoolConnectionMetadata,
) -> BoxFuture<'c, Result<(), sqlx::Error>>
+ Send
+ Sync
+ 'static {
    move |connection, _meta| {
        let session = session.clone();
        Box::pin(async move {
            connection.execute(session.as_str()).await?;
            Ok(())
        })
    }
}

/// Wakes `woken` (the head keeper) whenever notifications come on `channel`, once for all
/// that arrived together, and after every reconnection (notifications sent meanwhile are
/// lost). A notification is only a wake-up: any role may `NOTIFY` any channel, so its
/// payload is never read. `PgListener` reconnects by itself; a listener that cannot start
/// leaves subscriptions to the head keeper and polling.
async fn listen(pool: PgPool, channel: String, woken: Arc<tokio::sync::Notify>, retry: Duration) {
    let pause = retry.clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "LISTEN unavailable; subscriptions poll");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(&channel).await {
            tracing::warn!(%error, channel, "LISTEN failed; subscriptions poll");
            tokio::time::sleep(pause).await;
            continue;
        }
        loop {
            woken.notify_one();
            match listener.try_recv().await {
                Ok(Some(_)) => while listener.next_buffered().is_some() {},
                // The connection was lost; the next call reconnects.
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, channel, "LISTEN failed; subscriptions poll");
                    tokio::time::sleep(pause).await;
                    break;
                }
            }
        }
    }
}

/// Sends one `NOTIFY` (empty) on `channel` for the commits that `committed` announced
/// since the last one, and wakes the head keeper (`woken`) of this process at once. The
/// commits that come while one is sent share the next. A notification that fails is
/// logged: other processes find the commit by their head keeper's next read or by
/// polling.
async fn notify_commits(
    pool: PgPool,
    channel: String,
    committed: Arc<tokio::sync::Notify>,
    woken: Arc<tokio::sync::Notify>,
) {
    loop {
        committed.notified().await;
        woken.notify_one();
        let sent = sqlx::query("SELECT pg_notify($1, '')")
            .bind(&channel)
            .execute(&pool)
            .await;
        if let Err(error) = sent {
            tracing::debug!(%error, channel, "a commit notification was not sent");
        }
        // The commits of the next moment share one notification: under a stream of
        // appends, one `NOTIFY` (a transaction of its own) per commit cost a single
        // writer about a third of its throughput on the 2-core test machine.
        tokio::time::sleep(NOTIFY_GAP).await;
    }
}

/// The shortest time between two notifications of one store.
const NOTIFY_GAP: Duration = Duration::from_millis(5);

/// How long the head keeper waits after a wake-up before it reads, so that a stream of
/// commits costs one read per moment, not one per commit.
const KEEPER_GAP: Duration = Duration::from_millis(1);

/// The first and the longest pause between head reads while committed events wait above
/// the read barrier.
const CHASE: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(250));

/// Keeps `head` at the table's head (the highest position below the read barrier), read
/// when the listener wakes it while a subscription of this process waits on the signal,
/// and when one starts waiting: with no one waiting, commits cost no head read. When
/// committed events wait above the barrier (an older append is still running), nothing
/// will notify when it ends, so it reads again after 5 ms, doubling to 250 ms, until the
/// head has reached them: subscriptions see them soon after the barrier moves whatever
/// their poll interval. A read that fails leaves it to the next wake-up and to polling.
async fn keep_head(pool: PgPool, head: HeadSignal, woken: Arc<tokio::sync::Notify>) {
    let mut pause = CHASE.0;
    loop {
        let behind = head.is_watched() && read_head(&pool, &head).await;
        if behind {
            tokio::select! {
                () = woken.notified() => {}
                () = head.wanted() => {}
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(CHASE.1);
        } else {
            tokio::select! {
                () = woken.notified() => {}
                // A subscription that starts waiting reads the head at once, whatever
                // commits it missed while no one was waiting.
                () = head.wanted() => continue,
            }
            pause = CHASE.0;
            // The commits of the next moment share one read.
            tokio::time::sleep(KEEPER_GAP).await;
        }
    }
}

/// Reads the head into `head`; whether committed events wait above the read barrier.
async fn read_head(pool: &PgPool, head: &HeadSignal) -> bool {
    let read = sqlx::query_as::<_, (i64, i64)>(HEAD_AND_TOP)
        .fetch_one(pool)
        .await;
    match read {
        Ok((visible, top)) => {
            head.advance(u64::try_from(visible).unwrap_or(0));
            visible < top
        }
        Err(error) => {
            tracing::debug!(%error, "the head did not read; subscriptions poll");
            false
        }
    }
}

/// The transaction-level advisory lock an upgrade holds until it commits or rolls back,
/// one per schema: replicas opening one schema upgrade it one at a time, and one that
/// waits finds the others' work committed. (sqlx's migrator takes a session lock of its
/// own, keyed by the database, which it releases before the upgrade commits.)
const UPGRADE_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('flext-store-postgres upgrade'), \
     hashtext(current_schema()))";

/// Why an upgrade failed, before it is told as a [`FlextError`].
enum Failed {
    /// A statement of the upgrade's own.
    Statement(&'static str, sqlx::Error),
    /// sqlx's migrator.
    Migrator(MigrateError),
}

impl Failed {
    /// The database's error underneath, if there is one.
    fn database(&self) -> Option<&sqlx::Error> {
        match self {
            Self::Statement(_, error)
            | Self::Migrator(
                MigrateError::Execute(error) | MigrateError::ExecuteMigration(error, _),
            ) => Some(error),
            Self::Migrator(_) => None,
        }
    }

    /// The database's SQLSTATE, if there is one.
    fn code(&self) -> Option<String> {
        match self.database() {
            Some(sqlx::Error::Database(db)) => db.code().map(Cow::into_owned),
            _ => None,
        }
    }
}

/// Brings the schema up to date on `connection` (its search path and limits set) in one
/// transaction: the missing migrations, then the position offset moved on ([`REBASE`]).
/// Either all of it commits or none of it: a row the conversion to native types refuses,
/// a limit reached or a lost connection leaves the store as it was, at its old schema
/// version. A refused row is a `SERIALIZATION_ERROR` naming it (table, stream, version,
/// position, column and the server's reason); a lock wait or a statement past `timeout`
/// is a `TIMEOUT`; a newer schema or any other failure a `STORAGE_ERROR`.
async fn upgrade(connection: &mut PgConnection, store: &str, timeout: Duration) -> FlextResult<()> {
    let package = env!("CARGO_PKG_NAME");
    let known = MIGRATIONS.len();
    let migrator = Migrator::new(Embedded)
        .await
        .map_err(|e| migrations_failed(store, package, known, None, e))?;
    let mut transaction = connection
        .begin()
        .await
        .map_err(|e| upgrade_failed(store, timeout, Failed::Statement("cannot begin", e)))?;
    let done = match upgrade_in(&migrator, &mut transaction).await {
        Ok(()) => transaction
            .commit()
            .await
            .map_err(|e| Failed::Statement("cannot commit", e)),
        Err(failed) => {
            // Nothing is kept, and a connection that cannot roll back is closed by the
            // caller, which ends the transaction too.
            let _ = transaction.rollback().await;
            Err(failed)
        }
    };
    let Err(failed) = done else {
        return Ok(());
    };
    // sqlx's migrator returns from a failed migration without releasing its session lock.
    let _ = connection.execute("SELECT pg_advisory_unlock_all()").await;
    let data = failed.code().is_some_and(|code| code.starts_with("22"));
    if data && let Some(rows) = refused_rows(connection).await {
        let found = version_found(connection).await;
        return Err(FlextError::serialization(format!(
            "{store}: the upgrade to schema version {known} cannot convert {rows}; the store \
             was left as it was (schema version {found}): repair or delete these rows and \
             open it again"
        ))
        .with_source(failed));
    }
    Err(upgrade_failed(store, timeout, failed))
}

/// The upgrade's statements, in the caller's transaction.
async fn upgrade_in(
    migrator: &Migrator,
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<(), Failed> {
    let statement = |what: &'static str| move |e| Failed::Statement(what, e);
    sqlx::query(UPGRADE_LOCK)
        .execute(&mut **transaction)
        .await
        .map_err(statement("cannot take the upgrade lock"))?;
    apply_missing(migrator, transaction)
        .await
        .map_err(Failed::Migrator)?;
    // Most opens find the offset where it belongs and leave it, taking no lock that would
    // pause appends. When it must move, no append may commit between REBASE's read of the
    // highest position and its update of the offset (it would be missed, and the next
    // append placed below it); SHARE waits for the appends under way and holds the next
    // ones until the commit. (An append that commits between this check and the lock
    // placed its events above every stored one, or was refused: it cannot make a move
    // needed.)
    let behind: bool = sqlx::query_scalar(REBASE_NEEDED)
        .fetch_one(&mut **transaction)
        .await
        .map_err(statement("cannot read the position offset"))?;
    if !behind {
        return Ok(());
    }
    sqlx::query("LOCK TABLE flext_events IN SHARE MODE")
        .execute(&mut **transaction)
        .await
        .map_err(statement(
            "cannot lock the events to move the position offset on",
        ))?;
    sqlx::query(REBASE)
        .execute(&mut **transaction)
        .await
        .map_err(statement("cannot move the position offset on"))?;
    Ok(())
}

/// Runs sqlx's migrator on the transaction's connection: every migration then runs in a
/// savepoint of the one upgrade transaction. `run_direct` is `#[doc(hidden)]` in sqlx
/// 0.8.6 (`run` takes an `Acquire`, whose future is not provably `Send`); on a sqlx
/// upgrade, check that it still locks, creates `_sqlx_migrations`, refuses dirty,
/// unknown and changed migrations, applies the missing ones through `begin` (a savepoint
/// here) and that an error returns at once.
async fn apply_missing(
    migrator: &Migrator,
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<(), MigrateError> {
    migrator.run_direct(&mut **transaction).await
}

/// The `FlextError` of a failed upgrade that names no row: a `TIMEOUT` for a lock wait or
/// a statement past `timeout`, the newer-schema refusal, or a `STORAGE_ERROR`.
fn upgrade_failed(store: &str, timeout: Duration, failed: Failed) -> FlextError {
    let package = env!("CARGO_PKG_NAME");
    let known = MIGRATIONS.len();
    let doing = match failed.code().as_deref() {
        Some("55P03") => Some("waiting for a lock"),
        Some("57014") => Some("running one statement"),
        _ => None,
    };
    if let Some(doing) = doing {
        return FlextError::timeout(format!(
            "{store}: the upgrade on open timed out {doing} (the migration timeout is {} ms) \
             and left the store as it was: {failed}",
            timeout.as_millis()
        ))
        .with_source(failed);
    }
    match failed {
        Failed::Statement(what, error) => {
            FlextError::storage(format!("{store}: upgrade: {what}: {error}")).with_source(error)
        }
        Failed::Migrator(error) => {
            let newer = match error {
                MigrateError::VersionMissing(version) => Some(version),
                _ => None,
            };
            migrations_failed(store, package, known, newer, error)
        }
    }
}

impl fmt::Debug for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Statement(what, error) => write!(f, "{what}: {error:?}"),
            Self::Migrator(error) => write!(f, "{error:?}"),
        }
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Statement(what, error) => write!(f, "{what}: {error}"),
            Self::Migrator(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Statement(_, error) => Some(error),
            Self::Migrator(error) => Some(error),
        }
    }
}

/// A function, for this session only, that says which of `vals` the server refuses to
/// convert to its type in `types` (`uuid`, `jsonb` or `timestamptz`): the name in `names`
/// and the server's reason, or `NULL` when every value converts. PostgreSQL 15 has no
/// `pg_input_is_valid`, so it catches the conversion's error.
const REFUSAL: &str = "CREATE FUNCTION pg_temp.flext_refusal( \
         names text[], types text[], vals text[]) \
     RETURNS text LANGUAGE plpgsql AS $$ \
     DECLARE i int := 0; \
     BEGIN \
         FOR n IN 1 .. cardinality(vals) LOOP \
             i := n; \
             CASE types[n] \
                 WHEN 'uuid' THEN PERFORM vals[n]::uuid; \
                 WHEN 'jsonb' THEN PERFORM vals[n]::jsonb; \
                 ELSE PERFORM vals[n]::timestamptz; \
             END CASE; \
         END LOOP; \
         RETURN NULL; \
     EXCEPTION WHEN data_exception THEN \
         RETURN names[i] || ': ' || SQLERRM || ' (SQLSTATE ' || SQLSTATE || ')'; \
     END $$";

/// The rows the conversion to native types refuses, each table's first ones in order,
/// with the column and the server's reason.
const REFUSED: [&str; 3] = [
    "SELECT format('the event at position %s (stream %s, version %s): %s', \
                   position, stream_id, version, refusal) \
     FROM (SELECT position, stream_id, version, pg_temp.flext_refusal( \
               ARRAY['event_id', 'payload', 'metadata', 'recorded_at'], \
               ARRAY['uuid', 'jsonb', 'jsonb', 'timestamptz'], \
               ARRAY[event_id::text, payload::text, metadata::text, recorded_at::text]) AS refusal \
           FROM flext_events) checked \
     WHERE refusal IS NOT NULL ORDER BY position LIMIT 11",
    "SELECT format('the snapshot of stream %s (version %s): %s', stream_id, version, refusal) \
     FROM (SELECT stream_id, version, pg_temp.flext_refusal( \
               ARRAY['payload', 'taken_at'], ARRAY['jsonb', 'timestamptz'], \
               ARRAY[payload::text, taken_at::text]) AS refusal \
           FROM flext_snapshots) checked \
     WHERE refusal IS NOT NULL ORDER BY stream_id LIMIT 11",
    "SELECT format('the dead letter of %s at position %s: %s', name, position, refusal) \
     FROM (SELECT name, position, pg_temp.flext_refusal( \
               ARRAY['letter'], ARRAY['jsonb'], ARRAY[letter::text]) AS refusal \
           FROM flext_dead_letters) checked \
     WHERE refusal IS NOT NULL ORDER BY name, position LIMIT 11",
];

/// The most refused rows an error lists.
const REFUSED_LISTED: usize = 10;

/// The rows of the (rolled back) store that the conversion to native types refuses, as
/// one sentence, or `None` when none is found or the search fails (the caller then tells
/// the server's error as it is). It runs in a transaction it rolls back, so the function
/// it creates goes too.
async fn refused_rows(connection: &mut PgConnection) -> Option<String> {
    let mut transaction = connection.begin().await.ok()?;
    sqlx::query(REFUSAL).execute(&mut *transaction).await.ok()?;
    let mut refused: Vec<String> = Vec::new();
    for sql in REFUSED {
        let found: Vec<String> = sqlx::query_scalar(sql)
            .fetch_all(&mut *transaction)
            .await
            .ok()?;
        refused.extend(found);
    }
    let _ = transaction.rollback().await;
    let count = refused.len();
    let more = if count > REFUSED_LISTED {
        " and more"
    } else {
        ""
    };
    refused.truncate(REFUSED_LISTED);
    match count {
        0 => None,
        _ => Some(format!(
            "{} row{}: {}{more}",
            count.min(REFUSED_LISTED),
            if count == 1 { "" } else { "s" },
            refused.join("; ")
        )),
    }
}

/// The store's highest applied schema version, 0 when it has none or it cannot be read.
async fn version_found(connection: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
        .fetch_one(connection)
        .await
        .unwrap_or(0)
}

impl fmt::Debug for PostgresEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresEventStore")
            .field("target", &self.inner.target)
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}
