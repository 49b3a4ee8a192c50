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

use crate::current;
use crate::es::envelope::{Envelope, Upcasters};

/// How far the clock of the process that created a message may be ahead of the clocks that
/// stamp stored events, for the early stop of the searches for a repeated message's batch.
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
    /// How many concurrency conflicts this execution retried. For a repeated message, whose
    /// original result comes back (see [`Repository::execute_with`]), it is still this
    /// execution's count: the original's is not stored.
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
    /// [`current_metadata`](crate::current_metadata)); elsewhere the events carry no lineage
    /// and fresh ids.
    ///
    /// # One message, one change per aggregate
    ///
    /// Within one message, `execute` on one stream is one unit of work: running it again
    /// (a `flext_patterns::Retry` after a lost reply or a timeout, a redelivery of the
    /// message, the same handler run twice) derives the same event ids and returns the
    /// original result. So a handler that changes the **same aggregate
    /// twice** for one message gets the first change's result from the second call, and
    /// the second change is not made: give the second change a message of its own (send a
    /// command, with [`MessageMetadata::caused_by_named`] so a redelivery sends the same
    /// one again). Several aggregates changed for one message are each their own unit.
    /// Whichever command made the batch a message stored on a stream, any later `execute`
    /// on that stream for that message returns it: a fallback such as "reserve, or else
    /// waitlist" run again finds the waitlist batch from the first `execute` (the rejected
    /// reserve) — branch on the aggregate's state, not on a first command's rejection.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flext_cqrs::{InMemoryEventStore, Repository, with_current_metadata};
    /// # use flext_protocols::{Aggregate, Event};
    /// # use flext_types::{FlextResult, MessageMetadata};
    /// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # struct Added(u64);
    /// # impl Event for Added { fn event_name(&self) -> &str { "Added" } }
    /// # #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # struct Counter(u64);
    /// # impl Aggregate for Counter {
    /// #     const TYPE: &'static str = "Counter";
    /// #     type Command = u64;
    /// #     type Event = Added;
    /// #     fn handle(&self, n: u64) -> FlextResult<Vec<Added>> { Ok(vec![Added(n)]) }
    /// #     fn apply(&mut self, e: &Added) { self.0 += e.0; }
    /// # }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> FlextResult<()> {
    /// let repo = Repository::<Counter>::new(Arc::new(InMemoryEventStore::new()));
    /// let message = MessageMetadata::new();
    /// let (first, second) = with_current_metadata(message, async {
    ///     let first = repo.execute("c-1", 5).await?;
    ///     let second = repo.execute("c-1", 7).await?; // the same unit of work as the first
    ///     FlextResult::Ok((first, second))
    /// })
    /// .await?;
    /// assert_eq!(second, first);
    /// assert_eq!(repo.load("c-1").await?.state.0, 5);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn execute(&self, id: &str, command: A::Command) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        match current::handling() {
            Some((message, subscriber)) => {
                let message = Message::new(&message, subscriber.as_deref().map(String::as_str));
                self.run(id, command, Some(message)).await
            }
            None => self.run(id, command, None).await,
        }
    }

    /// Runs `command`, carried by the message `metadata` describes, on the aggregate `id`.
    ///
    /// Its events carry the message's correlation id, the message as causation, and its
    /// headers. Their ids are UUID v5s, in the message id's namespace, of the stream, the
    /// subscriber's name when this runs inside an event subscriber (so two subscribers of
    /// one event may change one aggregate; outside a subscriber the name is empty) and each
    /// event's index. So the same message executed again on the same stream never appends
    /// its events twice (the store checks every id), and is recognised — the original
    /// result comes back — wherever one of the searches below finds its batch (a repeat
    /// found nowhere is decided again; see the last item) (the state, version, events and `AppendResult` of the first
    /// execution, replayed from the store; `retries` is this execution's, the original's
    /// not being stored). See [`execute`](Self::execute) for what this means for a handler
    /// changing one aggregate twice. It is found
    ///
    /// - among the events this load reads (the usual retry after a lost reply);
    /// - through the store, when the message decides events again (the store reports their
    ///   ids as stored, and the stream is searched backwards from its end);
    /// - or, when the message is now rejected or decides nothing, among the
    ///   [`retry_lookback`](RepositoryConfig::retry_lookback) events before the loaded
    ///   state.
    ///
    /// Both searches read newest first in chunks of 8, 32, … events and stop at the first
    /// chunk committed more than a few seconds (clock tolerance) before `metadata.timestamp`,
    /// then replay the original state from the latest snapshot before the batch, or from
    /// the stream's start without one (a cost that grows with the stream: configure
    /// [snapshots](Self::with_snapshots) for long streams). A repeat found nowhere is decided
    /// again on the current state; the store's ids still keep it from appending the batch
    /// twice. A message that was rejected, or decided nothing, left nothing behind: its
    /// repeat is decided again, and may now be accepted.
    ///
    /// What the caller must keep:
    ///
    /// - **A message id names one message.** A retry or redelivery passes the original
    ///   metadata unchanged, its `timestamp` included (the searches stop at events older
    ///   than it: a later timestamp can hide the original batch). Another message gets
    ///   metadata of its own: [`MessageMetadata::caused_by`] (or
    ///   [`caused_by_named`](MessageMetadata::caused_by_named) when a redelivery must send the
    ///   same one again), never a copy of this one — `send_with(CmdA, md.clone())` then
    ///   `send_with(CmdB, md)` on one aggregate, or forwarding
    ///   [`current_metadata`](crate::current_metadata) to `send_with`, makes the second a
    ///   repeat of the first, and its command is never decided.
    /// - **Subscribers that change aggregates have names of their own**
    ///   (`EventBus::subscribe(name, flext_impl::handler_fn("ledger", f))`): the name, not
    ///   the order of subscription, is in the ids, so they stay the same across restarts;
    ///   two subscribers sharing a name share their ids (the second change is taken for the
    ///   first's repeat).
    ///
    /// Two executions of one message racing on one stream (one metadata sent twice at once,
    /// a redelivery racing the original) store one batch: the store answers the later
    /// append as a retry of the earlier, and both return `Ok`, each with what it decided
    /// (the same, unless `handle` decides differently for one command and state, or the two
    /// carried different commands). The repository's cache and snapshots follow the store,
    /// not such a decision: after an append with these ids the cache keeps the state it
    /// loaded (the next load reads the batch from the store), and a snapshot due is taken of
    /// the state read back from the store.
    pub async fn execute_with(
        &self,
        id: &str,
        command: A::Command,
        metadata: &MessageMetadata,
    ) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        let subscriber = current::subscriber();
        let message = Message::new(metadata, subscriber.as_deref().map(String::as_str));
        self.run(id, command, Some(message)).await
    }

    async fn run(
        &self,
        id: &str,
        command: A::Command,
        message: Option<Message<'_>>,
    ) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        let stream = Self::checked_stream_id(id)?;
        let Some(message) = message else {
            let metadata = EventMetadata::default();
            return self.decide(id, &stream, command, &metadata, None).await;
        };
        let batch = BatchIds::new(message, &stream);
        let metadata = EventMetadata::caused_by(message.metadata);
        self.decide(id, &stream, command, &metadata, Some(&batch))
            .await
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
    ) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        let mut retries = 0;
        loop {
            let base = self.base(id, stream).await?;
            let tail = self.read_after(stream, base.version).await?;
            if let Some(batch) = batch
                && let Some(found) = batch.locate(&tail)
            {
                return self.original(&base, &tail, found, retries);
            }
            let loaded = self.apply_stored(&base, &tail)?;
            self.remember(id, &loaded);
            let decision = command.clone();
            let events = match catch_panic_sync(|| loaded.state.handle(decision)) {
                Ok(events) if !events.is_empty() => events,
                outcome => {
                    // A repeated message may have been decided before the state loaded here.
                    if let Some(batch) = batch {
                        let floor = base.version.saturating_sub(self.config.retry_lookback);
                        let found = self
                            .find_original(stream, base.version, floor, batch, retries)
                            .await?;
                        if let Some(original) = found {
                            return Ok(original);
                        }
                    }
                    return outcome.map(|events| Executed {
                        state: loaded.state,
                        version: loaded.version,
                        events,
                        append: None,
                        retries,
                    });
                }
            };
            let next = apply_all(&*loaded.state, &events)?;
            let records = events
                .iter()
                .enumerate()
                .map(|(index, event)| encode(event, metadata, batch.map(|b| b.id(index))))
                .collect::<FlextResult<Vec<_>>>()?;
            match self
                .events
                .append(stream, ExpectedVersion::Exact(loaded.version), records)
                .await
            {
                Ok(append) => {
                    let decided = Loaded {
                        state: Arc::new(next),
                        version: append.last_version,
                    };
                    if batch.is_none() {
                        // Fresh ids: the batch stored is this one.
                        self.remember(id, &decided);
                        self.maybe_snapshot(stream, loaded.version, &decided).await;
                    } else {
                        // Derived ids: the store may have answered an earlier append of them
                        // (another execution of this message) as this one's retry, so the
                        // cache keeps the state loaded, and a snapshot is of what is stored.
                        self.snapshot_stored(id, stream, &loaded, append.last_version)
                            .await;
                    }
                    return Ok(Executed {
                        state: decided.state,
                        version: decided.version,
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
                        return Err(error);
                    };
                    // The batch's ids are stored, but not right after the state loaded here:
                    // an earlier execution of this message committed them.
                    let head = self.events.stream_version(stream).await?;
                    return match self.find_original(stream, head, 0, batch, retries).await? {
                        Some(original) => Ok(original),
                        None => Err(error),
                    };
                }
            }
        }
    }

    /// The original result of the message whose `batch` is among the events of `stream`
    /// after version `floor`, up to `upto` (inclusive), if it is there: looks through them
    /// newest first in growing chunks, stops at the first chunk committed before the message
    /// was created, and replays the state after the batch from the latest snapshot before
    /// it.
    async fn find_original(
        &self,
        stream: &str,
        upto: u64,
        floor: u64,
        batch: &BatchIds<'_>,
        retries: u32,
    ) -> FlextResult<Option<Executed<A>>> {
        let since = batch.message.timestamp.checked_sub(CLOCK_TOLERANCE);
        // The chunks read, newest first; together, the events from `high + 1` to `upto`.
        let mut read: Vec<Vec<StoredEvent>> = Vec::new();
        let (mut high, mut chunk) = (upto, 8_u64);
        while high > floor {
            let low = high.saturating_sub(chunk - 1).max(floor + 1);
            let count = usize::try_from(high - low + 1).unwrap_or(usize::MAX);
            let events = self.events.read_stream(stream, low, count).await?;
            let found = batch.locate(&events).is_some();
            let before_the_message = match (events.first(), since) {
                (Some(oldest), Some(since)) => oldest.timestamp < since,
                (None, _) => true,
                (Some(_), None) => false,
            };
            read.push(events);
            if found {
                let newer = read.into_iter().rev().flatten().collect();
                return self
                    .replay_original(stream, low, newer, batch, retries)
                    .await
                    .map(Some);
            }
            if before_the_message {
                break;
            }
            high = low - 1;
            chunk = chunk.saturating_mul(4);
        }
        Ok(None)
    }

    /// The original result of `batch`, which is among `newer` (the events of `stream` from
    /// version `from` on), replayed from the latest snapshot before it, or from the stream's
    /// start.
    async fn replay_original(
        &self,
        stream: &str,
        from: u64,
        mut newer: Vec<StoredEvent>,
        batch: &BatchIds<'_>,
        retries: u32,
    ) -> FlextResult<Executed<A>> {
        let missing = || FlextError::storage(format!("Stream {stream} changed while it was read"));
        let start = batch.locate(&newer).ok_or_else(missing)?.start;
        let snapshot = self.latest_snapshot_state(stream).await?;
        let base = if snapshot.version < newer[start].version {
            snapshot
        } else {
            Loaded::new()
        };
        let mut stored = if base.version + 1 < from {
            let count = usize::try_from(from - base.version - 1).unwrap_or(usize::MAX);
            self.events
                .read_stream(stream, base.version + 1, count)
                .await?
        } else {
            Vec::new()
        };
        let skip = usize::try_from((base.version + 1).saturating_sub(from)).unwrap_or(usize::MAX);
        stored.extend(newer.drain(skip.min(newer.len())..));
        if stored
            .first()
            .is_some_and(|first| first.version != base.version + 1)
        {
            return Err(missing());
        }
        let found = batch.locate(&stored).ok_or_else(missing)?;
        self.original(&base, &stored, found, retries)
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

    /// Whether a stream going from version `before` to `after` crosses a multiple of the
    /// snapshot interval (and snapshots are configured).
    fn snapshot_due(&self, before: u64, after: u64) -> bool {
        match (&self.snapshots, self.config.snapshot_every) {
            (Some(_), Some(every)) => after / every != before / every,
            _ => false,
        }
    }

    async fn maybe_snapshot(&self, stream: &str, before: u64, after: &Loaded<A>) {
        let (Some(store), true) = (&self.snapshots, self.snapshot_due(before, after.version))
        else {
            return;
        };
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

    /// After an append with derived ids took the stream from `loaded` to version `upto`:
    /// when a snapshot is due, reads what is stored up to `upto`, and snapshots and caches
    /// that (what this execution decided may not be what the store kept).
    async fn snapshot_stored(&self, id: &str, stream: &str, loaded: &Loaded<A>, upto: u64) {
        if !self.snapshot_due(loaded.version, upto) {
            return;
        }
        let count = usize::try_from(upto - loaded.version).unwrap_or(usize::MAX);
        let stored = match self
            .events
            .read_stream(stream, loaded.version + 1, count)
            .await
        {
            Ok(events) => self.apply_stored(loaded, &events),
            Err(error) => Err(error),
        };
        match stored {
            Ok(stored) => {
                self.remember(id, &stored);
                self.maybe_snapshot(stream, loaded.version, &stored).await;
            }
            Err(error) => {
                tracing::warn!(stream, version = upto, %error, "snapshot not saved");
            }
        }
    }
}

/// A message a command is executed for: its metadata, and the key of the handler executing
/// it (the subscriber's name for an event subscriber, empty otherwise).
#[derive(Clone, Copy)]
struct Message<'a> {
    metadata: &'a MessageMetadata,
    handler: &'a str,
}

