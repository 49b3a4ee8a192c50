//! The bus's counts per event name ([`EventBus::metrics`] and its [`MetricsSource`]), kept
//! bounded: event names come from published data, and each counted name is a series a
//! metrics scrape keeps for good.
//!
//! A name with a name subscription has counts of its own from the moment it is subscribed
//! until its last subscription goes, when they move into [`EventBus::OTHER_EVENTS`]. Any
//! other name (published with no subscriber, or reaching type subscribers only) has counts
//! of its own while fewer than [`EventBus::MAX_UNSUBSCRIBED_NAMES`] such names are
//! counted; after that it is counted under [`EventBus::OTHER_EVENTS`]. The totals count
//! every publish and delivery whatever its name.

use std::sync::atomic::{AtomicUsize, Ordering::AcqRel};

use super::*;

/// The counts of an [`EventBus`].
#[derive(Default)]
pub(super) struct Counts {
    by_name: DashMap<String, Counters, FxBuildHasher>,
    /// Names in `by_name` counted without a name subscription, at most
    /// [`EventBus::MAX_UNSUBSCRIBED_NAMES`].
    unsubscribed: AtomicUsize,
    other: Counters,
    totals: Counters,
    /// Deliveries refused because the subscriber expects another type.
    mismatches: AtomicU64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Whether this name holds one of the slots of names without a name subscription.
    unsubscribed: bool,
}

