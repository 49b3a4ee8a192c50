//! One reader of the log under one name: its retries, its dead letters (sequenced per
//! stream or not) and their retry and discard. A [`ProjectionRunner`](crate::ProjectionRunner)
//! is one consumer; an [`EventRelay`](crate::EventRelay) keeps one per subscriber.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_impl::catch_panic;
use flext_protocols::{CheckpointStore, EventStore};
use flext_types::{DeadLetter, FlextError, FlextResult, StoredEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ProjectionConfig;
use crate::es::retry::{DeadLetterPolicy, ErrorClass, stopping, stops_runner};

/// What a consumer applies events to.
#[async_trait]
pub(crate) trait Target: Send + Sync {
    /// Applies `event` once.
    async fn apply(&self, event: &StoredEvent) -> FlextResult<()>;
}

/// The error classifier of a runner or relay.
pub(crate) type Classifier = Arc<dyn Fn(&FlextError) -> ErrorClass + Send + Sync>;

/// The default classifier, [`ErrorClass::of`].
pub(crate) fn default_classifier() -> Classifier {
    Arc::new(ErrorClass::of)
}

/// What a retry of dead letters did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRetry {
    /// Positions applied and removed from the dead letters, in the order applied.
    pub applied: Vec<u64>,
    /// Positions that failed again: each is still a dead letter (its attempts and error
    /// updated) and, sequenced, the head its stream's later letters stay parked behind.
    pub failed: Vec<u64>,
    /// The retries that could not run or broke off, each by the position it started at,
    /// with the error: a retry of every stream goes on with the other streams and reports
    /// them here (a retry of one letter returns its error instead). Letters applied before
    /// the error are in `applied` and removed; the others stay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<(u64, FlextError)>,
}

/// What [`Consumer::handle`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Applied.
    Applied,
    /// Given up on: a new dead letter.
    DeadLettered,
    /// Not tried: recorded as a dead letter parked behind an earlier one of its stream.
    Parked,
    /// Not tried: it already is a dead letter (from before a restart or a rebuild).
    Held,
    /// Not finished: the runner was asked to stop while the event waited for another try.
    /// Nothing was recorded; the next run tries it again.
    Stopped,
}

tokio::task_local! {
    /// The stop signal of the runner this task works for, set by
    /// [`ProjectionRunner::run_until`](crate::ProjectionRunner::run_until) around its work.
    /// Task-local because a relay's deliveries run inside the runner's call of
    /// `Projection::apply`, which has no way to pass it: so one signal ends the runner's
    /// own waits and those of every subscriber of a relay it runs.
    static STOP: Arc<Stop>;
}

/// Asks the waits between tries of one runner's work to end (see [`STOP`]).
#[derive(Debug, Default)]
pub(crate) struct Stop {
    stopped: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// Asks the work to stop: each wait ends, and no new event is started.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(SeqCst)
    }

    /// Resolves once [`stop`](Self::stop) is called.
    pub(crate) async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a stop between the two is not missed.
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `work` with this signal as its task's.
    pub(crate) fn scope<F: Future>(self: &Arc<Self>, work: F) -> impl Future<Output = F::Output> {
        STOP.scope(self.clone(), work)
    }
}

/// Whether the runner this task works for was asked to stop.
pub(crate) fn stop_requested() -> bool {
    STOP.try_with(|stop| stop.is_stopped()).unwrap_or(false)
}

/// Waits `wait` between two tries of one event: `false` when the runner was asked to stop
/// instead. A zero wait still yields to the other tasks, so that retries without backoff
/// do not hold the thread.
async fn pause(wait: Duration) -> bool {
    let stop = STOP.try_with(Arc::clone).ok();
    if wait.is_zero() {
        tokio::task::yield_now().await;
    } else if let Some(stop) = &stop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.stopped() => {}
        }
    } else {
        tokio::time::sleep(wait).await;
    }
    !stop.is_some_and(|stop| stop.is_stopped())
}

