//! Repository: execute, conflicts and retries, snapshots, upcasters, failures.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::{InMemoryEventStore, Repository, RepositoryConfig, Upcasters};
use flext_protocols::{EventStore, EventStream, SnapshotStore};
use flext_types::{
    AppendResult, ExpectedVersion, FlextError, FlextResult, JsonPayload, MessageMetadata, NewEvent,
    Snapshot, StoredEvent,
};
use proptest::prelude::*;
use serde_json::json;

use crate::account::{Account, AccountCommand, AccountEvent};

fn open(owner: &str) -> AccountCommand {
    AccountCommand::Open {
        owner: owner.into(),
    }
}

fn repository(store: &InMemoryEventStore) -> Repository<Account> {
    Repository::new(Arc::new(store.clone()))
}

#[tokio::test]
async fn execute_decides_appends_and_returns_the_new_state() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store);
    let opened = repo.execute("acc-1", open("Ada")).await.unwrap();
    assert_eq!(opened.version, 1);
    assert_eq!(
        opened.events,
        [AccountEvent::Opened {
            owner: "Ada".into()
        }]
    );
    let deposited = repo
        .execute("acc-1", AccountCommand::Deposit(50))
        .await
        .unwrap();
    assert_eq!((deposited.version, deposited.state.balance), (2, 50));
    assert_eq!(deposited.append.unwrap().last_version, 2);
    assert_eq!(store.stream_version("Account-acc-1").await.unwrap(), 2);

    let history = repo.history("acc-1").await.unwrap();
    let versions: Vec<_> = history
        .iter()
        .map(|e| (e.version, e.event_type.to_string()))
        .collect();
    assert_eq!(
        versions,
        [
            (1, "AccountOpened".to_owned()),
            (2, "MoneyDeposited".to_owned())
        ]
    );
}

#[tokio::test]
async fn an_empty_id_is_an_invalid_argument() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store);
    let err = repo.execute(" ", open("Ada")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(err.to_string(), "Account id cannot be empty");
    assert_eq!(
        repo.load("").await.unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_rejected_or_empty_decision_stores_nothing() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store);
    let err = repo
        .execute("acc-1", AccountCommand::Deposit(5))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Account is not open");
    repo.execute("acc-1", open("Ada")).await.unwrap();
    let touched = repo.execute("acc-1", AccountCommand::Touch).await.unwrap();
    assert_eq!((touched.version, touched.append), (1, None));
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn a_panicking_decision_is_an_operation_error_and_stores_nothing() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store);
    repo.execute("acc-1", open("Ada")).await.unwrap();
    let err = repo
        .execute("acc-1", AccountCommand::Explode)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler execution failed: ledger corrupted"
    );
    assert_eq!(store.len(), 1);
    assert_eq!(
        repo.execute("acc-1", AccountCommand::Deposit(1))
            .await
            .unwrap()
            .version,
        2
    );
}

#[tokio::test]
async fn a_stale_cache_catches_up_from_the_stream() {
    let store = InMemoryEventStore::new();
    let mine = repository(&store);
    let theirs = repository(&store);
    mine.execute("acc-1", open("Ada")).await.unwrap();
    theirs
        .execute("acc-1", AccountCommand::Deposit(30))
        .await
        .unwrap();
    // `mine` cached the account at version 1; the next command sees the deposit anyway.
    let withdrawn = mine
        .execute("acc-1", AccountCommand::Withdraw(30))
        .await
        .unwrap();
    assert_eq!(
        (
            withdrawn.version,
            withdrawn.state.balance,
            withdrawn.retries
        ),
        (3, 0, 0)
    );
}

/// The in-memory store with faults: a rival writer that appends first (`rivals` times),
/// and lost replies (the next `lost_replies` appends commit, then fail with a
/// `STORAGE_ERROR`, as when a connection drops after the commit). It counts the appends it
/// is asked for, keeps what each committed append returned, and logs each stream read as
/// (the version it read from, how many events it returned).
#[derive(Default)]
struct Faulty {
    inner: InMemoryEventStore,
    rivals: AtomicU32,
    lost_replies: AtomicU32,
    appends: AtomicU32,
    committed: Mutex<Vec<AppendResult>>,
    reads: Mutex<Vec<(u64, usize)>>,
}

