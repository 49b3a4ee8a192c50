//! EventRelay: every subscriber gets every event at least once, with retries, dead
//! letters and progress of its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_cqrs::{
    Backoff, Delivery, Envelope, EventBus, EventRelay, InMemoryEventStore, ProjectionConfig,
    ProjectionRunner, Upcasters,
};
use flext_impl::handler_fn;
use flext_protocols::{CheckpointStore, Event, EventStore};
use flext_types::{ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent};
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
async fn subscribers_sharing_a_name_stop_the_relay_and_nothing_moves() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "audit");
    bus.subscribe_fn("Ping", |_: Arc<Envelope<Ping>>| async { Ok(()) });
    bus.subscribe_fn("Ping", |_: Arc<Envelope<Ping>>| async { Ok(()) });
    let relay = relay(&bus, Arc::new(store.clone()));
    let runner = runner(&store, relay.clone());
    let started = Instant::now();
    let error = runner.catch_up().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        error.to_string(),
        "Relay 'pings' cannot tell apart the 2 subscribers of 'Ping' named 'Ping subscriber': give each subscriber of a relayed event a name of its own (subscribe it with handler_fn(name, f)), as the relay keeps each one's progress and dead letters under its name"
    );
    assert_eq!(started.elapsed(), Duration::ZERO, "not retried");
    assert!(
        subscribers.calls_of("audit").is_empty(),
        "delivered to no one"
    );
    assert_eq!(bus.metrics().deliveries, 0);
    assert_eq!(store.load_checkpoint("pings").await.unwrap(), None);
    for key in ["pings/audit", "pings/Ping subscriber"] {
        assert_eq!(store.load_checkpoint(key).await.unwrap(), None, "{key}");
        assert!(store.dead_letters(key).await.unwrap().is_empty(), "{key}");
    }
    assert!(
        runner.dead_letters().await.unwrap().is_empty(),
        "not a dead letter"
    );
}

#[tokio::test(start_paused = true)]
async fn unsubscribing_one_of_two_subscribers_sharing_a_name_hands_its_progress_to_no_other() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    let bus = Arc::new(EventBus::new());
    let first = Arc::new(Subscribers::default());
    let second = Arc::new(Subscribers::default());
    let first_id = {
        let calls = first.clone();
        bus.subscribe(
            "Ping",
            handler_fn("mailer", move |event: Arc<Envelope<Ping>>| {
                let calls = calls.clone();
                async move { calls.called("mailer", event.position) }
            }),
        )
    };
    second.subscribe(&bus, "mailer");
    second.poison("mailer", 1);
    let relay = relay(&bus, Arc::new(store.clone()));
    let runner = runner(&store, relay.clone());
    assert_eq!(
        runner.catch_up().await.unwrap_err().code(),
        ErrorCode::InvalidArgument
    );

    // With one "mailer" left, that one gets every event, under its own progress.
    bus.unsubscribe(first_id).unwrap();
    append(&store, "Ping-2").await;
    let progress = runner.catch_up().await.unwrap();
    assert_eq!(progress.position, 2);
    assert!(first.calls_of("mailer").is_empty());
    assert_eq!(second.calls_of("mailer"), [1, 1, 1, 2]);
    let letters = relay.dead_letters("mailer").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].position, 1);
    assert!(
        relay.dead_letters("mailer#2").await.unwrap().is_empty(),
        "no names by order"
    );

    // A retry for a name two subscribers share again is refused, the letter kept.
    first.subscribe(&bus, "mailer");
    second.cure("mailer", 1);
    let error = relay
        .retry_dead_letter(&store, "mailer", 1)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert_eq!(relay.dead_letters("mailer").await.unwrap(), letters);
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

/// The in-memory store, whose checkpoint and dead-letter writes under `key` fail while
/// `failing` is set.
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
        if name == self.key && self.failing.load(Ordering::SeqCst) {
            return Err(FlextError::storage("dead-letter table unreachable"));
        }
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

/// Appends to `stream` a "Ping" whose payload, a number, is not a `Ping`: the relay cannot
/// decode it until [`number_upcaster`] turns it into a string.
async fn append_undecodable(store: &InMemoryEventStore, stream: &str) -> u64 {
    let event = NewEvent::new("Ping", JsonPayload::encode(&42).unwrap());
    store
        .append(stream, ExpectedVersion::Any, vec![event])
        .await
        .unwrap()
        .last_position
}

