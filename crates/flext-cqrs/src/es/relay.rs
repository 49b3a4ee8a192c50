//! [`EventRelay`]: delivers stored events to the subscribers of an [`EventBus`], tracking
//! its position in the log and each subscriber's, so the log is the outbox.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use flext_protocols::{CheckpointStore, Event, EventStore, Projection};
use flext_types::{DeadLetter, FlextError, FlextResult, MessageMetadata, StoredEvent};
use serde::de::DeserializeOwned;

use crate::es::consumer::{
    Classifier, Consumer, DeadLetterRetry, Outcome, Target, default_classifier,
};
use crate::es::envelope::{Envelope, Upcasters};
use crate::es::retry::{ErrorClass, stopping};
use crate::event::SubscriberInfo;
use crate::{
    Delivery, EventBus, ProjectionConfig, ProjectionHandle, ProjectionRunner, SubscriptionId,
};

/// Delivers the stored events of one aggregate type to the subscribers of an [`EventBus`]
/// as [`Envelope<E>`]s, under each event's name: every subscriber gets every event at
/// least once.
///
/// The relay is a [`Projection`]: run it with a
/// [`ProjectionRunner`](crate::ProjectionRunner), whose checkpoint is the relay's position
/// in the log. An event committed but not yet delivered when the process stops is
/// delivered when the runner starts again. The runner saves its checkpoint in batches
/// ([`ProjectionConfig::checkpoint_every`]): after a crash it goes again over the events
/// finished since its last save, and a subscriber whose own progress had passed them gets
/// them again (at least once). Run a relay with
/// [`with_checkpoint_every(1)`](ProjectionConfig::with_checkpoint_every) to keep what a
/// crash repeats to the event being delivered.
///
/// Every delivery of an event carries the stored event as its message
/// ([`MessageMetadata::of_stored_event`]: the event's id as the message id, its commit
/// time, correlation and causation), which a subscriber reads with
/// [`current_metadata`](crate::current_metadata): a redelivery (a retry, a restart, a
/// retried dead letter) is the same message, so what the subscriber derives from it, such
/// as the event ids of a [`Repository::execute`](crate::Repository::execute), repeats
/// instead of doubling.
///
/// Each subscriber is followed on its own, as if it were a projection named
/// `"{relay}/{subscriber}"` in the relay's [`CheckpointStore`]
/// ([`subscriber_key`](EventRelay::subscriber_key)):
///
/// - its progress is saved after it handled an event, so an event retried after a crash
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
/// A subscriber is known by its name (its handler's name), which must be its own among
/// the subscribers of each relayed event and the same from one run to the next: subscribe
/// with `flext_impl::handler_fn(name, f)` (`EventBus::subscribe_fn` names every subscriber
/// of an event `"{event} subscriber"`). When two subscribers of a relayed event share a
/// name the relay cannot tell their progress apart: it refuses the event with an
/// `INVALID_ARGUMENT` naming the event and the name, classified [`ErrorClass::Stop`], so
/// its runner stops with that error before any delivery, its checkpoint and every
/// subscriber's progress where they were (a retry of that name's letters is refused the
/// same way). A subscriber's progress and letters stay under its name when others come and
/// go.
///
/// An event that does not decode (or another failure of the relay's own, such as a
/// subscriber's progress it cannot save) is the relay's own failure: its runner retries
/// and dead-letters it, and moves on. Retried later (once an upcaster decodes it, say), it
/// is delivered to every subscriber that has not had it, whatever progress other events
/// made since: a subscriber had it when its progress is that very event, or when it holds
/// the event as a dead letter of its own. One case cannot be told apart: a subscriber that
/// handled the event before the relay failed on another subscriber, and whose progress
/// then moved on with other events, gets it again (at least once, never lost).
///
/// Subscribers are served in subscription order, one after another, or all at once when
/// the bus delivers [`Delivery::Concurrent`]. Either way the relay moves to the next event
/// only once every subscriber is done with this one: a subscriber being retried holds the
/// relay (for up to `give_up_after` when its failures are transient), and in sequential
/// delivery the subscribers after it wait for it too. To keep a slow subscriber from
/// holding up the others, give it a relay (and runner) of its own. Each try counts in the
/// bus metrics as a delivery or a failed one (not as a publish).
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

    /// Classifies subscribers' failures with `classify` instead of [`ErrorClass::of`]. A
    /// classifier that panics stops the run with an `OPERATION_ERROR`, as
    /// [`ErrorClass::Stop`] does.
    #[must_use]
    pub fn with_error_classifier(
        mut self,
        classify: impl Fn(&FlextError) -> ErrorClass + Send + Sync + 'static,
    ) -> Self {
        self.classify = Arc::new(classify);
        self.subscribers.clear();
        self
    }

    /// Runs the relay over the log of `events` on a task of its own: a
    /// [`ProjectionRunner`](crate::ProjectionRunner) of the relay, keeping its checkpoint in
    /// the relay's [`CheckpointStore`] and retrying the relay's own failures by the relay's
    /// [`ProjectionConfig`], [spawned](crate::ProjectionRunner::spawn). The handle shuts it
    /// down, joins it, and waits until every subscriber has had the events up to a position
    /// ([`wait_for`](crate::RunHandle::wait_for)). Keep an `Arc` of the relay to manage its
    /// subscribers' dead letters meanwhile; the relay's own are the handle's
    /// [`runner`](crate::RunHandle::runner)'s. (A runner configured otherwise spawns as
    /// well: build it with [`ProjectionRunner::new`](crate::ProjectionRunner::new).)
    /// `OPERATION_ERROR` outside a tokio runtime.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flext_cqrs::{EventBus, EventRelay, InMemoryEventStore};
    /// # #[derive(serde::Deserialize)] struct UserEvent;
    /// # impl flext_protocols::Event for UserEvent { fn event_name(&self) -> &str { "UserCreated" } }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> flext_types::FlextResult<()> {
    /// let store = Arc::new(InMemoryEventStore::new());
    /// let bus = Arc::new(EventBus::new());
    /// let relay = Arc::new(EventRelay::<UserEvent>::new("user-events", bus, store.clone()));
    /// let handle = relay.clone().spawn(store)?;
    /// handle.caught_up().await?;
    /// handle.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn(self: Arc<Self>, events: Arc<dyn EventStore>) -> FlextResult<ProjectionHandle> {
        let checkpoints = self.checkpoints.clone();
        let config = self.config.clone();
        ProjectionRunner::new(events, checkpoints, self)
            .with_config(config)
            .spawn()
    }

    /// The name under which `subscriber`'s checkpoint and dead letters are kept:
    /// `"{relay}/{subscriber}"`.
    pub fn subscriber_key(&self, subscriber: &str) -> String {
        format!("{}/{subscriber}", self.name)
    }

    /// The events `subscriber` gave up on, and those parked behind them, in position order.
    pub async fn dead_letters(&self, subscriber: &str) -> FlextResult<Vec<DeadLetter>> {
        self.checkpoints
            .dead_letters(&self.subscriber_key(subscriber))
            .await
    }

    /// Delivers `subscriber`'s dead letter at `position` again (read from `events`), as
    /// [`ProjectionRunner::retry_dead_letter`](crate::ProjectionRunner::retry_dead_letter)
    /// applies a projection's (and refused the same ways). The try fails, and counts, with
    /// `NOT_FOUND` when `subscriber` is no longer on the bus; the retry is refused with
    /// `INVALID_ARGUMENT`, the letter as it was, when two subscribers of the event share
    /// that name.
    pub async fn retry_dead_letter(
        &self,
        events: &dyn EventStore,
        subscriber: &str,
        position: u64,
    ) -> FlextResult<DeadLetterRetry> {
        let Some(consumer) = self.consumer_with_letters(subscriber).await? else {
            return Err(FlextError::not_found(format!(
                "No dead letter at position {position} for '{}'",
                self.subscriber_key(subscriber)
            )));
        };
        let target = Redeliver {
            relay: self,
            subscriber,
        };
        consumer.retry(events, position, &target).await
    }

    /// Delivers every dead letter of `subscriber` again, sequence by sequence, as
    /// [`ProjectionRunner::retry_dead_letters`](crate::ProjectionRunner::retry_dead_letters)
    /// does.
    pub async fn retry_dead_letters(
        &self,
        events: &dyn EventStore,
        subscriber: &str,
    ) -> FlextResult<DeadLetterRetry> {
        let Some(consumer) = self.consumer_with_letters(subscriber).await? else {
            return Ok(DeadLetterRetry::default());
        };
        let target = Redeliver {
            relay: self,
            subscriber,
        };
        consumer.retry_all(events, &target).await
    }

    /// Removes `subscriber`'s dead letter at `position` without delivering it, as
    /// [`ProjectionRunner::discard_dead_letter`](crate::ProjectionRunner::discard_dead_letter)
    /// does: whether there was one.
    pub async fn discard_dead_letter(&self, subscriber: &str, position: u64) -> FlextResult<bool> {
        match self.consumer_with_letters(subscriber).await? {
            Some(consumer) => consumer.discard(position).await,
            None => Ok(false),
        }
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

    /// The follower of `subscriber` when the relay has one or the store holds letters of
    /// that name: a name the relay never delivered to and that has no letters gets none
    /// (so neither is its progress written by a rebuild).
    async fn consumer_with_letters(&self, subscriber: &str) -> FlextResult<Option<Arc<Consumer>>> {
        if let Some(consumer) = self.subscribers.get(subscriber) {
            return Ok(Some(consumer.clone()));
        }
        if self.dead_letters(subscriber).await?.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.consumer(subscriber)))
    }

    /// Delivers `event` to one subscriber unless it already had it.
    ///
    /// Its progress is the last event it handled, and only goes up. At that very event, it
    /// had it. Below it, it has not: the relay's runner reaches each event in order, so
    /// the subscriber's progress is past an event it never saw only when that event was
    /// the relay's own dead letter (or parked behind one), now retried; it is delivered and
    /// the progress stays. (A subscriber that handled the event before the relay failed on
    /// it for another one cannot be told apart from these once its progress moved on: it
    /// gets the event again, at least once.)
    async fn deliver(
        &self,
        subscriber: &str,
        subscription: SubscriptionId,
        event: &StoredEvent,
        envelope: &Arc<Envelope<E>>,
    ) -> FlextResult<()> {
        let consumer = self.consumer(subscriber);
        if consumer.cached_position().await? == event.position {
            return Ok(());
        }
        let target = Deliver {
            bus: &self.bus,
            subscription,
            envelope,
        };
        match consumer.handle(event, &target).await? {
            Outcome::Stopped => {
                return Err(FlextError::operation(format!(
                    "Relay '{}' stopped before subscriber '{subscriber}' handled position {}",
                    self.name, event.position
                )));
            }
            Outcome::DeadLettered => {
                tracing::warn!(relay = %self.name, subscriber, position = event.position, "event dead-lettered for one subscriber");
            }
            Outcome::Applied | Outcome::Parked | Outcome::Held => {}
        }
        if event.position > consumer.cached_position().await? {
            consumer.save_position(event.position).await?;
        }
        Ok(())
    }
}

