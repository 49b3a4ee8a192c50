//! Opening a [`SqliteEventStore`]: its options, the connection pool and the embedded
//! migrations.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use flext_store::{HeadSignal, Migrations, StoreLimits, migrations_failed, signed};

use crate::lite::Database;
use crate::readers::Readers;
use crate::tables::SAVE_CHECKPOINT;
use crate::writer::Writer;
use flext_types::{FlextError, FlextResult};
use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// The database's name in messages about values it cannot keep.
pub(crate) const DATABASE: &str = "SQLite";

/// The schema, one migration per version.
const MIGRATIONS: Migrations = &[(
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

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The longest busy timeout SQLite keeps, `i32::MAX` milliseconds (about 24.8 days): a
/// longer [`SqliteStoreOptions::busy_timeout`] waits this long.
const LONGEST_BUSY_TIMEOUT: Duration = Duration::from_millis(0x7fff_ffff);

/// How to open a [`SqliteEventStore`]: [`SqliteStoreOptions::new`] and the `with_*`
/// setters.
///
/// ```
/// use std::time::Duration;
/// use flext_store_sqlite::SqliteStoreOptions;
///
/// let options = SqliteStoreOptions::new("orders.db")
///     .with_busy_timeout(Duration::from_secs(1))
///     .with_max_connections(2);
/// assert_eq!(options.max_connections, 2);
/// assert_eq!(options.poll_interval, Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteStoreOptions {
    /// A file path, or `:memory:` for a private in-memory database.
    pub path: PathBuf,
    /// How long a writer waits for another to finish (default 5 s). SQLite counts it in
    /// milliseconds of an `i32`: a longer one (up to `Duration::MAX`) waits `i32::MAX`
    /// milliseconds, about 24.8 days.
    pub busy_timeout: Duration,
    /// How often live subscriptions look for events written by other processes (default
    /// 200 ms); commits in this process wake them at once.
    pub poll_interval: Duration,
    /// Read connections (at most this many reads run at once, the others wait; the
    /// connections are kept between calls), and connections in sqlx's pool (default 4;
    /// the pool keeps exactly 1 for `:memory:`). Appends have a connection of their own,
    /// the writer thread's.
    pub max_connections: u32,
    /// How big an append may be (default [`StoreLimits::default`]).
    pub limits: StoreLimits,
}

impl SqliteStoreOptions {
    /// The defaults for `path` (a `&str`, a `String`, a `Path`, a `PathBuf`…).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            busy_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(200),
            max_connections: 4,
            limits: StoreLimits::default(),
        }
    }

    /// The same options with writers waiting up to `busy_timeout` for another to finish.
    #[must_use]
    pub fn with_busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// The same options with live subscriptions polling every `poll_interval`.
    #[must_use]
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// The same options with `max_connections` read connections kept and pooled (sqlx's
    /// pool keeps 1 for `:memory:`).
    #[must_use]
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// The same options with appends checked against `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: StoreLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// The event, snapshot and checkpoint stores in one SQLite database. Clones share it.
#[derive(Clone)]
pub struct SqliteEventStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The appends' writer thread; it ends when the last clone of the store is dropped.
    pub(crate) writer: Writer,
    /// The connections of reads and of the writes that are not appends.
    pub(crate) readers: std::sync::Arc<Readers>,
    /// sqlx's pool: the migrations and the projections' transactions.
    pub(crate) pool: SqlitePool,
    pub(crate) path: String,
    pub(crate) poll_interval: Duration,
    pub(crate) head: HeadSignal,
    pub(crate) limits: StoreLimits,
}

impl SqliteEventStore {
    /// Opens (creating if needed) the database at `path` (a `&str`, a `Path`, a
    /// `PathBuf`…), or a private in-memory one for `:memory:`, with the default options.
    pub async fn open(path: impl AsRef<Path>) -> FlextResult<Self> {
        Self::open_with(SqliteStoreOptions::new(path)).await
    }

