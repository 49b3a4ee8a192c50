//! [`Repository`]: loads aggregates from their streams and runs their commands.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use dashmap::DashMap;
use flext_constants::{ErrorCode, handler};
use flext_impl::catch_panic_sync;
use flext_protocols::Event;
use flext_protocols::{Aggregate, EventStore, SnapshotStore};
use flext_types::{
    AppendResult, EventMetadata, ExpectedVersion, FlextError, FlextResult, JsonPayload,
    MessageMetadata, NewEvent, Snapshot, StoredEvent,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::current::{self, BatchNumber, current_metadata};
use crate::es::envelope::{Envelope, Upcasters};

/// How far the clock of the process that created a message may be ahead of the clocks that
/// stamp stored events, for [`RepositoryConfig::retry_lookback`]'s early stop.
const CLOCK_TOLERANCE: time::Duration = time::Duration::seconds(5);

/// How a [`Repository`] loads, caches, snapshots and retries: the defaults, changed with
/// the `with_*` setters.
///
/// ```
/// use flext_cqrs::RepositoryConfig;
///
/// let config = RepositoryConfig::default().with_cache_capacity(0).with_max_conflict_retries(5);
/// assert_eq!((config.cache_capacity, config.max_conflict_retries, config.snapshot_every), (0, 5, None));
/// assert_eq!(config.retry_lookback, 1_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepositoryConfig {
    /// Take a snapshot whenever a stream's version crosses a multiple of this many events;
    /// `None` takes none. Needs a snapshot store.
    pub snapshot_every: Option<u64>,
    /// How many times `execute` reloads and decides again after a concurrency conflict.
    pub max_conflict_retries: u32,
    /// How many aggregates to keep decoded in memory between commands (0 keeps none).
    /// Each command still reads the stream's tail, so a cached state is never stale.
    pub cache_capacity: usize,
    /// How many events before the state it loaded a repeated message looks through for its
    /// original batch, when it now decides nothing or is rejected (see
    /// [`Repository::execute_with`]); 0 looks at none.
    pub retry_lookback: u64,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        Self {
            snapshot_every: None,
            max_conflict_retries: handler::MAX_RETRIES,
            cache_capacity: 10_000,
            retry_lookback: 1_000,
        }
    }
}

impl RepositoryConfig {
    /// The same configuration snapshotting every `every` events (at least 1), or never
    /// with `None`.
    #[must_use]
    pub fn with_snapshot_every(mut self, every: Option<u64>) -> Self {
        self.snapshot_every = every.map(|every| every.max(1));
        self
    }

    /// The same configuration retrying `retries` times after a concurrency conflict.
    #[must_use]
    pub fn with_max_conflict_retries(mut self, retries: u32) -> Self {
        self.max_conflict_retries = retries;
        self
    }

    /// The same configuration keeping up to `capacity` aggregates decoded (0 keeps none).
    #[must_use]
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The same configuration looking back through up to `events` events for the original
    /// batch of a repeated message that is now rejected or decides nothing.
    #[must_use]
    pub fn with_retry_lookback(mut self, events: u64) -> Self {
        self.retry_lookback = events;
        self
    }
}

/// An aggregate's state at a stream version.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: Arc<A>,
    /// The version of the last event applied (0 for a new aggregate).
    pub version: u64,
}

