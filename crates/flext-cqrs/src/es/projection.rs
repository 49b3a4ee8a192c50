//! [`ProjectionRunner`]: feeds a projection from the log, with checkpoints, retries and
//! dead letters.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::handler;
use flext_protocols::{CheckpointStore, EventStore, MetricsSource, Projection};
use flext_types::{DeadLetter, FlextError, FlextResult, MetricSet, MetricValue, StoredEvent};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::es::consumer::{
    Consumer, DeadLetterRetry, Outcome, Stop, Target, default_classifier, stop_requested,
};
use crate::es::retry::{DeadLetterPolicy, ErrorClass};
use flext_impl::Backoff;
use flext_store::{RunHandle, Runnable, Shutdown};

/// How a [`ProjectionRunner`] (or an [`EventRelay`](crate::EventRelay), for each of its
/// subscribers) reads, retries and gives up.
///
/// ```
/// use std::time::Duration;
/// use flext_cqrs::{Backoff, DeadLetterPolicy, ProjectionConfig};
///
/// let config = ProjectionConfig::default()
///     .with_checkpoint_every(500)
///     .with_checkpoint_interval(Duration::from_millis(250))
///     .with_max_attempts(5)
///     .with_backoff(Backoff::exponential(Duration::from_millis(50)))
///     .with_give_up_after(Duration::from_secs(60))
///     .with_dead_letter_policy(DeadLetterPolicy::Skip);
/// assert_eq!(config.max_attempts, 5);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectionConfig {
    /// Events read per batch while catching up (not used by a relay's deliveries).
    pub batch_size: usize,
    /// Events a [`ProjectionRunner`] finishes between two saves of its checkpoint (default
    /// [`DEFAULT_CHECKPOINT_EVERY`](ProjectionConfig::DEFAULT_CHECKPOINT_EVERY); 0 reads as
    /// 1, and 1 saves after every event). A crash repeats at most the events finished
    /// since the last save. Not used by a relay's subscribers, whose progress is saved
    /// after each event they handle.
    pub checkpoint_every: usize,
    /// The longest a finished event waits for its checkpoint while the runner keeps
    /// working (default [`DEFAULT_CHECKPOINT_INTERVAL`](ProjectionConfig::DEFAULT_CHECKPOINT_INTERVAL);
    /// zero saves after every event): the checkpoint is saved once `checkpoint_every`
    /// events or this much time, whichever comes first, have passed since the first
    /// unsaved event finished. Whatever the policy, it is also saved when the runner has
    /// caught up, before it waits for new events, and when it stops.
    pub checkpoint_interval: Duration,
    /// Tries per event that an [`ErrorClass::Counted`] failure may use up before the event
    /// goes to the dead letters (default [`handler::MAX_RETRIES`]; 0 reads as 1).
    pub max_attempts: u32,
    /// The waits between two tries of one event (default: 100 ms doubling up to 10 s,
    /// ±20% jitter).
    pub backoff: Backoff,
    /// How long [`ErrorClass::Transient`] failures are retried, from the event's first
    /// failure, before it goes to the dead letters (default 5 minutes; `Duration::MAX`
    /// retries them for ever).
    pub give_up_after: Duration,
    /// What a dead letter does to its stream's later events (default
    /// [`DeadLetterPolicy::Sequenced`]).
    pub dead_letter_policy: DeadLetterPolicy,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            checkpoint_every: Self::DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: Self::DEFAULT_CHECKPOINT_INTERVAL,
            max_attempts: handler::MAX_RETRIES,
            backoff: Backoff::default(),
            give_up_after: Duration::from_secs(300),
            dead_letter_policy: DeadLetterPolicy::Sequenced,
        }
    }
}

impl ProjectionConfig {
    /// The default of [`checkpoint_every`](Self::checkpoint_every): 100 events, one save
    /// where there were a hundred.
    pub const DEFAULT_CHECKPOINT_EVERY: usize = 100;

    /// The default of [`checkpoint_interval`](Self::checkpoint_interval): one second.
    pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

    /// The same configuration saving the checkpoint after every `events` finished events
    /// (0 reads as 1; 1 saves after each, as runners did before checkpoints were batched).
    #[must_use]
    pub fn with_checkpoint_every(mut self, events: usize) -> Self {
        self.checkpoint_every = events;
        self
    }

