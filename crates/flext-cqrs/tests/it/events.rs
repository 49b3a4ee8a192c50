//! EventBus: fan-out, isolation, order, unsubscribe, type checks, concurrency, metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_cqrs::{Delivery, EventBus};
use flext_impl::{EventHandler, handler_fn};
use flext_protocols::Event;
use flext_types::FlextError;

use crate::UserCreated;

type Log = Arc<Mutex<Vec<String>>>;

fn recorder(bus: &EventBus, log: &Log, label: &'static str) -> flext_cqrs::SubscriptionId {
    let log = log.clone();
    bus.subscribe_fn("UserCreated", move |event: Arc<UserCreated>| {
        log.lock()
            .unwrap()
            .push(format!("{label}:{}", event.user_id));
        async { Ok(()) }
    })
}

fn created(id: &str) -> UserCreated {
    UserCreated {
        user_id: id.to_owned(),
    }
}

#[tokio::test]
async fn publish_reaches_every_subscriber_in_subscription_order() {
    let bus = EventBus::new();
    let log: Log = Arc::default();
    recorder(&bus, &log, "first");
    let by_type_log = log.clone();
    bus.subscribe_type_fn(move |event: Arc<UserCreated>| {
        by_type_log
            .lock()
            .unwrap()
            .push(format!("by-type:{}", event.user_id));
        async { Ok(()) }
    });
    recorder(&bus, &log, "third");

    let report = bus.publish(created("user_1")).await;
    assert!(report.is_success());
    assert_eq!(
        (report.event_name.as_str(), report.delivered),
        ("UserCreated", 3)
    );
    assert_eq!(
        *log.lock().unwrap(),
        ["first:user_1", "by-type:user_1", "third:user_1"]
    );
}

