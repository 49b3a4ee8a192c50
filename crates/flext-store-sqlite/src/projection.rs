//! Exactly-once projections whose read model lives in the store's own SQLite database:
//! [`SqliteProjection`] and [`SqliteProjectionRunner`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use flext_store::{
    Committed, RunHandle, Runnable, Shutdown, TransactionalProgress, TransactionalRunner,
    TransactionalTarget, unsigned,
};
use flext_types::{FlextError, FlextResult, StoredEvent};
use sqlx::{Sqlite, Transaction};
use tokio::sync::watch;

use crate::SqliteEventStore;

/// A projection whose read model is kept in the tables of the store's own SQLite database:
/// it gets the open transaction, in which [`SqliteProjectionRunner`] also saves its
/// checkpoint, so each event changes the read model exactly once.
///
/// Write only through `tx` (`sqlx::query(…).execute(&mut **tx)`); a write through another
/// connection would not roll back with the batch. Do not commit or roll back `tx`: return
/// an error to roll the batch back. The runner owns the checkpoint named
/// [`name`](Self::name) in `flext_checkpoints`: give each projection a name of its own,
/// not shared with a plain `ProjectionRunner`.
///
/// ```
/// use async_trait::async_trait;
/// use flext_store_sqlite::SqliteProjection;
/// // The store's own sqlx: no sqlx dependency, no version to match.
/// use flext_store_sqlite::sqlx::{self, Sqlite, Transaction};
/// use flext_types::{FlextError, FlextResult, StoredEvent};
///
/// /// Counts events per stream in a table of the store's database.
/// struct EventsPerStream;
///
/// #[async_trait]
/// impl SqliteProjection for EventsPerStream {
///     fn name(&self) -> &str {
///         "events-per-stream"
///     }
///
///     async fn apply(&self, tx: &mut Transaction<'_, Sqlite>, event: &StoredEvent) -> FlextResult<()> {
///         sqlx::query(
///             "INSERT INTO events_per_stream (stream_id, events) VALUES (?, 1) \
///              ON CONFLICT (stream_id) DO UPDATE SET events = events + 1",
///         )
///         .bind(&*event.stream_id)
///         .execute(&mut **tx)
///         .await
///         .map(drop)
///         .map_err(|e| FlextError::storage(e.to_string()))
///     }
///
///     async fn reset(&self, tx: &mut Transaction<'_, Sqlite>) -> FlextResult<()> {
///         sqlx::query("DELETE FROM events_per_stream")
///             .execute(&mut **tx)
///             .await
///             .map(drop)
///             .map_err(|e| FlextError::storage(e.to_string()))
///     }
/// }
/// ```
#[async_trait]
pub trait SqliteProjection: Send + Sync {
    /// The projection's name: the key of its checkpoint.
    fn name(&self) -> &str;