    /// The same configuration saving the checkpoint once `interval` has passed since the
    /// first unsaved event finished (zero saves after every event).
    #[must_use]
    pub fn with_checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// The same configuration reading `size` events per batch while catching up.
    #[must_use]
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// The same configuration letting counted failures try each event `attempts` times
    /// before dead-lettering it.
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The same configuration waiting as `backoff` says between two tries of one event.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The same configuration retrying transient failures of one event for `limit`.
    #[must_use]
    pub fn with_give_up_after(mut self, limit: Duration) -> Self {
        self.give_up_after = limit;
        self
    }

    /// The same configuration with `policy` for dead letters' streams.
    #[must_use]
    pub fn with_dead_letter_policy(mut self, policy: DeadLetterPolicy) -> Self {
        self.dead_letter_policy = policy;
        self
    }
}

/// What a run of a [`ProjectionRunner`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectionProgress {
    /// Events applied.
    pub applied: u64,
    /// Events given up on and recorded as dead letters.
    pub dead_lettered: u64,
    /// Events not tried because an earlier event of their stream is a dead letter, recorded
    /// as dead letters parked behind it.
    pub parked: u64,
    /// The checkpoint after the run: the last position finished.
    pub position: u64,
}

/// Where a [`ProjectionRunner`] stands: returned by [`ProjectionRunner::status`].
///
/// ```
/// # use std::sync::Arc;
/// # use flext_cqrs::{InMemoryEventStore, ProjectionRunner};
/// # use flext_protocols::Projection;
/// # use flext_types::{FlextResult, StoredEvent};
/// # struct Noop;
/// # #[flext_protocols::async_trait]
/// # impl Projection for Noop {
/// #     fn name(&self) -> &str { "noop" }
/// #     async fn apply(&self, _: &StoredEvent) -> FlextResult<()> { Ok(()) }
/// #     async fn reset(&self) -> FlextResult<()> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> FlextResult<()> {
/// let store = Arc::new(InMemoryEventStore::new());
/// let runner = ProjectionRunner::new(store.clone(), store, Arc::new(Noop));
/// let status = runner.status().await?;
/// assert_eq!((status.name.as_str(), status.position, status.lag), ("noop", 0, 0));
/// assert_eq!(serde_json::to_value(&status)?["dead_letters"], 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name (its checkpoint's key).
    pub name: String,
    /// The last position it finished: the runner's own while a run is going on (it may be
    /// ahead of the saved checkpoint, by its checkpoint policy), the saved checkpoint
    /// otherwise (0 before its first event).
    pub position: u64,
    /// The store's head: the position of the last committed event.
    pub head: u64,
    /// `head - position` (0 when the position is ahead). Positions are not dense on every
    /// store (PostgreSQL leaves gaps where transactions rolled back), so this is an upper
    /// bound of the events the projection still has to apply, not their count.
    pub lag: u64,
    /// The dead letters it holds: events given up on and those parked behind them.
    pub dead_letters: usize,
}

