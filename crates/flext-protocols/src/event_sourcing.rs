//! The event-sourcing contracts: stores over serialized records, aggregates, projections.
//!
//! Stores see only [`NewEvent`] and [`StoredEvent`] records (type, schema version, JSON
//! payload, metadata), never the application's types, so each adapter stays small. One
//! conformance suite (in `flext-testing`) pins down the behaviour every store must have.

use std::pin::Pin;

use async_trait::async_trait;
use flext_types::{
    AppendResult, DeadLetter, ExpectedVersion, FlextResult, NewEvent, Snapshot, StoredEvent,
};
use futures_core::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Event;

/// A live feed of stored events in position order; see [`EventStore::subscribe`].
pub type EventStream = Pin<Box<dyn Stream<Item = FlextResult<StoredEvent>> + Send>>;

/// An append-only log of events, grouped in streams, with optimistic concurrency.
///
/// The rules every store keeps (the conformance suite checks each):
///
/// - A batch appends atomically or not at all, with versions `current + 1 ..` and global
///   positions strictly increasing; readers never see part of a batch, and batches never
///   interleave.
/// - A stream whose version does not satisfy the [`ExpectedVersion`] is a
///   `CONCURRENCY_CONFLICT` carrying the expected and actual versions; nothing is stored.
/// - Appending the same event ids again at the same expected version is a no-op that
///   returns the original [`AppendResult`] (an idempotent retry). An event id stored
///   elsewhere, or twice in one batch, is a `DUPLICATE`; nothing is stored.
/// - A reader of all events never skips a committed event.
/// - An empty batch is an ok no-op once its expected version is satisfied: it stores and
///   notifies nothing and returns the stream's version and the head as an empty range
///   (`first_version = version + 1`, `last_version = version`, and likewise for positions).
/// - Reads from a version or position past the end, up to `u64::MAX`, return no events.
/// - A payload, metadata or batch over the store's limits (`flext_store::StoreLimits`, the
///   same defaults on every store) is an `INVALID_ARGUMENT` naming the limit; nothing is
///   stored.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream_id` if the stream's version satisfies `expected`.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn append(&self, stream_id: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> FlextResult<AppendResult>
    /// ```
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult>;

    /// Up to `limit` events of `stream_id` from version `from_version` (inclusive), in
    /// version order; none for a stream that does not exist.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn read_stream(&self, stream_id: &str, from_version: u64, limit: usize) -> FlextResult<Vec<StoredEvent>>
    /// ```
    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>>;

    /// Calls `visit` with each event of `stream_id` from version `from_version`
    /// (inclusive) on, in version order, and returns how many it visited; the first error
    /// `visit` returns stops the walk and is returned. A store may lend its own records
    /// instead of copying them out — the in-memory store does, under its read lock, so
    /// keep `visit` short and never block in it. By default the events are read with
    /// [`read_stream`](Self::read_stream) and visited from there.
    ///
    /// As an implementation writes it (with `#[async_trait]`):
    ///
    /// ```text
    /// async fn visit_stream(&self, stream_id: &str, from_version: u64, visit: &mut (dyn for<'e> FnMut(&'e StoredEvent) -> FlextResult<()> + Send)) -> FlextResult<usize>
    /// ```
    async fn visit_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        visit: &mut (dyn for<'e> FnMut(&'e StoredEvent) -> FlextResult<()> + Send),
    ) -> FlextResult<usize> {
        let events = self
            .read_stream(stream_id, from_version, usize::MAX)
            .await?;
        for event in &events {
            visit(event)?;
        }
        Ok(events.len())
    }

    /// Up to `limit` events of every stream from global position `from_position`
    /// (inclusive), in position order. Positions strictly increase but may have gaps. A
    /// store may return a commit a moment after its append returned (PostgreSQL's waits
    /// until every older append to the store has ended), but never skips one: an event that
    /// commits later always comes after every event already returned.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn read_all(&self, from_position: u64, limit: usize) -> FlextResult<Vec<StoredEvent>>
    /// ```
    async fn read_all(&self, from_position: u64, limit: usize) -> FlextResult<Vec<StoredEvent>>;

    /// The version of `stream_id`: its last event's version, 0 when it does not exist.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn stream_version(&self, stream_id: &str) -> FlextResult<u64>
    /// ```
    async fn stream_version(&self, stream_id: &str) -> FlextResult<u64>;

    /// The position of the last committed event `read_all` returns, 0 for an empty store.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn head_position(&self) -> FlextResult<u64>
    /// ```
    async fn head_position(&self) -> FlextResult<u64>;

    /// Every event from `from_position` (inclusive): first those already stored, then each
    /// new one as it commits, each exactly once and in position order. The stream ends
    /// only with an error (for example a lost connection).
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn subscribe(&self, from_position: u64) -> FlextResult<EventStream>
    /// ```
    async fn subscribe(&self, from_position: u64) -> FlextResult<EventStream>;
}