/// The dead letters of one name, mirrored in memory by stream so that each event is
/// checked without a read. Loaded from the store on first use; the consumer owns the name,
/// so every change goes through it (store first, then the mirror). A second consumer of the
/// same name (a second runner instance) would not see this one's changes, nor this one
/// its: one instance per name owns the letters. A removal the store finds nothing to remove
/// for is how that shows, and is logged.
#[derive(Default)]
struct Index {
    loaded: bool,
    streams: HashMap<String, BTreeMap<u64, DeadLetter>>,
    /// Streams a retry or discard is working on.
    busy: HashSet<String>,
}

impl Index {
    fn insert(&mut self, letter: DeadLetter) {
        self.streams
            .entry(letter.stream_id.clone())
            .or_default()
            .insert(letter.position, letter);
    }

    fn remove(&mut self, stream: &str, position: u64) -> Option<DeadLetter> {
        let letters = self.streams.get_mut(stream)?;
        let removed = letters.remove(&position);
        if letters.is_empty() {
            self.streams.remove(stream);
        }
        removed
    }

    fn find(&self, position: u64) -> Option<(&String, &BTreeMap<u64, DeadLetter>)> {
        self.streams
            .iter()
            .find(|(_, letters)| letters.contains_key(&position))
    }

    /// The first letter of `stream`, if it comes before `position`.
    fn head_before(&self, stream: &str, position: u64) -> Option<u64> {
        self.streams
            .get(stream)?
            .keys()
            .next()
            .copied()
            .filter(|head| *head < position)
    }
}

/// One named reader of the log (see the module docs).
pub(crate) struct Consumer {
    name: String,
    checkpoints: Arc<dyn CheckpointStore>,
    pub(crate) config: ProjectionConfig,
    pub(crate) classify: Classifier,
    index: Mutex<Index>,
    /// The checkpoint as last loaded or saved (relay subscribers read it per event).
    position: Mutex<Option<u64>>,
}

impl Consumer {
    pub(crate) fn new(
        name: String,
        checkpoints: Arc<dyn CheckpointStore>,
        config: ProjectionConfig,
        classify: Classifier,
    ) -> Self {
        Self {
            name,
            checkpoints,
            config,
            classify,
            index: Mutex::new(Index::default()),
            position: Mutex::new(None),
        }
    }

    /// The checkpoint, read from the store once and then kept.
    pub(crate) async fn cached_position(&self) -> FlextResult<u64> {
        if let Some(position) = *lock(&self.position) {
            return Ok(position);
        }
        let stored = self
            .checkpoints
            .load_checkpoint(&self.name)
            .await?
            .unwrap_or(0);
        Ok(*lock(&self.position).get_or_insert(stored))
    }

    /// Saves the checkpoint.
    pub(crate) async fn save_position(&self, position: u64) -> FlextResult<()> {
        self.checkpoints
            .save_checkpoint(&self.name, position)
            .await?;
        *lock(&self.position) = Some(position);
        Ok(())
    }

    /// The dead letters, in position order, as the store holds them.
    pub(crate) async fn dead_letters(&self) -> FlextResult<Vec<DeadLetter>> {
        self.checkpoints.dead_letters(&self.name).await
    }

    /// Applies `event` with retries, dead-letters it when they run out, or leaves it
    /// untried when its stream is parked or it already is a dead letter.
    pub(crate) async fn handle(
        &self,
        event: &StoredEvent,
        target: &dyn Target,
    ) -> FlextResult<Outcome> {
        self.load().await?;
        let parked_behind = {
            let index = lock(&self.index);
            let held = index
                .streams
                .get(&*event.stream_id)
                .is_some_and(|letters| letters.contains_key(&event.position));
            if held {
                return Ok(Outcome::Held);
            }
            match self.config.dead_letter_policy {
                DeadLetterPolicy::Sequenced => index.head_before(&event.stream_id, event.position),
                _ => None,
            }
        };
        if let Some(head) = parked_behind
            && self.park(event, head).await?
        {
            return Ok(Outcome::Parked);
        }
        self.apply_with_retries(event, target).await
    }