/// Feeds one [`Projection`] from the event log: from its checkpoint, event by event, saving
/// the checkpoint in batches.
///
/// - [`catch_up`](ProjectionRunner::catch_up) applies everything committed so far;
///   [`run_until`](ProjectionRunner::run_until) catches up, then follows new events live
///   until its shutdown future resolves. [`spawn`](ProjectionRunner::spawn) runs it on a
///   task of its own and returns a [`ProjectionHandle`]: shut it down, join it, or wait
///   until it has finished a position (read-your-writes) or caught up, without polling.
/// - The checkpoint is saved every [`checkpoint_every`](ProjectionConfig::checkpoint_every)
///   events or [`checkpoint_interval`](ProjectionConfig::checkpoint_interval), whichever
///   comes first, and always once the runner has caught up, before it waits for new
///   events, and when it stops (on shutdown, or with an error: then as far as it got).
/// - Delivery is at least once: a crash applies again, on restart, the events finished
///   since the last save (at most `checkpoint_every`; a runner configured to save after
///   every event repeats at most the one it was applying). A read model kept in the
///   store's own database can have exactly once instead: its store crate's transactional
///   runner commits the read model and the checkpoint together.
/// - Order is kept per stream, not across streams (as in Axon's sequencing): a dead letter
///   retried later is applied after newer events of other streams. A projection that
///   guards against events delivered again should remember the last version it applied
///   of each stream (or the ids of the events it applied), not the last position.
/// - A failing (or panicking) event is tried again after a [`Backoff`]. Its error's
///   [`ErrorClass`] decides how long: transient failures (by default `STORAGE_ERROR`,
///   `TIMEOUT`, `RATE_LIMITED`) until `give_up_after` has passed since its first failure,
///   other failures until they used up `max_attempts` tries, permanent ones not at all.
///   Then it becomes a [`DeadLetter`] and the runner moves on.
/// - Sequenced ([`DeadLetterPolicy::Sequenced`], the default), a dead letter parks its
///   stream: each later event of that stream is recorded, untried, as a dead letter parked
///   behind it, so a stream's events are never applied out of order; other streams go on.
///   [`DeadLetterPolicy::Skip`] applies the stream's later events as usual.
/// - An event that already is a dead letter (after a restart, or in a rebuild) is not
///   tried again by the runner: only [`retry_dead_letter`](ProjectionRunner::retry_dead_letter)
///   applies it.
/// - An error classified [`ErrorClass::Stop`] (a relay's subscribers sharing a name, or
///   what a classifier of your own says) stops the run with that error, the checkpoint
///   before the event, nothing recorded.
/// - [`dead_letters`](ProjectionRunner::dead_letters) lists them,
///   [`retry_dead_letter`](ProjectionRunner::retry_dead_letter) applies one again (and,
///   sequenced, the letters parked behind it, in order, until one fails again),
///   [`discard_dead_letter`](ProjectionRunner::discard_dead_letter) drops one, and
///   [`clear_dead_letters`](ProjectionRunner::clear_dead_letters) drops them all.
/// - [`rebuild`](ProjectionRunner::rebuild) empties the projection and replays from the
///   first event, keeping the dead letters (their events stay unapplied, parked streams
///   stay parked).
///
/// Dead letters are managed through the runner that owns the projection: it mirrors them
/// in memory (read once from the store), so that no event costs a read. So run one
/// instance per projection name, in one process, and list, retry and discard its letters
/// through that live instance: a second instance of the same name (an admin tool building
/// its own runner, say) would not see the first one's changes, nor the first its
/// changes. (The runner does not stop a second instance itself: a checkpoint store that
/// fences its writes by a lease, as the PostgreSQL store offers, makes an instance that
/// lost its lease stop at its next checkpoint write; a removal the
/// store finds nothing to remove for is logged as a sign of one.)
///
/// [`status`](ProjectionRunner::status) says where it stands (position, head, lag, dead
/// letters), and as a [`MetricsSource`] (its source is the projection's name) it counts
/// the events applied, the failed tries, the retries, the events dead-lettered and parked,
/// with the last finished position and the dead letters held as gauges.
pub struct ProjectionRunner {
    events: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    projection: Arc<dyn Projection>,
    consumer: Consumer,
    live: Arc<Live>,
}

/// What the runs of a runner share with [`ProjectionRunner::status`], its metrics and its
/// [`ProjectionHandle`]s.
#[derive(Debug)]
struct Live {
    /// The last position a run finished (or started from).
    position: AtomicU64,
    /// The same, for the waiters of a handle: published after each event of a live run,
    /// after each batch of a catch-up (an event costs an atomic store, not a lock), and
    /// as a run starts and stops.
    published: watch::Sender<u64>,
    /// Runs going on now.
    runs: AtomicUsize,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            position: AtomicU64::new(0),
            published: watch::Sender::new(0),
            runs: AtomicUsize::new(0),
        }
    }
}

impl Live {
    /// The last position a run finished.
    fn position(&self) -> u64 {
        self.position.load(Relaxed)
    }

    /// Moves the position, and publishes it if `publish` says so (else a later
    /// [`publish`](Self::publish) does).
    fn advance(&self, position: u64, publish: bool) {
        self.position.store(position, Relaxed);
        if publish {
            self.publish();
        }
    }

    /// Publishes the position, waking the waiters if there are any. A handle subscribes
    /// only while it waits, so a run with no one waiting wakes no one: a receiver made
    /// later reads the value, and the count is read under the channel's lock, so a
    /// receiver made meanwhile reads the new value once it borrows it.
    fn publish(&self) {
        let position = self.position();
        self.published.send_if_modified(|current| {
            *current = position;
            self.published.receiver_count() > 0
        });
    }
}

