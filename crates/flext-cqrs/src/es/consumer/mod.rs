//! One reader of the log under one name: its retries, its dead letters (sequenced per
//! stream or not) and their retry and discard. A [`ProjectionRunner`](crate::ProjectionRunner)
//! is one consumer; an [`EventRelay`](crate::EventRelay) keeps one per subscriber.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_impl::{catch_panic, catch_panic_sync};
use flext_protocols::{CheckpointStore, EventStore};
use flext_types::{DeadLetter, FlextError, FlextResult, StoredEvent};
use serde::{Deserialize, Serialize};
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

mod letters;
mod stop;

use letters::parked_error;
use stop::pause;
pub(crate) use stop::{Stop, stop_requested};

/// What one consumer did, counted in atomics as it goes, so that a metrics snapshot reads
/// them without a lock and the work pays one relaxed add per count.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Events applied: by a run, or by a retry of their dead letter.
    pub(crate) applied: AtomicU64,
    /// Tries that failed (an error or a panic of the target).
    pub(crate) failures: AtomicU64,
    /// Tries scheduled after a failure.
    pub(crate) retries: AtomicU64,
    /// Events given up on: new dead letters.
    pub(crate) dead_lettered: AtomicU64,
    /// Events recorded, untried, as dead letters parked behind an earlier one.
    pub(crate) parked: AtomicU64,
    /// Dead letters held now, as the in-memory mirror counts them (0 until it is loaded).
    pub(crate) letters: AtomicU64,
}

impl Tally {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
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
    /// The consumer's counts: every insert and removal keeps `letters` in step.
    tally: Arc<Tally>,
}

impl Index {
    fn insert(&mut self, letter: DeadLetter) {
        let replaced = self
            .streams
            .entry(letter.stream_id.clone())
            .or_default()
            .insert(letter.position, letter);
        if replaced.is_none() {
            Tally::add(&self.tally.letters);
        }
    }

    fn remove(&mut self, stream: &str, position: u64) -> Option<DeadLetter> {
        let letters = self.streams.get_mut(stream)?;
        let removed = letters.remove(&position);
        if letters.is_empty() {
            self.streams.remove(stream);
        }
        if removed.is_some() {
            self.tally.letters.fetch_sub(1, Relaxed);
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
    /// What it did so far.
    pub(crate) tally: Arc<Tally>,
}

impl Consumer {
    pub(crate) fn new(
        name: String,
        checkpoints: Arc<dyn CheckpointStore>,
        config: ProjectionConfig,
        classify: Classifier,
    ) -> Self {
        let tally = Arc::new(Tally::default());
        Self {
            name,
            checkpoints,
            config,
            classify,
            index: Mutex::new(Index {
                tally: tally.clone(),
                ..Index::default()
            }),
            position: Mutex::new(None),
            tally,
        }
    }

    /// How many dead letters it holds, from its mirror (loaded from the store first if it
    /// was not yet).
    pub(crate) async fn letter_count(&self) -> FlextResult<usize> {
        self.load().await?;
        let index = lock(&self.index);
        Ok(index.streams.values().map(BTreeMap::len).sum())
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
            Tally::add(&self.tally.parked);
            return Ok(Outcome::Parked);
        }
        let outcome = self.apply_with_retries(event, target).await?;
        match outcome {
            Outcome::Applied => Tally::add(&self.tally.applied),
            Outcome::DeadLettered => Tally::add(&self.tally.dead_lettered),
            _ => {}
        }
        Ok(outcome)
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
            Tally::add(&self.tally.failures);
            if stop_requested() {
                // Stopping: nothing is recorded, the next run tries the event again.
                tracing::debug!(consumer = %self.name, position = event.position, %error, "event failed while stopping");
                return Ok(Outcome::Stopped);
            }
            let failed_at = *first_failure.get_or_insert_with(Instant::now);
            let (class, error) = self.classified(error);
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
            Tally::add(&self.tally.retries);
            tracing::debug!(consumer = %self.name, position = event.position, tries, ?class, ?wait, %error, "event failed; retrying");
            if !pause(wait).await {
                tracing::debug!(consumer = %self.name, position = event.position, "stopped while waiting to retry");
                return Ok(Outcome::Stopped);
            }
        }
    }

    /// The class of `error`, with the error to go on with: [`ErrorClass::Stop`] for an
    /// error marked to stop, whatever the classifier says; the classifier's answer
    /// otherwise. A classifier that panics cannot say: that is a `Stop` with its
    /// `OPERATION_ERROR` (the event's error as its source), so nothing is recorded.
    fn classified(&self, error: FlextError) -> (ErrorClass, FlextError) {
        if stops_runner(&error) {
            return (ErrorClass::Stop, error);
        }
        match catch_panic_sync(|| Ok((self.classify)(&error))) {
            Ok(class) => (class, error),
            Err(panic) => {
                let failed = FlextError::operation(format!(
                    "The error classifier of '{}' failed: {}",
                    self.name,
                    panic.message()
                ));
                (ErrorClass::Stop, failed.with_source(error))
            }
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

/// Locks a mutex that no one holds across an `.await` or a user call; a poisoned one
/// (a panic elsewhere while it was held) still holds consistent data, so it is used.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
