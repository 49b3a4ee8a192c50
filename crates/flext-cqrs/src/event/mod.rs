//! [`EventBus`]: publish one event to many subscribers, by event name or by type.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use dashmap::DashMap;
use flext_impl::handler_fn;
use flext_protocols::{BoxHandler, Event, Handler, MetricsSource, Middleware};
use flext_types::{
    FlextError, FlextResult, MessageMetadata, MetricSet, MetricValue, short_type_name,
};
use futures_util::future::{self, Either, Ready};
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

use crate::dispatch::{Dispatch, DispatchOutput, Instrumentation};
use crate::metrics::{EventBusMetrics, EventMetrics};
use crate::routes::{Route, RouteFuture, Stack, wants_span};

mod counters;
mod subscribers;

pub use subscribers::SubscriberInfo;

/// The id of one subscription, for [`EventBus::unsubscribe`]. Ids grow with each
/// subscription, so they also give the delivery order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SubscriptionId(u64);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How [`EventBus::publish`] delivers an event to its subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delivery {
    /// One after another, in subscription order (the default).
    #[default]
    Sequential,
    /// All at once, on the publishing task; the report still lists them in subscription
    /// order.
    Concurrent,
}

/// What one [`EventBus::publish`] did: how many subscribers received the event, and which
/// failed with what error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishReport {
    /// The event's name.
    pub event_name: String,
    /// Subscribers that handled the event successfully.
    pub delivered: usize,
    /// Subscribers that failed, in subscription order.
    pub failures: Vec<DeliveryFailure>,
}

impl PublishReport {
    /// Whether every subscriber handled the event.
    pub fn is_success(&self) -> bool {
        self.failures.is_empty()
    }

    /// Subscribers the event was offered to.
    pub fn attempted(&self) -> usize {
        self.delivered + self.failures.len()
    }
}

/// One subscriber's failure to handle an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFailure {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// The subscriber's name.
    pub subscriber: String,
    /// What went wrong.
    pub error: FlextError,
}

/// Whom a subscription listens to.
#[derive(Debug, Clone)]
enum Key {
    Name(String),
    Type(TypeId),
}

struct Subscriber {
    id: SubscriptionId,
    event_type: TypeId,
    event_type_name: String,
    route: Route,
    /// A synchronous subscriber's function (a [`SyncSubscriberFn<E>`] of its event type),
    /// which a bus without middleware calls directly: no future, no allocation. Its route
    /// calls the same function through a handler, for the middleware path.
    sync: Option<Box<dyn Any + Send + Sync>>,
    /// Events of its name it could not take, being of another type.
    mismatches: AtomicU64,
}

/// Delivers each published event to every subscriber of its name and of its type.
///
/// - Subscribe by event name ([`EventBus::subscribe`], `"UserCreated"`) or by type
///   ([`EventBus::subscribe_type`], every event of a type whatever its name); many
///   subscribers per event; [`EventBus::unsubscribe`] by id. Subscribing works while the
///   bus is shared (`&self`).
/// - Subscribers receive the event shared as an `Arc<E>`.
/// - One failing or panicking subscriber does not stop the others; [`EventBus::publish`]
///   returns a [`PublishReport`] of deliveries and failures.
/// - Delivery is sequential in subscription order by default; [`Delivery::Concurrent`] is
///   opt-in through [`EventBus::with_delivery`].
/// - Metrics per event name: published, delivered, failed; bounded whatever names are
///   published (see [`EventBus::MAX_UNSUBSCRIBED_NAMES`]).
///
/// Bus middleware runs around each delivery (one [`Dispatch`] per subscriber).
///
/// ```
/// use std::sync::Arc;
/// use flext_cqrs::EventBus;
/// use flext_protocols::Event;
///
/// struct UserCreated { user_name: String }
/// impl Event for UserCreated {
///     fn event_name(&self) -> &str { "UserCreated" }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let bus = EventBus::new();
/// bus.subscribe_fn("UserCreated", |event: Arc<UserCreated>| async move {
///     println!("Welcome notification sent to {}", event.user_name);
///     Ok(())
/// });
/// let report = bus.publish(UserCreated { user_name: "Alice".into() }).await;
/// assert_eq!(report.delivered, 1);
/// # }
/// ```
pub struct EventBus {
    // Fx hashing rather than SipHash: every publish looks up its name and its type (and its
    // name again in the counts). The keys are the program's own names and types, and the
    // names counted without a subscription are bounded, so no input can flood a map.
    by_name: DashMap<String, Subscribers, FxBuildHasher>,
    by_type: DashMap<TypeId, Subscribers, FxBuildHasher>,
    index: DashMap<SubscriptionId, Key>,
    /// Subscriptions by type: while there are none (the common case), a publish does not
    /// look its type up.
    type_subscriptions: AtomicUsize,
    next_id: AtomicU64,
    counts: counters::Counts,
    middleware: Stack,
    delivery: Delivery,
    instrumentation: Instrumentation,
}

