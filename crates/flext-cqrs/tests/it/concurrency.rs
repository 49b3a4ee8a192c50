//! Many tasks on shared buses: exact totals.

use std::sync::Arc;

use flext_cqrs::{CommandBus, EventBus, MessageTypeMetrics};
use flext_types::FlextError;

use crate::{Divide, UserCreated};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_give_exact_metric_totals() {
    let mut bus = CommandBus::new();
    bus.register_fn(|Divide(n): Divide| async move {
        tokio::task::yield_now().await;
        if n.is_multiple_of(5) {
            Err(FlextError::business_rule("multiple of five"))
        } else {
            Ok(n)
        }
    })
    .unwrap();
    let bus = Arc::new(bus);
    let tasks: Vec<_> = (0..8u32)
        .map(|t| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..500u32 {
                    let n = t * 500 + i;
                    let result = bus.send(Divide(n)).await;
                    assert_eq!(result.is_ok(), !n.is_multiple_of(5));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let m = bus.metrics();
    assert_eq!(m.commands_processed, 4000);
    assert_eq!(m.failed_commands, 800);
    assert_eq!(m.successful_commands, 3200);
    let per_type = &m.commands["Divide"];
    assert_eq!((per_type.processed, per_type.failed), (4000, 800));
    // Latency is sampled (one send in 16 by the count of finished sends): the first send
    // reads 0 and is timed, and sends in flight together (at most the 8 tasks) may all
    // read the same multiple of 16.
    let sampled = per_type.latency.count;
    let every = MessageTypeMetrics::LATENCY_SAMPLE_EVERY;
    assert!(
        (1..=8 * (4000 / every + 1)).contains(&sampled),
        "{sampled} sends timed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribing_while_publishing_loses_no_delivery() {
    let bus = Arc::new(EventBus::new());
    let stable = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = stable.clone();
    bus.subscribe_fn("UserCreated", move |_: Arc<UserCreated>| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async { Ok(()) }
    });
    let churn = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                let id = bus.subscribe_fn("UserCreated", |_: Arc<UserCreated>| async { Ok(()) });
                tokio::task::yield_now().await;
                bus.unsubscribe(id).unwrap();
            }
        })
    };
    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    let report = bus
                        .publish(UserCreated {
                            user_id: format!("u{i}"),
                        })
                        .await;
                    assert!(report.is_success());
                }
            })
        })
        .collect();
    for task in publishers {
        task.await.unwrap();
    }
    churn.await.unwrap();
    assert_eq!(
        stable.load(std::sync::atomic::Ordering::Relaxed),
        1000,
        "the stable subscriber saw every event"
    );
    assert_eq!(bus.subscription_count(), 1);
    assert_eq!(bus.metrics().events["UserCreated"].published, 1000);
}
