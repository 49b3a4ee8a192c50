//! [`InMemoryEventStore`]: the embedded default store, for tests and demos.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use flext_protocols::{CheckpointStore, EventStore, EventStream, SnapshotStore};
use flext_types::{
    AppendResult, DeadLetter, ExpectedVersion, FlextResult, NewEvent, Snapshot, StoredEvent,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::limits::StoreLimits;
use crate::rules::{StoredPlace, nothing_appended, retried_append, validate_batch};
use crate::tail::{HeadSignal, SUBSCRIPTION_BATCH, tail_events};

/// An event, snapshot and checkpoint store in memory.
///
/// Appends take one write lock for the whole batch, so readers never see part of a batch
/// and positions follow commit order; reads take a read lock and copy out shared records
/// (reference-count bumps, not payload copies), and `visit_stream` lends them without
/// copying. No lock is held across an `.await`.
/// Clones share the same store.
///
/// ```
/// use flext_store::InMemoryEventStore;
/// use flext_protocols::EventStore;
/// use flext_types::{ExpectedVersion, JsonPayload, NewEvent};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let store = InMemoryEventStore::new();
/// let event = NewEvent::new("UserCreated", JsonPayload::encode(&serde_json::json!({"name": "Alice"}))?);
/// let appended = store.append("User-1", ExpectedVersion::NoStream, vec![event]).await?;
/// assert_eq!((appended.last_version, appended.last_position), (1, 1));
///
/// let again = NewEvent::new("UserCreated", JsonPayload::encode(&serde_json::json!({"name": "Eve"}))?);
/// let conflict = store.append("User-1", ExpectedVersion::NoStream, vec![again]).await.unwrap_err();
/// assert_eq!(conflict.to_string(), "Stream User-1: expected no stream, actual version 1");
/// assert_eq!(store.stream_version("User-1").await?, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct InMemoryEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    limits: StoreLimits,
    log: RwLock<Log>,
    head: HeadSignal,
    /// Snapshots, checkpoints and dead letters: sharded maps, each shard locked for one
    /// operation, never across an `.await`.
    snapshots: DashMap<String, Snapshot>,
    checkpoints: DashMap<String, u64>,
    dead_letters: DashMap<String, BTreeMap<u64, DeadLetter>>,
}

#[derive(Default)]
struct Log {
    /// Every event; an event's position is its index plus one.
    events: Vec<StoredEvent>,
    /// Per stream, the indices of its events in version order.
    streams: HashMap<Arc<str>, Vec<usize>>,
    /// Every event id, with the index of its event.
    ids: HashMap<Uuid, usize>,
}

impl InMemoryEventStore {
    /// An empty store with the default [`StoreLimits`].
    pub fn new() -> Self {
        Self::with_limits(StoreLimits::default())
    }

    /// An empty store that refuses appends over `limits`.
    pub fn with_limits(limits: StoreLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                log: RwLock::new(Log::default()),
                head: HeadSignal::new(0),
                snapshots: DashMap::new(),
                checkpoints: DashMap::new(),
                dead_letters: DashMap::new(),
            }),
        }
    }

    /// The limits appends are checked against.
    pub fn limits(&self) -> &StoreLimits {
        &self.inner.limits
    }

    /// How many events the store holds.
    pub fn len(&self) -> usize {
        self.read_log(|log| log.events.len())
    }

    /// Whether the store holds no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read_log<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        f(&self
            .inner
            .log
            .read()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Up to `limit` events from position `from` on.
    fn read_from(&self, from: u64, limit: usize) -> Vec<StoredEvent> {
        self.read_log(|log| {
            let from = from.saturating_sub(1).min(log.events.len() as u64) as usize;
            log.events[from..].iter().take(limit).cloned().collect()
        })
    }

    fn append_now(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        validate_batch(stream_id, &events, &self.inner.limits)?;
        if events.is_empty() {
            // Nothing to write: a read lock sees the stream's version and the head at once.
            return self.read_log(|log| {
                let current = log.streams.get(stream_id).map_or(0, Vec::len) as u64;
                if !expected.accepts(current) {
                    return Err(expected.conflict(stream_id, current));
                }
                Ok(nothing_appended(current, log.events.len() as u64))
            });
        }
        let mut log = self
            .inner
            .log
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(original) = log.retried(stream_id, expected, &events)? {
            return Ok(original);
        }
        let current = log.streams.get(stream_id).map_or(0, Vec::len) as u64;
        if !expected.accepts(current) {
            return Err(expected.conflict(stream_id, current));
        }
        let stream: Arc<str> = log
            .streams
            .get_key_value(stream_id)
            .map_or_else(|| Arc::from(stream_id), |(key, _)| key.clone());
        let timestamp = OffsetDateTime::now_utc();
        let first_index = log.events.len();
        let count = events.len();
        for (offset, event) in events.into_iter().enumerate() {
            let index = first_index + offset;
            log.ids.insert(event.event_id, index);
            log.events.push(StoredEvent {
                event_id: event.event_id,
                stream_id: stream.clone(),
                version: current + offset as u64 + 1,
                position: index as u64 + 1,
                event_type: Arc::from(event.event_type),
                schema_version: event.schema_version,
                payload: event.payload,
                timestamp,
                metadata: Arc::new(event.metadata),
            });
        }
        log.streams
            .entry(stream)
            .or_default()
            .extend(first_index..first_index + count);
        let result = AppendResult::following(current, first_index as u64, count as u64);
        drop(log);
        self.inner.head.advance(result.last_position);
        Ok(result)
    }
}

