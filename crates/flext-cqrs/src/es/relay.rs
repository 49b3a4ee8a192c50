//! [`EventRelay`]: delivers stored events to the subscribers of an [`EventBus`], tracking
//! its position in the log and each subscriber's, so the log is the outbox.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use flext_protocols::{CheckpointStore, Event, EventStore, Projection};
use flext_types::{DeadLetter, FlextError, FlextResult, StoredEvent};
use serde::de::DeserializeOwned;

use crate::es::consumer::{
    Classifier, Consumer, DeadLetterRetry, Outcome, Target, default_classifier,
};
use crate::es::envelope::{Envelope, Upcasters};
use crate::es::retry::ErrorClass;
use crate::event::SubscriberInfo;
use crate::{Delivery, EventBus, ProjectionConfig, SubscriptionId};

/// Delivers the stored events of one aggregate type to the subscribers of an [`EventBus`]
/// as [`Envelope<E>`]s, under each event's name: every subscriber gets every event at
/// least once.
///
/// The relay is a [`Projection`]: run it with a
/// [`ProjectionRunner`](crate::ProjectionRunner), whose checkpoint is the relay's position
/// in the log. An event committed but not yet delivered when the process stops is
/// delivered when the runner starts again.
///
/// Each subscriber is followed on its own, as if it were a projection named
/// `"{relay}/{subscriber}"` in the relay's [`CheckpointStore`]
/// ([`subscriber_key`](EventRelay::subscriber_key)):
///
/// - its checkpoint is saved after it handled an event, so an event retried after a crash
///   (or after another subscriber's failure) is not delivered again to a subscriber that
///   already handled it;
/// - a failure is retried with backoff and then dead-lettered for that subscriber only,
///   under the rules of [`ProjectionConfig`] ([`with_config`](EventRelay::with_config)) and
///   the error classifier ([`with_error_classifier`](EventRelay::with_error_classifier)):
///   transient failures until `give_up_after`, others for `max_attempts` tries, and,
///   sequenced (the default), that subscriber's later events of the same stream parked
///   behind the dead letter;
/// - [`dead_letters`](EventRelay::dead_letters),
///   [`retry_dead_letter`](EventRelay::retry_dead_letter) and
///   [`discard_dead_letter`](EventRelay::discard_dead_letter) work per subscriber as the
///   runner's do.
///
/// A subscriber is known by its name (its handler's name: give each one a name of its
/// own, with `flext_impl::handler_fn(name, f)`); when several subscribers of one event
/// share a name, the second is `"{name}#2"`, the third `"{name}#3"`, in subscription
/// order. Subscribers are served in subscription order, one after another, or all at
/// once when the bus delivers [`Delivery::Concurrent`]; in sequential delivery a
/// subscriber being retried holds the next ones back. Each try counts in the bus metrics
/// as a delivery or a failed one (not as a publish). An event that does not decode is the
/// relay's own failure: its runner retries and dead-letters it.
///
/// ```
/// use std::sync::Arc;
/// use flext_cqrs::{EventBus, EventRelay, InMemoryEventStore};
/// # #[derive(serde::Deserialize)] struct UserEvent;
/// # impl flext_protocols::Event for UserEvent { fn event_name(&self) -> &str { "UserCreated" } }
///
/// let store = Arc::new(InMemoryEventStore::new());
/// let bus = Arc::new(EventBus::new());
/// let relay = EventRelay::<UserEvent>::new("user-events-to-bus", bus, store)
///     .for_category("User");
/// assert_eq!(relay.subscriber_key("mailer"), "user-events-to-bus/mailer");
/// ```
pub struct EventRelay<E> {
    name: String,
    bus: Arc<EventBus>,
    checkpoints: Arc<dyn CheckpointStore>,
    category: Option<String>,
    upcasters: Upcasters,
    config: ProjectionConfig,
    classify: Classifier,
    subscribers: DashMap<String, Arc<Consumer>>,
    _events: PhantomData<fn() -> E>,
}

