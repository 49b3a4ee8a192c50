//! EventBus metrics per event name stay bounded whatever names are published: names with
//! a name subscription, a capped number of others, and `(other)`.

use std::sync::Arc;

use flext_cqrs::EventBus;
use flext_protocols::{Event, MetricsSource};

/// An event whose name is data.
struct Named(String);

impl Event for Named {
    fn event_name(&self) -> &str {
        &self.0
    }
}

const CAP: usize = EventBus::MAX_UNSUBSCRIBED_NAMES;

#[tokio::test]
async fn names_published_without_subscribers_are_capped_and_the_rest_count_as_other() {
    let bus = EventBus::new();
    for i in 0..10_000 {
        bus.publish(Named(format!("order-{i}"))).await;
    }
    let m = bus.metrics();
    assert_eq!(m.events.len(), CAP + 1);
    assert_eq!(m.events["order-0"].published, 1);
    assert_eq!(
        m.events[EventBus::OTHER_EVENTS].published,
        10_000 - CAP as u64
    );
    assert_eq!(m.events_published, 10_000);
    assert_eq!(m.events.values().map(|e| e.published).sum::<u64>(), 10_000);
    // What a scrape exports: five bus totals and three series per counted name.
    assert_eq!(bus.metric_set().samples.len(), 5 + 3 * (CAP + 1));
}

#[tokio::test]
async fn a_name_with_a_subscriber_is_counted_on_its_own_past_the_cap() {
    let bus = EventBus::new();
    for i in 0..CAP + 5 {
        bus.publish(Named(format!("noise-{i}"))).await;
    }
    bus.subscribe_fn("Shipped", |_: Arc<Named>| async { Ok(()) });
    assert_eq!(bus.metrics().events["Shipped"].published, 0);
    bus.publish(Named("Shipped".into())).await;
    let m = bus.metrics();
    assert_eq!(
        (m.events["Shipped"].published, m.events["Shipped"].delivered),
        (1, 1)
    );
    assert_eq!(m.events[EventBus::OTHER_EVENTS].published, 5);
}

#[tokio::test]
async fn a_name_leaves_the_metrics_with_its_last_subscriber_and_its_counts_stay_in_other() {
    let bus = EventBus::new();
    for i in 0..1_000 {
        let name = format!("reply-{i}");
        let id = bus.subscribe_fn(&name, |_: Arc<Named>| async { Ok(()) });
        bus.publish(Named(name)).await;
        bus.unsubscribe(id).unwrap();
    }
    let m = bus.metrics();
    assert_eq!(
        m.events.len(),
        1,
        "{:?}",
        m.events.keys().take(3).collect::<Vec<_>>()
    );
    let other = m.events[EventBus::OTHER_EVENTS];
    assert_eq!((other.published, other.delivered), (1_000, 1_000));
    assert_eq!((m.events_published, m.deliveries), (1_000, 1_000));
}

#[tokio::test]
async fn an_event_named_like_other_counts_as_other() {
    let bus = EventBus::new();
    bus.subscribe_fn(EventBus::OTHER_EVENTS, |_: Arc<Named>| async { Ok(()) });
    bus.publish(Named(EventBus::OTHER_EVENTS.into())).await;
    let m = bus.metrics();
    assert_eq!(m.events.len(), 1);
    assert_eq!(m.events[EventBus::OTHER_EVENTS].delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrent_churn_the_counts_stay_bounded_and_add_up() {
    let bus = Arc::new(EventBus::new());
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    let name = format!("t{task}-{}", i % 50);
                    let id = bus.subscribe_fn(&name, |_: Arc<Named>| async { Ok(()) });
                    bus.publish(Named(name.clone())).await;
                    bus.publish(Named(format!("unheard-{task}-{i}"))).await;
                    bus.unsubscribe(id).unwrap();
                    let _ = bus
                        .deliver_to(id, Arc::new(Named(name)), None)
                        .await
                        .unwrap_err();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let m = bus.metrics();
    assert!(m.events.len() <= CAP + 1, "{} names", m.events.len());
    assert_eq!(m.events_published, 4 * 500 * 2);
    assert_eq!(m.deliveries, 4 * 500);
    let sum = |f: fn(&flext_cqrs::EventMetrics) -> u64| m.events.values().map(f).sum::<u64>();
    assert_eq!(sum(|e| e.published), m.events_published);
    assert_eq!(sum(|e| e.delivered), m.deliveries);
    assert_eq!(sum(|e| e.failed), m.failed_deliveries);
}

#[tokio::test]
async fn a_capped_name_that_loses_its_subscriber_frees_its_place_for_another() {
    let bus = EventBus::new();
    for i in 0..CAP {
        bus.publish(Named(format!("order-{i}"))).await;
    }
    let id = bus.subscribe_fn("order-0", |_: Arc<Named>| async { Ok(()) });
    bus.unsubscribe(id).unwrap();
    bus.publish(Named("late".into())).await;
    let m = bus.metrics();
    assert_eq!(m.events["late"].published, 1);
    assert_eq!(
        m.events[EventBus::OTHER_EVENTS].published,
        1,
        "order-0's count"
    );
    assert!(!m.events.contains_key("order-0"));
}
