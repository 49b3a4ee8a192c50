//! [`EventSink`]: what a consumer applies events to, and the record of what it applied.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use flext_protocols::CheckpointStore;
use flext_types::{FlextResult, StoredEvent};

/// What a [`NatsConsumer`](crate::NatsConsumer) applies events to: the subscriber's effect
/// and its record of the last version applied per stream, which is what makes a delivery
/// that JetStream repeats (a redelivery, a re-publish outside the duplicate window, a
/// second consumer taking over) an effect once.
///
/// The consumer calls [`apply`](EventSink::apply) only with the version right after
/// [`applied_version`](EventSink::applied_version), so per stream the effects happen in
/// version order. An implementation that records the version in the same transaction as
/// its effect (a read model in a database) and refuses a version already recorded (a
/// conditional update from the previous version) applies each event exactly once, even
/// when the process dies between the two or two processes of the group are handed copies
/// of one event at once. [`VersionedSink`] keeps the record in a [`CheckpointStore`]
/// after the effect: once within one process, but an event is applied again when the
/// process dies between the two, or when two processes apply copies of one event at the
/// same moment (a copy published again after the duplicate window while the original is
/// still being handled elsewhere, or a redelivery to a second process while the first,
/// unable to reach the broker, still works on it).
#[async_trait]
pub trait EventSink: Send + Sync + fmt::Debug {
    /// The subscriber's name, for errors, metrics and dead letters.
    fn name(&self) -> &str;

    /// The last version of `stream_id` applied (or passed), 0 when none.
    async fn applied_version(&self, stream_id: &str) -> FlextResult<u64>;

    /// Applies `event` and records its version as applied.
    async fn apply(&self, event: &StoredEvent) -> FlextResult<()>;

    /// Records `event`'s version as passed without applying it: it went to the dead-letter
    /// stream, and the stream's later events may follow.
    async fn pass(&self, event: &StoredEvent) -> FlextResult<()>;
}

/// An [`EventSink`] of a handler function, keeping the version it applied per stream in a
/// [`CheckpointStore`] under `"{name}/{stream id}"`, saved after the handler succeeds.
///
/// ```
/// use std::sync::Arc;
/// use flext_bus_nats::{EventSink, VersionedSink};
/// use flext_store::InMemoryEventStore;
///
/// let checkpoints = Arc::new(InMemoryEventStore::new());
/// let sink = VersionedSink::new("mailer", checkpoints, |event| async move {
///     println!("{} v{}", event.stream_id, event.version);
///     Ok(())
/// });
/// assert_eq!(sink.name(), "mailer");
/// ```
pub struct VersionedSink<F> {
    name: String,
    checkpoints: Arc<dyn CheckpointStore>,
    handler: F,
}

impl<F, Fut> VersionedSink<F>
where
    F: Fn(StoredEvent) -> Fut + Send + Sync,
    Fut: Future<Output = FlextResult<()>> + Send,
{
    /// The sink named `name` calling `handler` with each event.
    pub fn new(name: impl Into<String>, checkpoints: Arc<dyn CheckpointStore>, handler: F) -> Self {
        Self {
            name: name.into(),
            checkpoints,
            handler,
        }
    }

    fn key(&self, stream_id: &str) -> String {
        format!("{}/{stream_id}", self.name)
    }
}

impl<F> fmt::Debug for VersionedSink<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionedSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<F, Fut> EventSink for VersionedSink<F>
where
    F: Fn(StoredEvent) -> Fut + Send + Sync,
    Fut: Future<Output = FlextResult<()>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn applied_version(&self, stream_id: &str) -> FlextResult<u64> {
        Ok(self
            .checkpoints
            .load_checkpoint(&self.key(stream_id))
            .await?
            .unwrap_or(0))
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        (self.handler)(event.clone()).await?;
        self.pass(event).await
    }

    async fn pass(&self, event: &StoredEvent) -> FlextResult<()> {
        self.checkpoints
            .save_checkpoint(&self.key(&event.stream_id), event.version)
            .await
    }
}