impl Log {
    /// When an id of the batch is already stored: the original result of an exact retry,
    /// otherwise the `DUPLICATE` the shared rule gives. `None` when no id is stored yet.
    fn retried(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> FlextResult<Option<AppendResult>> {
        let Some(&first_index) = events.iter().find_map(|e| self.ids.get(&e.event_id)) else {
            return Ok(None);
        };
        let place = |index: usize| {
            let stored = &self.events[index];
            StoredPlace {
                event_id: stored.event_id,
                stream_id: stored.stream_id.to_string(),
                version: stored.version,
                position: stored.position,
            }
        };
        let first = place(first_index);
        let run: Vec<StoredPlace> = self.streams[&*self.events[first_index].stream_id]
            .iter()
            .skip((first.version - 1) as usize)
            .take(events.len())
            .map(|&index| place(index))
            .collect();
        retried_append(stream_id, expected, events, &first, &run).map(Some)
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        self.append_now(stream_id, expected, events)
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        Ok(self.read_log(|log| {
            let Some(indices) = log.streams.get(stream_id) else {
                return Vec::new();
            };
            let from = from_version.saturating_sub(1).min(indices.len() as u64) as usize;
            indices[from..]
                .iter()
                .take(limit)
                .map(|&index| log.events[index].clone())
                .collect()
        }))
    }

    /// Lends the stored records under the read lock: nothing is copied.
    async fn visit_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        visit: &mut (dyn for<'e> FnMut(&'e StoredEvent) -> FlextResult<()> + Send),
    ) -> FlextResult<usize> {
        self.read_log(|log| {
            let Some(indices) = log.streams.get(stream_id) else {
                return Ok(0);
            };
            let from = from_version.saturating_sub(1).min(indices.len() as u64) as usize;
            for &index in &indices[from..] {
                visit(&log.events[index])?;
            }
            Ok(indices.len() - from)
        })
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
        Ok(self.read_from(from_position, limit))
    }

    async fn stream_version(&self, stream_id: &str) -> FlextResult<u64> {
        Ok(self.read_log(|log| log.streams.get(stream_id).map_or(0, Vec::len) as u64))
    }

    async fn head_position(&self) -> FlextResult<u64> {
        Ok(self.read_log(|log| log.events.len() as u64))
    }

    async fn subscribe(&self, from_position: u64) -> FlextResult<EventStream> {
        // Reads are in memory, so they need no future of their own; the head signal hears
        // of every commit, so the tail never polls.
        let store = self.clone();
        let head = self.inner.head.clone();
        Ok(tail_events(
            from_position,
            SUBSCRIPTION_BATCH,
            move |from, limit| std::future::ready(Ok(store.read_from(from, limit))),
            move |next| head.wait_for(next, Duration::MAX),
        ))
    }
}

#[async_trait]
impl SnapshotStore for InMemoryEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> FlextResult<()> {
        match self.inner.snapshots.entry(snapshot.stream_id.clone()) {
            Entry::Occupied(mut kept) if snapshot.version >= kept.get().version => {
                kept.insert(snapshot);
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(slot) => {
                slot.insert(snapshot);
            }
        }
        Ok(())
    }

    async fn load_snapshot(&self, stream_id: &str) -> FlextResult<Option<Snapshot>> {
        Ok(self
            .inner
            .snapshots
            .get(stream_id)
            .map(|kept| kept.value().clone()))
    }
}

#[async_trait]
impl CheckpointStore for InMemoryEventStore {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        Ok(self.inner.checkpoints.get(name).map(|position| *position))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        self.inner.checkpoints.insert(name.to_owned(), position);
        Ok(())
    }

    async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()> {
        self.inner
            .dead_letters
            .entry(name.to_owned())
            .or_default()
            .insert(letter.position, letter);
        Ok(())
    }

    async fn dead_letters(&self, name: &str) -> FlextResult<Vec<DeadLetter>> {
        Ok(self
            .inner
            .dead_letters
            .get(name)
            .map(|letters| letters.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn remove_dead_letter(&self, name: &str, position: u64) -> FlextResult<bool> {
        Ok(self
            .inner
            .dead_letters
            .get_mut(name)
            .is_some_and(|mut letters| letters.remove(&position).is_some()))
    }

    async fn reset(&self, name: &str) -> FlextResult<()> {
        self.inner.checkpoints.remove(name);
        self.inner.dead_letters.remove(name);
        Ok(())
    }
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (events, streams) = self.read_log(|log| (log.events.len(), log.streams.len()));
        f.debug_struct("InMemoryEventStore")
            .field("events", &events)
            .field("streams", &streams)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use flext_protocols::EventStore;
    use flext_types::{ExpectedVersion, JsonPayload, NewEvent};

    use super::*;

    #[tokio::test]
    async fn len_and_is_empty_count_the_events_held() {
        let store = InMemoryEventStore::new();
        assert_eq!((store.len(), store.is_empty()), (0, true));
        let event = || NewEvent::new("Ping", JsonPayload::encode(&1).unwrap());
        store
            .append("Ping-1", ExpectedVersion::NoStream, vec![event(), event()])
            .await
            .unwrap();
        assert_eq!((store.len(), store.is_empty()), (2, false));
        let debug = format!("{store:?}");
        assert!(debug.contains("events: 2"), "{debug}");
        assert!(debug.contains("streams: 1"), "{debug}");
    }
}
