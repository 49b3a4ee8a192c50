//! [`Repository`]: loads aggregates from their streams and runs their commands.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use dashmap::DashMap;
use flext_constants::{ErrorCode, handler};
use flext_impl::catch_panic_sync;
use flext_protocols::Event;
use flext_protocols::{Aggregate, EventStore, SnapshotStore};
use flext_types::{
    AppendResult, EventMetadata, ExpectedVersion, FlextResult, JsonPayload, MessageMetadata,
    NewEvent, Snapshot, StoredEvent,
};
use time::OffsetDateTime;

use crate::es::envelope::{Envelope, Upcasters};

/// How a [`Repository`] loads, caches, snapshots and retries: the defaults, changed with
/// the `with_*` setters.
///
/// ```
/// use flext_cqrs::RepositoryConfig;
///
/// let config = RepositoryConfig::default().with_cache_capacity(0).with_max_conflict_retries(5);
/// assert_eq!((config.cache_capacity, config.max_conflict_retries, config.snapshot_every), (0, 5, None));
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
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        Self {
            snapshot_every: None,
            max_conflict_retries: handler::MAX_RETRIES,
            cache_capacity: 10_000,
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
}

/// An aggregate's state at a stream version.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: Arc<A>,
    /// The version of the last event applied (0 for a new aggregate).
    pub version: u64,
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
        let base = match self.cached(id) {
            Some(cached) => cached,
            None => self.latest_snapshot_state(&stream).await?,
        };
        let loaded = self.catch_up(&stream, base).await?;
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

    /// Runs `command` on the aggregate `id` with no message metadata.
    pub async fn execute(&self, id: &str, command: A::Command) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        self.run(id, command, &EventMetadata::default()).await
    }

    /// Runs `command` on the aggregate `id`; its events carry the message's correlation id,
    /// the message as causation, and its headers.
    pub async fn execute_with(
        &self,
        id: &str,
        command: A::Command,
        metadata: &MessageMetadata,
    ) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        self.run(id, command, &EventMetadata::caused_by(metadata))
            .await
    }

    async fn run(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> FlextResult<Executed<A>>
    where
        A::Command: Clone,
    {
        let stream = Self::checked_stream_id(id)?;
        let mut retries = 0;
        loop {
            let loaded = self.load(id).await?;
            let decision = command.clone();
            let events = catch_panic_sync(|| loaded.state.handle(decision))?;
            if events.is_empty() {
                return Ok(Executed {
                    state: loaded.state,
                    version: loaded.version,
                    events,
                    append: None,
                    retries,
                });
            }
            let next = apply_all(&*loaded.state, &events)?;
            let records = events
                .iter()
                .map(|event| encode(event, metadata))
                .collect::<FlextResult<Vec<_>>>()?;
            match self
                .events
                .append(&stream, ExpectedVersion::Exact(loaded.version), records)
                .await
            {
                Ok(append) => {
                    let loaded_after = Loaded {
                        state: Arc::new(next),
                        version: append.last_version,
                    };
                    self.remember(id, &loaded_after);
                    self.maybe_snapshot(&stream, loaded.version, &loaded_after)
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
                    tracing::debug!(stream = %stream, retries, "concurrency conflict; deciding again");
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Appends events decided elsewhere to the aggregate `id`, if its stream satisfies
    /// `expected`. The events must apply to the current state.
    pub async fn save(
        &self,
        id: &str,
        expected: ExpectedVersion,
        events: &[A::Event],
        metadata: &MessageMetadata,
    ) -> FlextResult<AppendResult> {
        let stream = Self::checked_stream_id(id)?;
        let metadata = EventMetadata::caused_by(metadata);
        let records = events
            .iter()
            .map(|event| encode(event, &metadata))
            .collect::<FlextResult<Vec<_>>>()?;
        let append = self.events.append(&stream, expected, records).await?;
        // The cached state may predate these events; the next load catches up from it.
        Ok(append)
    }

    fn checked_stream_id(id: &str) -> FlextResult<String> {
        if id.trim().is_empty() {
            return Err(flext_types::FlextError::invalid_argument(format!(
                "{} id cannot be empty",
                A::TYPE
            )));
        }
        Ok(Self::stream_id(id))
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
        let empty = Loaded {
            state: Arc::new(A::default()),
            version: 0,
        };
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

    /// `base` with every event after its version applied.
    async fn catch_up(&self, stream: &str, base: Loaded<A>) -> FlextResult<Loaded<A>> {
        let tail = self
            .events
            .read_stream(stream, base.version + 1, usize::MAX)
            .await?;
        let Some(last) = tail.last() else {
            return Ok(base);
        };
        let version = last.version;
        let mut state = (*base.state).clone();
        for stored in &tail {
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

/// `event` as a record to append, named and versioned by the event itself.
fn encode<E: Event + serde::Serialize>(
    event: &E,
    metadata: &EventMetadata,
) -> FlextResult<NewEvent> {
    NewEvent::encode(
        event.event_name(),
        event.schema_version(),
        event,
        metadata.clone(),
    )
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
