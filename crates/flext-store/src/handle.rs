//! [`RunHandle`]: a runner spawned on the runtime, to stop, to join and to wait on until
//! it has finished a position (read-your-writes).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use flext_types::{FlextError, FlextResult, panic_message};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinError, JoinHandle};

/// A runner that [`RunHandle::spawn`] runs on its own task: a projection runner, a relay's,
/// a transactional one. Its runners' `spawn` methods call it; implement it for a runner
/// of your own to get the same handle.
#[async_trait]
pub trait Runnable: Send + Sync + 'static {
    /// What a run returns when it ends: its progress.
    type Progress: Send + 'static;

    /// The name of what it runs (a projection's name), which the handle's errors name.
    fn name(&self) -> &str;

    /// The channel on which its runs publish the last position they finished (the
    /// runner's checkpoint as a run starts, 0 before any has). Only the runner sends on
    /// it. A [`RunHandle`] subscribes only while it waits, so a runner may skip waking
    /// anyone while [`receiver_count`](watch::Sender::receiver_count) is 0, if it reads the
    /// count under the channel's lock (in
    /// [`send_if_modified`](watch::Sender::send_if_modified)'s closure).
    fn positions(&self) -> &watch::Sender<u64>;

    /// `async fn head(&self) -> FlextResult<u64>`: the position of the last event
    /// committed to the log it reads.
    async fn head(&self) -> FlextResult<u64>;

    /// `async fn run(&self, shutdown: Shutdown) -> FlextResult<Self::Progress>`: catches
    /// up, then follows the log until `shutdown` resolves, as the runner's `run_until`
    /// does.
    async fn run(&self, shutdown: Shutdown) -> FlextResult<Self::Progress>;
}

/// The future a spawned run stops at: it resolves when its [`RunHandle`] asks for a
/// [`shutdown`](RunHandle::shutdown) or is dropped.
#[derive(Debug)]
pub struct Shutdown(oneshot::Receiver<()>);

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

/// How a spawned run ended, as its waiters see it.
#[derive(Debug, Clone)]
enum End {
    Running,
    Finished,
    Failed(FlextError),
}

/// A runner running on a task of its own: stop it, wait for it to end, or wait until it
/// has finished a position, without polling.
///
/// - [`shutdown`](RunHandle::shutdown) stops the run as the runner's `run_until` stops at
///   its shutdown future (the event or batch under way is finished, the checkpoint saved)
///   and returns the run's progress, or its error.
/// - [`join`](RunHandle::join) waits for the run to end by itself: with the error that
///   stopped it, or with its progress when the log's subscription ended.
/// - [`wait_for`](RunHandle::wait_for) resolves once the run has finished a position (the
///   `last_position` of an append, for read-your-writes); it fails at once when the run
///   has ended before getting there, with the run's error (or an `OPERATION_ERROR` naming
///   the runner and the positions when it ended without one). It waits as long as the
///   runner takes: bound it with [`wait_for_within`](RunHandle::wait_for_within) (or
///   `tokio::time::timeout`). [`caught_up`](RunHandle::caught_up) waits for the log's
///   head as of the call.
/// - "Finished" is the runner's word: a dead-lettered event is finished too (the runner
///   moved past it), and positions a store skipped (PostgreSQL leaves gaps) are passed.
///
/// Dropping the handle stops the run, as `shutdown` does, in the background: the task
/// finishes the event under way, saves the checkpoint and ends. Keep the handle for as
/// long as the run should go on (in the application's state, say). Dropping a `join` or
/// `shutdown` future stops it the same way.
///
/// ```
/// use flext_store::{InMemoryEventStore, TransactionalRunner};
/// # use flext_store::{Committed, TransactionalTarget};
/// # use flext_types::{FlextResult, StoredEvent};
/// # struct Model;
/// # #[flext_protocols::async_trait]
/// # impl TransactionalTarget for Model {
/// #     fn name(&self) -> &str { "model" }
/// #     async fn checkpoint(&self) -> FlextResult<u64> { Ok(0) }
/// #     async fn commit(&self, _: u64, _: &[StoredEvent]) -> FlextResult<Committed> { Ok(Committed::Applied) }
/// #     async fn reset(&self) -> FlextResult<()> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> FlextResult<()> {
/// # let store = InMemoryEventStore::new();
/// let handle = TransactionalRunner::new(store.clone(), Model, 100).spawn()?;
/// let head = handle.caught_up().await?; // everything committed so far is applied
/// assert_eq!((head, handle.position()), (0, 0));
/// handle.wait_for_within(head, std::time::Duration::from_secs(1)).await?;
/// let progress = handle.shutdown().await?;
/// assert_eq!(progress.applied, 0);
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping the handle stops the run"]
pub struct RunHandle<R: Runnable> {
    runner: Arc<R>,
    end: watch::Receiver<End>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<FlextResult<R::Progress>>,
}

