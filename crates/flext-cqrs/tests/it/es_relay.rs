//! EventRelay: every subscriber gets every event at least once, with retries, dead
//! letters and progress of its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_cqrs::{
    Backoff, Delivery, Envelope, EventBus, EventRelay, InMemoryEventStore, ProjectionConfig,
    ProjectionRunner,
};
use flext_impl::handler_fn;
use flext_protocols::{CheckpointStore, Event};
use flext_types::{FlextError, FlextResult};
use serde::Deserialize;
use tokio::time::Instant;

use crate::es_dead_letters::append;

/// The relayed event: its payload is its stream's name.
#[derive(Debug, Deserialize)]
struct Ping(#[allow(dead_code, reason = "decoded, not read")] String);

impl Event for Ping {
    fn event_name(&self) -> &str {
        "Ping"
    }
}

/// What each subscriber was called with, and how each is told to fail.
#[derive(Default)]
struct Subscribers {
    calls: Mutex<Vec<(String, u64, Instant)>>,
    /// Failures still to come, per subscriber and position.
    planned: Mutex<HashMap<(String, u64), Vec<FlextError>>>,
    /// (subscriber, position) that always fail.
    poisoned: Mutex<HashSet<(String, u64)>>,
}

impl Subscribers {
    /// Subscribes a handler named `name` to "Ping" on `bus`.
    fn subscribe(self: &Arc<Self>, bus: &EventBus, name: &str) {
        let this = self.clone();
        let label = name.to_owned();
        bus.subscribe(
            "Ping",
            handler_fn(name, move |event: Arc<Envelope<Ping>>| {
                let this = this.clone();
                let label = label.clone();
                async move { this.called(&label, event.position) }
            }),
        );
    }

    fn called(&self, name: &str, position: u64) -> FlextResult<()> {
        self.calls
            .lock()
            .unwrap()
            .push((name.to_owned(), position, Instant::now()));
        let key = (name.to_owned(), position);
        if self.poisoned.lock().unwrap().contains(&key) {
            return Err(FlextError::validation(format!("{name} rejects {position}")));
        }
        if let Some(error) = self
            .planned
            .lock()
            .unwrap()
            .get_mut(&key)
            .and_then(Vec::pop)
        {
            return Err(error);
        }
        Ok(())
    }

    fn calls_of(&self, name: &str) -> Vec<u64> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, p, _)| *p)
            .collect()
    }

    fn times_of(&self, name: &str, position: u64) -> Vec<Instant> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, p, _)| n == name && *p == position)
            .map(|(_, _, at)| *at)
            .collect()
    }

    fn poison(&self, name: &str, position: u64) {
        self.poisoned
            .lock()
            .unwrap()
            .insert((name.to_owned(), position));
    }

    fn cure(&self, name: &str, position: u64) {
        self.poisoned
            .lock()
            .unwrap()
            .remove(&(name.to_owned(), position));
    }
}

fn config() -> ProjectionConfig {
    ProjectionConfig::default()
        .with_max_attempts(3)
        .with_backoff(Backoff::fixed(Duration::from_millis(100)))
}

fn relay(bus: &Arc<EventBus>, checkpoints: Arc<dyn CheckpointStore>) -> Arc<EventRelay<Ping>> {
    Arc::new(
        EventRelay::<Ping>::new("pings", bus.clone(), checkpoints)
            .for_category("Ping")
            .with_config(config()),
    )
}

fn runner(store: &InMemoryEventStore, relay: Arc<EventRelay<Ping>>) -> ProjectionRunner {
    ProjectionRunner::new(Arc::new(store.clone()), Arc::new(store.clone()), relay)
}

#[tokio::test(start_paused = true)]
async fn a_failing_subscriber_is_retried_with_backoff_then_dead_lettered_for_itself_only() {
    let store = InMemoryEventStore::new();
    for stream in ["Ping-1", "Ping-2", "Ping-1"] {
        append(&store, stream).await;
    }
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "mailer");
    subscribers.subscribe(&bus, "audit");
    subscribers.poison("mailer", 1);
    let relay = relay(&bus, Arc::new(store.clone()));
    let progress = runner(&store, relay.clone()).catch_up().await.unwrap();
    assert_eq!(
        (progress.applied, progress.dead_lettered, progress.position),
        (3, 0, 3),
        "the relay itself moved on"
    );

    assert_eq!(
        subscribers.calls_of("audit"),
        [1, 2, 3],
        "audit got every event"
    );
    let tries = subscribers.times_of("mailer", 1);
    assert_eq!(tries.len(), 3, "mailer was tried three times");
    assert_eq!(
        tries[2] - tries[0],
        Duration::from_millis(200),
        "with backoff"
    );
    assert_eq!(
        subscribers.calls_of("mailer"),
        [1, 1, 1, 2],
        "mailer got the other stream; its later event of Ping-1 is parked"
    );

    let letters = relay.dead_letters("mailer").await.unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(
        (
            letters[0].position,
            letters[0].attempts,
            letters[0].parked_behind
        ),
        (1, 3, None)
    );
    assert_eq!(letters[0].error.to_string(), "mailer rejects 1");
    assert_eq!(
        (letters[1].position, letters[1].parked_behind),
        (3, Some(1))
    );
    assert!(relay.dead_letters("audit").await.unwrap().is_empty());
    assert_eq!(
        store.dead_letters("pings/mailer").await.unwrap().len(),
        2,
        "kept under the subscriber's key"
    );
    assert_eq!(store.load_checkpoint("pings/audit").await.unwrap(), Some(3));
    assert_eq!(bus.metrics().failed_deliveries, 3);
}