impl<A: Default> Loaded<A> {
    /// A new aggregate: the default state at version 0.
    fn new() -> Self {
        Self {
            state: Arc::new(A::default()),
            version: 0,
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed<A: Aggregate> {
    /// The state after the command's events.
    pub state: Arc<A>,
    /// The stream version after the command (unchanged when it emitted no events).
    pub version: u64,
    /// The events the command emitted, as stored.
    pub events: Vec<A::Event>,
    /// Where they were stored; `None` when the command emitted no events.
    pub append: Option<AppendResult>,
    /// How many concurrency conflicts were retried.
    pub retries: u32,
}

/// Loads event-sourced aggregates of type `A` and runs their commands against an event
/// store, with optimistic concurrency.
///
/// - [`Repository::load`]: the latest snapshot (when configured) plus the events after it;
///   a cached state plus the events after it when the aggregate is cached.
/// - [`Repository::execute`]: loads, lets the aggregate decide, appends the events with
///   `ExpectedVersion::Exact(version)`; on a `CONCURRENCY_CONFLICT` it reloads and decides
///   again, up to [`RepositoryConfig::max_conflict_retries`] times.
/// - [`Repository::execute_with`]: the same for a message with [`MessageMetadata`]: its
///   events carry the message's lineage and ids derived from its id, so executing the same
///   message again (a retry after a lost reply) appends nothing and returns the original
///   result. `execute` inside a bus handler does this with the handler's message.
/// - [`Repository::save`]: appends events decided elsewhere.
///
/// A command's events are applied to a copy of the state before they are appended, so an
/// `apply` that panics stores nothing. The aggregate's `handle` and `apply` run inside a
/// panic guard (an `OPERATION_ERROR`).
pub struct Repository<A: Aggregate> {
    events: Arc<dyn EventStore>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    upcasters: Upcasters,
    config: RepositoryConfig,
    cache: DashMap<String, Loaded<A>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Repository<A> {
    /// A repository on `events` with the default configuration and no snapshots.
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        Self {
            events,
            snapshots: None,
            upcasters: Upcasters::new(),
            config: RepositoryConfig::default(),
            cache: DashMap::new(),
            _aggregate: PhantomData,
        }
    }

    /// Snapshots into `store` every `every` events (at least 1).
    #[must_use]
    pub fn with_snapshots(mut self, store: Arc<dyn SnapshotStore>, every: u64) -> Self {
        self.snapshots = Some(store);
        self.config.snapshot_every = Some(every.max(1));
        self
    }

    /// Decodes old event payloads with `upcasters`.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Sets the conflict retries and cache capacity, and the snapshot interval when
    /// `config` names one (it takes effect only with a snapshot store); a config without
    /// one keeps the interval [`with_snapshots`](Self::with_snapshots) set, in either order.
    #[must_use]
    pub fn with_config(mut self, config: RepositoryConfig) -> Self {
        // An interval of 0 set through the public field is read as 1, as the setters do.
        let snapshot_every = config
            .snapshot_every
            .or(self.config.snapshot_every)
            .map(|every| every.max(1));
        self.config = RepositoryConfig {
            snapshot_every,
            ..config
        };
        self
    }

    /// The configuration.
    pub fn config(&self) -> &RepositoryConfig {
        &self.config
    }

    /// The stream of the aggregate `id`: `"{TYPE}-{id}"`.
    pub fn stream_id(id: &str) -> String {
        format!("{}-{id}", A::TYPE)
    }

    /// The aggregate `id` at its current version (a new, default state at version 0 when it
    /// has no events). An empty id is an `INVALID_ARGUMENT` error.
    pub async fn load(&self, id: &str) -> FlextResult<Loaded<A>> {
        let stream = Self::checked_stream_id(id)?;
        let base = self.base(id, &stream).await?;
        let tail = self.read_after(&stream, base.version).await?;
        let loaded = self.apply_stored(&base, &tail)?;
        self.remember(id, &loaded);
        Ok(loaded)
    }

    /// Every event of the aggregate `id`, decoded, in version order.
    pub async fn history(&self, id: &str) -> FlextResult<Vec<Envelope<A::Event>>> {
        let stream = Self::checked_stream_id(id)?;
        self.events
            .read_stream(&stream, 1, usize::MAX)
            .await?
            .iter()
            .map(|stored| Envelope::decode(stored, &self.upcasters))
            .collect()
    }

    /// Runs `command` on the aggregate `id`. Inside a bus handler (or
    /// [`with_current_metadata`](crate::with_current_metadata)) this is
    /// [`execute_with`](Self::execute_with) the message being handled (see
    /// [`current_metadata`]); elsewhere the events carry no lineage and fresh ids.
    pub async fn execute(&self, id: &str, command: A::Command) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        match current_metadata() {
            Some(message) => self.run(id, command, Some(&message)).await,
            None => self.run(id, command, None).await,
        }
    }

    /// Runs `command`, carried by the message `metadata` describes, on the aggregate `id`.
    ///
    /// Its events carry the message's correlation id, the message as causation, and its
    /// headers. Their ids are derived from the message id (UUID v5 of the message id, the
    /// stream, the batch's number and each event's index), so the same message executed
    /// again is recognised, whatever state the aggregate is in by then: nothing is appended
    /// and the original result comes back (the state, version, events and `AppendResult` of
    /// the first execution). It is found
    ///
    /// - among the events this load reads (the usual retry after a lost reply),
    /// - through the store, when the message decides events again (the store reports their
    ///   ids as stored, and the stream is searched for the batch),
    /// - or, when the message is now rejected or decides nothing, among the
    ///   [`retry_lookback`](RepositoryConfig::retry_lookback) events before the loaded
    ///   state, going back no further than events committed (with a few seconds' tolerance
    ///   for clocks) before the message was created. A repeat found nowhere is decided
    ///   again, which never appends the batch twice.
    ///
    /// One message may change several aggregates, and change one aggregate several times
    /// inside one bus handler: each batch a message causes on a stream gets the next number,
    /// in the order the calls are made, so a handler that runs again for the same message
    /// finds each of its batches. Outside a handler every call with the same message is the
    /// same batch: give a second command its own metadata
    /// ([`caused_by`](MessageMetadata::caused_by)).
    pub async fn execute_with(
        &self,
        id: &str,
        command: A::Command,
        metadata: &MessageMetadata,
    ) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        self.run(id, command, Some(metadata)).await
    }

    async fn run(
        &self,
        id: &str,
        command: A::Command,
        message: Option<&MessageMetadata>,
    ) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        let stream = Self::checked_stream_id(id)?;
        let Some(message) = message else {
            let metadata = EventMetadata::default();
            return self
                .decide(id, &stream, command, &metadata, None)
                .await
                .map_err(Failure::into_error);
        };
        // Given back unless the outcome settles, also when this call is dropped (a timeout):
        // trying the message again must derive the same ids.
        let batch = BatchIds::reserve(message, &stream);
        let metadata = EventMetadata::caused_by(message);
        match self
            .decide(id, &stream, command, &metadata, Some(&batch))
            .await
        {
            Ok(executed) => {
                batch.settle();
                Ok(executed)
            }
            Err(Failure::Settled(error)) => {
                batch.settle();
                Err(error)
            }
            Err(Failure::Unsettled(error)) => Err(error),
        }
    }

