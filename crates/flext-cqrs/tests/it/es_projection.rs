//! ProjectionRunner and EventRelay: checkpoints, live following, dead letters, rebuilds,
//! and the log as the outbox.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::{
    Backoff, DeadLetterPolicy, Envelope, EventBus, EventRelay, InMemoryEventStore,
    ProjectionConfig, ProjectionRunner, Repository, Upcasters,
};
use flext_protocols::{CheckpointStore, Projection};
use flext_types::{FlextError, FlextResult, StoredEvent};

use crate::account::{Account, AccountCommand, AccountEvent};

/// Balances per account, failing on deposits of `poison` (to test dead letters).
#[derive(Default)]
struct Balances {
    totals: Mutex<std::collections::BTreeMap<String, u64>>,
    applied: AtomicU64,
    poison: Option<u64>,
    attempts_on_poison: AtomicU64,
}

#[async_trait]
impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    async fn apply(&self, stored: &StoredEvent) -> FlextResult<()> {
        let event = Envelope::<AccountEvent>::decode(stored, &Upcasters::new())?;
        if let AccountEvent::Deposited { amount } = event.payload {
            if Some(amount) == self.poison {
                self.attempts_on_poison.fetch_add(1, Ordering::SeqCst);
                return Err(FlextError::validation(format!(
                    "cannot project a deposit of {amount}"
                )));
            }
            *self
                .totals
                .lock()
                .unwrap()
                .entry(event.stream_id.to_string())
                .or_default() += amount;
        }
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn reset(&self) -> FlextResult<()> {
        self.totals.lock().unwrap().clear();
        self.applied.store(0, Ordering::SeqCst);
        Ok(())
    }
}

impl Balances {
    fn total(&self, account: &str) -> u64 {
        self.totals
            .lock()
            .unwrap()
            .get(&format!("Account-{account}"))
            .copied()
            .unwrap_or(0)
    }
}

async fn seeded(deposits: &[u64]) -> InMemoryEventStore {
    let store = InMemoryEventStore::new();
    let repo: Repository<Account> = Repository::new(Arc::new(store.clone()));
    repo.execute(
        "a",
        AccountCommand::Open {
            owner: "Ada".into(),
        },
    )
    .await
    .unwrap();
    for &amount in deposits {
        repo.execute("a", AccountCommand::Deposit(amount))
            .await
            .unwrap();
    }
    store
}

fn runner(store: &InMemoryEventStore, projection: Arc<Balances>) -> ProjectionRunner {
    ProjectionRunner::new(Arc::new(store.clone()), Arc::new(store.clone()), projection)
}

#[tokio::test]
async fn catch_up_applies_everything_and_a_restart_resumes_at_the_checkpoint() {
    let store = seeded(&[10, 20]).await;
    let projection = Arc::new(Balances::default());
    let progress = runner(&store, projection.clone()).catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.position), (3, 3));
    assert_eq!(projection.total("a"), 30);

    let repo: Repository<Account> = Repository::new(Arc::new(store.clone()));
    repo.execute("a", AccountCommand::Deposit(5)).await.unwrap();
    let restarted = runner(&store, projection.clone());
    let progress = restarted.catch_up().await.unwrap();
    assert_eq!(
        (progress.applied, progress.position),
        (1, 4),
        "only the new event"
    );
    assert_eq!(projection.total("a"), 35);
    assert_eq!(restarted.position().await.unwrap(), 4);
}

#[tokio::test]
async fn catch_up_reads_in_batches() {
    let deposits: Vec<u64> = (1..=40).collect();
    let store = seeded(&deposits).await;
    let projection = Arc::new(Balances::default());
    let progress = runner(&store, projection.clone())
        .with_config(ProjectionConfig::default().with_batch_size(7))
        .catch_up()
        .await
        .unwrap();
    assert_eq!(progress.applied, 41);
    assert_eq!(projection.total("a"), 820);
}

#[tokio::test(start_paused = true)]
async fn a_poisoned_event_is_dead_lettered_after_its_tries_and_the_skip_policy_moves_on() {
    let store = seeded(&[10, 13, 20]).await;
    let projection = Arc::new(Balances {
        poison: Some(13),
        ..Balances::default()
    });
    let runner = runner(&store, projection.clone()).with_config(
        ProjectionConfig::default()
            .with_max_attempts(4)
            .with_backoff(Backoff::fixed(Duration::from_millis(100)))
            .with_dead_letter_policy(DeadLetterPolicy::Skip),
    );
    let started = tokio::time::Instant::now();
    let progress = runner.catch_up().await.unwrap();
    assert_eq!(
        (progress.applied, progress.dead_lettered, progress.position),
        (3, 1, 4)
    );
    assert_eq!(projection.attempts_on_poison.load(Ordering::SeqCst), 4);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(300),
        "three pauses between four tries"
    );
    assert_eq!(projection.total("a"), 30);
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].position, letters[0].attempts), (3, 4));
    assert_eq!(letters[0].event_type, "MoneyDeposited");
    assert_eq!(letters[0].error.code(), ErrorCode::ValidationError);
    assert_eq!(
        letters[0].error.to_string(),
        "cannot project a deposit of 13"
    );
}

struct Panicky;

