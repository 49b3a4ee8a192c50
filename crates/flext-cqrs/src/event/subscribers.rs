//! Who a publish reaches ([`EventBus::subscribers`], [`EventBus::subscriptions`]), and
//! delivery to one chosen subscriber ([`EventBus::deliver_to`]).

use super::*;

/// One subscription, as [`EventBus::subscribers`] and [`EventBus::subscriptions`] list it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubscriberInfo {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// The subscriber's name (its handler's name).
    pub name: String,
}

/// Delivery to one chosen subscriber, for callers that keep each subscriber's progress
/// themselves (the [`EventRelay`](crate::EventRelay)).
impl EventBus {
    /// The subscribers a [`publish`](Self::publish) of an `E` named `event_name` would
    /// deliver to, in delivery order.
    pub fn subscribers<E: Event>(&self, event_name: &str) -> Vec<SubscriberInfo> {
        self.subscribers_of::<E>(event_name)
            .as_slice()
            .iter()
            .map(|subscriber| subscriber.info())
            .collect()
    }

    /// Every subscription of the bus, by name and by type, in subscription order.
    pub fn subscriptions(&self) -> Vec<SubscriberInfo> {
        let mut all: Vec<Arc<Subscriber>> = self
            .by_name
            .iter()
            .flat_map(|list| list.value().to_vec())
            .chain(self.by_type.iter().flat_map(|list| list.value().to_vec()))
            .collect();
        all.sort_by_key(|subscriber| subscriber.id);
        all.iter().map(|subscriber| subscriber.info()).collect()
    }

    /// Delivers `event` to the one subscription `subscription`, through the bus middleware
    /// like a publish, and returns that subscriber's result.
    ///
    /// `NOT_FOUND` when there is no such subscription (any more); `INVALID_ARGUMENT` when
    /// it listens to another event name; `WIRING_ERROR` when it expects another type.
    /// Counted in the metrics as a delivery (or a failed one) of the event's name, not as
    /// a publish.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flext_cqrs::EventBus;
    /// use flext_protocols::Event;
    ///
    /// struct Shipped;
    /// impl Event for Shipped { fn event_name(&self) -> &str { "Shipped" } }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> flext_types::FlextResult<()> {
    /// let bus = EventBus::new();
    /// bus.subscribe_fn("Shipped", |_: Arc<Shipped>| async { Ok(()) });
    /// let only = bus.subscribers::<Shipped>("Shipped")[0].subscription;
    /// bus.deliver_to(only, Arc::new(Shipped), None).await?;
    /// assert_eq!(bus.metrics().deliveries, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn deliver_to<E: Event>(
        &self,
        subscription: SubscriptionId,
        event: Arc<E>,
        metadata: Option<&MessageMetadata>,
    ) -> FlextResult<()> {
        let subscriber = self.subscription(subscription)?;
        if let Key::Name(name) = &subscriber.0
            && name != event.event_name()
        {
            return Err(FlextError::invalid_argument(format!(
                "Subscription {subscription} listens to '{name}', not '{}'",
                event.event_name()
            )));
        }
        let traced = crate::routes::wants_span(self.instrumentation.tracing);
        let result = self.deliver(&subscriber.1, &event, metadata, traced).await;
        if self.instrumentation.metrics {
            let failed = u64::from(result.is_err());
            self.counts
                .record(event.event_name(), 0, 1 - failed, failed);
        }
        result
    }

    /// The subscription `id` and whom it listens to.
    pub(super) fn subscription(&self, id: SubscriptionId) -> FlextResult<(Key, Arc<Subscriber>)> {
        let missing = || FlextError::not_found(format!("No subscription with id {id}"));
        let key = self.index.get(&id).ok_or_else(missing)?.clone();
        let list = match &key {
            Key::Name(name) => self.by_name.get(name).map(|list| list.clone()),
            Key::Type(type_id) => self.by_type.get(type_id).map(|list| list.clone()),
        }
        .ok_or_else(missing)?;
        let subscriber = list
            .iter()
            .find(|subscriber| subscriber.id == id)
            .cloned()
            .ok_or_else(missing)?;
        Ok((key, subscriber))
    }
}

impl Subscriber {
    /// `Ok` when the subscriber takes events of type `E`. Otherwise the event of its name
    /// was published as another type: a `WIRING_ERROR` naming both (marked to stop a
    /// runner that meets it, as a relay's setup fault does), counted in the bus's
    /// `type_mismatches`, logged as an error the first time for this subscriber.
    pub(super) fn expects<E: Event>(&self, counts: &counters::Counts) -> FlextResult<()> {
        if self.event_type == TypeId::of::<E>() {
            return Ok(());
        }
        let published = short_type_name::<E>();
        let hint = if published == format!("Envelope<{}>", self.event_type_name) {
            " (events from an EventRelay arrive as Envelope<E>: subscribe with \
             EventBus::subscribe_envelope)"
        } else {
            ""
        };
        let message = format!(
            "Subscriber '{}' of {} expects {}, but the event was published as {published}{hint}",
            self.route.handler_name(),
            self.route.message_type(),
            self.event_type_name,
        );
        counts.mismatched();
        if self.mismatches.fetch_add(1, Relaxed) == 0 {
            tracing::error!(
                subscriber = %self.route.handler_name(),
                expects = %self.event_type_name,
                published = %published,
                "{message}; its events of this type are not delivered (logged once)"
            );
        }
        // The setup's fault, not the event's: a runner (a relay) stops on it rather than
        // retrying or dead-lettering event after event.
        Err(crate::es::retry::stopping(
            FlextError::wiring(message).with_data(serde_json::json!({
                "subscriber": self.route.handler_name(),
                "expects": self.event_type_name,
                "published": published,
            })),
        ))
    }

    fn info(&self) -> SubscriberInfo {
        SubscriberInfo {
            subscription: self.id,
            name: self.route.handler_name().to_owned(),
        }
    }
}