    /// Loads, decides and appends, deciding again after each conflict; with a `batch`, first
    /// returns the original result of a batch already stored.
    async fn decide(
        &self,
        id: &str,
        stream: &str,
        command: A::Command,
        metadata: &EventMetadata,
        batch: Option<&BatchIds<'_>>,
    ) -> Result<Executed<A>, Failure>
    where
        A::Command: Clone,
    {
        let mut retries = 0;
        loop {
            let base = self.base(id, stream).await.map_err(Failure::Unsettled)?;
            let tail = self
                .read_after(stream, base.version)
                .await
                .map_err(Failure::Unsettled)?;
            if let Some(batch) = batch
                && let Some(found) = batch.locate(&tail)
            {
                return self
                    .original(&base, &tail, found, retries)
                    .map_err(Failure::Unsettled);
            }
            let loaded = self
                .apply_stored(&base, &tail)
                .map_err(Failure::Unsettled)?;
            self.remember(id, &loaded);
            let decision = command.clone();
            let events = match catch_panic_sync(|| loaded.state.handle(decision)) {
                Ok(events) if !events.is_empty() => events,
                outcome => {
                    // A repeated message may have been decided before the state loaded here.
                    if let Some(batch) = batch
                        && let Some(original) = self
                            .look_back(stream, base.version, batch, retries)
                            .await
                            .map_err(Failure::Unsettled)?
                    {
                        return Ok(original);
                    }
                    return match outcome {
                        Ok(events) => Ok(Executed {
                            state: loaded.state,
                            version: loaded.version,
                            events,
                            append: None,
                            retries,
                        }),
                        Err(error) => Err(Failure::Settled(error)),
                    };
                }
            };
            let next = apply_all(&*loaded.state, &events).map_err(Failure::Settled)?;
            let records = events
                .iter()
                .enumerate()
                .map(|(index, event)| encode(event, metadata, batch.map(|b| b.id(index))))
                .collect::<FlextResult<Vec<_>>>()
                .map_err(Failure::Settled)?;
            match self
                .events
                .append(stream, ExpectedVersion::Exact(loaded.version), records)
                .await
            {
                Ok(append) => {
                    let loaded_after = Loaded {
                        state: Arc::new(next),
                        version: append.last_version,
                    };
                    self.remember(id, &loaded_after);
                    self.maybe_snapshot(stream, loaded.version, &loaded_after)
                        .await;
                    return Ok(Executed {
                        state: loaded_after.state,
                        version: loaded_after.version,
                        events,
                        append: Some(append),
                        retries,
                    });
                }
                Err(error)
                    if error.is(ErrorCode::ConcurrencyConflict)
                        && retries < self.config.max_conflict_retries =>
                {
                    retries += 1;
                    tracing::debug!(stream, retries, "concurrency conflict; deciding again");
                }
                Err(error) => {
                    let Some(batch) = batch.filter(|_| error.is(ErrorCode::Duplicate)) else {
                        return Err(Failure::Unsettled(error));
                    };
                    // The batch's ids are stored before the state loaded here: an earlier
                    // execution of this message committed them.
                    return match self.replay_original(stream, batch, retries).await {
                        Ok(Some(original)) => Ok(original),
                        Ok(None) => Err(Failure::Settled(error)),
                        Err(failed) => Err(Failure::Unsettled(failed)),
                    };
                }
            }
        }
    }