impl Faulty {
    fn on(inner: &InMemoryEventStore) -> Self {
        Self {
            inner: inner.clone(),
            ..Self::default()
        }
    }

    fn losing_replies(self, lost: u32) -> Self {
        self.lost_replies.store(lost, Ordering::SeqCst);
        self
    }

    /// What the last committed append returned.
    fn last_committed(&self) -> AppendResult {
        *self.committed.lock().unwrap().last().expect("an append")
    }

    /// The stream reads so far, forgotten.
    fn take_reads(&self) -> Vec<(u64, usize)> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
}

#[async_trait]
impl EventStore for Faulty {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.rivals.load(Ordering::SeqCst) > 0 {
            self.rivals.fetch_sub(1, Ordering::SeqCst);
            let rival = NewEvent::new(
                "MoneyDeposited",
                JsonPayload::encode(&AccountEvent::Deposited { amount: 1 })?,
            );
            self.inner
                .append(stream, ExpectedVersion::Any, vec![rival])
                .await?;
        }
        let appended = self.inner.append(stream, expected, events).await?;
        self.committed.lock().unwrap().push(appended);
        if self.lost_replies.load(Ordering::SeqCst) > 0 {
            self.lost_replies.fetch_sub(1, Ordering::SeqCst);
            return Err(FlextError::storage("connection lost after the commit"));
        }
        Ok(appended)
    }
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        let events = self.inner.read_stream(stream, from, limit).await?;
        self.reads.lock().unwrap().push((from, events.len()));
        Ok(events)
    }
    async fn read_all(&self, from: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
        self.inner.read_all(from, limit).await
    }
    async fn stream_version(&self, stream: &str) -> FlextResult<u64> {
        self.inner.stream_version(stream).await
    }
    async fn head_position(&self) -> FlextResult<u64> {
        self.inner.head_position().await
    }
    async fn subscribe(&self, from: u64) -> FlextResult<EventStream> {
        self.inner.subscribe(from).await
    }
}

#[tokio::test]
async fn conflicts_are_retried_up_to_the_limit() {
    let inner = InMemoryEventStore::new();
    repository(&inner)
        .execute("acc-1", open("Ada"))
        .await
        .unwrap();
    let contended = Arc::new(Faulty::on(&inner));
    contended.rivals.store(2, Ordering::SeqCst);
    let repo: Repository<Account> = Repository::new(contended.clone());
    let done = repo
        .execute("acc-1", AccountCommand::Deposit(10))
        .await
        .unwrap();
    assert_eq!(done.retries, 2);
    assert_eq!(
        (done.version, done.state.balance),
        (4, 12),
        "decided again on the rivals' deposits"
    );

    contended.rivals.store(10, Ordering::SeqCst);
    let limited = repo.with_config(RepositoryConfig::default().with_max_conflict_retries(1));
    let err = limited
        .execute("acc-1", AccountCommand::Deposit(10))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ConcurrencyConflict);
    assert_eq!(
        contended.rivals.load(Ordering::SeqCst),
        8,
        "two attempts: the first and one retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_aggregate_all_land() {
    let store = InMemoryEventStore::new();
    let repo = Arc::new(
        repository(&store)
            .with_config(RepositoryConfig::default().with_max_conflict_retries(1_000)),
    );
    repo.execute("acc-1", open("Ada")).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    repo.execute("acc-1", AccountCommand::Deposit(2))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let loaded = repo.load("acc-1").await.unwrap();
    assert_eq!((loaded.version, loaded.state.balance), (201, 400));
}

#[tokio::test]
async fn snapshots_are_taken_every_n_events_and_used_to_load() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store).with_snapshots(Arc::new(store.clone()), 10);
    repo.execute("acc-1", open("Ada")).await.unwrap();
    for _ in 0..24 {
        repo.execute("acc-1", AccountCommand::Deposit(1))
            .await
            .unwrap();
    }
    let snapshot = store
        .load_snapshot("Account-acc-1")
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snapshot.version, 20);
    let at_20: Account = snapshot.payload.decode().unwrap();
    assert_eq!(at_20.balance, 19);

    let cold = repository(&store)
        .with_snapshots(Arc::new(store.clone()), 10)
        .with_config(
            RepositoryConfig::default()
                .with_cache_capacity(0)
                .with_snapshot_every(Some(10)),
        );
    let loaded = cold.load("acc-1").await.unwrap();
    assert_eq!(
        (loaded.version, loaded.state.balance, loaded.state.movements),
        (25, 24, 25)
    );
}

