//! The relay: the store's log to JetStream, nothing lost, a re-publish applied once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use flext_bus_nats::async_nats::jetstream;
use flext_bus_nats::{ConsumerConfig, NatsConsumer, NatsRelay};
use flext_handlers::stores::SqliteEventStore;
use flext_protocols::{CheckpointStore, EventStore};
use flext_store::InMemoryEventStore;
use flext_types::{DeadLetter, FlextResult};

use crate::server::{NatsServer, enabled};
use crate::support::{
    Recorder, Setup, append_round_robin, consumer_info, eventually, relay_of, spawn_consumer,
    spawn_relay, stored, streams,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_events_reach_a_consumer_once_each_in_stream_order() {
    if !enabled("relayed_events_reach_a_consumer_once_each_in_stream_order") {
        return;
    }
    let Setup {
        server: _server,
        js,
        layout,
        store,
    } = Setup::start("relayorder").await;
    append_round_robin(&*store, "Account", 20, 25).await;

    let relay = relay_of(&store, &js, &layout)
        .with_max_in_flight(64)
        .unwrap();
    let (stop_relay, relay_task) = spawn_relay(relay);
    let recorder = Arc::new(Recorder::default());
    *recorder.delay.lock().unwrap() = Duration::from_millis(1);
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
    relay_task.await.unwrap().unwrap();
    stop_consumer.send(()).unwrap();
    consumer_task.await.unwrap().unwrap();
    recorder.assert_once_in_order(512);
    // The partitions (4 by default) applied streams side by side.
    assert!(
        recorder
            .most_at_once
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );
    assert_eq!(stored(&js, layout.stream()).await, 512);
    assert_eq!(store.load_checkpoint("relay").await.unwrap(), Some(512));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republish_is_stored_once_inside_the_window_and_applied_once_after_it() {
    if !enabled("a_republish_is_stored_once_inside_the_window_and_applied_once_after_it") {
        return;
    }
    let Setup {
        server: _server,
        js,
        layout,
        store,
    } = Setup::start_with_window("republish", Duration::from_millis(500)).await;
    append_round_robin(&*store, "Account", 5, 10).await;
    let relay_once = || async {
        let relay = relay_of(&store, &js, &layout);
        let (stop, task) = spawn_relay(relay);
        eventually(Duration::from_secs(10), "the relay caught up", || async {
            store.load_checkpoint("relay").await.unwrap() == Some(50)
        })
        .await;
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
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
            consumer_info(&js, layout.stream(), "once")
                .await
                .is_some_and(|i| i.ack_floor.stream_sequence == 100)
        },
    )
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    recorder.assert_once_in_order(50);
}

const RELAY_CHILD: &str = "FLEXT_NATS_RELAY_CHILD";

/// A relay process of the kill test: relays the SQLite store the parent names, saving its
/// checkpoint every 1 000 events. A save past position 1 000 says so and never finishes:
/// the parent kills it there, when the broker has acknowledged events the saved checkpoint
/// does not cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_child() {
    let Ok(args) = std::env::var(RELAY_CHILD) else {
        return; // Only the kill test runs this, in a child process.
    };
    let (url, path) = args.split_once(' ').unwrap();
    let store = Arc::new(SqliteEventStore::open(path).await.unwrap());
    let checkpoints = Arc::new(HangsPastFirstThousand(Arc::clone(&store)));
    let js = jetstream::new(crate::server::connect(url).await);
    let relay = NatsRelay::new("relay", store, checkpoints, js, streams("relaykill"))
        .with_checkpoint_every(1_000)
        .unwrap()
        .with_max_in_flight(4)
        .unwrap();
    relay.run(std::future::pending()).await.unwrap();
}

/// The relay child's checkpoints: the first save of a position past 1 000 (the relay also
/// saves whenever it has caught up, so the first may come earlier) prints
/// `saving {position}` and waits forever instead.
struct HangsPastFirstThousand(Arc<SqliteEventStore>);

#[async_trait::async_trait]
impl CheckpointStore for HangsPastFirstThousand {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        self.0.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        if position > 1_000 {
            println!("saving {position}");
            std::future::pending::<()>().await;
        }
        self.0.save_checkpoint(name, position).await
    }

    async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()> {
        self.0.add_dead_letter(name, letter).await
    }

    async fn dead_letters(&self, name: &str) -> FlextResult<Vec<DeadLetter>> {
        self.0.dead_letters(name).await
    }

    async fn remove_dead_letter(&self, name: &str, position: u64) -> FlextResult<bool> {
        self.0.remove_dead_letter(name, position).await
    }

    async fn reset(&self, name: &str) -> FlextResult<()> {
        self.0.reset(name).await
    }
}