    /// Applies one event to the read model, inside `tx`.
    async fn apply(&self, tx: &mut Transaction<'_, Sqlite>, event: &StoredEvent)
    -> FlextResult<()>;

    /// Applies a batch of events, in order, inside `tx` (by default, [`apply`](Self::apply)
    /// for each). Override it to write a batch in fewer statements.
    async fn apply_batch(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        events: &[StoredEvent],
    ) -> FlextResult<()> {
        for event in events {
            self.apply(tx, event).await?;
        }
        Ok(())
    }

    /// Empties the read model inside `tx`, before a rebuild from the first event.
    async fn reset(&self, tx: &mut Transaction<'_, Sqlite>) -> FlextResult<()>;
}

/// Feeds a [`SqliteProjection`] from the store's log, exactly once: each batch is read,
/// then one `BEGIN IMMEDIATE` transaction reads the checkpoint, applies the batch, saves
/// the checkpoint and commits. A crash at any point (a failed apply, a failed checkpoint
/// write or commit, a dropped future, a killed process) leaves both as they were before
/// the batch or both after it, so the read model always equals a replay of the events up
/// to its checkpoint.
///
/// - [`catch_up`](Self::catch_up) applies everything committed so far;
///   [`run_until`](Self::run_until) catches up, then applies new events as they commit
///   (what has arrived, up to the batch size, per transaction) until its shutdown future
///   resolves.
/// - The checkpoint is read inside the write transaction: a second runner of the same
///   name, in this process or another, finds it moved, applies nothing of that batch and
///   reads on from it, so two runners never apply one event twice.
/// - A failing (or panicking) batch is rolled back and applied again one event per
///   transaction: the events before the failing one commit and the run stops with that
///   event's error, its code kept and its message naming the projection and the
///   position; the checkpoint stays just before it. The runner neither retries with
///   backoff nor dead-letters: skipping an event would make the read model differ from a
///   replay. Run again once the cause is fixed; or, to skip an event, have `apply` record
///   it in a table of its own and return `Ok`, and the skip commits with the checkpoint.
/// - SQLite has one writer at a time: appends wait (up to the busy timeout) while a batch
///   is applied, so keep batches short (default 100 events).
///
/// ```no_run
/// use std::sync::Arc;
/// use flext_store_sqlite::{SqliteEventStore, SqliteProjection, SqliteProjectionRunner};
/// # async fn run(projection: Arc<dyn SqliteProjection>) -> flext_types::FlextResult<()> {
/// let store = SqliteEventStore::open("orders.db").await?;
/// let runner = SqliteProjectionRunner::new(store, projection).with_batch_size(500);
/// let progress = runner.catch_up().await?;
/// println!("{} events applied, checkpoint {}", progress.applied, progress.position);
/// # Ok(())
/// # }
/// ```
pub struct SqliteProjectionRunner {
    runner: TransactionalRunner<SqliteEventStore, Target>,
}

impl SqliteProjectionRunner {
    /// The default events per transaction.
    pub const DEFAULT_BATCH_SIZE: usize = 100;

    /// A runner of `projection` over `store`'s log, its read model and checkpoint in
    /// `store`'s database.
    pub fn new(store: SqliteEventStore, projection: Arc<dyn SqliteProjection>) -> Self {
        let target = Target {
            store: store.clone(),
            projection,
        };
        Self {
            runner: TransactionalRunner::new(store, target, Self::DEFAULT_BATCH_SIZE),
        }
    }

    /// The same runner applying up to `size` events per transaction (0 reads as 1).
    #[must_use]
    pub fn with_batch_size(self, size: usize) -> Self {
        Self {
            runner: self.runner.with_batch_size(size),
        }
    }

    /// The projection's name (its checkpoint's key).
    pub fn name(&self) -> &str {
        self.runner.target().projection.name()
    }

    /// Events per transaction.
    pub fn batch_size(&self) -> usize {
        self.runner.batch_size()
    }

    /// The committed checkpoint: the last position applied (0 before the first event).
    pub async fn position(&self) -> FlextResult<u64> {
        self.runner.position().await
    }

    /// Applies every event committed after the checkpoint, a batch per transaction.
    pub async fn catch_up(&self) -> FlextResult<TransactionalProgress> {
        self.runner.catch_up().await
    }

    /// Catches up, then applies new events as they commit until `shutdown` resolves; the
    /// transaction under way then is finished.
    pub async fn run_until(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> FlextResult<TransactionalProgress> {
        self.runner.run_until(shutdown).await
    }

    /// Empties the read model ([`SqliteProjection::reset`]) and sets the checkpoint to 0 in
    /// one transaction, then replays every event.
    pub async fn rebuild(&self) -> FlextResult<TransactionalProgress> {
        self.runner.rebuild().await
    }

    /// Runs on a task of its own, as [`run_until`](Self::run_until) does, until the
    /// returned handle shuts it down (or is dropped): the handle waits until the read model
    /// has what an append wrote ([`wait_for`](RunHandle::wait_for) its `last_position`) or
    /// has caught up, without polling, and joins the run. See [`RunHandle`].
    /// `OPERATION_ERROR` outside a tokio runtime.
    pub fn spawn(self) -> FlextResult<SqliteProjectionHandle> {
        RunHandle::spawn(Arc::new(self))
    }
}

/// A [`SqliteProjectionRunner`] running on a task of its own, returned by
/// [`SqliteProjectionRunner::spawn`]: see [`RunHandle`] for what it does.
pub type SqliteProjectionHandle = RunHandle<SqliteProjectionRunner>;

#[async_trait]
impl Runnable for SqliteProjectionRunner {
    type Progress = TransactionalProgress;

    fn name(&self) -> &str {
        SqliteProjectionRunner::name(self)
    }

    fn positions(&self) -> &watch::Sender<u64> {
        Runnable::positions(&self.runner)
    }

    async fn head(&self) -> FlextResult<u64> {
        Runnable::head(&self.runner).await
    }

    async fn run(&self, shutdown: Shutdown) -> FlextResult<TransactionalProgress> {
        self.runner.run_until(shutdown).await
    }
}

impl fmt::Debug for SqliteProjectionRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteProjectionRunner")
            .field("projection", &self.name())
            .field("batch_size", &self.batch_size())
            .field("store", &self.runner.target().store)
            .finish()
    }
}

/// The checkpoint's row.
const LOAD_CHECKPOINT: &str = "SELECT position FROM flext_checkpoints WHERE name = ?";

/// A [`SqliteProjection`] in the store's database, as the shared runner drives it.
struct Target {
    store: SqliteEventStore,
    projection: Arc<dyn SqliteProjection>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("projection", &self.projection.name())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A write transaction taken up front, so the checkpoint read in it stays true until
    /// the commit.
    async fn begin(&self) -> FlextResult<Transaction<'static, Sqlite>> {
        self.store
            .inner
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.fail("cannot begin a projection's transaction", e))
    }

    async fn read_checkpoint(&self, tx: &mut Transaction<'_, Sqlite>) -> FlextResult<u64> {
        let position: Option<i64> = sqlx::query_scalar(LOAD_CHECKPOINT)
            .bind(self.projection.name())
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| self.fail("cannot read a projection's checkpoint", e))?;
        Ok(position.map_or(0, unsigned))
    }

    async fn finish(&self, tx: Transaction<'static, Sqlite>) -> FlextResult<()> {
        tx.commit()
            .await
            .map_err(|e| self.fail("cannot commit a projection's transaction", e))
    }

    fn fail(&self, what: &str, error: sqlx::Error) -> FlextError {
        let name = self.projection.name();
        self.store
            .fail(&format!("projection '{name}': {what}"), error)
    }
}