#[tokio::test]
async fn a_config_without_an_interval_keeps_the_one_with_snapshots_set() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store)
        .with_snapshots(Arc::new(store.clone()), 10)
        .with_config(RepositoryConfig::default().with_cache_capacity(0));
    assert_eq!(repo.config().snapshot_every, Some(10));
    assert_eq!(repo.config().cache_capacity, 0);
    repo.execute("acc-1", open("Ada")).await.unwrap();
    for _ in 0..9 {
        repo.execute("acc-1", AccountCommand::Deposit(1))
            .await
            .unwrap();
    }
    let snapshot = store.load_snapshot("Account-acc-1").await.unwrap();
    assert_eq!(snapshot.map(|s| s.version), Some(10), "still snapshotting");

    // A config that names an interval sets it, in either order.
    let explicit = repository(&store)
        .with_config(RepositoryConfig::default().with_snapshot_every(Some(4)))
        .with_snapshots(Arc::new(store.clone()), 10)
        .with_config(RepositoryConfig::default().with_snapshot_every(Some(3)));
    assert_eq!(explicit.config().snapshot_every, Some(3));
}

#[tokio::test]
async fn an_interval_of_zero_set_on_the_field_snapshots_every_event_instead_of_panicking() {
    let store = InMemoryEventStore::new();
    let mut config = RepositoryConfig::default();
    config.snapshot_every = Some(0);
    let repo = repository(&store)
        .with_snapshots(Arc::new(store.clone()), 10)
        .with_config(config);
    assert_eq!(repo.config().snapshot_every, Some(1));
    repo.execute("acc-1", open("Ada")).await.unwrap();
    let snapshot = store.load_snapshot("Account-acc-1").await.unwrap();
    assert_eq!(snapshot.map(|s| s.version), Some(1));
}

#[tokio::test]
async fn an_unreadable_snapshot_falls_back_to_a_full_replay() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store);
    repo.execute("acc-1", open("Ada")).await.unwrap();
    repo.execute("acc-1", AccountCommand::Deposit(7))
        .await
        .unwrap();
    store
        .save_snapshot(Snapshot {
            stream_id: "Account-acc-1".into(),
            version: 2,
            schema_version: 1,
            payload: JsonPayload::encode(&json!({"balance": "not a number"})).unwrap(),
            timestamp: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let cold = repository(&store)
        .with_snapshots(Arc::new(store.clone()), 100)
        .with_config(
            RepositoryConfig::default()
                .with_cache_capacity(0)
                .with_snapshot_every(Some(100)),
        );
    let loaded = cold.load("acc-1").await.unwrap();
    assert_eq!((loaded.version, loaded.state.balance), (2, 7));
}

#[tokio::test]
async fn old_payloads_are_upcast_and_undecodable_ones_are_named() {
    let store = InMemoryEventStore::new();
    // Schema 1 of MoneyDeposited stored the amount in cents under another name.
    let mut old = NewEvent::new(
        "MoneyDeposited",
        JsonPayload::encode(&json!({"Deposited": {"cents": 1200}})).unwrap(),
    );
    old.schema_version = 1;
    let opened = NewEvent::new(
        "AccountOpened",
        JsonPayload::encode(&AccountEvent::Opened {
            owner: "Ada".into(),
        })
        .unwrap(),
    );
    store
        .append(
            "Account-acc-1",
            ExpectedVersion::NoStream,
            vec![opened, old],
        )
        .await
        .unwrap();

    let plain = repository(&store);
    let err = plain.load("acc-1").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SerializationError);
    assert!(
        err.message().starts_with("Cannot decode event MoneyDeposited (schema version 1) of stream Account-acc-1 at version 2: missing field `amount`"),
        "{err}"
    );

    let upcasters = Upcasters::new().register("MoneyDeposited", 1, |payload| {
        let cents = payload["Deposited"]["cents"].as_u64().unwrap_or(0);
        Ok(json!({"Deposited": {"amount": cents / 100}}))
    });
    let upcasting = repository(&store).with_upcasters(upcasters);
    assert_eq!(upcasting.load("acc-1").await.unwrap().state.balance, 12);
}