    /// Records `event` as parked behind `head`: whether it stays parked. It does not when
    /// the stream's letters were retried or discarded to the end while it was being
    /// recorded, and is then the caller's to apply.
    async fn park(&self, event: &StoredEvent, head: u64) -> FlextResult<bool> {
        let letter = DeadLetter {
            position: event.position,
            event_id: event.event_id,
            stream_id: event.stream_id.to_string(),
            event_type: event.event_type.to_string(),
            attempts: 0,
            error: parked_error(head, &event.stream_id),
            parked_behind: Some(head),
        };
        self.checkpoints
            .add_dead_letter(&self.name, letter.clone())
            .await?;
        // The insert and the check are one step under the lock, as are a retry's removal of
        // a letter and its choice of the next: either the retry sees this letter and
        // applies it after the ones before it, or this sees no letter left before it.
        let released = {
            let mut index = lock(&self.index);
            index.insert(letter);
            let blocked = index
                .head_before(&event.stream_id, event.position)
                .is_some();
            if !blocked {
                index.remove(&event.stream_id, event.position);
            }
            !blocked
        };
        if !released {
            tracing::debug!(consumer = %self.name, position = event.position, head, "event parked behind a dead letter");
            return Ok(true);
        }
        if let Err(error) = self
            .checkpoints
            .remove_dead_letter(&self.name, event.position)
            .await
        {
            // The store still holds it: so does the mirror, and it stays a letter.
            let stored = self.checkpoints.dead_letters(&self.name).await;
            if let Some(letter) = stored
                .ok()
                .and_then(|all| all.into_iter().find(|l| l.position == event.position))
            {
                lock(&self.index).insert(letter);
            }
            return Err(error);
        }
        Ok(false)
    }

    async fn apply_with_retries(
        &self,
        event: &StoredEvent,
        target: &dyn Target,
    ) -> FlextResult<Outcome> {
        let max_attempts = self.config.max_attempts.max(1);
        let mut tries: u32 = 0;
        let mut counted: u32 = 0;
        let mut first_failure: Option<Instant> = None;
        loop {
            tries = tries.saturating_add(1);
            let error = match catch_panic(target.apply(event)).await {
                Ok(()) => return Ok(Outcome::Applied),
                Err(error) => error,
            };
            if stop_requested() {
                // Stopping: nothing is recorded, the next run tries the event again.
                tracing::debug!(consumer = %self.name, position = event.position, %error, "event failed while stopping");
                return Ok(Outcome::Stopped);
            }
            let failed_at = *first_failure.get_or_insert_with(Instant::now);
            let class = self.class_of(&error);
            let wait = match class {
                ErrorClass::Stop => {
                    tracing::error!(consumer = %self.name, position = event.position, %error, "stopping: the error is not the event's");
                    return Err(stopping(error));
                }
                ErrorClass::Transient => {
                    let left = self
                        .config
                        .give_up_after
                        .saturating_sub(failed_at.elapsed());
                    (!left.is_zero()).then(|| self.config.backoff.delay(tries).min(left))
                }
                ErrorClass::Permanent => None,
                ErrorClass::Counted => {
                    counted += 1;
                    (counted < max_attempts).then(|| self.config.backoff.delay(tries))
                }
            };
            let Some(wait) = wait else {
                tracing::warn!(consumer = %self.name, position = event.position, tries, ?class, %error, "event dead-lettered");
                self.record(DeadLetter {
                    position: event.position,
                    event_id: event.event_id,
                    stream_id: event.stream_id.to_string(),
                    event_type: event.event_type.to_string(),
                    attempts: tries,
                    error,
                    parked_behind: None,
                })
                .await?;
                return Ok(Outcome::DeadLettered);
            };
            tracing::debug!(consumer = %self.name, position = event.position, tries, ?class, ?wait, %error, "event failed; retrying");
            if !pause(wait).await {
                tracing::debug!(consumer = %self.name, position = event.position, "stopped while waiting to retry");
                return Ok(Outcome::Stopped);
            }
        }
    }

    /// The class of `error`: [`ErrorClass::Stop`] for an error marked to stop, whatever
    /// the classifier says; the classifier's answer otherwise.
    fn class_of(&self, error: &FlextError) -> ErrorClass {
        if stops_runner(error) {
            ErrorClass::Stop
        } else {
            (self.classify)(error)
        }
    }