impl Counters {
    /// Adds the counts; a zero is not added (an atomic add costs a locked instruction, and
    /// most publishes fail nothing).
    fn add(&self, published: u64, delivered: u64, failed: u64) {
        for (counter, n) in [
            (&self.published, published),
            (&self.delivered, delivered),
            (&self.failed, failed),
        ] {
            if n != 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    fn snapshot(&self) -> EventMetrics {
        EventMetrics {
            published: self.published.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}

impl Counts {
    /// `name` has a name subscription: it gets counts of its own. Called while the
    /// subscription list of `name` is locked, so a last unsubscribe cannot interleave.
    pub(super) fn subscribed(&self, name: &str) {
        if name != EventBus::OTHER_EVENTS {
            self.by_name.entry(name.to_owned()).or_default();
        }
    }

    /// The last name subscription of `name` went: its counts move into
    /// [`EventBus::OTHER_EVENTS`], so every total stays the sum of the names. Called while
    /// the subscription list of `name` is locked.
    pub(super) fn unsubscribed(&self, name: &str) {
        // Removing takes the shard's write lock, so no publish is adding to it meanwhile.
        if let Some((_, counters)) = self.by_name.remove(name) {
            let gone = counters.snapshot();
            self.other.add(gone.published, gone.delivered, gone.failed);
            if counters.unsubscribed {
                self.unsubscribed.fetch_sub(1, AcqRel);
            }
        }
    }

    /// Counts an event a subscriber of its name could not take (another type).
    pub(super) fn mismatched(&self) {
        self.mismatches.fetch_add(1, Relaxed);
    }

    /// Counts a publish or delivery of `name`.
    pub(super) fn record(&self, name: &str, published: u64, delivered: u64, failed: u64) {
        self.totals.add(published, delivered, failed);
        if let Some(counters) = self.by_name.get(name) {
            counters.add(published, delivered, failed);
            return;
        }
        let slot = || {
            self.unsubscribed
                .fetch_update(AcqRel, Relaxed, |n| {
                    (n < EventBus::MAX_UNSUBSCRIBED_NAMES).then_some(n + 1)
                })
                .is_ok()
        };
        if name == EventBus::OTHER_EVENTS || !slot() {
            self.other.add(published, delivered, failed);
            return;
        }
        match self.by_name.entry(name.to_owned()) {
            dashmap::Entry::Occupied(entry) => {
                // Counted meanwhile: the slot is not needed.
                self.unsubscribed.fetch_sub(1, AcqRel);
                entry.get().add(published, delivered, failed);
            }
            dashmap::Entry::Vacant(entry) => {
                let counters = Counters {
                    unsubscribed: true,
                    ..Counters::default()
                };
                counters.add(published, delivered, failed);
                entry.insert(counters);
            }
        }
    }
}

impl EventBus {
    /// The name under which [`metrics`](Self::metrics) counts the events of every name
    /// that has no counts of its own (see [`MAX_UNSUBSCRIBED_NAMES`](Self::MAX_UNSUBSCRIBED_NAMES)).
    /// An event published under this very name is counted there too.
    pub const OTHER_EVENTS: &str = "(other)";

    /// How many event names without a name subscription [`metrics`](Self::metrics) counts
    /// one by one; events of any further such name count under
    /// [`OTHER_EVENTS`](Self::OTHER_EVENTS). Names with a name subscription always have
    /// counts of their own, from subscribing until their last unsubscribe (their counts
    /// then move to [`OTHER_EVENTS`](Self::OTHER_EVENTS)). So the names a metrics scrape
    /// sees are bounded by the subscriptions, whatever names are published.
    ///
    /// ```
    /// use flext_cqrs::EventBus;
    /// use flext_protocols::Event;
    ///
    /// struct Named(String);
    /// impl Event for Named { fn event_name(&self) -> &str { &self.0 } }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let bus = EventBus::new();
    /// for i in 0..EventBus::MAX_UNSUBSCRIBED_NAMES + 10 {
    ///     bus.publish(Named(format!("order-{i}"))).await;
    /// }
    /// let metrics = bus.metrics();
    /// assert_eq!(metrics.events.len(), EventBus::MAX_UNSUBSCRIBED_NAMES + 1);
    /// assert_eq!(metrics.events[EventBus::OTHER_EVENTS].published, 10);
    /// assert_eq!(metrics.events_published, EventBus::MAX_UNSUBSCRIBED_NAMES as u64 + 10);
    /// # }
    /// ```
    pub const MAX_UNSUBSCRIBED_NAMES: usize = 64;

    /// A snapshot of the bus's metrics. `events` holds the names counted one by one (see
    /// [`MAX_UNSUBSCRIBED_NAMES`](Self::MAX_UNSUBSCRIBED_NAMES)) and
    /// [`OTHER_EVENTS`](Self::OTHER_EVENTS) once it has counted anything.
    pub fn metrics(&self) -> EventBusMetrics {
        let counts = &self.counts;
        let mut events: BTreeMap<String, EventMetrics> = counts
            .by_name
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().snapshot()))
            .collect();
        let other = counts.other.snapshot();
        if other != EventMetrics::default() {
            events.insert(Self::OTHER_EVENTS.to_owned(), other);
        }
        let totals = counts.totals.snapshot();
        EventBusMetrics {
            events_published: totals.published,
            deliveries: totals.delivered,
            failed_deliveries: totals.failed,
            type_mismatches: counts.mismatches.load(Relaxed),
            subscriptions: self.subscription_count(),
            events,
        }
    }
}

impl MetricsSource for EventBus {
    fn metric_set(&self) -> MetricSet {
        let m = self.metrics();
        let mut set = MetricSet::new("event_bus");
        set.push(
            "events_published",
            "Events published.",
            MetricValue::Counter(m.events_published),
        );
        set.push(
            "deliveries",
            "Successful deliveries.",
            MetricValue::Counter(m.deliveries),
        );
        set.push(
            "failed_deliveries",
            "Failed deliveries.",
            MetricValue::Counter(m.failed_deliveries),
        );
        set.push(
            "type_mismatches",
            "Deliveries refused because the subscriber expects another type.",
            MetricValue::Counter(m.type_mismatches),
        );
        set.push(
            "subscriptions",
            "Active subscriptions.",
            MetricValue::Gauge(m.subscriptions as f64),
        );
        for (name, e) in &m.events {
            set.push_group(
                ("event", name),
                [
                    (
                        "published",
                        "Events published by name.",
                        MetricValue::Counter(e.published),
                    ),
                    (
                        "delivered",
                        "Deliveries by event name.",
                        MetricValue::Counter(e.delivered),
                    ),
                    (
                        "failed",
                        "Failed deliveries by event name.",
                        MetricValue::Counter(e.failed),
                    ),
                ],
            );
        }
        set
    }
}