#[tokio::test]
async fn events_carry_the_commands_correlation_and_causation() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store);
    let command = MessageMetadata::new().with_header("user", "ada");
    repo.execute_with("acc-1", open("Ada"), &command)
        .await
        .unwrap();
    let stored = store.read_stream("Account-acc-1", 1, 1).await.unwrap();
    assert_eq!(
        stored[0].metadata.correlation_id,
        Some(command.correlation_id)
    );
    assert_eq!(stored[0].metadata.causation_id, Some(command.message_id));
    assert_eq!(
        stored[0].metadata.headers.get("user").map(String::as_str),
        Some("ada")
    );
}

#[tokio::test]
async fn save_appends_events_decided_elsewhere_with_their_expected_version() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store);
    let meta = MessageMetadata::new();
    repo.save(
        "acc-1",
        ExpectedVersion::NoStream,
        &[AccountEvent::Opened {
            owner: "Ada".into(),
        }],
        &meta,
    )
    .await
    .unwrap();
    let err = repo
        .save(
            "acc-1",
            ExpectedVersion::NoStream,
            &[AccountEvent::Deposited { amount: 1 }],
            &meta,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ConcurrencyConflict);
    assert_eq!(
        repo.load("acc-1").await.unwrap().state.owner.as_deref(),
        Some("Ada")
    );
}

/// Runs `attempt` until it succeeds with anything but a `STORAGE_ERROR`, at most `max`
/// times: a caller retrying after ambiguous failures.
async fn retried<T, F, Fut>(max: u32, mut attempt: F) -> FlextResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = FlextResult<T>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Err(error) if error.is(ErrorCode::StorageError) && n < max => n += 1,
            outcome => return outcome,
        }
    }
}

