//! Exactly-once projections whose read model lives in the store's own PostgreSQL database:
//! [`PostgresProjection`] and [`PostgresProjectionRunner`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use flext_store::{
    Committed, RunHandle, Runnable, Shutdown, TransactionalProgress, TransactionalRunner,
    TransactionalTarget, unsigned,
};
use flext_types::{FlextError, FlextResult, StoredEvent};
use sqlx::{Postgres, Transaction};
use tokio::sync::watch;

use crate::{Fence, PostgresEventStore};

/// A projection whose read model is kept in tables of the store's own PostgreSQL database:
/// it gets the open transaction, in which [`PostgresProjectionRunner`] also saves its
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
/// use flext_store_postgres::PostgresProjection;
/// use flext_types::{FlextError, FlextResult, StoredEvent};
/// use sqlx::{Postgres, Transaction};
///
/// /// Counts events per stream in a table of the store's database.
/// struct EventsPerStream;
///
/// #[async_trait]
/// impl PostgresProjection for EventsPerStream {
///     fn name(&self) -> &str {
///         "events-per-stream"
///     }
///
///     async fn apply(&self, tx: &mut Transaction<'_, Postgres>, event: &StoredEvent) -> FlextResult<()> {
///         sqlx::query(
///             "INSERT INTO events_per_stream (stream_id, events) VALUES ($1, 1) \
///              ON CONFLICT (stream_id) DO UPDATE SET events = events_per_stream.events + 1",
///         )
///         .bind(&*event.stream_id)
///         .execute(&mut **tx)
///         .await
///         .map(drop)
///         .map_err(|e| FlextError::storage(e.to_string()))
///     }
///
///     async fn reset(&self, tx: &mut Transaction<'_, Postgres>) -> FlextResult<()> {
///         sqlx::query("DELETE FROM events_per_stream")
///             .execute(&mut **tx)
///             .await
///             .map(drop)
///             .map_err(|e| FlextError::storage(e.to_string()))
///     }
/// }
/// ```
#[async_trait]
pub trait PostgresProjection: Send + Sync {
    /// The projection's name: the key of its checkpoint.
    fn name(&self) -> &str;

    /// Applies one event to the read model, inside `tx`.
    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &StoredEvent,
    ) -> FlextResult<()>;

    /// Applies a batch of events, in order, inside `tx` (by default, [`apply`](Self::apply)
    /// for each). Override it to write a batch in fewer statements.
    async fn apply_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[StoredEvent],
    ) -> FlextResult<()> {
        for event in events {
            self.apply(tx, event).await?;
        }
        Ok(())
    }

    /// Empties the read model inside `tx`, before a rebuild from the first event.
    async fn reset(&self, tx: &mut Transaction<'_, Postgres>) -> FlextResult<()>;
}

/// Feeds a [`PostgresProjection`] from the store's log, exactly once: each batch is read,
/// then one transaction takes the projection's lock (a transaction-level advisory lock on
/// its name and the store's schema), reads the checkpoint, applies the batch, saves the
/// checkpoint and commits. A crash at any point (a failed apply, a failed checkpoint
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
/// - The read model's tables are the caller's: create them in the store's schema (the
///   pool's connections have it as their `search_path`), or name another schema.
///
/// ```no_run
/// use std::sync::Arc;
/// use flext_store_postgres::{PostgresEventStore, PostgresProjection, PostgresProjectionRunner};
/// # async fn run(projection: Arc<dyn PostgresProjection>) -> flext_types::FlextResult<()> {
/// let store = PostgresEventStore::connect("postgres://localhost/orders").await?;
/// let runner = PostgresProjectionRunner::new(store, projection).with_batch_size(500);
/// let progress = runner.catch_up().await?;
/// println!("{} events applied, checkpoint {}", progress.applied, progress.position);
/// # Ok(())
/// # }
/// ```
pub struct PostgresProjectionRunner {
    runner: TransactionalRunner<PostgresEventStore, Target>,
}

impl PostgresProjectionRunner {
    /// The default events per transaction.
    pub const DEFAULT_BATCH_SIZE: usize = 100;

