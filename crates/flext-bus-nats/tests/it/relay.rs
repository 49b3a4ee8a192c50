//! The relay: the store's log to JetStream, nothing lost, a re-publish applied once.

use std::sync::Arc;
use std::time::Duration;

use flext_bus_nats::async_nats::jetstream;
use flext_bus_nats::{ConsumerConfig, NatsConsumer, NatsRelay};
use flext_protocols::{CheckpointStore, EventStore};
use flext_store::InMemoryEventStore;
use tokio::sync::oneshot;

use crate::server::{NatsServer, enabled};
use crate::support::{Recorder, append_round_robin, eventually, stored, streams};

/// Relays `store` until the returned sender fires (or is dropped).
fn spawn_relay(relay: NatsRelay) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, task)
}

fn spawn_consumer(consumer: NatsConsumer) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        consumer
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_events_reach_a_consumer_once_each_in_stream_order() {
    if !enabled("relayed_events_reach_a_consumer_once_each_in_stream_order") {
        return;
    }
    let server = NatsServer::start();
    let client = server.client().await;
    let js = jetstream::new(client);
    let layout = streams("relayorder");
    layout.ensure(&js).await.unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    append_round_robin(&*store, "Account", 20, 25).await;

    let relay = NatsRelay::new(
        "relay",
        store.clone(),
        store.clone(),
        js.clone(),
        layout.clone(),
    )
    .with_max_in_flight(64)
    .unwrap();
    let (stop_relay, relay_task) = spawn_relay(relay);
    let recorder = Arc::new(Recorder::default());
    let consumer = NatsConsumer::new(
        js.clone(),
        layout.clone(),
        ConsumerConfig::new("balances").unwrap(),
        recorder.clone(),
    );
    let (stop_consumer, consumer_task) = spawn_consumer(consumer);
    eventually(Duration::from_secs(20), "all 500 applied", || async {
        recorder.count() >= 500
    })
    .await;
    // Events appended while both run arrive too.
    append_round_robin(&*store, "Card", 3, 4).await;
    eventually(Duration::from_secs(20), "the later 12 applied", || async {
        recorder.count() >= 512
    })
    .await;
    stop_relay.send(()).unwrap();
    relay_task.await.unwrap();
    stop_consumer.send(()).unwrap();
    consumer_task.await.unwrap();
    recorder.assert_once_in_order(512);
    assert_eq!(stored(&js, layout.stream()).await, 512);
    assert_eq!(store.load_checkpoint("relay").await.unwrap(), Some(512));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republish_is_stored_once_inside_the_window_and_applied_once_after_it() {
    if !enabled("a_republish_is_stored_once_inside_the_window_and_applied_once_after_it") {
        return;
    }
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let layout = streams("republish")
        .with_duplicate_window(Duration::from_millis(500))
        .unwrap();
    layout.ensure(&js).await.unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    append_round_robin(&*store, "Account", 5, 10).await;
    let relay_once = || async {
        let relay = NatsRelay::new(
            "relay",
            store.clone(),
            store.clone(),
            js.clone(),
            layout.clone(),
        );
        let (stop, task) = spawn_relay(relay);
        eventually(Duration::from_secs(10), "the relay caught up", || async {
            store.load_checkpoint("relay").await.unwrap() == Some(50)
        })
        .await;
        stop.send(()).unwrap();
        task.await.unwrap();
    };

    relay_once().await;
    // A crash before the checkpoint: the relay publishes everything again, inside the
    // window: the server drops every copy.
    store.reset("relay").await.unwrap();
    relay_once().await;
    assert_eq!(stored(&js, layout.stream()).await, 50);

    // Outside the window the copies are stored; the consumer applies each event once.
    tokio::time::sleep(Duration::from_millis(700)).await;
    store.reset("relay").await.unwrap();
    relay_once().await;
    assert_eq!(stored(&js, layout.stream()).await, 100);

    let recorder = Arc::new(Recorder::default());
    let consumer = NatsConsumer::new(
        js.clone(),
        layout.clone(),
        ConsumerConfig::new("once").unwrap(),
        recorder.clone(),
    );
    let (stop, task) = spawn_consumer(consumer);
    eventually(
        Duration::from_secs(10),
        "100 deliveries answered",
        || async {
            let mut consumer = js
                .get_consumer_from_stream::<_, _, _>("once", layout.stream())
                .await
                .map(|c: flext_bus_nats::async_nats::jetstream::consumer::PullConsumer| c);
            match &mut consumer {
                Ok(c) => c
                    .info()
                    .await
                    .is_ok_and(|i| i.ack_floor.stream_sequence == 100),
                Err(_) => false,
            }
        },
    )
    .await;
    stop.send(()).unwrap();
    task.await.unwrap();
    recorder.assert_once_in_order(50);
}
