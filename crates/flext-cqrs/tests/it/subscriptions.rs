//! Subscriptions that cannot silently miss: relayed events reach typed envelope
//! subscribers, and a subscriber whose type never matches what is published under its
//! name is reported — in the publish's report, counted, logged once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flext_constants::ErrorCode;
use flext_cqrs::{Envelope, EventBus, EventRelay, InMemoryEventStore, ProjectionRunner};
use flext_protocols::{Event, EventStore, MetricsSource};
use flext_types::{ExpectedVersion, JsonPayload, MetricValue, NewEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Withdrawn {
    amount: u64,
}

impl Event for Withdrawn {
    fn event_name(&self) -> &str {
        "Withdrawn"
    }
}

async fn withdraw(store: &InMemoryEventStore, amount: u64) -> u64 {
    let event = NewEvent::new(
        "Withdrawn",
        JsonPayload::encode(&Withdrawn { amount }).expect("JSON"),
    );
    store
        .append("account-1", ExpectedVersion::Any, vec![event])
        .await
        .expect("appended")
        .last_position
}

#[tokio::test]
async fn relayed_events_reach_envelope_subscribers() {
    let store = InMemoryEventStore::new();
    withdraw(&store, 700).await;
    withdraw(&store, 20).await;
    let bus = Arc::new(EventBus::new());
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    bus.subscribe_envelope_fn(
        "Withdrawn",
        "large_withdrawals",
        move |event: Arc<Envelope<Withdrawn>>| {
            let counted = counted.clone();
            async move {
                assert_eq!(&*event.stream_id, "account-1");
                if event.payload.amount >= 500 {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        },
    );
    let relay = Arc::new(EventRelay::<Withdrawn>::new(
        "notifications",
        bus.clone(),
        Arc::new(store.clone()),
    ));
    ProjectionRunner::new(Arc::new(store.clone()), Arc::new(store.clone()), relay)
        .catch_up()
        .await
        .expect("caught up");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(bus.metrics().type_mismatches, 0);
}

#[tokio::test]
async fn a_relay_meeting_a_plainly_typed_subscriber_stops_saying_why() {
    let store = InMemoryEventStore::new();
    withdraw(&store, 700).await;
    let bus = Arc::new(EventBus::new());
    // The mistake: `Arc<Withdrawn>` where the relay publishes `Arc<Envelope<Withdrawn>>`.
    bus.subscribe_fn("Withdrawn", |_: Arc<Withdrawn>| async { Ok(()) });
    let relay = Arc::new(EventRelay::<Withdrawn>::new(
        "notifications",
        bus.clone(),
        Arc::new(store.clone()),
    ));
    let runner = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        relay.clone(),
    );
    let error = runner.catch_up().await.expect_err("the relay stops");
    assert_eq!(error.code(), ErrorCode::WiringError);
    assert!(
        error
            .message()
            .contains("subscribe with EventBus::subscribe_envelope"),
        "{error}"
    );
    // Tried once, not retried, nothing dead-lettered, the checkpoint before the event.
    let metrics = bus.metrics();
    assert_eq!(
        (
            metrics.type_mismatches,
            metrics.deliveries,
            metrics.failed_deliveries
        ),
        (1, 0, 1)
    );
    assert!(
        relay
            .dead_letters("Withdrawn subscriber")
            .await
            .expect("letters")
            .is_empty()
    );
    assert_eq!(runner.position().await.expect("a position"), 0);
}

#[test]
fn a_mismatched_subscriber_is_reported_counted_and_logged_once() {
    let errors = Arc::new(AtomicUsize::new(0));
    let subscriber = ErrorCounter(errors.clone());
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let bus = EventBus::new();
            bus.subscribe_fn("Withdrawn", |_: Arc<Withdrawn>| async { Ok(()) });
            let envelope = |amount| Envelope {
                event_id: uuid::Uuid::nil(),
                stream_id: Arc::from("account-1"),
                version: 1,
                position: 1,
                event_type: Arc::from("Withdrawn"),
                schema_version: 1,
                timestamp: time::OffsetDateTime::UNIX_EPOCH,
                metadata: Arc::default(),
                payload: Withdrawn { amount },
            };
            for amount in [1, 2, 3] {
                let report = bus.publish(envelope(amount)).await;
                assert_eq!((report.delivered, report.failures.len()), (0, 1));
                let error = &report.failures[0].error;
                assert_eq!(error.code(), ErrorCode::WiringError);
                assert_eq!(
                    error.message(),
                    "Subscriber 'Withdrawn subscriber' of Withdrawn expects Withdrawn, but \
                     the event was published as Envelope<Withdrawn> (events from an EventRelay \
                     arrive as Envelope<E>: subscribe with EventBus::subscribe_envelope)"
                );
                assert_eq!(
                    error.data().map(|d| d["expects"].clone()),
                    Some(serde_json::json!("Withdrawn"))
                );
            }
            let metrics = bus.metrics();
            assert_eq!((metrics.type_mismatches, metrics.failed_deliveries), (3, 3));
            let set = bus.metric_set();
            assert_eq!(set.get("type_mismatches"), Some(&MetricValue::Counter(3)));
            // The right type still reaches it.
            assert!(bus.publish(Withdrawn { amount: 4 }).await.is_success());
        });
    });
    assert_eq!(
        errors.load(Ordering::SeqCst),
        1,
        "logged once, not per event"
    );
}

/// Counts events logged at ERROR.
struct ErrorCounter(Arc<AtomicUsize>);

impl tracing::Subscriber for ErrorCounter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() == tracing::Level::ERROR
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