    /// The original result of the message whose `batch` is among `events` before version
    /// `upto` (inclusive), if it is there: looks back through up to
    /// [`RepositoryConfig::retry_lookback`] events, newest first in growing chunks, and stops
    /// at the first chunk committed before the message was created.
    async fn look_back(
        &self,
        stream: &str,
        upto: u64,
        batch: &BatchIds<'_>,
        retries: u32,
    ) -> FlextResult<Option<Executed<A>>> {
        let floor = upto.saturating_sub(self.config.retry_lookback);
        let since = batch.message.timestamp.checked_sub(CLOCK_TOLERANCE);
        let (mut high, mut chunk) = (upto, 8_u64);
        while high > floor {
            let low = high.saturating_sub(chunk - 1).max(floor + 1);
            let count = usize::try_from(high - low + 1).unwrap_or(usize::MAX);
            let events = self.events.read_stream(stream, low, count).await?;
            if batch.locate(&events).is_some() {
                return self.replay_original(stream, batch, retries).await;
            }
            let before_the_message = match (events.first(), since) {
                (Some(oldest), Some(since)) => oldest.timestamp < since,
                (None, _) => true,
                (Some(_), None) => false,
            };
            if before_the_message {
                break;
            }
            high = low - 1;
            chunk = chunk.saturating_mul(4);
        }
        Ok(None)
    }

    /// The original result of `batch`, replayed from the stream's start, if it is stored.
    async fn replay_original(
        &self,
        stream: &str,
        batch: &BatchIds<'_>,
        retries: u32,
    ) -> FlextResult<Option<Executed<A>>> {
        let stored = self.events.read_stream(stream, 1, usize::MAX).await?;
        match batch.locate(&stored) {
            Some(found) => self
                .original(&Loaded::new(), &stored, found, retries)
                .map(Some),
            None => Ok(None),
        }
    }

    /// What executing the batch at `found` in `stored` (the events after `base`) returned.
    fn original(
        &self,
        base: &Loaded<A>,
        stored: &[StoredEvent],
        found: Range<usize>,
        retries: u32,
    ) -> FlextResult<Executed<A>> {
        let after = self.apply_stored(base, &stored[..found.end])?;
        let batch = &stored[found];
        let events = batch
            .iter()
            .map(|event| self.decode(event))
            .collect::<FlextResult<Vec<_>>>()?;
        let (first, last) = (&batch[0], &batch[batch.len() - 1]);
        tracing::debug!(
            stream = %first.stream_id,
            version = first.version,
            "message already executed; returning its original result"
        );
        Ok(Executed {
            state: after.state,
            version: after.version,
            events,
            append: Some(AppendResult {
                first_version: first.version,
                last_version: last.version,
                first_position: first.position,
                last_position: last.position,
            }),
            retries,
        })
    }

    /// Appends events decided elsewhere to the aggregate `id`, if its stream satisfies
    /// `expected`. The events must apply to the current state.
    ///
    /// No events append nothing: if the stream satisfies `expected` (a mismatch is still a
    /// `CONCURRENCY_CONFLICT`, as an empty append to EventStoreDB checks its expected
    /// version), the result is the stream's current version as `last_version` and the
    /// store's head as `last_position`, with the first ones just after them (an empty
    /// range). The events get fresh ids: a retry with an `Exact` expectation is a conflict,
    /// never a second copy.
    pub async fn save(
        &self,
        id: &str,
        expected: ExpectedVersion,
        events: &[A::Event],
        metadata: &MessageMetadata,
    ) -> FlextResult<AppendResult> {
        let stream = Self::checked_stream_id(id)?;
        if events.is_empty() {
            let version = self.events.stream_version(&stream).await?;
            if !expected.accepts(version) {
                return Err(expected.conflict(&stream, version));
            }
            let head = self.events.head_position().await?;
            return Ok(AppendResult {
                first_version: version + 1,
                last_version: version,
                first_position: head + 1,
                last_position: head,
            });
        }
        let metadata = EventMetadata::caused_by(metadata);
        let records = events
            .iter()
            .map(|event| encode(event, &metadata, None))
            .collect::<FlextResult<Vec<_>>>()?;
        let append = self.events.append(&stream, expected, records).await?;
        // The cached state may predate these events; the next load catches up from it.
        Ok(append)
    }