impl<E> EventRelay<E>
where
    E: Event + DeserializeOwned,
{
    /// A relay named `name` (its checkpoint's key) delivering to the subscribers of `bus`,
    /// keeping each subscriber's progress and dead letters in `checkpoints`.
    pub fn new(
        name: impl Into<String>,
        bus: Arc<EventBus>,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Self {
        Self {
            name: name.into(),
            bus,
            checkpoints,
            category: None,
            upcasters: Upcasters::new(),
            config: ProjectionConfig::default(),
            classify: default_classifier(),
            subscribers: DashMap::new(),
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

    /// Retries and dead-letters each subscriber's failures as `config` says (its
    /// `batch_size` is not used).
    #[must_use]
    pub fn with_config(mut self, config: ProjectionConfig) -> Self {
        self.config = config;
        self.subscribers.clear();
        self
    }

    /// Classifies subscribers' failures with `classify` instead of [`ErrorClass::of`].
    #[must_use]
    pub fn with_error_classifier(
        mut self,
        classify: impl Fn(&FlextError) -> ErrorClass + Send + Sync + 'static,
    ) -> Self {
        self.classify = Arc::new(classify);
        self.subscribers.clear();
        self
    }

    /// The name under which `subscriber`'s checkpoint and dead letters are kept:
    /// `"{relay}/{subscriber}"`.
    pub fn subscriber_key(&self, subscriber: &str) -> String {
        format!("{}/{subscriber}", self.name)
    }

    /// The events `subscriber` gave up on, and those parked behind them, in position order.
    pub async fn dead_letters(&self, subscriber: &str) -> FlextResult<Vec<DeadLetter>> {
        self.consumer(subscriber).dead_letters().await
    }

    /// Delivers `subscriber`'s dead letter at `position` again (read from `events`), as
    /// [`ProjectionRunner::retry_dead_letter`](crate::ProjectionRunner::retry_dead_letter)
    /// applies a projection's; `NOT_FOUND` when `subscriber` is no longer on the bus.
    pub async fn retry_dead_letter(
        &self,
        events: &dyn EventStore,
        subscriber: &str,
        position: u64,
    ) -> FlextResult<DeadLetterRetry> {
        let target = Redeliver {
            relay: self,
            subscriber,
        };
        self.consumer(subscriber)
            .retry(events, position, &target)
            .await
    }

    /// Delivers every dead letter of `subscriber` again, sequence by sequence.
    pub async fn retry_dead_letters(
        &self,
        events: &dyn EventStore,
        subscriber: &str,
    ) -> FlextResult<DeadLetterRetry> {
        let target = Redeliver {
            relay: self,
            subscriber,
        };
        self.consumer(subscriber).retry_all(events, &target).await
    }

    /// Removes `subscriber`'s dead letter at `position` without delivering it, as
    /// [`ProjectionRunner::discard_dead_letter`](crate::ProjectionRunner::discard_dead_letter)
    /// does: whether there was one.
    pub async fn discard_dead_letter(&self, subscriber: &str, position: u64) -> FlextResult<bool> {
        self.consumer(subscriber).discard(position).await
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

    /// The follower of `subscriber`, made on first use.
    fn consumer(&self, subscriber: &str) -> Arc<Consumer> {
        if let Some(consumer) = self.subscribers.get(subscriber) {
            return consumer.clone();
        }
        self.subscribers
            .entry(subscriber.to_owned())
            .or_insert_with(|| {
                Arc::new(Consumer::new(
                    self.subscriber_key(subscriber),
                    self.checkpoints.clone(),
                    self.config.clone(),
                    self.classify.clone(),
                ))
            })
            .clone()
    }

    /// Delivers `event` to one subscriber unless it already handled it.
    async fn deliver(
        &self,
        subscriber: &str,
        subscription: SubscriptionId,
        event: &StoredEvent,
        envelope: &Arc<Envelope<E>>,
    ) -> FlextResult<()> {
        let consumer = self.consumer(subscriber);
        if consumer.cached_position().await? >= event.position {
            return Ok(());
        }
        let target = Deliver {
            bus: &self.bus,
            subscription,
            envelope,
        };
        let outcome = consumer.handle(event, &target).await?;
        if outcome == Outcome::DeadLettered {
            tracing::warn!(relay = %self.name, subscriber, position = event.position, "event dead-lettered for one subscriber");
        }
        consumer.save_position(event.position).await
    }
}

/// Each subscriber with its key: its name, or `"{name}#n"` for the n-th of one name.
fn keyed(subscribers: Vec<SubscriberInfo>) -> Vec<(String, SubscriptionId)> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    subscribers
        .into_iter()
        .map(|info| {
            let nth = seen.entry(info.name.clone()).or_default();
            *nth += 1;
            let key = if *nth == 1 {
                info.name
            } else {
                format!("{}#{nth}", info.name)
            };
            (key, info.subscription)
        })
        .collect()
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
        let envelope = Arc::new(Envelope::<E>::decode(event, &self.upcasters)?);
        let recipients = keyed(self.bus.subscribers::<Envelope<E>>(envelope.event_name()));
        let deliveries = recipients
            .iter()
            .map(|(subscriber, id)| self.deliver(subscriber, *id, event, &envelope));
        match self.bus.delivery() {
            Delivery::Sequential => {
                for delivery in deliveries {
                    delivery.await?;
                }
            }
            Delivery::Concurrent => {
                for result in futures_util::future::join_all(deliveries).await {
                    result?;
                }
            }
        }
        Ok(())
    }

    /// A relay has no read model: a rebuild delivers every event again to every subscriber
    /// now on the bus (their checkpoints go back to 0; their dead letters stay, and their
    /// events are not delivered).
    async fn reset(&self) -> FlextResult<()> {
        let mut keys: Vec<String> = keyed(self.bus.subscriptions())
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        keys.extend(self.subscribers.iter().map(|entry| entry.key().clone()));
        keys.sort_unstable();
        keys.dedup();
        for subscriber in keys {
            self.checkpoints
                .save_checkpoint(&self.subscriber_key(&subscriber), 0)
                .await?;
            if let Some(consumer) = self.subscribers.get(&subscriber) {
                consumer.forget_position();
            }
        }
        Ok(())
    }
}

/// One subscriber of one event, as what a consumer applies it to.
struct Deliver<'a, E> {
    bus: &'a EventBus,
    subscription: SubscriptionId,
    envelope: &'a Arc<Envelope<E>>,
}

#[async_trait]
impl<E: Event> Target for Deliver<'_, E> {
    async fn apply(&self, _: &StoredEvent) -> FlextResult<()> {
        self.bus
            .deliver_to(self.subscription, self.envelope.clone(), None)
            .await
    }
}

/// One subscriber, found on the bus again by its key, for a retry of its dead letters.
struct Redeliver<'a, E> {
    relay: &'a EventRelay<E>,
    subscriber: &'a str,
}

#[async_trait]
impl<E> Target for Redeliver<'_, E>
where
    E: Event + DeserializeOwned,
{
    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        let envelope = Envelope::<E>::decode(event, &self.relay.upcasters)?;
        let bus = &self.relay.bus;
        let subscription = keyed(bus.subscribers::<Envelope<E>>(envelope.event_name()))
            .into_iter()
            .find(|(key, _)| key == self.subscriber)
            .map(|(_, id)| id)
            .ok_or_else(|| {
                FlextError::not_found(format!(
                    "No subscriber '{}' of '{}' on the bus of relay '{}'",
                    self.subscriber,
                    envelope.event_name(),
                    self.relay.name
                ))
            })?;
        bus.deliver_to(subscription, Arc::new(envelope), None).await
    }
}

impl<E> fmt::Debug for EventRelay<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRelay")
            .field("name", &self.name)
            .field("category", &self.category)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