/// An open account "acc-1" on `store`, at version 1.
async fn opened(store: &InMemoryEventStore) {
    repository(store)
        .execute("acc-1", open("Ada"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_retry_after_a_lost_reply_appends_once_and_returns_the_original_result() {
    let inner = InMemoryEventStore::new();
    opened(&inner).await;
    let store = Arc::new(Faulty::on(&inner).losing_replies(1));
    let repo: Repository<Account> = Repository::new(store.clone());
    repo.load("acc-1").await.unwrap();
    let command = MessageMetadata::new();

    let first = repo
        .execute_with("acc-1", AccountCommand::Deposit(50), &command)
        .await
        .unwrap_err();
    assert_eq!(first.code(), ErrorCode::StorageError);
    let done = repo
        .execute_with("acc-1", AccountCommand::Deposit(50), &command)
        .await
        .unwrap();

    assert_eq!(inner.len(), 2, "the deposit is stored once");
    assert_eq!(done.append, Some(store.last_committed()));
    assert_eq!((done.version, done.state.balance), (2, 50));
    assert_eq!(done.events, [AccountEvent::Deposited { amount: 50 }]);
    assert_eq!(repo.load("acc-1").await.unwrap().state.balance, 50);
}

#[tokio::test]
async fn the_retried_result_equals_what_the_first_attempt_would_have_returned() {
    // Two identical worlds: in one the reply of the deposit is lost and the caller retries.
    let (calm, lossy) = (InMemoryEventStore::new(), InMemoryEventStore::new());
    opened(&calm).await;
    opened(&lossy).await;
    let command = MessageMetadata::new();
    let expected = repository(&calm)
        .execute_with("acc-1", AccountCommand::Deposit(5), &command)
        .await
        .unwrap();
    let store = Arc::new(Faulty::on(&lossy).losing_replies(2));
    let repo: Repository<Account> = Repository::new(store.clone());
    let done = retried(5, || {
        repo.execute_with("acc-1", AccountCommand::Deposit(5), &command)
    })
    .await
    .unwrap();
    assert_eq!(done, expected);
    assert_eq!(lossy.len(), 2);
}

#[tokio::test]
async fn a_retry_finds_its_batch_after_other_commands_moved_the_aggregate_on() {
    let inner = InMemoryEventStore::new();
    opened(&inner).await;
    let store = Arc::new(Faulty::on(&inner).losing_replies(1));
    let repo: Repository<Account> = Repository::new(store.clone());
    let command = MessageMetadata::new();
    repo.execute_with("acc-1", AccountCommand::Deposit(50), &command)
        .await
        .unwrap_err();
    let original = store.last_committed();
    // Another command lands meanwhile; the repository's cached state moves past the deposit.
    repo.execute_with("acc-1", AccountCommand::Deposit(7), &MessageMetadata::new())
        .await
        .unwrap();

    let done = repo
        .execute_with("acc-1", AccountCommand::Deposit(50), &command)
        .await
        .unwrap();
    assert_eq!(inner.len(), 3, "the retry stored nothing");
    assert_eq!(done.append, Some(original));
    assert_eq!((done.version, done.state.balance), (2, 50));
    assert_eq!(repo.load("acc-1").await.unwrap().state.balance, 57);
}

#[tokio::test]
async fn a_repeated_message_that_would_now_be_rejected_returns_its_original_result() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store);
    let opening = MessageMetadata::new();
    let first = repo
        .execute_with("acc-1", open("Ada"), &opening)
        .await
        .unwrap();
    // The reply was lost above the repository: the caller sends the same message again.
    let again = repo
        .execute_with("acc-1", open("Ada"), &opening)
        .await
        .unwrap();
    assert_eq!(again, first);

    let withdrawal = MessageMetadata::new();
    repo.execute("acc-1", AccountCommand::Deposit(30))
        .await
        .unwrap();
    let first = repo
        .execute_with("acc-1", AccountCommand::Withdraw(30), &withdrawal)
        .await
        .unwrap();
    // A cold repository (another process) sees the balance at 0, yet knows the message.
    let cold = repository(&store).with_config(RepositoryConfig::default().with_cache_capacity(0));
    let again = cold
        .execute_with("acc-1", AccountCommand::Withdraw(30), &withdrawal)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(store.len(), 3);

    // A new message is decided on the current state as always.
    let err = repo
        .execute_with(
            "acc-1",
            AccountCommand::Withdraw(30),
            &MessageMetadata::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Insufficient funds: balance 0, requested 30"
    );
}

#[tokio::test]
async fn a_rejected_repeat_is_looked_for_back_to_when_the_message_was_created() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store);
    let opening = MessageMetadata::new();
    let first = repo
        .execute_with("acc-1", open("Ada"), &opening)
        .await
        .unwrap();
    for _ in 0..20 {
        repo.execute("acc-1", AccountCommand::Deposit(1))
            .await
            .unwrap();
    }
    // The opening is 20 events back: found through chunks of 8 and 32.
    let again = repo
        .execute_with("acc-1", open("Ada"), &opening)
        .await
        .unwrap();
    assert_eq!(again, first);

    // Events committed before the message was created cannot be its own: the look-back
    // stops at the first chunk older than the message (here one claiming to be newer).
    let mut later = opening.clone();
    later.timestamp += time::Duration::hours(1);
    let err = repo
        .execute_with("acc-1", open("Ada"), &later)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Account is already open");
    // And it looks no further back than `retry_lookback` events before what it has loaded
    // (a cold repository reads the whole stream, and finds the batch there).
    let short = repository(&store).with_config(RepositoryConfig::default().with_retry_lookback(10));
    short.load("acc-1").await.unwrap();
    let err = short
        .execute_with("acc-1", open("Ada"), &opening)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::BusinessRuleViolation);
    assert_eq!(store.len(), 21);
}

#[tokio::test]
async fn one_message_may_change_several_aggregates() {
    let store = InMemoryEventStore::new();
    let repo = repository(&store);
    let command = MessageMetadata::new();
    for id in ["acc-1", "acc-2"] {
        let done = repo.execute_with(id, open("Ada"), &command).await.unwrap();
        assert_eq!(done.version, 1, "{id}");
    }
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn a_repeat_of_a_message_that_was_rejected_is_decided_again_and_then_repeats_as_one() {
    let store = InMemoryEventStore::new();
    opened(&store).await;
    let repo = repository(&store);
    let withdrawal = MessageMetadata::new();
    let withdraw = || repo.execute_with("acc-1", AccountCommand::Withdraw(30), &withdrawal);
    let err = withdraw().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BusinessRuleViolation);
    assert_eq!(store.len(), 1, "a rejection leaves no trace");
    // Another message funds the account: the repeat is decided again, now accepted.
    repo.execute_with(
        "acc-1",
        AccountCommand::Deposit(50),
        &MessageMetadata::new(),
    )
    .await
    .unwrap();
    let accepted = withdraw().await.unwrap();
    assert_eq!((accepted.version, accepted.state.balance), (3, 20));
    // From now on it is a repeat, though the balance (21, once another deposit lands and
    // the repository has loaded it) would refuse it: its batch, before the loaded state, is
    // found by looking back, and nothing is withdrawn twice.
    repo.execute_with("acc-1", AccountCommand::Deposit(1), &MessageMetadata::new())
        .await
        .unwrap();
    assert_eq!(repo.load("acc-1").await.unwrap().version, 4);
    let again = withdraw().await.unwrap();
    assert_eq!(again, accepted);
    let cold = repository(&store).with_config(RepositoryConfig::default().with_cache_capacity(0));
    let from_cold = cold
        .execute_with("acc-1", AccountCommand::Withdraw(30), &withdrawal)
        .await
        .unwrap();
    assert_eq!(from_cold, accepted);
    assert_eq!(store.len(), 4);
    assert_eq!(repo.load("acc-1").await.unwrap().state.balance, 21);
}