    /// Stores `letter` (replacing any at its position), then mirrors it.
    async fn record(&self, letter: DeadLetter) -> FlextResult<()> {
        self.checkpoints
            .add_dead_letter(&self.name, letter.clone())
            .await?;
        lock(&self.index).insert(letter);
        Ok(())
    }

    /// Applies the dead letter at `position` again, once; sequenced, then each letter
    /// parked behind it in order, until one fails again. Every letter applied is removed.
    ///
    /// Refused (`CONCURRENCY_CONFLICT`) while a letter it would apply lies past the
    /// checkpoint: the reader has not got past it yet (a rebuild under way, or a restart
    /// after the letter was stored and before its checkpoint was), and would apply that
    /// event (or the stream's earlier ones) again after the retry.
    pub(crate) async fn retry(
        &self,
        events: &dyn EventStore,
        position: u64,
        target: &dyn Target,
    ) -> FlextResult<DeadLetterRetry> {
        let mut report = DeadLetterRetry::default();
        self.retry_into(events, position, target, &mut report)
            .await?;
        Ok(report)
    }

    async fn retry_into(
        &self,
        events: &dyn EventStore,
        position: u64,
        target: &dyn Target,
        report: &mut DeadLetterRetry,
    ) -> FlextResult<()> {
        self.load().await?;
        let checkpoint = self
            .checkpoints
            .load_checkpoint(&self.name)
            .await?
            .unwrap_or(0);
        let sequenced = self.config.dead_letter_policy == DeadLetterPolicy::Sequenced;
        let stream = {
            let mut index = lock(&self.index);
            let (stream, letters) = index.find(position).ok_or_else(|| self.missing(position))?;
            let head = letters.keys().next().copied().unwrap_or(position);
            if sequenced && head < position {
                return Err(FlextError::invalid_argument(format!(
                    "The dead letter at position {position} of '{}' is parked behind position {head} of stream '{stream}': retry {head}, which applies the stream's letters in order",
                    self.name
                )));
            }
            let last = if sequenced {
                letters.keys().next_back().copied().unwrap_or(position)
            } else {
                position
            };
            if let Some(beyond) = letters
                .range(position..=last)
                .map(|(p, _)| *p)
                .find(|p| *p > checkpoint)
            {
                return Err(self.not_reached(stream, beyond, checkpoint));
            }
            let stream = stream.clone();
            self.claim(&mut index, &stream)?;
            stream
        };
        let mut busy = Busy::new(self, &stream);
        let mut next = Some(position);
        while let Some(current) = next {
            let Some(letter) = lock(&self.index)
                .streams
                .get(&stream)
                .and_then(|letters| letters.get(&current))
                .cloned()
            else {
                break;
            };
            let event = read_event(events, &letter).await?;
            match catch_panic(target.apply(&event)).await {
                Ok(()) => {
                    let removed = self
                        .checkpoints
                        .remove_dead_letter(&self.name, current)
                        .await?;
                    if !removed {
                        self.stale(current);
                    }
                    report.applied.push(current);
                    let mut index = lock(&self.index);
                    index.remove(&stream, current);
                    next = if sequenced {
                        index
                            .streams
                            .get(&stream)
                            .and_then(|letters| letters.keys().next().copied())
                    } else {
                        None
                    };
                    if next.is_none() {
                        busy.release(&mut index);
                    }
                }
                Err(error) if self.class_of(&error) == ErrorClass::Stop => {
                    tracing::error!(consumer = %self.name, position = current, %error, "retry stopped: the error is not the event's");
                    return Err(stopping(error));
                }
                Err(error) => {
                    tracing::warn!(consumer = %self.name, position = current, %error, "dead letter failed again");
                    self.record(DeadLetter {
                        attempts: letter.attempts.saturating_add(1),
                        error,
                        parked_behind: None,
                        ..letter
                    })
                    .await?;
                    report.failed.push(current);
                    if sequenced {
                        self.repoint(&stream, current).await?;
                    }
                    break;
                }
            }
        }
        Ok(())
    }