#[tokio::test(start_paused = true)]
async fn a_transient_subscriber_failure_is_retried_until_it_succeeds() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "mailer");
    subscribers.planned.lock().unwrap().insert(
        ("mailer".into(), 1),
        (0..5).map(|_| FlextError::timeout("smtp slow")).collect(),
    );
    let relay = relay(&bus, Arc::new(store.clone()));
    runner(&store, relay.clone()).catch_up().await.unwrap();
    assert_eq!(subscribers.calls_of("mailer").len(), 6, "past max_attempts");
    assert!(relay.dead_letters("mailer").await.unwrap().is_empty());
    assert_eq!(bus.metrics().deliveries, 1);
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_succeeded_is_not_called_again_when_the_event_is_retried() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    // The ledger's checkpoint cannot be saved at first: the relay fails the event and its
    // runner retries it.
    let checkpoints = FailingKey {
        store: store.clone(),
        key: "pings/ledger",
        failing: Arc::new(AtomicBool::new(true)),
    };
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "audit");
    subscribers.subscribe(&bus, "ledger");
    let relay = relay(&bus, Arc::new(checkpoints.clone()));
    let runner = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        relay.clone(),
    )
    .with_config(config());
    let heal = tokio::spawn({
        let failing = checkpoints.failing.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            failing.store(false, Ordering::SeqCst);
        }
    });
    let progress = runner.catch_up().await.unwrap();
    heal.await.unwrap();
    assert_eq!((progress.applied, progress.dead_lettered), (1, 0));
    assert_eq!(subscribers.calls_of("audit"), [1], "audit once");
    assert!(
        subscribers.calls_of("ledger").len() >= 2,
        "the ledger again, its progress was not saved"
    );
    assert_eq!(
        store.load_checkpoint("pings/ledger").await.unwrap(),
        Some(1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_a_crash_mid_event_skips_the_subscribers_that_finished() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    let entered = Arc::new(tokio::sync::Notify::new());

    // First process: audit handles the event, then the ledger hangs and the process dies.
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "audit");
    let hang = entered.clone();
    bus.subscribe(
        "Ping",
        handler_fn("ledger", move |_: Arc<Envelope<Ping>>| {
            let hang = hang.clone();
            async move {
                hang.notify_one();
                std::future::pending::<FlextResult<()>>().await
            }
        }),
    );
    let crashed = tokio::spawn({
        let runner = runner(&store, relay(&bus, Arc::new(store.clone())));
        async move { runner.catch_up().await }
    });
    entered.notified().await;
    crashed.abort();
    assert!(crashed.await.unwrap_err().is_cancelled());
    assert_eq!(store.load_checkpoint("pings").await.unwrap(), None);

    // Second process: the same subscribers by name.
    let bus = Arc::new(EventBus::new());
    let again = Arc::new(Subscribers::default());
    again.subscribe(&bus, "audit");
    again.subscribe(&bus, "ledger");
    let progress = runner(&store, relay(&bus, Arc::new(store.clone())))
        .catch_up()
        .await
        .unwrap();
    assert_eq!(progress.position, 1);
    assert!(again.calls_of("audit").is_empty(), "audit had it already");
    assert_eq!(again.calls_of("ledger"), [1]);
}

#[tokio::test(start_paused = true)]
async fn subscribers_sharing_a_name_keep_progress_apart_by_order() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    let bus = Arc::new(EventBus::new());
    bus.subscribe_fn("Ping", |_: Arc<Envelope<Ping>>| async { Ok(()) });
    bus.subscribe_fn("Ping", |_: Arc<Envelope<Ping>>| async {
        Err(FlextError::validation("second one fails"))
    });
    let relay = relay(&bus, Arc::new(store.clone()));
    runner(&store, relay.clone()).catch_up().await.unwrap();
    assert!(
        relay
            .dead_letters("Ping subscriber")
            .await
            .unwrap()
            .is_empty()
    );
    let letters = relay.dead_letters("Ping subscriber#2").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error.to_string(), "second one fails");
}