/// The fix that ships later: numbers become strings.
fn number_upcaster() -> Upcasters {
    Upcasters::new().register("Ping", 1, |payload| {
        Ok(match payload {
            serde_json::Value::Number(n) => serde_json::Value::String(format!("number {n}")),
            other => other,
        })
    })
}

#[tokio::test(start_paused = true)]
async fn a_relay_letter_retried_after_a_fix_reaches_every_subscriber_with_its_parked_events() {
    let store = InMemoryEventStore::new();
    append_undecodable(&store, "Ping-1").await;
    for stream in ["Ping-2", "Ping-1", "Ping-2"] {
        append(&store, stream).await;
    }
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "audit");
    subscribers.subscribe(&bus, "mailer");
    let progress = runner(&store, relay(&bus, Arc::new(store.clone())))
        .catch_up()
        .await
        .unwrap();
    assert_eq!(
        (progress.applied, progress.dead_lettered, progress.parked),
        (2, 1, 1),
        "1 does not decode, 3 is parked behind it, the other stream goes on"
    );
    assert_eq!(subscribers.calls_of("audit"), [2, 4]);
    assert_eq!(store.load_checkpoint("pings/audit").await.unwrap(), Some(4));

    // The fix ships: after a restart the relay has the upcaster, and the letter is retried.
    let fixed = Arc::new(
        EventRelay::<Ping>::new("pings", bus.clone(), Arc::new(store.clone()))
            .for_category("Ping")
            .with_config(config())
            .with_upcasters(number_upcaster()),
    );
    let restarted = runner(&store, fixed);
    assert_eq!(
        restarted.retry_dead_letter(1).await.unwrap().applied,
        [1, 3]
    );
    for subscriber in ["audit", "mailer"] {
        assert_eq!(
            subscribers.calls_of(subscriber),
            [2, 4, 1, 3],
            "{subscriber} got the letter and the event parked behind it"
        );
        assert_eq!(
            store
                .load_checkpoint(&format!("pings/{subscriber}"))
                .await
                .unwrap(),
            Some(4),
            "{subscriber}'s progress did not go back"
        );
    }
    assert!(restarted.dead_letters().await.unwrap().is_empty());
    assert_eq!(restarted.catch_up().await.unwrap().applied, 0);
    assert_eq!(subscribers.calls_of("audit"), [2, 4, 1, 3], "nothing twice");
}

#[tokio::test(start_paused = true)]
async fn a_relay_letter_that_reached_some_subscribers_is_retried_to_all_at_least_once() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    // The ledger rejects event 1 and its dead letter cannot be stored: the relay fails the
    // event after the audit handled it, and its runner gives up on it.
    let checkpoints = FailingKey {
        store: store.clone(),
        key: "pings/ledger",
        failing: Arc::new(AtomicBool::new(true)),
    };
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "audit");
    subscribers.subscribe(&bus, "ledger");
    subscribers.poison("ledger", 1);
    let relay = Arc::new(
        EventRelay::<Ping>::new("pings", bus.clone(), Arc::new(checkpoints.clone()))
            .for_category("Ping")
            .with_config(config().with_backoff(Backoff::none())),
    );
    let runner = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        relay.clone(),
    )
    .with_config(
        ProjectionConfig::default()
            .with_backoff(Backoff::fixed(Duration::from_millis(100)))
            .with_give_up_after(Duration::from_millis(300)),
    );
    assert_eq!(runner.catch_up().await.unwrap().dead_lettered, 1);
    assert_eq!(
        subscribers.calls_of("audit"),
        [1],
        "once: its progress is 1"
    );

    // The store heals and another stream moves every subscriber's progress past 1.
    checkpoints.failing.store(false, Ordering::SeqCst);
    append(&store, "Ping-2").await;
    runner.catch_up().await.unwrap();
    assert_eq!(
        store.load_checkpoint("pings/ledger").await.unwrap(),
        Some(2)
    );

    subscribers.cure("ledger", 1);
    assert_eq!(runner.retry_dead_letter(1).await.unwrap().applied, [1]);
    assert_eq!(
        subscribers.calls_of("ledger").last(),
        Some(&1),
        "the ledger, which never handled it, gets it"
    );
    assert_eq!(
        subscribers.calls_of("audit"),
        [1, 2, 1],
        "the audit had it, but its progress moved on since: at least once, again"
    );
    assert!(relay.dead_letters("ledger").await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_subscribers_retry_stops_the_relay_before_the_event() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    let bus = Arc::new(EventBus::new().with_delivery(Delivery::Concurrent));
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "audit");
    subscribers.subscribe(&bus, "mailer");
    subscribers.planned.lock().unwrap().insert(
        ("mailer".into(), 1),
        (0..10_000)
            .map(|_| FlextError::timeout("smtp down"))
            .collect(),
    );
    let relay = relay(&bus, Arc::new(store.clone()));
    let runner = runner(&store, relay.clone());
    let started = Instant::now();
    let progress = runner
        .run_until(tokio::time::sleep(Duration::from_millis(1050)))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(1050));
    assert_eq!(progress.position, 0);
    assert_eq!(store.load_checkpoint("pings").await.unwrap(), None);
    assert_eq!(store.load_checkpoint("pings/audit").await.unwrap(), Some(1));
    assert_eq!(store.load_checkpoint("pings/mailer").await.unwrap(), None);
    assert!(relay.dead_letters("mailer").await.unwrap().is_empty());
    assert_eq!(subscribers.calls_of("mailer").len(), 11, "every 100 ms");

    // The next run delivers it to the mailer alone.
    subscribers.planned.lock().unwrap().clear();
    assert_eq!(runner.catch_up().await.unwrap().position, 1);
    assert_eq!(subscribers.calls_of("audit"), [1]);
    assert_eq!(subscribers.calls_of("mailer").len(), 12);
}