    /// Opens the database `options` describe and brings its schema up to date. A path that
    /// cannot be opened, or a database of a newer schema, is a `STORAGE_ERROR` naming the
    /// path.
    pub async fn open_with(options: SqliteStoreOptions) -> FlextResult<Self> {
        let path = options.path.display().to_string();
        let in_memory = options.path == Path::new(":memory:");
        let busy_timeout = options.busy_timeout.min(LONGEST_BUSY_TIMEOUT);
        let database = if in_memory {
            Database::memory()
        } else {
            Database::File(options.path.clone())
        };
        let connect = if let Database::Memory(name) = &database {
            // The store's own connections open this one in-memory database by its name.
            SqliteConnectOptions::from_str(&format!("sqlite:{name}?mode=memory"))
                .map_err(|e| storage(&path, "cannot read the path", e))?
        } else {
            SqliteConnectOptions::new()
                .filename(&options.path)
                .create_if_missing(true)
        }
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(busy_timeout)
        .foreign_keys(true);
        let pool_options = SqlitePoolOptions::new()
            .acquire_timeout(busy_timeout.saturating_add(Duration::from_secs(5)));
        let pool_options = if in_memory {
            // The in-memory database lives while a connection to it is open: keep one.
            pool_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            let patience = busy_timeout;
            pool_options
                .max_connections(options.max_connections.max(1))
                .after_connect(move |connection, _| Box::pin(write_ahead_log(connection, patience)))
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
        let head = HeadSignal::new(u64::try_from(head).unwrap_or(0));
        let writer =
            Writer::start(database.clone(), busy_timeout, head.clone(), path.clone()).await?;
        let readers = Readers::new(
            database,
            busy_timeout,
            path.clone(),
            usize::try_from(options.max_connections).unwrap_or(usize::MAX),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                readers: Arc::new(readers),
                pool,
                path,
                poll_interval: options.poll_interval,
                head,
                limits: options.limits,
            }),
        })
    }

    /// The limits appends are checked against.
    pub fn limits(&self) -> &StoreLimits {
        &self.inner.limits
    }

    /// sqlx's connection pool, for read models kept in the same database (appends and the
    /// store's reads use connections of their own).
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

    pub(crate) fn fail(&self, what: &str, error: sqlx::Error) -> FlextError {
        storage(&self.inner.path, what, error)
    }

    /// [`fail`](Self::fail) for an error that is not the driver's: a row that does not read.
    pub(crate) fn fail_with(&self, what: &str, error: FlextError) -> FlextError {
        storage(&self.inner.path, what, error)
    }
}

/// Puts the database in WAL mode. The mode is kept in the file: the first connection to a
/// fresh file changes it and every later one finds it set. SQLite refuses a change that
/// meets another connection's lock with `SQLITE_BUSY` at once, without waiting in its busy
/// handler (several connections opening one fresh file at the same moment do meet), so a
/// busy refusal is tried again, after pauses of 1 ms doubling up to 50 ms, until `patience`
/// (the busy timeout) has passed.
async fn write_ahead_log(
    connection: &mut SqliteConnection,
    patience: Duration,
) -> Result<(), sqlx::Error> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut *connection)
            .await
        {
            Err(error) if busy(&error) && started.elapsed().saturating_add(pause) < patience => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            done => return done.map(drop),
        }
    }
}

/// Whether `error` is SQLite's `SQLITE_BUSY` (or one of its extended codes).
fn busy(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.code().and_then(|code| code.parse::<i32>().ok()).is_some_and(|code| code & 0xff == 5))
}