#[tokio::test(start_paused = true)]
async fn a_subscribers_dead_letters_can_be_retried_and_discarded() {
    let store = InMemoryEventStore::new();
    for stream in ["Ping-1", "Ping-1", "Ping-2"] {
        append(&store, stream).await;
    }
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "mailer");
    subscribers.poison("mailer", 1);
    subscribers.poison("mailer", 3);
    let relay = relay(&bus, Arc::new(store.clone()));
    runner(&store, relay.clone()).catch_up().await.unwrap();
    assert_eq!(relay.dead_letters("mailer").await.unwrap().len(), 3);

    subscribers.cure("mailer", 1);
    let retry = relay.retry_dead_letter(&store, "mailer", 1).await.unwrap();
    assert_eq!(
        retry.applied,
        [1, 2],
        "the head, then the event parked behind it"
    );
    assert_eq!(subscribers.calls_of("mailer"), [1, 1, 1, 3, 3, 3, 1, 2]);

    assert!(relay.discard_dead_letter("mailer", 3).await.unwrap());
    assert!(relay.dead_letters("mailer").await.unwrap().is_empty());

    let error = relay
        .retry_dead_letter(&store, "mailer", 3)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::NotFound);
}

#[tokio::test(start_paused = true)]
async fn retrying_for_a_subscriber_no_longer_on_the_bus_fails_and_keeps_the_letter() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "mailer");
    subscribers.poison("mailer", 1);
    let relay = relay(&bus, Arc::new(store.clone()));
    runner(&store, relay.clone()).catch_up().await.unwrap();
    for info in bus.subscriptions() {
        bus.unsubscribe(info.subscription).unwrap();
    }
    let retry = relay.retry_dead_letter(&store, "mailer", 1).await.unwrap();
    assert_eq!(retry.failed, [1]);
    let letters = relay.dead_letters("mailer").await.unwrap();
    assert_eq!(letters[0].attempts, 4);
    assert_eq!(letters[0].error.code(), ErrorCode::NotFound);
    assert_eq!(
        letters[0].error.to_string(),
        "No subscriber 'mailer' of 'Ping' on the bus of relay 'pings'"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_delivery_does_not_hold_a_subscriber_back_behind_a_failing_one() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    let bus = Arc::new(EventBus::new().with_delivery(Delivery::Concurrent));
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "mailer");
    subscribers.subscribe(&bus, "audit");
    subscribers.poison("mailer", 1);
    let started = Instant::now();
    runner(&store, relay(&bus, Arc::new(store.clone())))
        .catch_up()
        .await
        .unwrap();
    assert_eq!(subscribers.times_of("audit", 1), [started]);
    assert_eq!(subscribers.calls_of("mailer").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_relay_rebuild_delivers_every_event_again_to_every_subscriber() {
    let store = InMemoryEventStore::new();
    for stream in ["Ping-1", "Ping-2"] {
        append(&store, stream).await;
    }
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "audit");
    let runner = runner(&store, relay(&bus, Arc::new(store.clone())));
    runner.catch_up().await.unwrap();
    runner.rebuild().await.unwrap();
    assert_eq!(subscribers.calls_of("audit"), [1, 2, 1, 2]);
}

/// The in-memory store, whose checkpoint saves under `key` fail while `failing` is set.
#[derive(Clone)]
struct FailingKey {
    store: InMemoryEventStore,
    key: &'static str,
    failing: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl CheckpointStore for FailingKey {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        self.store.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        if name == self.key && self.failing.load(Ordering::SeqCst) {
            return Err(FlextError::storage("checkpoint table unreachable"));
        }
        self.store.save_checkpoint(name, position).await
    }
    async fn add_dead_letter(
        &self,
        name: &str,
        letter: flext_types::DeadLetter,
    ) -> FlextResult<()> {
        self.store.add_dead_letter(name, letter).await
    }
    async fn dead_letters(&self, name: &str) -> FlextResult<Vec<flext_types::DeadLetter>> {
        self.store.dead_letters(name).await
    }
    async fn remove_dead_letter(&self, name: &str, position: u64) -> FlextResult<bool> {
        self.store.remove_dead_letter(name, position).await
    }
    async fn reset(&self, name: &str) -> FlextResult<()> {
        self.store.reset(name).await
    }
}