#[tokio::test]
async fn save_with_no_events_appends_nothing_and_returns_the_current_version() {
    let inner = InMemoryEventStore::new();
    opened(&inner).await;
    let store = Arc::new(Faulty::on(&inner));
    let repo: Repository<Account> = Repository::new(store.clone());
    let meta = MessageMetadata::new();

    let kept = repo
        .save("acc-1", ExpectedVersion::Exact(1), &[], &meta)
        .await
        .unwrap();
    assert_eq!(kept.last_version, 1, "the current version");
    assert_eq!(kept.last_position, 1, "nothing after the head");
    let fresh = repo
        .save("acc-2", ExpectedVersion::NoStream, &[], &meta)
        .await
        .unwrap();
    assert_eq!(fresh.last_version, 0);
    // The expectation is still checked, as an empty append to EventStoreDB checks it.
    let err = repo
        .save("acc-1", ExpectedVersion::Exact(3), &[], &meta)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ConcurrencyConflict);
    assert_eq!(
        store.appends.load(Ordering::SeqCst),
        0,
        "append is never called"
    );
    assert_eq!(inner.len(), 1);
}

#[tokio::test]
async fn an_execute_that_decides_nothing_never_calls_append_nor_takes_another_messages_batch() {
    let inner = InMemoryEventStore::new();
    opened(&inner).await;
    let store = Arc::new(Faulty::on(&inner));
    let repo: Repository<Account> = Repository::new(store.clone());
    // Recent batches of other messages, within the look-back and the clock tolerance.
    for amount in [5, 7] {
        repo.execute_with(
            "acc-1",
            AccountCommand::Deposit(amount),
            &MessageMetadata::new(),
        )
        .await
        .unwrap();
    }
    let plain = repo.execute("acc-1", AccountCommand::Touch).await.unwrap();
    let touch = MessageMetadata::new();
    let caused = repo
        .execute_with("acc-1", AccountCommand::Touch, &touch)
        .await
        .unwrap();
    let repeated = repo
        .execute_with("acc-1", AccountCommand::Touch, &touch)
        .await
        .unwrap();
    for done in [plain, caused, repeated] {
        assert_eq!((done.version, done.append, done.events.len()), (3, None, 0));
        assert_eq!(done.state.balance, 12);
    }
    assert_eq!(store.appends.load(Ordering::SeqCst), 2, "the deposits only");
}

/// The in-memory store, holding every append until two are waiting, then letting one
/// through a second later than the other: two executions that loaded the same version
/// race to append.
struct Racing {
    inner: InMemoryEventStore,
    gate: tokio::sync::Barrier,
}

