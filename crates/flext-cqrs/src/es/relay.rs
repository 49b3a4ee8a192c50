//! [`EventRelay`]: publishes stored events to an [`EventBus`], tracking its position in the
//! log, so the log is the outbox.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use flext_protocols::{Event, Projection};
use flext_types::{FlextResult, StoredEvent};
use serde::de::DeserializeOwned;

use crate::EventBus;
use crate::es::envelope::{Envelope, Upcasters};

/// Publishes the stored events of one aggregate type to an [`EventBus`] as
/// [`Envelope<E>`]s, under each event's name.
///
/// The relay is a [`Projection`]: run it with a
/// [`ProjectionRunner`](crate::ProjectionRunner), whose checkpoint is the relay's position
/// in the log. An event committed but not yet published when the process stops is
/// published when the runner starts again; delivery to the bus is at least once.
/// Subscribers' failures are theirs (the bus reports them); an event that does not decode
/// is retried and then dead-lettered like any projection failure.
///
/// ```
/// use std::sync::Arc;
/// use flext_cqrs::{EventBus, EventRelay};
/// # #[derive(serde::Deserialize)] struct UserEvent;
/// # impl flext_protocols::Event for UserEvent { fn event_name(&self) -> &str { "UserCreated" } }
///
/// let bus = Arc::new(EventBus::new());
/// let relay = EventRelay::<UserEvent>::new("user-events-to-bus", bus).for_category("User");
/// ```
pub struct EventRelay<E> {
    name: String,
    bus: Arc<EventBus>,
    category: Option<String>,
    upcasters: Upcasters,
    _events: PhantomData<fn() -> E>,
}

impl<E> EventRelay<E>
where
    E: Event + DeserializeOwned,
{
    /// A relay named `name` (its checkpoint's key) publishing to `bus`.
    pub fn new(name: impl Into<String>, bus: Arc<EventBus>) -> Self {
        Self {
            name: name.into(),
            bus,
            category: None,
            upcasters: Upcasters::new(),
            _events: PhantomData,
        }
    }

    /// Relays only the streams of one aggregate type: those named `"{category}-…"`.
    #[must_use]
    pub fn for_category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// Decodes old payloads with `upcasters`.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    fn relays(&self, event: &StoredEvent) -> bool {
        match &self.category {
            None => true,
            Some(category) => event
                .stream_id
                .strip_prefix(category.as_str())
                .is_some_and(|rest| rest.starts_with('-')),
        }
    }
}

#[async_trait]
impl<E> Projection for EventRelay<E>
where
    E: Event + DeserializeOwned,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        if !self.relays(event) {
            return Ok(());
        }
        let envelope = Envelope::<E>::decode(event, &self.upcasters)?;
        let report = self.bus.publish(envelope).await;
        if !report.is_success() {
            tracing::debug!(relay = %self.name, position = event.position, failures = report.failures.len(), "some subscribers failed");
        }
        Ok(())
    }

    /// A relay has no read model; a rebuild republishes every event.
    async fn reset(&self) -> FlextResult<()> {
        Ok(())
    }
}

impl<E> fmt::Debug for EventRelay<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRelay")
            .field("name", &self.name)
            .field("category", &self.category)
            .finish_non_exhaustive()
    }
}
