//! Commands retried after an ambiguous failure: `Retry` (and `Timeout`) around
//! `Repository::execute`, on a store that commits and then loses the reply or answers late.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_handlers::CQRS::{Executed, InMemoryEventStore, current_metadata};
use flext_handlers::Patterns::RetryConfig;
use flext_handlers::Protocols::EventStream;
use flext_handlers::Types::{AppendResult, NewEvent};
use flext_handlers::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Counter {
    total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Added {
    amount: u64,
}

impl Event for Added {
    fn event_name(&self) -> &str {
        "Added"
    }
}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Command = u64;
    type Event = Added;

    fn handle(&self, amount: u64) -> FlextResult<Vec<Added>> {
        Ok(vec![Added { amount }])
    }

    fn apply(&mut self, event: &Added) {
        self.total += event.amount;
    }
}

/// How the store fails the first appends after committing them.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// A `STORAGE_ERROR`, as when the connection drops after the commit.
    LostReply,
    /// A reply that takes a minute.
    SlowReply,
}

/// The in-memory store, failing its first `faults` appends (to the stream `only`, when
/// set) after they commit.
struct Unreliable {
    inner: InMemoryEventStore,
    fault: Fault,
    faults: AtomicU32,
    only: Option<&'static str>,
    appends: AtomicU32,
    committed: Mutex<Vec<AppendResult>>,
}

impl Unreliable {
    fn new(fault: Fault, faults: u32) -> Arc<Self> {
        Arc::new(Self {
            inner: InMemoryEventStore::new(),
            fault,
            faults: AtomicU32::new(faults),
            only: None,
            appends: AtomicU32::new(0),
            committed: Mutex::default(),
        })
    }

    /// The same store failing only appends to `stream`.
    fn on_stream(fault: Fault, faults: u32, stream: &'static str) -> Arc<Self> {
        let mut store = Arc::into_inner(Self::new(fault, faults)).expect("unshared");
        store.only = Some(stream);
        Arc::new(store)
    }