#[async_trait]
impl EventStore for Racing {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        if self.gate.wait().await.is_leader() {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(&self, from: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
        self.inner.read_all(from, limit).await
    }
    async fn stream_version(&self, stream: &str) -> FlextResult<u64> {
        self.inner.stream_version(stream).await
    }
    async fn head_position(&self) -> FlextResult<u64> {
        self.inner.head_position().await
    }
    async fn subscribe(&self, from: u64) -> FlextResult<EventStream> {
        self.inner.subscribe(from).await
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_executes_of_one_message_leave_the_cache_and_the_snapshot_as_stored() {
    let inner = InMemoryEventStore::new();
    opened(&inner).await;
    let racing = Arc::new(Racing {
        inner: inner.clone(),
        gate: tokio::sync::Barrier::new(2),
    });
    let repo: Repository<Account> =
        Repository::new(racing).with_snapshots(Arc::new(inner.clone()), 1);
    repo.load("acc-1").await.unwrap();
    // One message id, two decisions (a nondeterministic handler, or the same metadata sent
    // twice at once): the store keeps one batch and answers the other append as its retry.
    let message = MessageMetadata::new();
    let (five, seven) = tokio::join!(
        repo.execute_with("acc-1", AccountCommand::Deposit(5), &message),
        repo.execute_with("acc-1", AccountCommand::Deposit(7), &message),
    );
    assert_eq!((five.unwrap().version, seven.unwrap().version), (2, 2));
    assert_eq!(inner.len(), 2, "one batch stored");

    let uncached = RepositoryConfig::default().with_cache_capacity(0);
    let stored = repository(&inner)
        .with_config(uncached.clone())
        .load("acc-1")
        .await
        .unwrap();
    assert_eq!(repo.load("acc-1").await.unwrap(), stored, "the cache");
    let from_snapshot = repository(&inner)
        .with_snapshots(Arc::new(inner.clone()), 1)
        .with_config(uncached)
        .load("acc-1")
        .await
        .unwrap();
    assert_eq!(from_snapshot, stored, "the snapshot");
    let snapshot = inner.load_snapshot("Account-acc-1").await.unwrap().unwrap();
    assert_eq!(snapshot.version, 2);
}

#[tokio::test]
async fn the_original_of_a_repeat_is_replayed_from_a_snapshot_before_it_not_the_stream_start() {
    let inner = InMemoryEventStore::new();
    let store = Arc::new(Faulty::on(&inner));
    let repo: Repository<Account> =
        Repository::new(store.clone()).with_snapshots(Arc::new(inner.clone()), 10);
    repo.execute("acc-1", open("Ada")).await.unwrap();
    for _ in 0..29 {
        repo.execute("acc-1", AccountCommand::Deposit(1))
            .await
            .unwrap();
    }
    let deposit = MessageMetadata::new();
    let first = repo
        .execute_with("acc-1", AccountCommand::Deposit(100), &deposit)
        .await
        .unwrap();
    assert_eq!(first.version, 31, "after the snapshot at 30");
    for _ in 0..5 {
        repo.execute("acc-1", AccountCommand::Deposit(1))
            .await
            .unwrap();
    }
    store.take_reads();

    // The repeat decides a deposit again on the cached state (36); the store knows its ids.
    let again = repo
        .execute_with("acc-1", AccountCommand::Deposit(100), &deposit)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(inner.len(), 36);
    let reads = store.take_reads();
    assert!(
        reads.iter().all(|(from, _)| *from > 1),
        "nothing read from the stream's start: {reads:?}"
    );
    let read: usize = reads.iter().map(|(_, count)| count).sum();
    assert!(read <= 16, "{read} events read: {reads:?}");
}

fn command_strategy() -> impl Strategy<Value = AccountCommand> {
    prop_oneof![
        (1u64..100).prop_map(AccountCommand::Deposit),
        (1u64..150).prop_map(AccountCommand::Withdraw),
        Just(AccountCommand::Touch),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Loading from a snapshot gives the same state and version as replaying every event.
    #[test]
    fn loading_from_a_snapshot_equals_a_full_replay(
        commands in proptest::collection::vec(command_strategy(), 0..60),
        every in 1u64..12,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let store = InMemoryEventStore::new();
            let writer = repository(&store).with_snapshots(Arc::new(store.clone()), every);
            writer.execute("acc", open("Ada")).await.unwrap();
            for command in commands {
                // Rejected withdrawals are part of the property: they store nothing.
                let _ = writer.execute("acc", command).await;
            }
            let uncached = RepositoryConfig::default().with_cache_capacity(0).with_snapshot_every(Some(every));
            let from_snapshot = repository(&store)
                .with_snapshots(Arc::new(store.clone()), every)
                .with_config(uncached.clone())
                .load("acc")
                .await
                .unwrap();
            let replayed = repository(&store)
                .with_config(uncached.with_snapshot_every(None))
                .load("acc")
                .await
                .unwrap();
            prop_assert_eq!(&from_snapshot, &replayed);
            let cached = writer.load("acc").await.unwrap();
            prop_assert_eq!(&cached, &replayed);
            Ok(())
        })?;
    }
}
