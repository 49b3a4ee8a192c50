//! [`Repository`]: loads aggregates from their streams and runs their commands.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use dashmap::DashMap;
use flext_constants::{ErrorCode, handler};
use flext_impl::{catch_panic, catch_panic_sync};
use flext_protocols::Event;
use flext_protocols::{Aggregate, EventStore, ServicedAggregate, SnapshotStore};
use flext_types::{
    AppendResult, EventMetadata, ExpectedVersion, FlextError, FlextResult, JsonPayload,
    MessageMetadata, NewEvent, Snapshot, StoredEvent,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::current::{self, SubscriberKey};
use crate::es::envelope::{Envelope, Upcasters};

mod repeats;
mod state;

use repeats::{BatchIds, Message};

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

impl<A> Loaded<A> {
    /// Whether the aggregate exists: some event of its stream was stored (version 0 is an
    /// aggregate never created, whose state is the default).
    pub fn exists(&self) -> bool {
        self.version > 0
    }
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
        let loaded = self.load_after(base, &stream).await?;
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
                self.run(id, command, Some(Message::new(&message, subscriber)))
                    .await
            }
            None => self.run(id, command, None).await,
        }
    }

    /// Runs `command`, carried by the message `metadata` describes, on the aggregate `id`.
    ///
    /// Its events carry the message's correlation id, the message as causation, and its
    /// headers. Their ids are UUID v5s, in the message id's namespace, of the stream, the
    /// subscriber's key (a UUID v5 of its name) when this runs inside an event subscriber
    /// (so two subscribers of one event may change one aggregate; outside a subscriber the
    /// key is nil) and each
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
        let message = Message::new(metadata, current::subscriber());
        self.run(id, command, Some(message)).await
    }

    /// Runs `command` on the aggregate `id` as [`execute`](Self::execute) does, deciding
    /// with [`ServicedAggregate::decide`] and `services`: an async decision that may call
    /// them (a fraud check). After a concurrency conflict the whole decision runs again on
    /// the fresh state, the services' calls included. A panic in `decide` is an
    /// `OPERATION_ERROR`, as in `handle`.
    pub async fn execute_serviced(
        &self,
        id: &str,
        command: A::Command,
        services: &A::Services,
    ) -> FlextResult<Executed<A>>
    where
        A: ServicedAggregate,
        A::Command: Clone,
    {
        let decider = Serviced(services);
        match current::handling() {
            Some((message, subscriber)) => {
                let message = Message::new(&message, subscriber);
                self.run_with(id, command, Some(message), &decider).await
            }
            None => self.run_with(id, command, None, &decider).await,
        }
    }

    /// [`execute_serviced`](Self::execute_serviced) carried by the message `metadata`
    /// describes, as [`execute_with`](Self::execute_with).
    pub async fn execute_serviced_with(
        &self,
        id: &str,
        command: A::Command,
        services: &A::Services,
        metadata: &MessageMetadata,
    ) -> FlextResult<Executed<A>>
    where
        A: ServicedAggregate,
        A::Command: Clone,
    {
        let message = Message::new(metadata, current::subscriber());
        self.run_with(id, command, Some(message), &Serviced(services))
            .await
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
        self.run_with(id, command, message, &Handle).await
    }

    async fn run_with<D: Decider<A>>(
        &self,
        id: &str,
        command: A::Command,
        message: Option<Message<'_>>,
        decider: &D,
    ) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        let stream = Self::checked_stream_id(id)?;
        let Some(message) = message else {
            let metadata = EventMetadata::default();
            return self
                .decide(id, &stream, command, &metadata, None, decider)
                .await;
        };
        let batch = BatchIds::new(message, &stream);
        let metadata = EventMetadata::caused_by(message.metadata);
        self.decide(id, &stream, command, &metadata, Some(&batch), decider)
            .await
    }

    /// Loads, decides and appends, deciding again after each conflict; with a `batch`, first
    /// returns the original result of a batch already stored.
    async fn decide<D: Decider<A>>(
        &self,
        id: &str,
        stream: &str,
        command: A::Command,
        metadata: &EventMetadata,
        batch: Option<&BatchIds<'_>>,
        decider: &D,
    ) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        let mut retries = 0;
        loop {
            let base = self.base(id, stream).await?;
            let loaded = match batch {
                // A message's batch may be stored already: its events are looked for
                // among those after the base.
                Some(batch) => {
                    let tail = self.read_after(stream, base.version).await?;
                    if let Some(found) = batch.locate(&tail) {
                        return self.original(&base, &tail, found, retries);
                    }
                    self.apply_stored(&base, &tail)?
                }
                None => self.load_after(base.clone(), stream).await?,
            };
            self.remember(id, &loaded);
            let decision = command.clone();
            let events = match decider.decide(&loaded.state, id, decision).await {
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
}

/// `event` as a record to append, named and versioned by the event itself, with the id
/// given or a fresh one.
fn encode<E>(event: &E, metadata: &EventMetadata, id: Option<Uuid>) -> FlextResult<NewEvent>
where
    E: Event + serde::Serialize + serde::de::DeserializeOwned + Clone,
{
    let stored =
        |e: FlextError| e.with_context(format!("Event {} cannot be stored", event.event_name()));
    let payload = JsonPayload::encode(event).map_err(stored)?;
    // Read back once, now: an event that its own JSON does not decode into could never be
    // loaded again, so it is refused before anything is stored; and the payload keeps the
    // value read, so a store that keeps payloads (the in-memory one) lends it to the next
    // load, exactly as any store's text would decode.
    payload
        .decoded::<E>()
        .map_err(|e| stored(e.with_context("it does not decode from the JSON it serializes to")))?;
    Ok(NewEvent {
        event_id: id.unwrap_or_else(Uuid::now_v7),
        event_type: event.event_name().to_owned(),
        schema_version: event.schema_version(),
        payload,
        metadata: metadata.clone(),
    })
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

/// How a repository decides on a command: [`Aggregate::handle`], or
/// [`ServicedAggregate::decide`] with its services.
trait Decider<A: Aggregate>: Sync {
    fn decide<'a>(
        &'a self,
        state: &'a A,
        id: &'a str,
        command: A::Command,
    ) -> impl Future<Output = FlextResult<Vec<A::Event>>> + Send + 'a;
}

/// Decides with [`Aggregate::handle`].
struct Handle;

impl<A: Aggregate> Decider<A> for Handle {
    fn decide<'a>(
        &'a self,
        state: &'a A,
        _id: &'a str,
        command: A::Command,
    ) -> impl Future<Output = FlextResult<Vec<A::Event>>> + Send + 'a {
        std::future::ready(catch_panic_sync(|| state.handle(command)))
    }
}

/// Decides with [`ServicedAggregate::decide`] and the services.
struct Serviced<'s, S>(&'s S);

impl<A: ServicedAggregate> Decider<A> for Serviced<'_, A::Services> {
    fn decide<'a>(
        &'a self,
        state: &'a A,
        id: &'a str,
        command: A::Command,
    ) -> impl Future<Output = FlextResult<Vec<A::Event>>> + Send + 'a {
        catch_panic(state.decide(id, command, self.0))
    }
}