    fn committed(&self) -> Vec<AppendResult> {
        self.committed.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventStore for Unreliable {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        let appended = self.inner.append(stream, expected, events).await?;
        self.committed.lock().unwrap().push(appended);
        if self.faults.load(Ordering::SeqCst) > 0 && self.only.is_none_or(|only| only == stream) {
            self.faults.fetch_sub(1, Ordering::SeqCst);
            match self.fault {
                Fault::LostReply => return Err(FlextError::storage("connection reset")),
                Fault::SlowReply => tokio::time::sleep(Duration::from_secs(60)).await,
            }
        }
        Ok(appended)
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

fn retry() -> Retry {
    Retry::new(RetryConfig::default().with_max_attempts(3)).unwrap()
}

/// What executing `amount` once on a new counter returns.
async fn executed_once(amount: u64, message: &MessageMetadata) -> Executed<Counter> {
    let calm = Repository::<Counter>::new(Arc::new(InMemoryEventStore::new()));
    calm.execute_with("c-1", amount, message).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_after_lost_replies_stores_one_event_and_returns_the_original_result() {
    let store = Unreliable::new(Fault::LostReply, 2);
    let repo = Repository::<Counter>::new(store.clone());
    let message = MessageMetadata::new();

    let done = retry()
        .run(|_| repo.execute_with("c-1", 5, &message))
        .await
        .unwrap();

    assert_eq!(
        store.appends.load(Ordering::SeqCst),
        1,
        "the retries found it"
    );
    assert_eq!(store.inner.len(), 1, "one event");
    assert_eq!(done.append, Some(store.committed()[0]));
    assert_eq!(done, executed_once(5, &message).await);
}

#[tokio::test(start_paused = true)]
async fn retry_after_a_timeout_that_hid_the_commit_stores_one_event() {
    let store = Unreliable::new(Fault::SlowReply, 1);
    let repo = Repository::<Counter>::new(store.clone());
    let timeout = Timeout::new(Duration::from_secs(1));
    let message = MessageMetadata::new();

    let done = retry()
        .run(|_| timeout.run(repo.execute_with("c-1", 5, &message)))
        .await
        .unwrap();

    assert_eq!(store.inner.len(), 1);
    assert_eq!(done, executed_once(5, &message).await);
}

/// Adds to counter "c-1" through the repository, retried, inside a command handler.
struct Add(u64);

impl Command for Add {
    type Output = Executed<Counter>;
}

#[tokio::test(start_paused = true)]
async fn a_handler_retrying_execute_stores_one_event_with_the_commands_lineage() {
    let store = Unreliable::new(Fault::LostReply, 2);
    let repo = Arc::new(Repository::<Counter>::new(store.clone()));
    let mut bus = CommandBus::new();
    bus.register_fn(move |Add(amount): Add| {
        let repo = repo.clone();
        async move {
            assert!(current_metadata().is_some());
            retry().run(|_| repo.execute("c-1", amount)).await
        }
    })
    .unwrap();

    let message = MessageMetadata::new().with_header("user", "ada");
    let done = bus.send_with(Add(5), message.clone()).await.unwrap();
    assert_eq!(done, executed_once(5, &message).await);
    // The caller never saw the reply and sends the command again: still one event.
    let again = bus.send_with(Add(5), message.clone()).await.unwrap();
    assert_eq!(again, done);

    let stored = store.inner.read_stream("Counter-c-1", 1, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].metadata.correlation_id,
        Some(message.correlation_id)
    );
    assert_eq!(stored[0].metadata.causation_id, Some(message.message_id));
}

#[tokio::test(start_paused = true)]
async fn a_handler_retrying_a_timed_out_execute_stores_one_event() {
    let store = Unreliable::new(Fault::SlowReply, 1);
    let repo = Arc::new(Repository::<Counter>::new(store.clone()));
    let mut bus = CommandBus::new();
    bus.register_fn(move |Add(amount): Add| {
        let repo = repo.clone();
        async move {
            let timeout = Timeout::new(Duration::from_secs(1));
            retry()
                .run(|_| timeout.run(repo.execute("c-1", amount)))
                .await
        }
    })
    .unwrap();

    let message = MessageMetadata::new();
    let done = bus.send_with(Add(5), message.clone()).await.unwrap();
    assert_eq!(
        store.inner.len(),
        1,
        "the cancelled attempt's batch was found"
    );
    assert_eq!(done, executed_once(5, &message).await);
}

/// Adds `first` to counter "c-a" and `second` to counter "c-b", retried as a whole, inside a
/// command handler.
struct AddBoth {
    first: u64,
    second: u64,
}

impl Command for AddBoth {
    type Output = (Executed<Counter>, Executed<Counter>);
}

#[tokio::test(start_paused = true)]
async fn a_retry_around_executes_on_two_streams_stores_one_batch_each_and_returns_the_originals() {
    for fault in [Fault::LostReply, Fault::SlowReply] {
        // The second stream's append commits and its reply is lost (or late): the retry
        // runs the whole closure again, the first stream's execute included.
        let store = Unreliable::on_stream(fault, 1, "Counter-c-b");
        let repo = Arc::new(Repository::<Counter>::new(store.clone()));
        let mut bus = CommandBus::new();
        bus.register_fn(move |both: AddBoth| {
            let repo = repo.clone();
            async move {
                let timeout = Timeout::new(Duration::from_secs(1));
                retry()
                    .run(|_| {
                        let repo = repo.clone();
                        let timeout = &timeout;
                        async move {
                            let a = timeout.run(repo.execute("c-a", both.first)).await?;
                            let b = timeout.run(repo.execute("c-b", both.second)).await?;
                            Ok((a, b))
                        }
                    })
                    .await
            }
        })
        .unwrap();

        let message = MessageMetadata::new();
        let both = || AddBoth {
            first: 3,
            second: 4,
        };
        let (a, b) = bus.send_with(both(), message.clone()).await.unwrap();
        let per_stream = |stream: &'static str| {
            let inner = store.inner.clone();
            async move { inner.read_stream(stream, 1, 10).await.unwrap().len() }
        };
        assert_eq!(
            (
                per_stream("Counter-c-a").await,
                per_stream("Counter-c-b").await
            ),
            (1, 1),
            "one batch on each stream ({fault:?})"
        );
        assert_eq!(store.appends.load(Ordering::SeqCst), 2, "{fault:?}");
        // The originals: what executing each once returns, in a store that loses nothing.
        let calm = Repository::<Counter>::new(Arc::new(InMemoryEventStore::new()));
        let expected_a = calm.execute_with("c-a", 3, &message).await.unwrap();
        let expected_b = calm.execute_with("c-b", 4, &message).await.unwrap();
        assert_eq!((&a, &b), (&expected_a, &expected_b), "{fault:?}");
        assert_eq!(
            [a.append, b.append],
            [Some(store.committed()[0]), Some(store.committed()[1])]
        );

        // The message delivered again: both executes find their batches.
        let (again_a, again_b) = bus.send_with(both(), message.clone()).await.unwrap();
        assert_eq!((again_a, again_b), (a, b));
        assert_eq!(store.inner.len(), 2, "{fault:?}");
    }
}