/// The latest snapshot of each stream.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Keeps `snapshot` as its stream's latest, unless a snapshot of a later version is
    /// already kept.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn save_snapshot(&self, snapshot: Snapshot) -> FlextResult<()>
    /// ```
    async fn save_snapshot(&self, snapshot: Snapshot) -> FlextResult<()>;

    /// The latest snapshot of `stream_id`, if any.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn load_snapshot(&self, stream_id: &str) -> FlextResult<Option<Snapshot>>
    /// ```
    async fn load_snapshot(&self, stream_id: &str) -> FlextResult<Option<Snapshot>>;
}

/// Positions and dead letters of named readers of the log (projections, relays).
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The last position `name` finished, if it ever saved one.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>>
    /// ```
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>>;

    /// Records that `name` finished every event up to `position`.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()>
    /// ```
    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()>;

    /// Records an event `name` gave up on. A name holds at most one letter per position:
    /// recording a position again replaces its letter, so a retried write lists it once.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()>
    /// ```
    async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()>;

    /// The events `name` gave up on, in position order.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn dead_letters(&self, name: &str) -> FlextResult<Vec<DeadLetter>>
    /// ```
    async fn dead_letters(&self, name: &str) -> FlextResult<Vec<DeadLetter>>;

    /// Forgets `name`'s dead letter at `position` (after a retry applied it, or when it is
    /// discarded): whether there was one.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn remove_dead_letter(&self, name: &str, position: u64) -> FlextResult<bool>
    /// ```
    async fn remove_dead_letter(&self, name: &str, position: u64) -> FlextResult<bool>;

    /// Forgets `name`'s checkpoint and dead letters, for a rebuild from zero.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn reset(&self, name: &str) -> FlextResult<()>
    /// ```
    async fn reset(&self, name: &str) -> FlextResult<()>;
}

/// An event-sourced aggregate: decides on commands by emitting events, and rebuilds its
/// state by applying them.
///
/// `handle` must not change state: state changes only through `apply`, so replaying the
/// stream (or loading a snapshot and replaying the rest) always gives the same state.
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The aggregate's type name; streams are named `"{TYPE}-{id}"`.
    const TYPE: &'static str;

    /// The version of the state's serialized shape, kept with snapshots; a snapshot of
    /// another version is ignored and the state is rebuilt from events.
    const SNAPSHOT_VERSION: u32 = 1;

    /// What the aggregate decides on.
    type Command: Send + 'static;

    /// What it emits; each event names itself and its schema version.
    type Event: Event + Serialize + DeserializeOwned + Clone;

    /// Decides on `command`: the events to append, or an error that rejects it.
    fn handle(&self, command: Self::Command) -> FlextResult<Vec<Self::Event>>;

    /// Applies one event to the state.
    fn apply(&mut self, event: &Self::Event);
}