/// One run counted in [`Live::runs`] while it lives (a run's future may be dropped).
struct Running(Arc<Live>);

impl Running {
    fn new(live: &Arc<Live>, position: u64) -> Self {
        live.runs.fetch_add(1, Relaxed);
        live.advance(position, true);
        Self(live.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.runs.fetch_sub(1, Relaxed);
    }
}

impl ProjectionRunner {
    /// A runner of `projection` over `events`, keeping its checkpoint in `checkpoints`.
    pub fn new(
        events: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        projection: Arc<dyn Projection>,
    ) -> Self {
        let consumer = Consumer::new(
            projection.name().to_owned(),
            checkpoints.clone(),
            ProjectionConfig::default(),
            default_classifier(),
        );
        Self {
            events,
            checkpoints,
            projection,
            consumer,
            live: Arc::default(),
        }
    }

    /// The same runner with `config`.
    #[must_use]
    pub fn with_config(mut self, config: ProjectionConfig) -> Self {
        self.consumer.config = config;
        self
    }

    /// The same runner classifying failures with `classify` instead of [`ErrorClass::of`].
    /// A classifier that panics stops the run with an `OPERATION_ERROR`, as
    /// [`ErrorClass::Stop`] does: nothing is recorded for the event.
    ///
    /// ```
    /// use flext_constants::ErrorCode;
    /// use flext_cqrs::{ErrorClass, ProjectionRunner};
    /// # fn runner() -> ProjectionRunner { unimplemented!() }
    /// # fn build() -> ProjectionRunner {
    /// runner().with_error_classifier(|error| match error.code() {
    ///     ErrorCode::SerializationError => ErrorClass::Permanent,
    ///     _ => ErrorClass::of(error),
    /// })
    /// # }
    /// ```
    #[must_use]
    pub fn with_error_classifier(
        mut self,
        classify: impl Fn(&FlextError) -> ErrorClass + Send + Sync + 'static,
    ) -> Self {
        self.consumer.classify = Arc::new(classify);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ProjectionConfig {
        &self.consumer.config
    }

    /// The projection's name (its checkpoint's key).
    pub fn name(&self) -> &str {
        self.projection.name()
    }

    /// The checkpoint as last saved: the last position the projection finished then (0
    /// before its first event). A running runner may have finished more, up to its
    /// checkpoint policy.
    pub async fn position(&self) -> FlextResult<u64> {
        Ok(self
            .checkpoints
            .load_checkpoint(self.name())
            .await?
            .unwrap_or(0))
    }

    /// Where the runner stands: its name, the last position it finished (its own while it
    /// runs, else the saved checkpoint), the store's head, the lag between the two, and how
    /// many dead letters it holds. See [`ProjectionStatus`].
    pub async fn status(&self) -> FlextResult<ProjectionStatus> {
        // The position first, the head after: the head is then never behind it.
        let position = if self.live.runs.load(Relaxed) > 0 {
            self.live.position()
        } else {
            self.position().await?
        };
        let head = self.events.head_position().await?;
        let dead_letters = self.consumer.letter_count().await?;
        Ok(ProjectionStatus {
            name: self.name().to_owned(),
            position,
            head,
            lag: head.saturating_sub(position),
            dead_letters,
        })
    }

    /// The events the projection gave up on, and those parked behind them, in position
    /// order.
    pub async fn dead_letters(&self) -> FlextResult<Vec<DeadLetter>> {
        self.consumer.dead_letters().await
    }

    /// Applies the dead letter at `position` again, once, and removes it if that works.
    ///
    /// Sequenced, `position` must be the first letter of its stream (the one the others
    /// are parked behind; `INVALID_ARGUMENT` otherwise, naming it), and the letters parked
    /// behind it are applied after it, in order, until one fails again: that one stays,
    /// with its attempts and error updated, as the head the rest stay parked behind. With
    /// [`DeadLetterPolicy::Skip`] only the one letter is applied. The letter is applied
    /// after newer events of other streams: order holds per stream only.
    ///
    /// `NOT_FOUND` when there is no letter at `position`; `CONCURRENCY_CONFLICT` when a
    /// retry or discard of the same stream is running, or when a letter it would apply lies
    /// past the checkpoint (after a failed rebuild, or a restart between a letter's write
    /// and its checkpoint's: the runner has not got past it, and would apply it, or its
    /// stream's earlier events, again after the retry; catch up first). An error of the
    /// store, or one classified [`ErrorClass::Stop`], ends the retry with that error: the
    /// letters applied before it are removed, the rest stay.
    pub async fn retry_dead_letter(&self, position: u64) -> FlextResult<DeadLetterRetry> {
        self.consumer
            .retry(
                &*self.events,
                position,
                &ProjectionTarget(&*self.projection),
            )
            .await
    }

    /// Retries every stream's dead letters (every letter, with
    /// [`DeadLetterPolicy::Skip`]), in position order. A stream whose retry is refused or
    /// breaks off (the errors of [`retry_dead_letter`](Self::retry_dead_letter)) is
    /// reported in [`DeadLetterRetry::errors`] and the others go on.
    pub async fn retry_dead_letters(&self) -> FlextResult<DeadLetterRetry> {
        self.consumer
            .retry_all(&*self.events, &ProjectionTarget(&*self.projection))
            .await
    }

    /// Removes the dead letter at `position` without applying its event: whether there
    /// was one.
    ///
    /// Sequenced, discarding a stream's first letter releases the next one for retry: it
    /// becomes the head (untried, not applied by itself), and the rest stay parked behind
    /// it; discarding the last letter of a stream lets the runner apply that stream's new
    /// events again. Discarding a parked letter drops that event from the sequence.
    pub async fn discard_dead_letter(&self, position: u64) -> FlextResult<bool> {
        self.consumer.discard(position).await
    }

    /// Removes every dead letter without applying any (every stream unparked): how many
    /// there were. Before a [`rebuild`](Self::rebuild), this makes the replay try their
    /// events again.
    pub async fn clear_dead_letters(&self) -> FlextResult<usize> {
        self.consumer.clear().await
    }

    /// Applies every event committed after the checkpoint, and saves the checkpoint.
    pub async fn catch_up(&self) -> FlextResult<ProjectionProgress> {
        let mut run = self.start().await?;
        let result = self.catch_up_in(&mut run).await.map(drop);
        self.finish(run, result).await
    }

    /// Catches up, then applies each new event as it commits, until `shutdown` resolves.
    ///
    /// Shutdown is prompt: the event being applied finishes, but a wait between two tries
    /// of a failing event ends at once (for a relay, its subscribers' waits too), and that
    /// event is left unfinished: nothing is recorded for it and the checkpoint stays before
    /// it, so the next run tries it again (at least once). Nothing is half-written at a
    /// wait. The checkpoint of the events finished before is saved. The progress returned
    /// is the run's up to there.
    pub async fn run_until(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> FlextResult<ProjectionProgress> {
        let stop = Arc::new(Stop::default());
        let mut work = std::pin::pin!(stop.scope(self.follow(&stop)));
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            biased;
            result = &mut work => return result,
            () = &mut shutdown => {}
        }
        stop.stop();
        work.await
    }

    /// Runs on a task of its own, as [`run_until`](Self::run_until) does, until the
    /// returned [`ProjectionHandle`] shuts it down (or is dropped): the handle stops it,
    /// waits for it to end, and waits until it has finished a position (read-your-writes)
    /// or caught up, without polling. [`runner`](RunHandle::runner) reaches the runner
    /// while it runs (its status, its dead letters). A runner already in an `Arc` spawns
    /// with [`RunHandle::spawn`]. `OPERATION_ERROR` outside a tokio runtime.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use flext_cqrs::{InMemoryEventStore, ProjectionRunner};
    /// # use flext_protocols::{EventStore, Projection};
    /// # use flext_types::{ExpectedVersion, FlextResult, JsonPayload, NewEvent, StoredEvent};
    /// # struct Noop;
    /// # #[flext_protocols::async_trait]
    /// # impl Projection for Noop {
    /// #     fn name(&self) -> &str { "balances" }
    /// #     async fn apply(&self, _: &StoredEvent) -> FlextResult<()> { Ok(()) }
    /// #     async fn reset(&self) -> FlextResult<()> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> FlextResult<()> {
    /// let store = Arc::new(InMemoryEventStore::new());
    /// let handle = ProjectionRunner::new(store.clone(), store.clone(), Arc::new(Noop)).spawn()?;
    ///
    /// let event = NewEvent::new("Deposited", JsonPayload::encode(&serde_json::json!({ "amount": 5 }))?);
    /// let appended = store.append("Account-1", ExpectedVersion::Any, vec![event]).await?;
    /// handle.wait_for(appended.last_position).await?; // the read model has it now
    ///
    /// let progress = handle.shutdown().await?; // checkpoint saved
    /// assert_eq!((progress.applied, progress.position), (1, appended.last_position));
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn(self) -> FlextResult<ProjectionHandle> {
        RunHandle::spawn(Arc::new(self))
    }

    /// Catches up, then follows new events live until `stop`; saves the checkpoint at the
    /// end.
    async fn follow(&self, stop: &Stop) -> FlextResult<ProjectionProgress> {
        let mut run = self.start().await?;
        let result = self.follow_in(stop, &mut run).await;
        self.finish(run, result).await
    }

    async fn follow_in(&self, stop: &Stop, run: &mut Run) -> FlextResult<()> {
        if !self.catch_up_in(run).await? || stop.is_stopped() {
            return Ok(());
        }
        // Caught up: save before waiting for new events.
        self.save(run).await?;
        let mut live = self
            .events
            .subscribe(run.progress.position.saturating_add(1))
            .await?;
        loop {
            let next = tokio::select! {
                biased;
                () = stop.stopped() => return Ok(()),
                next = live.next() => next,
                // The next event is not there yet: save before waiting for it. (`next` is
                // cancel-safe: a stream's item is not taken until it is ready.)
                () = std::future::ready(()), if run.unsaved > 0 => {
                    self.save(run).await?;
                    continue;
                }
            };
            match next {
                Some(Ok(event)) => {
                    if !self.process(&event, run).await? {
                        return Ok(());
                    }
                }
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            }
        }
    }

    /// A run from the stored checkpoint.
    async fn start(&self) -> FlextResult<Run> {
        let position = self.position().await?;
        Ok(Run {
            progress: ProjectionProgress {
                position,
                ..ProjectionProgress::default()
            },
            unsaved: 0,
            since: None,
            batched: false,
            _running: Running::new(&self.live, position),
        })
    }

    /// Applies every event committed after the run's position: whether to go on (`false`
    /// once the run is asked to stop).
    async fn catch_up_in(&self, run: &mut Run) -> FlextResult<bool> {
        run.batched = true;
        let result = self.catch_up_batches(run).await;
        run.batched = false;
        self.live.publish();
        result
    }

    /// [`catch_up_in`](Self::catch_up_in)'s batches, publishing the position after each
    /// (not after each event: a catch-up moves fast, and a waiter would be woken as often
    /// as the position moves).
    async fn catch_up_batches(&self, run: &mut Run) -> FlextResult<bool> {
        let batch_size = self.consumer.config.batch_size.max(1);
        loop {
            let batch = self
                .events
                .read_all(run.progress.position.saturating_add(1), batch_size)
                .await?;
            for event in &batch {
                if !self.process(event, run).await? {
                    return Ok(false);
                }
            }
            self.live.publish();
            if batch.len() < batch_size {
                return Ok(true);
            }
        }
    }

    /// Ends a run: saves its checkpoint and returns its progress, or, when it failed, saves
    /// what it can and returns the error.
    async fn finish(
        &self,
        mut run: Run,
        result: FlextResult<()>,
    ) -> FlextResult<ProjectionProgress> {
        match result {
            Ok(()) => {
                self.save(&mut run).await?;
                Ok(run.progress)
            }
            Err(error) => {
                if let Err(failed) = self.save(&mut run).await {
                    tracing::warn!(projection = %self.name(), position = run.progress.position, error = %failed, "cannot save the checkpoint after a failed run");
                }
                Err(error)
            }
        }
    }

    /// Saves the run's checkpoint, if it finished events since the last save.
    async fn save(&self, run: &mut Run) -> FlextResult<()> {
        if run.unsaved == 0 {
            return Ok(());
        }
        self.checkpoints
            .save_checkpoint(self.name(), run.progress.position)
            .await?;
        run.unsaved = 0;
        run.since = None;
        Ok(())
    }

    /// Empties the projection, forgets its checkpoint and replays every event.
    ///
    /// The dead letters stay: their events are not applied in the replay and parked
    /// streams stay parked (their events before the first letter are applied, later ones
    /// stay parked). Call [`clear_dead_letters`](Self::clear_dead_letters) first to try
    /// every event again.
    pub async fn rebuild(&self) -> FlextResult<ProjectionProgress> {
        self.projection.reset().await?;
        self.checkpoints.save_checkpoint(self.name(), 0).await?;
        self.catch_up().await
    }

    /// Handles one event, and saves the checkpoint when the policy says it is time: whether
    /// to go on (`false` once the run is asked to stop).
    async fn process(&self, event: &StoredEvent, run: &mut Run) -> FlextResult<bool> {
        if stop_requested() {
            return Ok(false);
        }
        if event.position <= run.progress.position {
            return Ok(true);
        }
        let outcome = self
            .consumer
            .handle(event, &ProjectionTarget(&*self.projection))
            .await?;
        let progress = &mut run.progress;
        match outcome {
            Outcome::Applied => progress.applied += 1,
            Outcome::DeadLettered => progress.dead_lettered += 1,
            Outcome::Parked => progress.parked += 1,
            Outcome::Held => {}
            Outcome::Stopped => return Ok(false),
        }
        progress.position = event.position;
        self.live.advance(event.position, !run.batched);
        run.unsaved += 1;
        let since = *run.since.get_or_insert_with(Instant::now);
        let config = &self.consumer.config;
        if run.unsaved >= config.checkpoint_every.max(1)
            || since.elapsed() >= config.checkpoint_interval
        {
            self.save(run).await?;
        }
        Ok(true)
    }
}

/// A [`ProjectionRunner`] (or an [`EventRelay`](crate::EventRelay)'s) running on a task of
/// its own, returned by [`ProjectionRunner::spawn`]: see [`RunHandle`] for what it does.
pub type ProjectionHandle = RunHandle<ProjectionRunner>;

#[async_trait]
impl Runnable for ProjectionRunner {
    type Progress = ProjectionProgress;

