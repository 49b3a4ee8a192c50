//! Connecting a [`PostgresEventStore`]: its options, the schema, the connection pools, the
//! embedded migrations and the `LISTEN` task that wakes subscriptions.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use flext_store::{HeadSignal, Migrations, StoreLimits, migrations_failed, signed};
use flext_types::{FlextError, FlextResult};
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor};

use crate::redact;
use crate::tables::SAVE_CHECKPOINT;

/// The database's name in messages about values it cannot keep.
pub(crate) const DATABASE: &str = "PostgreSQL";

/// The schema, one migration per version.
const MIGRATIONS: Migrations = &[(
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
///     .with_connect_timeout(Duration::from_secs(2));
/// assert_eq!(options.schema, "billing");
/// assert_eq!(options.poll_interval, Duration::from_millis(500));
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
}

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
            limits: StoreLimits::default(),
        }
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
    pub(crate) channel: String,
    pub(crate) lock_key: i64,
    pub(crate) poll_interval: Duration,
    pub(crate) head: HeadSignal,
    pub(crate) limits: StoreLimits,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresEventStore {
    /// Connects to `url` with the default options (schema `public`).
    pub async fn connect(url: &str) -> FlextResult<Self> {
        Self::connect_with(PostgresStoreOptions::new(url)).await
    }

    /// Connects as `options` say, creates the schema if needed and brings it up to date. A
    /// bad URL, an unreachable server or a newer schema is a `STORAGE_ERROR` naming the
    /// server without its password; a server that refuses the connection is one at once,
    /// saying so and naming host and port, one that does not answer is one after the
    /// connect timeout. A `password` query parameter followed by a parameter PostgreSQL does
    /// not know (the rest of a password holding a raw `&`, most likely) is refused too. A
    /// bad schema name is an `INVALID_ARGUMENT`.
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
        // A connection that does not close cleanly is dropped: nothing is lost.
        let _ = bootstrap.close().await;

        let search_path = format!("SET search_path TO \"{schema}\"");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(connect_timeout)
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
            .acquire_timeout(connect_timeout)
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
                limits: options.limits,
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

    /// The advisory-lock key that serializes appends in this store's schema (for tests and
    /// tools that must write alongside the store).
    pub fn append_lock_key(&self) -> i64 {
        self.inner.lock_key
    }

    pub(crate) fn fail(&self, what: &str, error: sqlx::Error) -> FlextError {
        self.fail_with(what, error)
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
    let store = format!("PostgreSQL store {target} ({schema})");
    let package = env!("CARGO_PKG_NAME");
    let migrator = Migrator::new(Embedded)
        .await
        .map_err(|e| migrations_failed(&store, package, MIGRATIONS.len(), None, e))?;
    let Err(error) = migrator.run(pool).await else {
        return Ok(());
    };
    let newer = match error {
        MigrateError::VersionMissing(version) => Some(version),
        _ => None,
    };
    Err(migrations_failed(
        &store,
        package,
        MIGRATIONS.len(),
        newer,
        error,
    ))
}

impl fmt::Debug for PostgresEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresEventStore")
            .field("target", &self.inner.target)
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}