/// An aggregate whose decisions may wait on services: a fraud check, a price list, a
/// directory. The repository hands them in (`Repository::execute_serviced`), with the
/// aggregate's id, and decides again — calling the services again — on the fresh state
/// after a concurrency conflict, so a check never judges a state that has since moved.
///
/// `decide` must not change state, like [`Aggregate::handle`]; the services may be called
/// more than once for one command (after a conflict), so their calls should be safe to
/// repeat (a check, a quote), not effects (a charge belongs in an event's subscriber).
///
/// ```
/// use flext_protocols::{Aggregate, Event, ServicedAggregate, async_trait};
/// use flext_types::{FlextError, FlextResult};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # struct Withdrawn(u64);
/// # impl Event for Withdrawn { fn event_name(&self) -> &str { "Withdrawn" } }
/// # #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// # struct Account { balance: u64 }
/// # impl Aggregate for Account {
/// #     const TYPE: &'static str = "Account";
/// #     type Command = u64;
/// #     type Event = Withdrawn;
/// #     fn handle(&self, amount: u64) -> FlextResult<Vec<Withdrawn>> { Ok(vec![Withdrawn(amount)]) }
/// #     fn apply(&mut self, e: &Withdrawn) { self.balance -= e.0; }
/// # }
///
/// /// The fraud service, as the account sees it.
/// #[async_trait]
/// trait Fraud: Send + Sync {
///     async fn allows(&self, account: &str, amount: u64) -> FlextResult<bool>;
/// }
///
/// #[async_trait]
/// impl ServicedAggregate for Account {
///     type Services = Box<dyn Fraud>;
///
///     async fn decide(&self, id: &str, amount: u64, fraud: &Box<dyn Fraud>) -> FlextResult<Vec<Withdrawn>> {
///         if amount > self.balance {
///             return Err(FlextError::business_rule("Insufficient funds"));
///         }
///         if !fraud.allows(id, amount).await? {
///             return Err(FlextError::authorization_denied(format!("Withdrawal from {id} held for review")));
///         }
///         Ok(vec![Withdrawn(amount)])
///     }
/// }
/// ```
#[async_trait]
pub trait ServicedAggregate: Aggregate {
    /// What its decisions may call: a struct of clients, a trait object, an `Arc`.
    type Services: Send + Sync;

    /// Decides on `command` for the aggregate `id`, calling `services` as it needs: the
    /// events to append, or an error that rejects it.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn decide(&self, id: &str, command: Self::Command, services: &Self::Services) -> FlextResult<Vec<Self::Event>>
    /// ```
    async fn decide(
        &self,
        id: &str,
        command: Self::Command,
        services: &Self::Services,
    ) -> FlextResult<Vec<Self::Event>>;
}

/// A read model built from the log, one event at a time.
///
/// Events arrive in order within each stream, not across streams: an event that failed and
/// is retried later (a dead letter) arrives after newer events of other streams, as in
/// Axon's per-sequence ordering (its stream's later events wait behind it, under the
/// runner's default sequenced dead-letter policy). And they arrive at least once: after a
/// crash the events since the last checkpoint are applied again. So `apply` should be
/// idempotent by remembering, per stream, the last version it applied (an event at or
/// below it is a repeat), or the ids of the events it applied. Remembering the last global
/// position would skip a retried event as if it were a repeat. A runner whose dead-letter
/// policy skips instead of sequencing applies a stream's later events before its retried
/// letter, so its projections must remember event ids: a per-stream version would skip the
/// retried event too.
#[async_trait]
pub trait Projection: Send + Sync {
    /// The projection's name, which keys its checkpoint.
    fn name(&self) -> &str;

    /// Applies one stored event to the read model.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn apply(&self, event: &StoredEvent) -> FlextResult<()>
    /// ```
    async fn apply(&self, event: &StoredEvent) -> FlextResult<()>;

    /// Empties the read model, before a rebuild from the first event.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn reset(&self) -> FlextResult<()>
    /// ```
    async fn reset(&self) -> FlextResult<()>;
}