    /// Retries every sequence (sequenced) or every letter (skip), in position order. A
    /// retry that cannot run or breaks off is reported in
    /// [`errors`](DeadLetterRetry::errors) and the others go on.
    pub(crate) async fn retry_all(
        &self,
        events: &dyn EventStore,
        target: &dyn Target,
    ) -> FlextResult<DeadLetterRetry> {
        self.load().await?;
        let mut starts: Vec<u64> = {
            let index = lock(&self.index);
            match self.config.dead_letter_policy {
                DeadLetterPolicy::Sequenced => index
                    .streams
                    .values()
                    .filter_map(|letters| letters.keys().next().copied())
                    .collect(),
                _ => index
                    .streams
                    .values()
                    .flat_map(|letters| letters.keys().copied())
                    .collect(),
            }
        };
        starts.sort_unstable();
        let mut report = DeadLetterRetry::default();
        for position in starts {
            if let Err(error) = self.retry_into(events, position, target, &mut report).await {
                tracing::warn!(consumer = %self.name, position, %error, "retry of a dead letter did not run to its end");
                report.errors.push((position, error));
            }
        }
        Ok(report)
    }

    /// Removes the dead letter at `position` without applying it: whether there was one.
    /// Sequenced, when it was its stream's head, the next letter becomes the head, untried
    /// and waiting for a retry; when it was the last, the stream applies events again.
    pub(crate) async fn discard(&self, position: u64) -> FlextResult<bool> {
        self.load().await?;
        let stream = {
            let mut index = lock(&self.index);
            let Some((stream, _)) = index.find(position) else {
                return Ok(false);
            };
            let stream = stream.clone();
            self.claim(&mut index, &stream)?;
            stream
        };
        let mut busy = Busy::new(self, &stream);
        let removed = self
            .checkpoints
            .remove_dead_letter(&self.name, position)
            .await?;
        if !removed {
            self.stale(position);
        }
        let new_head = {
            let mut index = lock(&self.index);
            index.remove(&stream, position);
            let head = index
                .streams
                .get(&stream)
                .and_then(|letters| letters.keys().next().copied());
            if head.is_none() {
                busy.release(&mut index);
            }
            head
        };
        if let Some(head) = new_head
            && self.config.dead_letter_policy == DeadLetterPolicy::Sequenced
        {
            self.release_head(&stream, head, position).await?;
            self.repoint(&stream, head).await?;
        }
        tracing::info!(consumer = %self.name, position, "dead letter discarded");
        Ok(removed)
    }

    /// Removes every dead letter without applying any: how many there were.
    pub(crate) async fn clear(&self) -> FlextResult<usize> {
        self.load().await?;
        let positions: Vec<(String, u64)> = lock(&self.index)
            .streams
            .iter()
            .flat_map(|(stream, letters)| letters.keys().map(|p| (stream.clone(), *p)))
            .collect();
        for (stream, position) in &positions {
            self.checkpoints
                .remove_dead_letter(&self.name, *position)
                .await?;
            lock(&self.index).remove(stream, *position);
        }
        Ok(positions.len())
    }

    /// Marks the head at `head` as no longer parked: the letter it waited on at `gone` was
    /// discarded.
    async fn release_head(&self, stream: &str, head: u64, gone: u64) -> FlextResult<()> {
        let letter = lock(&self.index)
            .streams
            .get(stream)
            .and_then(|letters| letters.get(&head))
            .cloned();
        if let Some(letter) = letter.filter(|l| l.parked_behind.is_some()) {
            self.record(DeadLetter {
                error: FlextError::operation(format!(
                    "Released for retry: the dead letter at position {gone} it was parked behind was discarded"
                )),
                parked_behind: None,
                ..letter
            })
            .await?;
        }
        Ok(())
    }