#[tokio::test(start_paused = true)]
async fn a_relay_writes_no_progress_for_names_that_are_not_its_subscribers() {
    let store = InMemoryEventStore::new();
    append(&store, "Ping-1").await;
    let bus = Arc::new(EventBus::new());
    let subscribers = Arc::new(Subscribers::default());
    subscribers.subscribe(&bus, "audit");
    bus.subscribe_fn("Pong", |_: Arc<Envelope<Ping>>| async { Ok(()) });
    let relay = relay(&bus, Arc::new(store.clone()));
    let runner = runner(&store, relay.clone());
    runner.catch_up().await.unwrap();

    assert!(relay.dead_letters("nobody").await.unwrap().is_empty());
    assert!(!relay.discard_dead_letter("nobody", 1).await.unwrap());
    let error = relay
        .retry_dead_letter(&store, "nobody", 1)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::NotFound);
    let retry = relay.retry_dead_letters(&store, "nobody").await.unwrap();
    assert!(retry.applied.is_empty() && retry.failed.is_empty());

    runner.rebuild().await.unwrap();
    assert_eq!(subscribers.calls_of("audit"), [1, 1], "rebuilt");
    assert_eq!(store.load_checkpoint("pings/audit").await.unwrap(), Some(1));
    for key in ["pings/nobody", "pings/Pong subscriber"] {
        assert_eq!(store.load_checkpoint(key).await.unwrap(), None, "{key}");
    }
}

#[tokio::test(start_paused = true)]
async fn every_delivery_of_a_relayed_event_carries_the_stored_event_as_its_message() {
    let store = InMemoryEventStore::new();
    let bus = Arc::new(EventBus::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(1));
    {
        let (seen, failures) = (seen.clone(), failures.clone());
        bus.subscribe(
            "Ping",
            handler_fn("watcher", move |_: Arc<Envelope<Ping>>| {
                let (seen, failures) = (seen.clone(), failures.clone());
                async move {
                    seen.lock().unwrap().push(flext_cqrs::current_metadata());
                    let mut left = failures.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        return Err(FlextError::storage("the read model is down"));
                    }
                    Ok(())
                }
            }),
        );
    }
    let cause = flext_types::MessageMetadata::new();
    let event = NewEvent::encode(
        "Ping",
        1,
        &"Ping-1",
        flext_types::EventMetadata::caused_by(&cause),
    )
    .unwrap();
    store
        .append("Ping-1", ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    let stored = store.read_stream("Ping-1", 1, 1).await.unwrap().remove(0);

    runner(&store, relay(&bus, Arc::new(store.clone())))
        .catch_up()
        .await
        .unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "a failed delivery and its retry: {seen:?}");
    for message in &seen {
        let message = message.as_ref().expect("the subscriber sees its message");
        assert_eq!(
            message.message_id, stored.event_id,
            "the stored event is the message"
        );
        assert_eq!(message.correlation_id, cause.correlation_id);
        assert_eq!(message.causation_id, Some(cause.message_id));
        assert_eq!(message.timestamp, stored.timestamp);
    }
    assert_eq!(seen[0], seen[1], "a retry delivers the same message again");
}