/// The relay process is SIGKILLed after the broker acknowledged events its checkpoint does
/// not cover yet: a new relay publishes them again, and the consumer's read model equals
/// one computed from the store in this process — nothing lost, nothing applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_the_ack_and_the_checkpoint_loses_and_doubles_nothing() {
    if !enabled("a_relay_killed_between_the_ack_and_the_checkpoint_loses_and_doubles_nothing") {
        return;
    }
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let layout = streams("relaykill");
    layout.ensure(&js).await.unwrap();
    let dir = std::env::temp_dir().join(format!("flext-nats-relaykill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.db").to_str().unwrap().to_owned();
    let store = Arc::new(SqliteEventStore::open(&path).await.unwrap());
    append_round_robin(&*store, "Account", 30, 100).await;

    // Kill it when it is about to save a checkpoint past 1 000: the broker then holds
    // events the saved checkpoint does not cover.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "relay::relay_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(RELAY_CHILD, format!("{} {path}", server.url()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the relay starts");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let saving = tokio::task::spawn_blocking(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.split("saving ").nth(1).map(str::to_owned))
    });
    let saving: u64 = tokio::time::timeout(Duration::from_secs(60), saving)
        .await
        .expect("the relay reached its second checkpoint")
        .unwrap()
        .expect("the relay said so")
        .parse()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let published = stored(&js, layout.stream()).await;
    let checkpoint = store.load_checkpoint("relay").await.unwrap().unwrap_or(0);
    assert!(
        checkpoint > 0 && checkpoint <= 1_000,
        "a first checkpoint was saved: {checkpoint}"
    );
    assert!(
        published >= saving && saving > checkpoint,
        "acknowledged past the checkpoint {checkpoint}: published {published}, saving {saving}"
    );
    assert!(published < 3_000, "killed mid-stream: {published}");

    // A new relay goes on from the checkpoint; a consumer applies everything.
    let (stop_relay, relay) = spawn_relay(relay_of(&store, &js, &layout));
    let recorder = Arc::new(Recorder::default());
    let (stop, consumer) = spawn_consumer(NatsConsumer::new(
        js.clone(),
        layout.clone(),
        ConsumerConfig::new("balances").unwrap(),
        recorder.clone(),
    ));
    eventually(Duration::from_secs(30), "all 3000 applied", || async {
        recorder.count() >= 3_000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    consumer.await.unwrap().unwrap();
    stop_relay.send(()).unwrap();
    relay.await.unwrap().unwrap();
    recorder.assert_once_in_order(3_000);
    // The republished events were dropped as duplicates by the server.
    assert_eq!(stored(&js, layout.stream()).await, 3_000);

    // The read model (a balance per account) equals one computed from the store here.
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    for event in store.read_all(1, 10_000).await.unwrap() {
        let amount: u64 = serde_json::from_str(event.payload.as_str()).unwrap();
        *expected.entry(event.stream_id.to_string()).or_default() += amount;
    }
    let mut applied = std::collections::BTreeMap::<String, u64>::new();
    for (stream, version) in recorder.log.lock().unwrap().iter() {
        // The amount of each deposit is its version (see `append_round_robin`).
        *applied.entry(stream.clone()).or_default() += version;
    }
    assert_eq!(applied, expected);
    let _ = std::fs::remove_dir_all(dir);
}

/// An event larger than the server's `max_payload` stops the relay with an error naming
/// it, its checkpoint just before it: passing it would lose it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_broker_cannot_take_stops_the_relay_naming_it() {
    if !enabled("an_event_the_broker_cannot_take_stops_the_relay_naming_it") {
        return;
    }
    let server = NatsServer::start_with("max_payload: 2048\n");
    let js = jetstream::new(server.client().await);
    let layout = streams("toolarge");
    layout.ensure(&js).await.unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    append_round_robin(&*store, "Account", 1, 3).await;
    let big = flext_types::NewEvent::new(
        "Deposited",
        flext_types::JsonPayload::encode(&"x".repeat(4096)).unwrap(),
    );
    store
        .append("Account-0", flext_types::ExpectedVersion::Any, vec![big])
        .await
        .unwrap();
    append_round_robin(&*store, "Card", 1, 1).await;
    let relay = relay_of(&store, &js, &layout);
    let err = tokio::time::timeout(Duration::from_secs(10), relay.run(std::future::pending()))
        .await
        .expect("the relay stops")
        .unwrap_err();
    assert_eq!(
        err.code(),
        flext_constants::ErrorCode::InvalidArgument,
        "{err}"
    );
    assert!(err.to_string().contains("(position 4)"), "{err}");
    assert_eq!(store.load_checkpoint("relay").await.unwrap(), Some(3));
    assert_eq!(stored(&js, layout.stream()).await, 3);
}