#[tokio::test]
async fn a_failing_or_panicking_subscriber_does_not_stop_the_others() {
    let bus = EventBus::new();
    let log: Log = Arc::default();
    recorder(&bus, &log, "before");
    let failing = bus.subscribe(
        "UserCreated",
        handler_fn("mailer", |_: Arc<UserCreated>| async {
            Err(FlextError::storage("SMTP server unreachable"))
        }),
    );
    let panicking = bus.subscribe(
        "UserCreated",
        handler_fn("auditor", |_: Arc<UserCreated>| async {
            if true {
                panic!("audit log full");
            }
            Ok(())
        }),
    );
    recorder(&bus, &log, "after");

    let report = bus.publish(created("user_2")).await;
    assert_eq!(report.delivered, 2);
    assert_eq!(report.attempted(), 4);
    assert_eq!(*log.lock().unwrap(), ["before:user_2", "after:user_2"]);
    let failures: Vec<_> = report
        .failures
        .iter()
        .map(|f| {
            (
                f.subscription,
                f.subscriber.as_str(),
                f.error.code(),
                f.error.to_string(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            (
                failing,
                "mailer",
                ErrorCode::StorageError,
                "SMTP server unreachable".to_owned()
            ),
            (
                panicking,
                "auditor",
                ErrorCode::OperationError,
                "Handler execution failed: audit log full".to_owned()
            ),
        ]
    );
    let m = bus.metrics();
    assert_eq!(m.events["UserCreated"].published, 1);
    assert_eq!((m.deliveries, m.failed_deliveries), (2, 2));
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_unknown_ids_are_not_found() {
    let bus = EventBus::new();
    let log: Log = Arc::default();
    let first = recorder(&bus, &log, "first");
    recorder(&bus, &log, "second");
    bus.unsubscribe(first).unwrap();
    assert_eq!(bus.subscription_count(), 1);
    bus.publish(created("user_3")).await;
    assert_eq!(*log.lock().unwrap(), ["second:user_3"]);
    let err = bus.unsubscribe(first).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(err.to_string(), format!("No subscription with id {first}"));
}

#[tokio::test]
async fn publishing_with_no_subscribers_is_counted_and_delivers_nothing() {
    let bus = EventBus::new();
    let report = bus.publish(created("nobody")).await;
    assert_eq!((report.delivered, report.failures.len()), (0, 0));
    assert_eq!(bus.metrics().events["UserCreated"].published, 1);
}

struct OrderShipped;

impl Event for OrderShipped {
    fn event_name(&self) -> &str {
        "UserCreated"
    }
}

#[tokio::test]
async fn a_name_subscriber_of_another_type_gets_a_reported_failure() {
    let bus = EventBus::new();
    bus.subscribe_fn("UserCreated", |_: Arc<UserCreated>| async { Ok(()) });
    let report = bus.publish(OrderShipped).await;
    assert_eq!(report.delivered, 0);
    let failure = &report.failures[0];
    assert_eq!(failure.error.code(), ErrorCode::WiringError);
    assert_eq!(
        failure.error.to_string(),
        "Subscriber 'UserCreated subscriber' of UserCreated expects UserCreated, but the event was published as OrderShipped"
    );
}

enum AccountEvent {
    Opened,
    Closed,
}

impl Event for AccountEvent {
    fn event_name(&self) -> &str {
        match self {
            AccountEvent::Opened => "AccountOpened",
            AccountEvent::Closed => "AccountClosed",
        }
    }
}

#[tokio::test]
async fn a_type_subscriber_sees_every_name_of_its_type() {
    let bus = EventBus::new();
    let counter = Arc::new(EventHandler::from_fn(
        "account_audit",
        |_: Arc<AccountEvent>| async { Ok(()) },
    ));
    bus.subscribe_type(counter.clone());
    bus.publish(AccountEvent::Opened).await;
    bus.publish(AccountEvent::Closed).await;
    bus.publish(AccountEvent::Closed).await;
    let by_name = counter.events_by_name();
    assert_eq!((by_name["AccountOpened"], by_name["AccountClosed"]), (1, 2));
    let m = bus.metrics();
    assert_eq!(m.events["AccountClosed"].delivered, 2);
    assert_eq!(m.events_published, 3);
}

#[tokio::test(start_paused = true)]
async fn concurrent_delivery_runs_subscribers_at_once() {
    // Two subscribers that each wait for the other: only concurrent delivery completes.
    async fn publish_with(delivery: Delivery) -> bool {
        let bus = EventBus::new().with_delivery(delivery);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        for _ in 0..2 {
            let barrier = barrier.clone();
            bus.subscribe_fn("UserCreated", move |_: Arc<UserCreated>| {
                let barrier = barrier.clone();
                async move {
                    barrier.wait().await;
                    Ok(())
                }
            });
        }
        let publish = bus.publish(created("user_4"));
        match tokio::time::timeout(Duration::from_secs(1), publish).await {
            Ok(report) => report.delivered == 2,
            Err(_) => false,
        }
    }
    assert!(publish_with(Delivery::Concurrent).await);
    assert!(
        !publish_with(Delivery::Sequential).await,
        "sequential delivery waits in order"
    );
}

#[tokio::test]
async fn concurrent_delivery_reports_in_subscription_order() {
    let bus = EventBus::new().with_delivery(Delivery::Concurrent);
    for i in 0..5u64 {
        bus.subscribe(
            "UserCreated",
            handler_fn(format!("s{i}"), move |_: Arc<UserCreated>| async move {
                tokio::task::yield_now().await;
                if i % 2 == 0 {
                    Err(FlextError::operation(format!("s{i} failed")))
                } else {
                    Ok(())
                }
            }),
        );
    }
    let report = bus.publish(created("user_5")).await;
    let names: Vec<_> = report
        .failures
        .iter()
        .map(|f| f.subscriber.as_str())
        .collect();
    assert_eq!(names, ["s0", "s2", "s4"]);
    assert_eq!(report.delivered, 2);
}

#[tokio::test]
async fn subscribers_and_subscriptions_list_who_a_publish_reaches() {
    let bus = EventBus::new();
    let log: Log = Arc::default();
    let first = recorder(&bus, &log, "first");
    let by_type = bus.subscribe_type(handler_fn("every user", |_: Arc<UserCreated>| async {
        Ok(())
    }));
    let other = bus.subscribe_fn("UserDeleted", |_: Arc<UserCreated>| async { Ok(()) });
    let names: Vec<_> = bus
        .subscribers::<UserCreated>("UserCreated")
        .into_iter()
        .map(|info| (info.subscription, info.name))
        .collect();
    assert_eq!(
        names,
        [
            (first, "UserCreated subscriber".to_owned()),
            (by_type, "every user".to_owned())
        ]
    );
    let all: Vec<_> = bus
        .subscriptions()
        .into_iter()
        .map(|info| info.subscription)
        .collect();
    assert_eq!(all, [first, by_type, other]);
}

#[tokio::test]
async fn deliver_to_reaches_one_subscriber_and_counts_a_delivery_not_a_publish() {
    let bus = EventBus::new();
    let log: Log = Arc::default();
    let first = recorder(&bus, &log, "first");
    let second = recorder(&bus, &log, "second");
    let failing = bus.subscribe_fn("UserCreated", |_: Arc<UserCreated>| async {
        Err(FlextError::timeout("slow"))
    });
    bus.deliver_to(second, Arc::new(created("7")), None)
        .await
        .unwrap();
    assert_eq!(*log.lock().unwrap(), ["second:7"]);
    let error = bus
        .deliver_to(failing, Arc::new(created("7")), None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Timeout);
    let metrics = bus.metrics();
    assert_eq!(
        (
            metrics.events_published,
            metrics.deliveries,
            metrics.failed_deliveries
        ),
        (0, 1, 1)
    );

    bus.unsubscribe(first).unwrap();
    let error = bus
        .deliver_to(first, Arc::new(created("8")), None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn deliver_to_refuses_an_event_of_another_name_or_type() {
    struct Renamed;
    impl Event for Renamed {
        fn event_name(&self) -> &str {
            "UserCreated"
        }
    }
    let bus = EventBus::new();
    let log: Log = Arc::default();
    let subscription = recorder(&bus, &log, "only");
    let deleted = bus.subscribe_fn("UserDeleted", |_: Arc<UserCreated>| async { Ok(()) });
    let error = bus
        .deliver_to(deleted, Arc::new(created("1")), None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        error.to_string(),
        format!("Subscription {deleted} listens to 'UserDeleted', not 'UserCreated'")
    );
    let error = bus
        .deliver_to(subscription, Arc::new(Renamed), None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::WiringError);
    assert!(log.lock().unwrap().is_empty());
}

/// A synchronous subscriber that logs `label:{user id}`, and fails on the user "bad" and
/// panics on the user "boom".
fn sync_recorder(bus: &EventBus, log: &Log, label: &'static str) -> flext_cqrs::SubscriptionId {
    let log = log.clone();
    bus.subscribe_sync_fn("UserCreated", move |event: &Arc<UserCreated>| {
        match event.user_id.as_str() {
            "bad" => return Err(FlextError::business_rule("bad user")),
            "boom" => panic!("subscriber broke"),
            _ => {}
        }
        log.lock()
            .unwrap()
            .push(format!("{label}:{}", event.user_id));
        Ok(())
    })
}

#[tokio::test]
async fn synchronous_subscribers_are_delivered_in_order_beside_async_ones() {
    let bus = EventBus::new();
    let log: Log = Arc::default();
    sync_recorder(&bus, &log, "a");
    recorder(&bus, &log, "b");
    let c = sync_recorder(&bus, &log, "c");
    let report = bus.publish(created("u1")).await;
    assert_eq!((report.delivered, report.failures.len()), (3, 0));
    assert_eq!(*log.lock().unwrap(), ["a:u1", "b:u1", "c:u1"]);
    assert_eq!(
        bus.subscribers::<UserCreated>("UserCreated")[0].name,
        "UserCreated subscriber"
    );

    bus.unsubscribe(c).unwrap();
    assert_eq!(bus.publish(created("u2")).await.delivered, 2);
    let m = bus.metrics();
    assert_eq!(
        (m.events_published, m.deliveries, m.failed_deliveries),
        (2, 5, 0)
    );
}

#[tokio::test]
async fn a_failing_or_panicking_synchronous_subscriber_is_a_failed_delivery() {
    let bus = EventBus::new();
    let log: Log = Arc::default();
    let first = sync_recorder(&bus, &log, "a");
    recorder(&bus, &log, "b");
    let report = bus.publish(created("bad")).await;
    assert_eq!(report.delivered, 1, "the other subscriber still got it");
    assert_eq!(report.failures[0].subscription, first);
    assert_eq!(
        report.failures[0].error.code(),
        ErrorCode::BusinessRuleViolation
    );

    let report = bus.publish(created("boom")).await;
    assert_eq!(report.delivered, 1);
    let error = &report.failures[0].error;
    assert_eq!(error.code(), ErrorCode::OperationError);
    assert_eq!(
        error.to_string(),
        "Handler execution failed: subscriber broke"
    );
    assert_eq!(*log.lock().unwrap(), ["b:bad", "b:boom"]);
    assert_eq!(bus.metrics().failed_deliveries, 2);
}

#[tokio::test]
async fn a_synchronous_subscriber_sees_the_event_metadata_and_type_checks() {
    let bus = EventBus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let by_type = bus.subscribe_type_sync_fn(move |_: &Arc<UserCreated>| {
        sink.lock().unwrap().push(flext_cqrs::current_metadata());
        Ok(())
    });
    let metadata = flext_types::MessageMetadata::new().with_header("tenant", "acme");
    bus.publish_with(created("u1"), metadata.clone()).await;
    bus.publish(created("u2")).await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].as_ref(), Some(&metadata));
        assert!(seen[1].is_some(), "minted when read");
        assert_ne!(
            seen[1].as_ref().map(|m| m.message_id),
            Some(metadata.message_id)
        );
    }
    assert_eq!(
        flext_cqrs::current_metadata(),
        None,
        "the scope ends with the call"
    );
    bus.unsubscribe(by_type).unwrap();
    assert_eq!(bus.publish(created("u3")).await.attempted(), 0);
    assert_eq!(seen.lock().unwrap().len(), 2);

    // A subscriber of a name published as another type is a failed delivery.
    bus.subscribe_sync_fn("Other", |_: &Arc<UserCreated>| Ok(()));
    struct Other;
    impl Event for Other {
        fn event_name(&self) -> &str {
            "Other"
        }
    }
    let report = bus.publish(Other).await;
    assert_eq!(report.failures[0].error.code(), ErrorCode::WiringError);
    assert_eq!(bus.metrics().type_mismatches, 1);
}

/// A hand-written subscriber that panics before it returns its future.
struct PanicsEagerly;

impl flext_protocols::Handler for PanicsEagerly {
    type Request = Arc<UserCreated>;
    type Response = ();

    fn handler_name(&self) -> &str {
        "eager"
    }

    fn handle<'life0, 'async_trait>(
        &'life0 self,
        _: Arc<UserCreated>,
    ) -> flext_protocols::HandleFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        panic!("no future")
    }
}

#[tokio::test]
async fn a_subscriber_that_panics_before_its_future_is_a_failed_delivery() {
    let bus = EventBus::new();
    let log: Log = Arc::default();
    bus.subscribe("UserCreated", PanicsEagerly);
    recorder(&bus, &log, "after");
    let report = bus.publish(created("u1")).await;
    assert_eq!(report.delivered, 1, "the next subscriber still got it");
    assert_eq!(
        report.failures[0].error.to_string(),
        "Handler execution failed: no future"
    );
    assert_eq!(*log.lock().unwrap(), ["after:u1"]);
}