/// The function of a synchronous subscriber of `E` events.
type SyncSubscriberFn<E> = Arc<dyn Fn(&Arc<E>) -> FlextResult<()> + Send + Sync>;

/// Subscribers of one key, replaced whole on every change so publishers read them without
/// holding a lock while they deliver.
type Subscribers = Arc<[Arc<Subscriber>]>;

impl EventBus {
    /// A bus with no subscribers, delivering sequentially.
    pub fn new() -> Self {
        Self {
            by_name: DashMap::default(),
            by_type: DashMap::default(),
            index: DashMap::new(),
            type_subscriptions: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            counts: counters::Counts::default(),
            middleware: Stack::default(),
            delivery: Delivery::Sequential,
            instrumentation: Instrumentation::FULL,
        }
    }

    /// The same bus delivering as `delivery` says (sequential by default); the one way
    /// to set delivery, like [`with_instrumentation`](Self::with_instrumentation) for what
    /// the bus records.
    ///
    /// ```
    /// use flext_cqrs::{Delivery, EventBus};
    ///
    /// let bus = EventBus::new().with_delivery(Delivery::Concurrent);
    /// assert_eq!(bus.delivery(), Delivery::Concurrent);
    /// ```
    #[must_use]
    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// How the bus delivers each publish.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// The same bus with metrics and tracing set as `instrumentation` says (both on by
    /// default). Without metrics the per-event counts stay at zero.
    #[must_use]
    pub fn with_instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        self.instrumentation = instrumentation;
        self
    }

    /// What the bus records of each publish.
    pub fn instrumentation(&self) -> Instrumentation {
        self.instrumentation
    }

    /// Adds a middleware inside those added before it; it runs around each delivery.
    pub fn add_middleware(
        &mut self,
        middleware: impl Middleware<Dispatch, DispatchOutput> + 'static,
    ) {
        self.middleware.push(Arc::new(middleware));
    }

    /// Subscribes `handler` to events named `event_name` whose type is `E`.
    ///
    /// An event of that name published as another type is never silently skipped: it is a
    /// failed delivery to this subscriber in the [`PublishReport`] (a `WIRING_ERROR` naming
    /// both types), counted in [`EventBusMetrics::type_mismatches`](crate::EventBusMetrics)
    /// and logged as an error the first time; an [`EventRelay`](crate::EventRelay) meeting
    /// it stops with that error (its checkpoint before the event) instead of retrying.
    /// Events a relay delivers arrive as [`Envelope<E>`](crate::Envelope): subscribe to
    /// those with [`subscribe_envelope`](Self::subscribe_envelope).
    pub fn subscribe<E: Event>(
        &self,
        event_name: &str,
        handler: impl Handler<Request = Arc<E>, Response = ()> + 'static,
    ) -> SubscriptionId {
        self.add(
            Key::Name(event_name.to_owned()),
            event_name,
            Arc::new(handler),
        )
    }

    /// Subscribes an async closure or `async fn` to events named `event_name`, under the
    /// name `"{event_name} subscriber"`.
    ///
    /// Every subscriber of an event subscribed this way has that one name. Where names
    /// matter, name it: `bus.subscribe(event_name, flext_impl::handler_fn("mailer", f))`.
    /// An [`EventRelay`](crate::EventRelay) keeps each subscriber's progress under its name
    /// and refuses subscribers of one event that share one; and a subscriber's
    /// [`Repository::execute`](crate::Repository::execute) derives its event ids from its
    /// name, so two subscribers sharing a name that change one aggregate for one event
    /// make one change (the second gets the first's result).
    pub fn subscribe_fn<E, F, Fut>(&self, event_name: &str, f: F) -> SubscriptionId
    where
        E: Event,
        F: Fn(Arc<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FlextResult<()>> + Send + 'static,
    {
        let name = format!("{event_name} subscriber");
        self.subscribe(event_name, handler_fn(name, f))
    }

    /// Subscribes `handler` to the events named `event_name` that an
    /// [`EventRelay`](crate::EventRelay) delivers from the store: each arrives as an
    /// [`Envelope<E>`](crate::Envelope) (the event with its stream, version, position and
    /// metadata), which is what the relay publishes. Subscribing these with
    /// [`subscribe`](Self::subscribe) and `Arc<E>` would never match.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flext_cqrs::{Envelope, EventBus};
    /// use flext_protocols::Event;
    /// use serde::Deserialize;
    ///
    /// #[derive(Deserialize)]
    /// struct Deposited { amount: u64 }
    /// impl Event for Deposited { fn event_name(&self) -> &str { "Deposited" } }
    ///
    /// let bus = EventBus::new();
    /// bus.subscribe_envelope_fn("Deposited", "notifier", |event: Arc<Envelope<Deposited>>| async move {
    ///     println!("{} got {}", event.stream_id, event.payload.amount);
    ///     Ok(())
    /// });
    /// assert_eq!(bus.subscribers::<Envelope<Deposited>>("Deposited")[0].name, "notifier");
    /// ```
    pub fn subscribe_envelope<E: Event>(
        &self,
        event_name: &str,
        handler: impl Handler<Request = Arc<crate::Envelope<E>>, Response = ()> + 'static,
    ) -> SubscriptionId {
        self.subscribe::<crate::Envelope<E>>(event_name, handler)
    }

    /// [`subscribe_envelope`](Self::subscribe_envelope) of an async closure or `async fn`
    /// under the subscriber name `name` (a relay keeps each subscriber's progress under
    /// its name, so each needs its own).
    pub fn subscribe_envelope_fn<E, F, Fut>(
        &self,
        event_name: &str,
        name: &str,
        f: F,
    ) -> SubscriptionId
    where
        E: Event,
        F: Fn(Arc<crate::Envelope<E>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FlextResult<()>> + Send + 'static,
    {
        self.subscribe_envelope(event_name, handler_fn(name.to_owned(), f))
    }

    /// Subscribes `handler` to every event of type `E`, whatever its name.
    pub fn subscribe_type<E: Event>(
        &self,
        handler: impl Handler<Request = Arc<E>, Response = ()> + 'static,
    ) -> SubscriptionId {
        self.add(
            Key::Type(TypeId::of::<E>()),
            &short_type_name::<E>(),
            Arc::new(handler),
        )
    }

    /// Subscribes an async closure or `async fn` to every event of type `E`, under the
    /// name `"{type} subscriber"`: every subscriber subscribed this way to `E` shares it,
    /// with what that means for relays and repository ids (see
    /// [`subscribe_fn`](Self::subscribe_fn)); name one with
    /// `bus.subscribe_type(flext_impl::handler_fn("mailer", f))`.
    pub fn subscribe_type_fn<E, F, Fut>(&self, f: F) -> SubscriptionId
    where
        E: Event,
        F: Fn(Arc<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FlextResult<()>> + Send + 'static,
    {
        let name = format!("{} subscriber", short_type_name::<E>());
        self.subscribe_type(handler_fn(name, f))
    }

    /// Subscribes a synchronous function to events named `event_name`, under the name
    /// `"{event_name} subscriber"` (see [`subscribe_fn`](Self::subscribe_fn) on names).
    ///
    /// A subscriber with no `.await` in it is cheaper this way than as an async closure: on
    /// a bus without middleware it is called directly, with no future and no allocation,
    /// so a publish allocates the same whatever the number of such subscribers. It borrows
    /// the shared event (clone the `Arc` to keep it), so a delivery does not touch its
    /// reference count either. Everything
    /// else is as for any subscriber: it runs with the event's metadata as the
    /// [current](crate::current_metadata) one, inside the `flext.dispatch` span when one is
    /// wanted, and a panic is a failed delivery (`OPERATION_ERROR`); with bus middleware it
    /// is delivered through the middleware like the others.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use flext_cqrs::EventBus;
    /// use flext_protocols::Event;
    ///
    /// struct Deposited(u64);
    /// impl Event for Deposited { fn event_name(&self) -> &str { "Deposited" } }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let total = Arc::new(AtomicU64::new(0));
    /// let bus = EventBus::new();
    /// let sum = total.clone();
    /// bus.subscribe_sync_fn("Deposited", move |event: &Arc<Deposited>| {
    ///     sum.fetch_add(event.0, Ordering::Relaxed);
    ///     Ok(())
    /// });
    /// assert_eq!(bus.publish(Deposited(30)).await.delivered, 1);
    /// assert_eq!(total.load(Ordering::Relaxed), 30);
    /// # }
    /// ```
    pub fn subscribe_sync_fn<E, F>(&self, event_name: &str, f: F) -> SubscriptionId
    where
        E: Event,
        F: Fn(&Arc<E>) -> FlextResult<()> + Send + Sync + 'static,
    {
        let name = format!("{event_name} subscriber");
        self.add_sync(
            Key::Name(event_name.to_owned()),
            event_name,
            name,
            Arc::new(f),
        )
    }

    /// Subscribes a synchronous function to every event of type `E`, whatever its name,
    /// under the name `"{type} subscriber"`: [`subscribe_type_fn`](Self::subscribe_type_fn)
    /// without a future, as [`subscribe_sync_fn`](Self::subscribe_sync_fn) is for names.
    pub fn subscribe_type_sync_fn<E, F>(&self, f: F) -> SubscriptionId
    where
        E: Event,
        F: Fn(&Arc<E>) -> FlextResult<()> + Send + Sync + 'static,
    {
        let type_name = short_type_name::<E>();
        let name = format!("{type_name} subscriber");
        self.add_sync(Key::Type(TypeId::of::<E>()), &type_name, name, Arc::new(f))
    }

    fn add_sync<E: Event>(
        &self,
        key: Key,
        label: &str,
        name: String,
        f: SyncSubscriberFn<E>,
    ) -> SubscriptionId {
        let call = f.clone();
        let handler = flext_impl::sync_handler_fn(name, move |event: Arc<E>| call(&event));
        self.add_subscriber(key, label, Arc::new(handler), Some(Box::new(f)))
    }

    fn add<E: Event>(
        &self,
        key: Key,
        label: &str,
        handler: BoxHandler<Arc<E>, ()>,
    ) -> SubscriptionId {
        self.add_subscriber(key, label, handler, None)
    }

    fn add_subscriber<E: Event>(
        &self,
        key: Key,
        label: &str,
        handler: BoxHandler<Arc<E>, ()>,
        sync: Option<Box<dyn Any + Send + Sync>>,
    ) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Relaxed));
        let subscriber = Arc::new(Subscriber {
            id,
            event_type: TypeId::of::<E>(),
            event_type_name: short_type_name::<E>(),
            route: Route::subscriber(label, handler),
            sync,
            mismatches: AtomicU64::new(0),
        });
        let append = |list: &mut Subscribers| {
            let mut next: Vec<Arc<Subscriber>> = list.to_vec();
            next.push(subscriber.clone());
            *list = Arc::from(next);
        };
        match &key {
            Key::Name(name) => {
                let mut list = self.by_name.entry(name.clone()).or_insert_with(empty);
                append(&mut list);
                // While the list is locked, so a last unsubscribe of the name cannot
                // remove the name's counts in between.
                self.counts.subscribed(name);
            }
            Key::Type(type_id) => {
                // Counted first, so a publish that can find the subscriber looks.
                self.type_subscriptions.fetch_add(1, Relaxed);
                append(&mut self.by_type.entry(*type_id).or_insert_with(empty));
            }
        }
        // Indexed only once it can be found, so an unsubscribe never misses it.
        self.index.insert(id, key);
        id
    }

    /// Removes a subscription; `NOT_FOUND` if there is none with that id.
    pub fn unsubscribe(&self, id: SubscriptionId) -> FlextResult<()> {
        let Some((_, key)) = self.index.remove(&id) else {
            return Err(FlextError::not_found(format!(
                "No subscription with id {id}"
            )));
        };
        match key {
            Key::Name(name) => remove_from(&self.by_name, name, id, |name| {
                self.counts.unsubscribed(name)
            }),
            Key::Type(type_id) => {
                remove_from(&self.by_type, type_id, id, |_| {});
                self.type_subscriptions.fetch_sub(1, Relaxed);
            }
        }
        Ok(())
    }

    /// Active subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.index.len()
    }

    /// Publishes `event` to every subscriber of its name and of its type and reports how
    /// each delivery went.
    pub async fn publish<E: Event>(&self, event: E) -> PublishReport {
        self.publish_inner(event, None).await
    }

    /// Publishes `event` with the given metadata (its correlation id reaches the tracing
    /// spans and the middleware of every delivery).
    pub async fn publish_with<E: Event>(
        &self,
        event: E,
        metadata: MessageMetadata,
    ) -> PublishReport {
        self.publish_inner(event, Some(&metadata)).await
    }

    async fn publish_inner<E: Event>(
        &self,
        event: E,
        metadata: Option<&MessageMetadata>,
    ) -> PublishReport {
        let event = Arc::new(event);
        let mut report = PublishReport {
            event_name: event.event_name().to_owned(),
            delivered: 0,
            failures: Vec::new(),
        };
        let subscribers = self.subscribers_of::<E>(&report.event_name);
        let subscribers = subscribers.as_slice();
        // Whether the deliveries get spans, asked once for all of them.
        let traced = wants_span(self.instrumentation.tracing);
        match self.delivery {
            Delivery::Sequential => {
                for subscriber in subscribers {
                    let result = self.deliver(subscriber, &event, metadata, traced).await;
                    report.record(subscriber, result);
                }
            }
            Delivery::Concurrent => {
                let deliveries = subscribers
                    .iter()
                    .map(|subscriber| self.deliver(subscriber, &event, metadata, traced));
                let results = futures_util::future::join_all(deliveries).await;
                for (subscriber, result) in subscribers.iter().zip(results) {
                    report.record(subscriber, result);
                }
            }
        }
        if self.instrumentation.metrics {
            self.counts.record(
                &report.event_name,
                1,
                report.delivered as u64,
                report.failures.len() as u64,
            );
        }
        report
    }

    /// Delivers `event` to one subscriber, checking first that it expects this type, in a
    /// `flext.dispatch` span when `traced` (the caller asked [`wants_span`]). Not
    /// an `async fn`: a synchronous subscriber's answer is ready at once, and an async
    /// one's is the route's own future, so a delivery nests no state machine of its own.
    fn deliver<'a, E: Event>(
        &'a self,
        subscriber: &'a Subscriber,
        event: &Arc<E>,
        metadata: Option<&MessageMetadata>,
        traced: bool,
    ) -> Either<Ready<FlextResult<()>>, RouteFuture<'a, ()>> {
        let now = |result| Either::Left(future::ready(result));
        if let Err(error) = subscriber.expects::<E>(&self.counts) {
            return now(Err(error));
        }
        let middleware = self.middleware.as_slice();
        if middleware.is_empty()
            && let Some(call) = subscriber
                .sync
                .as_ref()
                .and_then(|sync| sync.downcast_ref::<SyncSubscriberFn<E>>())
        {
            // A synchronous subscriber: called here, no future.
            return now(subscriber.route.call_sync(&**call, event, metadata, traced));
        }
        // Guarded too: a hand-written handler may panic before it returns its future.
        let started = flext_impl::catch_panic_sync(|| {
            subscriber
                .route
                .start::<Arc<E>, ()>(middleware, event.clone(), metadata, traced)
        });
        match started {
            Ok(delivery) => Either::Right(delivery),
            Err(error) => now(Err(error)),
        }
    }

    /// Subscribers of `event_name` and of `E`, in subscription order. The common case, one
    /// kind of subscription, shares the stored list without copying it.
    fn subscribers_of<E: Event>(&self, event_name: &str) -> Recipients {
        let by_name = self.by_name.get(event_name).map(|list| list.clone());
        let by_type = if self.type_subscriptions.load(Relaxed) == 0 {
            None
        } else {
            self.by_type
                .get(&TypeId::of::<E>())
                .map(|list| list.clone())
        };
        match (by_name, by_type) {
            (None, None) => Recipients::None,
            (Some(list), None) | (None, Some(list)) => Recipients::Shared(list),
            (Some(a), Some(b)) => {
                let mut merged: Vec<Arc<Subscriber>> = a.iter().chain(b.iter()).cloned().collect();
                merged.sort_by_key(|s| s.id);
                Recipients::Merged(merged)
            }
        }
    }
}