    fn checked_stream_id(id: &str) -> FlextResult<String> {
        if id.trim().is_empty() {
            return Err(FlextError::invalid_argument(format!(
                "{} id cannot be empty",
                A::TYPE
            )));
        }
        Ok(Self::stream_id(id))
    }

    /// Where a load starts: the cached state, else the latest usable snapshot, else the
    /// default state at version 0.
    async fn base(&self, id: &str, stream: &str) -> FlextResult<Loaded<A>> {
        match self.cached(id) {
            Some(cached) => Ok(cached),
            None => self.latest_snapshot_state(stream).await,
        }
    }

    fn cached(&self, id: &str) -> Option<Loaded<A>> {
        self.cache.get(id).map(|entry| entry.clone())
    }

    fn remember(&self, id: &str, loaded: &Loaded<A>) {
        if self.config.cache_capacity == 0 {
            return;
        }
        if self.cache.len() >= self.config.cache_capacity && !self.cache.contains_key(id) {
            // Bounded: make room by forgetting some other aggregate.
            let victim = self.cache.iter().next().map(|entry| entry.key().clone());
            if let Some(victim) = victim {
                self.cache.remove(&victim);
            }
        }
        let mut slot = self
            .cache
            .entry(id.to_owned())
            .or_insert_with(|| loaded.clone());
        if loaded.version >= slot.version {
            *slot = loaded.clone();
        }
    }

    /// The state from the latest usable snapshot, or the default state at version 0.
    async fn latest_snapshot_state(&self, stream: &str) -> FlextResult<Loaded<A>> {
        let empty = Loaded::new();
        let Some(store) = &self.snapshots else {
            return Ok(empty);
        };
        let Some(snapshot) = store.load_snapshot(stream).await? else {
            return Ok(empty);
        };
        if snapshot.schema_version != A::SNAPSHOT_VERSION {
            tracing::info!(
                stream,
                found = snapshot.schema_version,
                current = A::SNAPSHOT_VERSION,
                "snapshot of another schema version ignored"
            );
            return Ok(empty);
        }
        match snapshot.payload.decode::<A>() {
            Ok(state) => Ok(Loaded {
                state: Arc::new(state),
                version: snapshot.version,
            }),
            Err(error) => {
                // The events are the truth: a snapshot that does not decode only costs a replay.
                tracing::warn!(stream, %error, "snapshot does not decode; replaying the stream");
                Ok(empty)
            }
        }
    }

    /// The events of `stream` after `version`.
    async fn read_after(&self, stream: &str, version: u64) -> FlextResult<Vec<StoredEvent>> {
        self.events
            .read_stream(stream, version + 1, usize::MAX)
            .await
    }

    /// `base` with `stored` (the events right after its version) applied.
    fn apply_stored(&self, base: &Loaded<A>, stored: &[StoredEvent]) -> FlextResult<Loaded<A>> {
        let Some(last) = stored.last() else {
            return Ok(base.clone());
        };
        let version = last.version;
        let mut state = (*base.state).clone();
        for stored in stored {
            let event = self.decode(stored)?;
            catch_panic_sync(|| {
                state.apply(&event);
                Ok(())
            })?;
        }
        Ok(Loaded {
            state: Arc::new(state),
            version,
        })
    }

    fn decode(&self, stored: &StoredEvent) -> FlextResult<A::Event> {
        self.upcasters.decode(stored)
    }