    fn name(&self) -> &str {
        ProjectionRunner::name(self)
    }

    fn positions(&self) -> &watch::Sender<u64> {
        &self.live.published
    }

    async fn head(&self) -> FlextResult<u64> {
        self.events.head_position().await
    }

    async fn run(&self, shutdown: Shutdown) -> FlextResult<ProjectionProgress> {
        self.run_until(shutdown).await
    }
}

/// One run of a runner: its progress, and how much of it is not saved yet.
struct Run {
    progress: ProjectionProgress,
    /// Events finished since the checkpoint was last saved.
    unsaved: usize,
    /// When the first of them finished.
    since: Option<Instant>,
    /// Whether it is catching up, publishing its position once per batch.
    batched: bool,
    /// Counts the run as going on while it lives.
    _running: Running,
}

/// A projection as what a consumer applies events to.
struct ProjectionTarget<'a>(&'a dyn Projection);

#[async_trait]
impl Target for ProjectionTarget<'_> {
    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        self.0.apply(event).await
    }
}

impl MetricsSource for ProjectionRunner {
    fn metric_set(&self) -> MetricSet {
        let tally = &self.consumer.tally;
        let count = |counter: &AtomicU64| MetricValue::Counter(counter.load(Relaxed));
        let mut set = MetricSet::new(self.name());
        set.push(
            "projection_events_applied",
            "Events the projection applied (in its runs and by retries of dead letters).",
            count(&tally.applied),
        );
        set.push(
            "projection_failures",
            "Tries of an event that failed.",
            count(&tally.failures),
        );
        set.push(
            "projection_retries",
            "Tries scheduled after a failure.",
            count(&tally.retries),
        );
        set.push(
            "projection_dead_lettered",
            "Events given up on and recorded as dead letters.",
            count(&tally.dead_lettered),
        );
        set.push(
            "projection_parked",
            "Events recorded untried as dead letters parked behind an earlier one of their stream.",
            count(&tally.parked),
        );
        set.push(
            "projection_position",
            "The last position the projection finished (0 before its first run).",
            MetricValue::Gauge(self.live.position() as f64),
        );
        set.push(
            "projection_dead_letters",
            "Dead letters held now (counted once the runner has read them).",
            MetricValue::Gauge(tally.letters.load(Relaxed) as f64),
        );
        set
    }
}

impl fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("config", &self.consumer.config)
            .finish_non_exhaustive()
    }
}