    /// A runner of `projection` over `store`'s log, its read model and checkpoint in
    /// `store`'s database.
    pub fn new(store: PostgresEventStore, projection: Arc<dyn PostgresProjection>) -> Self {
        let target = Target {
            store: store.clone(),
            projection,
            fence: None,
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

    /// The same runner fenced by `fence` (its [`Lease`](crate::Lease)'s): every transaction
    /// first checks that the lease is still current and locks it against takeover until the
    /// commit, so once the lease expired or another process took it, the runner applies
    /// and checkpoints nothing more and stops with a `CONCURRENCY_CONFLICT` naming the
    /// lease. A batch's transaction holds the lease's row, so the lease's renewal waits
    /// for it: keep a batch's time well below the lease's TTL.
    ///
    /// One replica of many: wait for the lease, run while it is held, and start over once
    /// it is lost (another replica took it, or this one was paused past it).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use flext_store_postgres::{
    ///     LeaseConfig, PostgresEventStore, PostgresProjection, PostgresProjectionRunner,
    /// };
    /// # async fn run(store: PostgresEventStore, projection: Arc<dyn PostgresProjection>) -> flext_types::FlextResult<()> {
    /// loop {
    ///     let lease = store.acquire_lease("orders", LeaseConfig::new("replica-a")).await?;
    ///     let runner = PostgresProjectionRunner::new(store.clone(), projection.clone())
    ///         .with_fence(lease.fence());
    ///     // A write after the lease was lost fails with a CONCURRENCY_CONFLICT: start over.
    ///     let _ = runner.run_until(lease.lost()).await;
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn with_fence(self, fence: Fence) -> Self {
        let batch_size = self.batch_size();
        let target = self.runner.target();
        let target = Target {
            store: target.store.clone(),
            projection: target.projection.clone(),
            fence: Some(fence),
        };
        Self {
            runner: TransactionalRunner::new(target.store.clone(), target, batch_size),
        }
    }

    /// The fence the runner's transactions check, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.runner.target().fence.as_ref()
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

    /// Empties the read model ([`PostgresProjection::reset`]) and sets the checkpoint to 0 in
    /// one transaction, then replays every event.
    pub async fn rebuild(&self) -> FlextResult<TransactionalProgress> {
        self.runner.rebuild().await
    }

    /// Runs on a task of its own, as [`run_until`](Self::run_until) does, until the
    /// returned handle shuts it down (or is dropped): the handle waits until the read model
    /// has what an append wrote ([`wait_for`](RunHandle::wait_for) its `last_position`) or
    /// has caught up, without polling, and joins the run. See [`RunHandle`].
    /// `OPERATION_ERROR` outside a tokio runtime.
    pub fn spawn(self) -> FlextResult<PostgresProjectionHandle> {
        RunHandle::spawn(Arc::new(self))
    }
}

/// A [`PostgresProjectionRunner`] running on a task of its own, returned by
/// [`PostgresProjectionRunner::spawn`]: see [`RunHandle`] for what it does.
pub type PostgresProjectionHandle = RunHandle<PostgresProjectionRunner>;

#[async_trait]
impl Runnable for PostgresProjectionRunner {
    type Progress = TransactionalProgress;

    fn name(&self) -> &str {
        PostgresProjectionRunner::name(self)
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

impl fmt::Debug for PostgresProjectionRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresProjectionRunner")
            .field("projection", &self.name())
            .field("batch_size", &self.batch_size())
            .field("fence", &self.fence())
            .field("store", &self.runner.target().store)
            .finish()
    }
}

/// The checkpoint's row.
const LOAD_CHECKPOINT: &str = "SELECT position FROM flext_checkpoints WHERE name = $1";

/// Serializes the transactions of one projection name in one schema, including its first
/// one, when there is no checkpoint row to lock yet; released at commit or rollback.
const LOCK_PROJECTION: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";

/// A [`PostgresProjection`] in the store's database, as the shared runner drives it.
struct Target {
    store: PostgresEventStore,
    projection: Arc<dyn PostgresProjection>,
    /// Checked first in every transaction, when the runner is fenced.
    fence: Option<Fence>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("projection", &self.projection.name())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A transaction holding the projection's lock, so the checkpoint read in it stays
    /// true until the commit, and the lease (when fenced), so no other process takes it
    /// before the commit.
    async fn begin(&self) -> FlextResult<Transaction<'static, Postgres>> {
        let mut tx = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|e| self.fail("cannot begin a projection's transaction", e))?;
        let key = format!(
            "flext-store-postgres projection {} {}",
            self.store.schema(),
            self.projection.name()
        );
        let locked = sqlx::query(LOCK_PROJECTION)
            .bind(key)
            .execute(&mut *tx)
            .await;
        if let Err(e) = locked {
            return rolled_back(tx, self.fail("cannot take a projection's lock", e)).await;
        }
        if let Some(fence) = &self.fence {
            let what = format!("projection '{}'", self.projection.name());
            if let Err(error) = fence.check(&mut tx, &what).await {
                return rolled_back(tx, error).await;
            }
        }
        Ok(tx)
    }

    async fn read_checkpoint(&self, tx: &mut Transaction<'_, Postgres>) -> FlextResult<u64> {
        let position: Option<i64> = sqlx::query_scalar(LOAD_CHECKPOINT)
            .bind(self.projection.name())
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| self.fail("cannot read a projection's checkpoint", e))?;
        Ok(position.map_or(0, unsigned))
    }

    async fn finish(&self, tx: Transaction<'static, Postgres>) -> FlextResult<()> {
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
async fn rolled_back<T>(tx: Transaction<'_, Postgres>, error: FlextError) -> FlextResult<T> {
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
            .fetch_optional(self.store.pool())
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
            PostgresEventStore::save_checkpoint_in(&mut tx, self.projection.name(), last.position)
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
        let saved =
            PostgresEventStore::save_checkpoint_in(&mut tx, self.projection.name(), 0).await;
        if let Err(error) = saved {
            return rolled_back(tx, error).await;
        }
        self.finish(tx).await
    }
}