/// Rolls `tx` back at once (a dropped transaction would too, on the connection's next use)
/// and returns `error`.
async fn rolled_back<T>(tx: Transaction<'_, Sqlite>, error: FlextError) -> FlextResult<T> {
    let _ = tx.rollback().await;
    Err(error)
}

#[async_trait]
impl TransactionalTarget for Target {
    fn name(&self) -> &str {
        self.projection.name()
    }

    async fn checkpoint(&self) -> FlextResult<u64> {
        let position: Option<i64> = sqlx::query_scalar(LOAD_CHECKPOINT)
            .bind(self.projection.name())
            .fetch_optional(&self.store.inner.pool)
            .await
            .map_err(|e| self.fail("cannot read a projection's checkpoint", e))?;
        Ok(position.map_or(0, unsigned))
    }

    async fn commit(&self, expected: u64, events: &[StoredEvent]) -> FlextResult<Committed> {
        let Some(last) = events.last() else {
            return Ok(Committed::Applied);
        };
        let mut tx = self.begin().await?;
        let actual = match self.read_checkpoint(&mut tx).await {
            Ok(actual) => actual,
            Err(error) => return rolled_back(tx, error).await,
        };
        if actual != expected {
            let _ = tx.rollback().await;
            return Ok(Committed::Moved(actual));
        }
        if let Err(error) = self.projection.apply_batch(&mut tx, events).await {
            return rolled_back(tx, error).await;
        }
        let saved =
            SqliteEventStore::save_checkpoint_in(&mut tx, self.projection.name(), last.position)
                .await;
        if let Err(error) = saved {
            return rolled_back(tx, error).await;
        }
        self.finish(tx).await?;
        Ok(Committed::Applied)
    }

    async fn reset(&self) -> FlextResult<()> {
        let mut tx = self.begin().await?;
        if let Err(error) = self.projection.reset(&mut tx).await {
            return rolled_back(tx, error).await;
        }
        let saved = SqliteEventStore::save_checkpoint_in(&mut tx, self.projection.name(), 0).await;
        if let Err(error) = saved {
            return rolled_back(tx, error).await;
        }
        self.finish(tx).await
    }
}