    async fn maybe_snapshot(&self, stream: &str, before: u64, after: &Loaded<A>) {
        let (Some(store), Some(every)) = (&self.snapshots, self.config.snapshot_every) else {
            return;
        };
        if after.version / every == before / every {
            return;
        }
        let snapshot = JsonPayload::encode(&*after.state).map(|payload| Snapshot {
            stream_id: stream.to_owned(),
            version: after.version,
            schema_version: A::SNAPSHOT_VERSION,
            payload,
            timestamp: OffsetDateTime::now_utc(),
        });
        let saved = match snapshot {
            Ok(snapshot) => store.save_snapshot(snapshot).await,
            Err(error) => Err(error),
        };
        if let Err(error) = saved {
            // The events are committed; a missing snapshot only makes later loads longer.
            tracing::warn!(stream, version = after.version, %error, "snapshot not saved");
        }
    }
}

/// Why a command was not executed.
enum Failure {
    /// Its outcome is settled: the aggregate rejected it, or its events cannot be stored.
    Settled(FlextError),
    /// Its outcome is unknown or was not reached: reading or appending failed, and the
    /// same message may be tried again.
    Unsettled(FlextError),
}

impl Failure {
    fn into_error(self) -> FlextError {
        match self {
            Self::Settled(error) | Self::Unsettled(error) => error,
        }
    }
}

/// The ids of one batch of events a message causes on a stream: UUID v5s, in the message
/// id's namespace, of the stream, the subscription whose handler causes it (0 but for an
/// event subscriber), the batch's number among the message's batches on that stream in
/// that handler call (see [`current::reserve_batch`]) and each event's index. Every
/// execution of the same message derives the same ids, so the store, and
/// [`BatchIds::locate`], recognise the batch; the stream and the subscription are part of
/// the name, so one message may change several aggregates, and several subscribers of one
/// event may change the same one.
///
/// The batch's number is given back when it is dropped before [`BatchIds::settle`], so a
/// retry of an execution whose outcome is unknown (failed or cancelled) gets it again.
struct BatchIds<'a> {
    message: &'a MessageMetadata,
    stream: &'a str,
    batch: BatchNumber,
    settled: bool,
}

impl<'a> BatchIds<'a> {
    /// The next batch of `message` on `stream`.
    fn reserve(message: &'a MessageMetadata, stream: &'a str) -> Self {
        Self {
            message,
            stream,
            batch: current::reserve_batch(message.message_id, stream),
            settled: false,
        }
    }

    /// Keeps the batch's number: the execution's outcome is known.
    fn settle(mut self) {
        self.settled = true;
    }

    /// The id of the batch's event at `index`.
    fn id(&self, index: usize) -> Uuid {
        let mut name = Vec::with_capacity(self.stream.len() + 21);
        name.extend_from_slice(self.stream.as_bytes());
        // Stream ids never hold a NUL, so the parts of the name cannot run together.
        name.push(0);
        name.extend_from_slice(&self.batch.subscription.to_be_bytes());
        name.extend_from_slice(&self.batch.number.to_be_bytes());
        name.extend_from_slice(&(index as u64).to_be_bytes());
        Uuid::new_v5(&self.message.message_id, &name)
    }

    /// Where the batch is among `stored` (consecutive events of its stream), if its first
    /// event is there: the range of its events.
    fn locate(&self, stored: &[StoredEvent]) -> Option<Range<usize>> {
        let first = self.id(0);
        let start = stored.iter().position(|event| event.event_id == first)?;
        let len = stored[start..]
            .iter()
            .enumerate()
            .take_while(|(index, event)| event.event_id == self.id(*index))
            .count();
        Some(start..start + len)
    }
}

impl Drop for BatchIds<'_> {
    fn drop(&mut self) {
        if !self.settled {
            current::release_batch(self.message.message_id, self.stream, self.batch.number);
        }
    }
}

/// `event` as a record to append, named and versioned by the event itself, with the id
/// given or a fresh one.
fn encode<E: Event + serde::Serialize>(
    event: &E,
    metadata: &EventMetadata,
    id: Option<Uuid>,
) -> FlextResult<NewEvent> {
    let mut record = NewEvent::encode(
        event.event_name(),
        event.schema_version(),
        event,
        metadata.clone(),
    )?;
    if let Some(id) = id {
        record.event_id = id;
    }
    Ok(record)
}

/// A copy of `state` with `events` applied, inside a panic guard.
fn apply_all<A: Aggregate>(state: &A, events: &[A::Event]) -> FlextResult<A> {
    catch_panic_sync(|| {
        let mut next = state.clone();
        for event in events {
            next.apply(event);
        }
        Ok(next)
    })
    .map_err(|e| e.with_context("Applying the command's events failed; nothing was stored"))
}

impl<A: Aggregate> fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::TYPE)
            .field("config", &self.config)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}