/// Brings the schema up to date. An up-to-date database (every open but the first) only
/// reads which migrations it has, without a write lock, so an open does not queue behind a
/// long writer. When one is missing, several pools or processes may be opening one fresh
/// file at the same moment: each would find no migration applied, and all but the first
/// would fail creating the tables the first created. So the migrations run inside one
/// write transaction taken up front (`BEGIN IMMEDIATE`, which waits up to the busy timeout
/// for another writer), which looks again at what is applied: one opener applies them, the
/// others then find them applied.
async fn migrate(pool: &SqlitePool, path: &str) -> FlextResult<()> {
    let store = format!("SQLite store {path}");
    let failed = |error| {
        let newer = match error {
            MigrateError::VersionMissing(version) => Some(version),
            _ => None,
        };
        migrations_failed(
            &store,
            env!("CARGO_PKG_NAME"),
            MIGRATIONS.len(),
            newer,
            error,
        )
    };
    let migrator = Migrator::new(Embedded).await.map_err(failed)?;
    {
        // A deferred transaction, which only reads: one snapshot of the migrations table.
        let mut read = pool
            .begin()
            .await
            .map_err(|e| storage(path, "cannot read the applied migrations", e))?;
        if up_to_date(&mut read, &migrator).await.map_err(failed)? {
            return Ok(());
        }
    }
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| storage(path, "cannot begin the migrations", e))?;
    apply_missing(&migrator, &mut tx).await.map_err(failed)?;
    tx.commit()
        .await
        .map_err(|e| storage(path, "cannot commit the migrations", e))
}

/// Whether every migration of `migrator` is applied, read without a write lock (a read in
/// WAL mode waits for no writer). `false` for a database without sqlx's migrations table,
/// `_sqlx_migrations` (a fresh file). What [`apply_missing`] would refuse is refused alike:
/// a migration left half-applied (`Dirty`), one this build does not know
/// (`VersionMissing`: a newer schema) and one whose SQL differs from this build's
/// (`VersionMismatch`). Checked against sqlx 0.8.6, with `apply_missing`.
async fn up_to_date(
    connection: &mut SqliteConnection,
    migrator: &Migrator,
) -> Result<bool, MigrateError> {
    let table: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *connection)
    .await?;
    if table.is_none() {
        return Ok(false);
    }
    if let Some(version) = connection.dirty_version().await? {
        return Err(MigrateError::Dirty(version));
    }
    let applied = connection.list_applied_migrations().await?;
    if let Some(unknown) = applied.iter().find(|m| !migrator.version_exists(m.version)) {
        return Err(MigrateError::VersionMissing(unknown.version));
    }
    for migration in migrator.iter() {
        match applied.iter().find(|m| m.version == migration.version) {
            None => return Ok(false),
            Some(found) if found.checksum != migration.checksum => {
                return Err(MigrateError::VersionMismatch(migration.version));
            }
            Some(_) => {}
        }
    }
    Ok(true)
}

/// Applies the migrations `connection` (inside the opener's write transaction) does not
/// have, after looking again at which it has.
///
/// The one use of `Migrator::run_direct`, which sqlx 0.8.6 (the version Cargo.lock pins;
/// checked against sqlx-core 0.8.6's `migrate/migrator.rs`) marks `#[doc(hidden)]`: it is
/// what the public `Migrator::run` calls once it has a connection, but `run` takes the
/// transaction through `Acquire`, whose future is not provably `Send` for every lifetime
/// (a spawned open needs it). On a sqlx upgrade, check that `run_direct` still exists and
/// still locks, creates `_sqlx_migrations`, refuses dirty, unknown and changed migrations,
/// and applies the missing ones — or that `run` has become usable here — and that
/// [`up_to_date`] still reads the table sqlx keeps.
async fn apply_missing(
    migrator: &Migrator,
    connection: &mut SqliteConnection,
) -> Result<(), MigrateError> {
    migrator.run_direct(connection).await
}

/// The `STORAGE_ERROR` of the store at `path`: `what` failed with `error`.
pub(crate) fn storage(
    path: &str,
    what: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> FlextError {
    FlextError::storage(format!("SQLite store {path}: {what}: {error}")).with_source(error)
}

impl fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}