    /// Points every later letter of `stream` at its head `head`.
    async fn repoint(&self, stream: &str, head: u64) -> FlextResult<()> {
        let stale: Vec<DeadLetter> = lock(&self.index)
            .streams
            .get(stream)
            .map(|letters| {
                letters
                    .range(head + 1..)
                    .map(|(_, letter)| letter)
                    .filter(|letter| letter.parked_behind != Some(head))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for letter in stale {
            let error = if letter.attempts == 0 {
                parked_error(head, stream)
            } else {
                letter.error.clone()
            };
            self.record(DeadLetter {
                error,
                parked_behind: Some(head),
                ..letter
            })
            .await?;
        }
        Ok(())
    }

    /// Marks `stream` busy, or refuses when a retry or discard already works on it.
    fn claim(&self, index: &mut Index, stream: &str) -> FlextResult<()> {
        if !index.busy.insert(stream.to_owned()) {
            return Err(FlextError::new(
                ErrorCode::ConcurrencyConflict,
                format!(
                    "A retry or discard of the dead letters of stream '{stream}' of '{}' is already running",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    /// The refusal of a retry that would apply the letter at `position`, past `checkpoint`.
    fn not_reached(&self, stream: &str, position: u64, checkpoint: u64) -> FlextError {
        FlextError::new(
            ErrorCode::ConcurrencyConflict,
            format!(
                "'{}' has finished position {checkpoint} (its checkpoint), not yet the dead letter at position {position} of stream '{stream}': a retry now could apply the stream's events out of order or twice; retry once it has got past position {position}",
                self.name
            ),
        )
        .with_data(serde_json::json!({ "checkpoint": checkpoint, "position": position }))
    }

    /// Logs that the store had no letter at `position` where the mirror had one: another
    /// instance of the same name changed the letters.
    fn stale(&self, position: u64) {
        tracing::warn!(consumer = %self.name, position, "the store had no dead letter at this position: another runner of the same name changed its dead letters; run one instance per name");
    }

    fn missing(&self, position: u64) -> FlextError {
        FlextError::not_found(format!(
            "No dead letter at position {position} for '{}'",
            self.name
        ))
    }

    /// Mirrors the store's dead letters, once.
    async fn load(&self) -> FlextResult<()> {
        if lock(&self.index).loaded {
            return Ok(());
        }
        let letters = self.checkpoints.dead_letters(&self.name).await?;
        let mut index = lock(&self.index);
        if !index.loaded {
            for letter in letters {
                index.insert(letter);
            }
            index.loaded = true;
        }
        Ok(())
    }

    /// Forgets the checkpoint kept in memory (after a reset elsewhere).
    pub(crate) fn forget_position(&self) {
        *lock(&self.position) = None;
    }
}

/// A stream marked busy by a retry or discard, unmarked when dropped unless released
/// already (under the lock, together with the check that nothing is left).
struct Busy<'a> {
    consumer: &'a Consumer,
    stream: &'a str,
    held: bool,
}

impl<'a> Busy<'a> {
    fn new(consumer: &'a Consumer, stream: &'a str) -> Self {
        Self {
            consumer,
            stream,
            held: true,
        }
    }

    fn release(&mut self, index: &mut Index) {
        if self.held {
            index.busy.remove(self.stream);
            self.held = false;
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.held {
            lock(&self.consumer.index).busy.remove(self.stream);
        }
    }
}

/// The error a parked letter carries.
fn parked_error(head: u64, stream: &str) -> FlextError {
    FlextError::operation(format!(
        "Parked behind the dead letter at position {head} of stream '{stream}'"
    ))
    .with_data(serde_json::json!({ "parked_behind": head }))
}

/// The stored event a dead letter names.
async fn read_event(events: &dyn EventStore, letter: &DeadLetter) -> FlextResult<StoredEvent> {
    events
        .read_all(letter.position, 1)
        .await?
        .into_iter()
        .next()
        .filter(|event| event.position == letter.position && event.event_id == letter.event_id)
        .ok_or_else(|| {
            FlextError::not_found(format!(
                "The event of the dead letter at position {} ({}) is not in the log",
                letter.position, letter.event_id
            ))
        })
}

/// Locks a mutex that no one holds across an `.await` or a user call; a poisoned one
/// (a panic elsewhere while it was held) still holds consistent data, so it is used.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
