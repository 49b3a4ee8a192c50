//! The runner of exactly-once projections, written once for every SQL store: each batch of
//! events is applied to a read model in the store's own database, and the projection's
//! checkpoint is saved, in one transaction the store's [`TransactionalTarget`] opens and
//! commits.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use flext_protocols::EventStore;
use flext_types::{FlextError, FlextResult, StoredEvent, panic_message};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::handle::{RunHandle, Runnable, Shutdown};

/// What one transaction of a [`TransactionalTarget`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The events were applied and the checkpoint moved to the last one's position, in one
    /// committed transaction.
    Applied,
    /// Nothing was applied: the checkpoint, read in the transaction, was not the one
    /// expected but this (another runner of the same name moved it, or a rebuild reset it),
    /// so the transaction was rolled back.
    Moved(u64),
}

/// A projection's read model in a store's own database, as [`TransactionalRunner`] drives
/// it: each store crate implements it once, over its transaction type.
#[async_trait]
pub trait TransactionalTarget: Send + Sync {
    /// The projection's name, the key of its checkpoint.
    fn name(&self) -> &str;

    /// The checkpoint as committed (0 before the first event).
    async fn checkpoint(&self) -> FlextResult<u64>;

    /// In one transaction: reads the checkpoint, locked against other runners of the same
    /// name; when it is `expected`, applies `events` (in order, every one after `expected`,
    /// at least one) and saves the last one's position as the checkpoint, then commits.
    /// Any error rolls everything back.
    async fn commit(&self, expected: u64, events: &[StoredEvent]) -> FlextResult<Committed>;

    /// In one transaction: empties the read model and sets the checkpoint to 0.
    async fn reset(&self) -> FlextResult<()>;
}

/// What a run of a transactional projection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionalProgress {
    /// Events applied (each committed together with its checkpoint).
    pub applied: u64,
    /// The checkpoint after the run: the last position committed.
    pub position: u64,
}

/// Drives a [`TransactionalTarget`] from the log of `events`, one transaction per batch:
/// exactly once, since the read model and the checkpoint commit or roll back together.
///
/// A failed batch is rolled back and tried again one event per transaction: the events
/// before the failing one commit, and the run stops with the failing event's error (its
/// code kept, its message naming the projection and the position), the checkpoint just
/// before it. Nothing is skipped or dead-lettered: a read model that must equal a replay
/// cannot leave an event out behind the caller's back. A projection that wants to skip an
/// event records that in its own tables and returns `Ok`, so the skip commits with the
/// checkpoint. A panic in the projection is an `OPERATION_ERROR` the same way.
#[derive(Debug)]
pub struct TransactionalRunner<S, T> {
    events: S,
    target: T,
    batch_size: usize,
    /// The last position committed by its runs (or read as their start).
    positions: watch::Sender<u64>,
}

impl<S: EventStore, T: TransactionalTarget> TransactionalRunner<S, T> {
    /// A runner of `target` over the log of `events`, `batch_size` events per transaction
    /// (0 reads as 1).
    pub fn new(events: S, target: T, batch_size: usize) -> Self {
        Self {
            events,
            target,
            batch_size: batch_size.max(1),
            positions: watch::Sender::new(0),
        }
    }

    /// The log it reads.
    pub fn events(&self) -> &S {
        &self.events
    }

    /// Tells the waiters on [`positions`](Self::positions) where the run is.
    fn publish(&self, progress: &TransactionalProgress) {
        self.positions.send_replace(progress.position);
    }

    /// The same runner with `size` events per transaction (0 reads as 1).
    #[must_use]
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// The target.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// Events per transaction.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The committed checkpoint.
    pub async fn position(&self) -> FlextResult<u64> {
        self.target.checkpoint().await
    }

    /// Applies every event committed after the checkpoint, a batch per transaction.
    pub async fn catch_up(&self) -> FlextResult<TransactionalProgress> {
        let mut progress = TransactionalProgress {
            applied: 0,
            position: self.target.checkpoint().await?,
        };
        self.publish(&progress);
        self.catch_up_in(&mut progress, None).await?;
        Ok(progress)
    }

    /// Catches up, then applies new events as they commit, a batch per transaction (what
    /// has arrived, up to the batch size), until `shutdown` resolves. The transaction under
    /// way when it does is finished; the progress returned is the run's.
    pub async fn run_until(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> FlextResult<TransactionalProgress> {
        let (stop, stopped) = watch::channel(false);
        let mut work = std::pin::pin!(self.follow(stopped));
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            biased;
            result = &mut work => return result,
            () = &mut shutdown => {}
        }
        stop.send_replace(true);
        work.await
    }

    /// Empties the read model and sets the checkpoint to 0 in one transaction, then
    /// replays every event. A runner of the same name working meanwhile finds its
    /// checkpoint moved and starts over from the first event, so nothing is applied twice.
    pub async fn rebuild(&self) -> FlextResult<TransactionalProgress> {
        self.target.reset().await?;
        self.catch_up().await
    }