impl<R: Runnable> RunHandle<R> {
    /// Runs `runner` on a task of its own until the handle asks it to stop (or is
    /// dropped), or the run ends by itself. `OPERATION_ERROR` outside a tokio runtime.
    pub fn spawn(runner: Arc<R>) -> FlextResult<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            FlextError::operation(format!(
                "Runner of '{}' cannot be spawned outside a tokio runtime: spawn it from inside one",
                runner.name()
            ))
        })?;
        let (stop, stopped) = oneshot::channel();
        let (ended, end) = watch::channel(End::Running);
        let task = runtime.spawn({
            let runner = runner.clone();
            async move {
                let result = runner.run(Shutdown(stopped)).await;
                ended.send_replace(match &result {
                    Ok(_) => End::Finished,
                    Err(error) => End::Failed(error.clone()),
                });
                result
            }
        });
        Ok(Self {
            runner,
            end,
            stop,
            task,
        })
    }

    /// The runner, to ask for its status or manage its dead letters while it runs.
    pub fn runner(&self) -> &Arc<R> {
        &self.runner
    }

    /// The name of what it runs.
    pub fn name(&self) -> &str {
        self.runner.name()
    }

    /// The last position the run finished, as the runner published it (its start, the
    /// runner's checkpoint, until the first event; 0 until the run has read it): it may be
    /// ahead of the saved checkpoint. A `ProjectionRunner` publishes after each event it
    /// follows live and after each batch while catching up; a transactional runner after
    /// each commit.
    pub fn position(&self) -> u64 {
        *self.runner.positions().borrow()
    }

    /// Whether the run has ended (by itself, or asked to).
    pub fn is_finished(&self) -> bool {
        !matches!(*self.end.borrow(), End::Running) || self.task.is_finished()
    }

    /// Resolves once the run has finished `position`: at once when it already has. Fails
    /// at once, when the run has ended before `position`, with the error that ended it, or
    /// an `OPERATION_ERROR` naming the runner, where it stopped and `position`.
    ///
    /// It waits as long as the runner takes to get there (for ever, for a position never
    /// committed): bound it with [`wait_for_within`](Self::wait_for_within) or
    /// `tokio::time::timeout`.
    pub async fn wait_for(&self, position: u64) -> FlextResult<()> {
        // Subscribed for the wait only: a runner wakes no one while no one waits.
        let mut positions = self.runner.positions().subscribe();
        let mut end = self.end.clone();
        loop {
            if *positions.borrow_and_update() >= position {
                return Ok(());
            }
            let state = end.borrow_and_update().clone();
            if let Some(result) = self.ended(&state, position) {
                return result;
            }
            tokio::select! {
                // The runner's channel lives as long as the runner, which this handle holds.
                Ok(()) = positions.changed() => {}
                changed = end.changed() => {
                    if changed.is_err() && *positions.borrow() < position {
                        // The task ended without saying how: it panicked or was cancelled.
                        let state = end.borrow().clone();
                        return self.ended(&state, position).unwrap_or_else(|| {
                            Err(self.stopped_before(position, "its task panicked or was cancelled"))
                        });
                    }
                }
            }
        }
    }

    /// [`wait_for`](Self::wait_for), for at most `limit`: a `TIMEOUT` naming the runner,
    /// `position` and where it stands when the run has not finished `position` by then.
    pub async fn wait_for_within(&self, position: u64, limit: Duration) -> FlextResult<()> {
        match tokio::time::timeout(limit, self.wait_for(position)).await {
            Ok(result) => result,
            Err(_) => Err(FlextError::timeout(format!(
                "'{}' has not finished position {position} within {limit:?}: it is at {}",
                self.name(),
                self.position()
            ))
            .with_data(serde_json::json!({
                "projection": self.name(),
                "position": position,
                "reached": self.position(),
            }))),
        }
    }

    /// Resolves once the run has finished every event committed to the log when it is
    /// called (its head then): that head. Fails as [`wait_for`](Self::wait_for) does, or
    /// with the store's error reading the head.
    pub async fn caught_up(&self) -> FlextResult<u64> {
        let head = self.runner.head().await?;
        self.wait_for(head).await?;
        Ok(head)
    }

    /// Stops the run (the event or batch under way is finished, the checkpoint saved) and
    /// returns its progress, or the error that ended it first.
    pub async fn shutdown(self) -> FlextResult<R::Progress> {
        let name = self.runner.name().to_owned();
        let _ = self.stop.send(());
        outcome(&name, self.task.await)
    }

    /// Waits for the run to end by itself (an error that stops it, or the end of the
    /// log's subscription) and returns how it ended.
    pub async fn join(self) -> FlextResult<R::Progress> {
        let Self {
            runner, stop, task, ..
        } = self;
        let result = task.await;
        drop(stop);
        outcome(runner.name(), result)
    }

    /// The answer of a wait for `position` once the run ended (`None` while it runs).
    fn ended(&self, state: &End, position: u64) -> Option<FlextResult<()>> {
        match state {
            End::Running => None,
            // Its last position was published before its end.
            _ if self.position() >= position => Some(Ok(())),
            End::Finished => Some(Err(self.stopped_before(position, "its run has ended"))),
            End::Failed(error) => Some(Err(error.clone())),
        }
    }

    fn stopped_before(&self, position: u64, why: &str) -> FlextError {
        let reached = self.position();
        FlextError::operation(format!(
            "'{}' will not finish position {position}: {why} at position {reached}",
            self.name()
        ))
        .with_data(serde_json::json!({
            "projection": self.name(),
            "position": position,
            "reached": reached,
        }))
    }
}

/// A run's result, with a panic or a cancellation of its task as an `OPERATION_ERROR`.
fn outcome<P>(name: &str, joined: Result<FlextResult<P>, JoinError>) -> FlextResult<P> {
    match joined {
        Ok(result) => result,
        Err(error) if error.is_panic() => Err(FlextError::operation(format!(
            "The run of '{name}' panicked: {}",
            panic_message(error.into_panic().as_ref())
        ))),
        Err(_) => Err(FlextError::operation(format!(
            "The run of '{name}' was cancelled (its runtime shut down)"
        ))),
    }
}

impl<R: Runnable> fmt::Debug for RunHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHandle")
            .field("name", &self.name())
            .field("position", &self.position())
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}