/// The subscribers one publish delivers to.
enum Recipients {
    None,
    Shared(Subscribers),
    Merged(Vec<Arc<Subscriber>>),
}

impl Recipients {
    fn as_slice(&self) -> &[Arc<Subscriber>] {
        match self {
            Recipients::None => &[],
            Recipients::Shared(list) => list,
            Recipients::Merged(list) => list,
        }
    }
}

impl PublishReport {
    fn record(&mut self, subscriber: &Subscriber, result: FlextResult<()>) {
        match result {
            Ok(()) => self.delivered += 1,
            Err(error) => self.failures.push(DeliveryFailure {
                subscription: subscriber.id,
                subscriber: subscriber.route.handler_name().to_owned(),
                error,
            }),
        }
    }
}

fn empty() -> Subscribers {
    Arc::from(Vec::new())
}

/// Removes subscription `id` from the list of `key`, and the list when it empties, calling
/// `emptied` first while the list is still locked.
fn remove_from<K: std::hash::Hash + Eq>(
    map: &DashMap<K, Subscribers, FxBuildHasher>,
    key: K,
    id: SubscriptionId,
    emptied: impl FnOnce(&K),
) {
    if let dashmap::Entry::Occupied(mut list) = map.entry(key) {
        let next: Vec<Arc<Subscriber>> =
            list.get().iter().filter(|s| s.id != id).cloned().collect();
        if next.is_empty() {
            emptied(list.key());
            list.remove();
        } else {
            list.insert(Arc::from(next));
        }
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("subscriptions", &self.subscription_count())
            .field("middleware", &self.middleware.len())
            .field("delivery", &self.delivery)
            .field("instrumentation", &self.instrumentation)
            .finish()
    }
}