    async fn follow(&self, stopped: watch::Receiver<bool>) -> FlextResult<TransactionalProgress> {
        let mut progress = TransactionalProgress {
            applied: 0,
            position: self.target.checkpoint().await?,
        };
        self.publish(&progress);
        let is_stopped = || *stopped.borrow();
        'catch_up: loop {
            if !self.catch_up_in(&mut progress, Some(&stopped)).await? || is_stopped() {
                return Ok(progress);
            }
            let mut live = self
                .events
                .subscribe(progress.position.saturating_add(1))
                .await?;
            loop {
                let mut until_stopped = stopped.clone();
                let first = tokio::select! {
                    biased;
                    _ = until_stopped.wait_for(|stop| *stop) => return Ok(progress),
                    next = live.next() => next,
                };
                let Some(first) = first else {
                    return Ok(progress);
                };
                let mut batch = vec![first?];
                // What else has arrived joins the batch, without waiting for more.
                while batch.len() < self.batch_size {
                    match live.next().now_or_never() {
                        Some(Some(event)) => batch.push(event?),
                        Some(None) | None => break,
                    }
                }
                batch.retain(|event| event.position > progress.position);
                if batch.is_empty() {
                    continue;
                }
                if !self.commit(&mut progress, &batch).await? {
                    // The checkpoint moved under this runner: read on from where it is.
                    continue 'catch_up;
                }
                if is_stopped() {
                    return Ok(progress);
                }
            }
        }
    }

    /// Applies every event after `progress`, a batch per transaction: whether it got to
    /// the end (`false` when `stopped` was set between two transactions).
    async fn catch_up_in(
        &self,
        progress: &mut TransactionalProgress,
        stopped: Option<&watch::Receiver<bool>>,
    ) -> FlextResult<bool> {
        loop {
            if stopped.is_some_and(|stopped| *stopped.borrow()) {
                return Ok(false);
            }
            let batch = self
                .events
                .read_all(progress.position.saturating_add(1), self.batch_size)
                .await?;
            if batch.is_empty() {
                return Ok(true);
            }
            // Whether the checkpoint moved or not, read on from `progress`.
            self.commit(progress, &batch).await?;
        }
    }

    /// Commits `batch` (events after `progress`, in order) in one transaction, or, when
    /// that fails, one event per transaction up to the failing one. Whether the checkpoint
    /// was where `progress` said (`false`: it moved, and `progress` now says where).
    async fn commit(
        &self,
        progress: &mut TransactionalProgress,
        batch: &[StoredEvent],
    ) -> FlextResult<bool> {
        let Some(last) = batch.last() else {
            return Ok(true);
        };
        let error = match self.try_commit(progress.position, batch).await {
            Ok(Committed::Applied) => {
                progress.applied += batch.len() as u64;
                progress.position = last.position;
                self.publish(progress);
                return Ok(true);
            }
            Ok(Committed::Moved(actual)) => {
                progress.position = actual;
                self.publish(progress);
                return Ok(false);
            }
            Err(error) if batch.len() == 1 => {
                return Err(self.failed_at(&batch[0], progress.position, error));
            }
            Err(error) => error,
        };
        tracing::debug!(projection = %self.target.name(), first = batch[0].position, last = last.position, %error, "batch rolled back; applying it one event at a time");
        for event in batch {
            match self
                .try_commit(progress.position, std::slice::from_ref(event))
                .await
            {
                Ok(Committed::Applied) => {
                    progress.applied += 1;
                    progress.position = event.position;
                    self.publish(progress);
                }
                Ok(Committed::Moved(actual)) => {
                    progress.position = actual;
                    self.publish(progress);
                    return Ok(false);
                }
                Err(error) => return Err(self.failed_at(event, progress.position, error)),
            }
        }
        Ok(true)
    }

    /// [`TransactionalTarget::commit`], with a panic as an `OPERATION_ERROR` (the
    /// transaction, dropped in the unwinding, rolls back).
    async fn try_commit(&self, expected: u64, events: &[StoredEvent]) -> FlextResult<Committed> {
        AssertUnwindSafe(self.target.commit(expected, events))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(FlextError::operation(format!(
                    "Handler execution failed: {}",
                    panic_message(panic.as_ref())
                )))
            })
    }

    /// `error`, of applying `event` after `checkpoint`, with the projection and the
    /// position named.
    fn failed_at(&self, event: &StoredEvent, checkpoint: u64, error: FlextError) -> FlextError {
        let name = self.target.name();
        tracing::warn!(projection = %name, position = event.position, %error, "transactional projection stopped at a failing event");
        FlextError::new(
            error.code(),
            format!(
                "Projection '{name}' cannot apply the event at position {} ({} of stream '{}'); nothing of it was committed and the checkpoint stays at {}: {}",
                event.position,
                event.event_type,
                event.stream_id,
                checkpoint,
                error.message()
            ),
        )
        .with_data(serde_json::json!({
            "projection": name,
            "position": event.position,
            "event_id": event.event_id,
        }))
        .with_source(error)
    }
}

impl<S, T> TransactionalRunner<S, T>
where
    S: EventStore + 'static,
    T: TransactionalTarget + 'static,
{
    /// Runs on a task of its own, as [`run_until`](Self::run_until) does, until the
    /// returned handle shuts it down (or is dropped): see [`RunHandle`].
    /// `OPERATION_ERROR` outside a tokio runtime.
    pub fn spawn(self) -> FlextResult<RunHandle<Self>> {
        RunHandle::spawn(Arc::new(self))
    }
}

#[async_trait]
impl<S, T> Runnable for TransactionalRunner<S, T>
where
    S: EventStore + 'static,
    T: TransactionalTarget + 'static,
{
    type Progress = TransactionalProgress;

    fn name(&self) -> &str {
        self.target.name()
    }

    fn positions(&self) -> &watch::Sender<u64> {
        &self.positions
    }

    async fn head(&self) -> FlextResult<u64> {
        self.events.head_position().await
    }

    async fn run(&self, shutdown: Shutdown) -> FlextResult<TransactionalProgress> {
        self.run_until(shutdown).await
    }
}