impl<'a> Message<'a> {
    fn new(metadata: &'a MessageMetadata, subscriber: Option<&'a str>) -> Self {
        Self {
            metadata,
            handler: subscriber.unwrap_or_default(),
        }
    }
}

/// The ids of the batch of events a message causes on a stream: UUID v5s, in the message
/// id's namespace, of the stream, the handler's key (the subscriber's name, empty but for
/// an event subscriber) and each event's index. Every execution of the same message on the
/// same stream by the same handler derives the same ids, so the store, and
/// [`BatchIds::locate`], recognise the batch: the stream is part of the name so one message
/// may change several aggregates, the subscriber's name so several subscribers of one event
/// may change the same one.
struct BatchIds<'a> {
    message: &'a MessageMetadata,
    /// The name of the ids but for the index: the stream, a NUL (stream ids never hold
    /// one), the handler's key with its length before it, and room for the index.
    name: Vec<u8>,
}

impl<'a> BatchIds<'a> {
    /// The batch `message` causes on `stream`.
    fn new(message: Message<'a>, stream: &str) -> Self {
        let handler = message.handler.as_bytes();
        let mut name = Vec::with_capacity(stream.len() + handler.len() + 17);
        name.extend_from_slice(stream.as_bytes());
        name.push(0);
        name.extend_from_slice(&(handler.len() as u64).to_be_bytes());
        name.extend_from_slice(handler);
        Self {
            message: message.metadata,
            name,
        }
    }

    /// The id of the batch's event at `index`.
    fn id(&self, index: usize) -> Uuid {
        let mut name = Vec::with_capacity(self.name.len() + 8);
        name.extend_from_slice(&self.name);
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