/// Refuses the subscribers of `event` when two share a name, as the relay keeps progress
/// and letters by name; the error stops the relay's runner.
fn distinct_names(relay: &str, event: &str, subscribers: &[SubscriberInfo]) -> FlextResult<()> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for info in subscribers {
        *counts.entry(info.name.as_str()).or_default() += 1;
    }
    let Some((name, count)) = subscribers
        .iter()
        .map(|info| (info.name.as_str(), counts[info.name.as_str()]))
        .find(|(_, count)| *count > 1)
    else {
        return Ok(());
    };
    Err(stopping(
        FlextError::invalid_argument(format!(
            "Relay '{relay}' cannot tell apart the {count} subscribers of '{event}' named '{name}': give each subscriber of a relayed event a name of its own (subscribe it with handler_fn(name, f)), as the relay keeps each one's progress and dead letters under its name"
        ))
        .with_data(serde_json::json!({ "relay": relay, "event": event, "subscriber": name })),
    ))
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
        let recipients = self.bus.subscribers::<Envelope<E>>(envelope.event_name());
        distinct_names(&self.name, envelope.event_name(), &recipients)?;
        let deliveries = recipients
            .iter()
            .map(|info| self.deliver(&info.name, info.subscription, event, &envelope));
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
    /// now on the bus (their progress goes back to 0; their dead letters stay, and their
    /// events are not delivered). Only names with progress under this relay are written:
    /// the bus's other subscriptions, and names only ever asked about, get no row.
    async fn reset(&self) -> FlextResult<()> {
        let mut names: Vec<String> = self
            .bus
            .subscriptions()
            .into_iter()
            .map(|info| info.name)
            .collect();
        names.extend(self.subscribers.iter().map(|entry| entry.key().clone()));
        names.sort_unstable();
        names.dedup();
        for subscriber in names {
            let key = self.subscriber_key(&subscriber);
            if self.checkpoints.load_checkpoint(&key).await?.unwrap_or(0) > 0 {
                self.checkpoints.save_checkpoint(&key, 0).await?;
            }
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
    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        let metadata = MessageMetadata::of_stored_event(event);
        self.bus
            .deliver_to(self.subscription, self.envelope.clone(), Some(&metadata))
            .await
    }
}

/// One subscriber, found on the bus again by its name, for a retry of its dead letters.
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
        let recipients = bus.subscribers::<Envelope<E>>(envelope.event_name());
        distinct_names(&self.relay.name, envelope.event_name(), &recipients)?;
        let subscription = recipients
            .into_iter()
            .find(|info| info.name == self.subscriber)
            .map(|info| info.subscription)
            .ok_or_else(|| {
                FlextError::not_found(format!(
                    "No subscriber '{}' of '{}' on the bus of relay '{}'",
                    self.subscriber,
                    envelope.event_name(),
                    self.relay.name
                ))
            })?;
        let metadata = MessageMetadata::of_stored_event(event);
        bus.deliver_to(subscription, Arc::new(envelope), Some(&metadata))
            .await
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