#[async_trait]
impl Projection for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    async fn apply(&self, _: &StoredEvent) -> FlextResult<()> {
        panic!("read model on fire");
    }
    async fn reset(&self) -> FlextResult<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_projection_dead_letters_instead_of_crashing() {
    let store = seeded(&[]).await;
    let runner = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        Arc::new(Panicky),
    );
    let progress = runner.catch_up().await.unwrap();
    assert_eq!(progress.dead_lettered, 1);
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(
        letters[0].error.to_string(),
        "Handler execution failed: read model on fire"
    );
}

#[tokio::test(start_paused = true)]
async fn rebuild_replays_from_zero_and_keeps_dead_letters() {
    let store = seeded(&[10, 13]).await;
    let poisoned = Arc::new(Balances {
        poison: Some(13),
        ..Balances::default()
    });
    let runner = runner(&store, poisoned.clone());
    runner.catch_up().await.unwrap();
    assert_eq!(runner.dead_letters().await.unwrap().len(), 1);
    let tries = poisoned.attempts_on_poison.load(Ordering::SeqCst);
    let progress = runner.rebuild().await.unwrap();
    assert_eq!(
        (progress.applied, progress.dead_lettered, progress.position),
        (2, 0, 3)
    );
    assert_eq!(
        poisoned.total("a"),
        10,
        "rebuilt from an empty read model, not added twice"
    );
    assert_eq!(
        runner.dead_letters().await.unwrap().len(),
        1,
        "the letter was kept"
    );
    assert_eq!(
        poisoned.attempts_on_poison.load(Ordering::SeqCst),
        tries,
        "and its event not tried again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_runner_follows_new_events_live_until_shutdown() {
    let store = seeded(&[1]).await;
    let projection = Arc::new(Balances::default());
    let handle = runner(&store, projection.clone()).spawn().unwrap();
    let repo: Repository<Account> = Repository::new(Arc::new(store.clone()));
    let mut last = 0;
    for _ in 0..20 {
        let executed = repo.execute("a", AccountCommand::Deposit(2)).await.unwrap();
        last = executed.append.unwrap().last_position;
    }
    handle
        .wait_for_within(last, Duration::from_secs(10))
        .await
        .expect("the runner followed the new events");
    assert_eq!(projection.total("a"), 41);
    let progress = handle.shutdown().await.unwrap();
    assert_eq!(progress.position, 22);
    assert_eq!(
        projection.applied.load(Ordering::SeqCst),
        22,
        "each event applied once"
    );
}

#[tokio::test]
async fn the_log_is_the_outbox_a_crash_before_publishing_loses_nothing() {
    // Commands commit; the process "crashes" before anything is published.
    let store = seeded(&[10, 20]).await;

    // A new process starts its relay from the stored checkpoint (none yet).
    let bus = Arc::new(EventBus::new());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    bus.subscribe_type_fn(move |envelope: Arc<Envelope<AccountEvent>>| {
        sink.lock()
            .unwrap()
            .push((envelope.version, envelope.payload.clone()));
        async { Ok(()) }
    });
    let relay = Arc::new(
        EventRelay::<AccountEvent>::new("accounts-to-bus", bus.clone(), Arc::new(store.clone()))
            .for_category("Account"),
    );
    let runner = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        relay.clone(),
    );
    assert_eq!(runner.catch_up().await.unwrap().applied, 3);
    assert_eq!(
        *received.lock().unwrap(),
        [
            (
                1,
                AccountEvent::Opened {
                    owner: "Ada".into()
                }
            ),
            (2, AccountEvent::Deposited { amount: 10 }),
            (3, AccountEvent::Deposited { amount: 20 }),
        ]
    );
    assert_eq!(bus.metrics().events["MoneyDeposited"].delivered, 2);

    // Running again publishes nothing twice.
    let again = ProjectionRunner::new(Arc::new(store.clone()), Arc::new(store.clone()), relay);
    assert_eq!(again.catch_up().await.unwrap().applied, 0);
    assert_eq!(received.lock().unwrap().len(), 3);
    assert_eq!(
        store.load_checkpoint("accounts-to-bus").await.unwrap(),
        Some(3)
    );
}

#[tokio::test]
async fn a_relay_skips_other_aggregates_streams() {
    let store = seeded(&[10]).await;
    let other =
        flext_types::NewEvent::new("Pinged", flext_types::JsonPayload::encode(&"ping").unwrap());
    flext_protocols::EventStore::append(
        &store,
        "Accounting-x",
        flext_types::ExpectedVersion::Any,
        vec![other],
    )
    .await
    .unwrap();
    let bus = Arc::new(EventBus::new());
    bus.subscribe_type_fn(|_: Arc<Envelope<AccountEvent>>| async { Ok(()) });
    let relay = Arc::new(
        EventRelay::<AccountEvent>::new("relay", bus.clone(), Arc::new(store.clone()))
            .for_category("Account"),
    );
    let runner = ProjectionRunner::new(Arc::new(store.clone()), Arc::new(store.clone()), relay);
    let progress = runner.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.dead_lettered), (3, 0));
    assert_eq!(
        bus.metrics().deliveries,
        2,
        "the Accounting stream was not relayed"
    );
}
