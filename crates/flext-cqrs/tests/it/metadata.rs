//! The message a handler is handling: its metadata without threading it by hand, through
//! middleware, into nested dispatches and into `Repository::execute`.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;

use flext_cqrs::{
    CommandBus, Dispatch, DispatchOutput, EventBus, Executed, InMemoryEventStore, QueryBus,
    Repository, current_metadata, with_current_metadata,
};
use flext_impl::handler_fn;
use flext_protocols::{Command, EventStore, Middleware};
use flext_types::{FlextResult, MessageMetadata};

use crate::account::{Account, AccountCommand};
use crate::{CreateUserCommand, GetUserQuery, UserCreated};

type Seen = Arc<Mutex<Vec<Option<MessageMetadata>>>>;

fn seen(log: &Seen) -> Vec<Option<MessageMetadata>> {
    log.lock().unwrap().clone()
}

/// A bus whose `CreateUserCommand` handler records the metadata it reads, twice.
fn recording_bus(log: &Seen) -> CommandBus {
    let mut bus = CommandBus::new();
    let log = log.clone();
    bus.register_fn(move |_: CreateUserCommand| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(current_metadata());
            tokio::task::yield_now().await;
            log.lock().unwrap().push(current_metadata());
            Ok("done".to_owned())
        }
    })
    .unwrap();
    bus
}

fn ada() -> CreateUserCommand {
    CreateUserCommand::new("Ada", "ada@example.com")
}

/// Adds a header to every dispatch.
struct Stamp;

impl Middleware<Dispatch, DispatchOutput> for Stamp {
    fn name(&self) -> &str {
        "stamp"
    }

    fn before_request(&self, mut dispatch: Dispatch) -> FlextResult<Dispatch> {
        dispatch
            .metadata_mut()
            .headers
            .insert("stamped".into(), "yes".into());
        Ok(dispatch)
    }
}

#[tokio::test]
async fn a_command_handler_reads_the_metadata_it_was_sent_with() {
    let log: Seen = Arc::default();
    let bus = recording_bus(&log);
    let sent = MessageMetadata::new().with_header("user", "ada");
    bus.send_with(ada(), sent.clone()).await.unwrap();
    assert_eq!(seen(&log), [Some(sent.clone()), Some(sent)]);
    assert_eq!(current_metadata(), None, "nothing outside a handler");
}

#[tokio::test]
async fn the_handler_sees_the_metadata_as_the_middleware_left_it() {
    let log: Seen = Arc::default();
    let mut bus = recording_bus(&log);
    bus.add_middleware(Stamp);
    let sent = MessageMetadata::new();
    bus.send_with(ada(), sent.clone()).await.unwrap();
    let expected = sent.with_header("stamped", "yes");
    assert_eq!(seen(&log), [Some(expected.clone()), Some(expected)]);
}

#[tokio::test]
async fn without_metadata_each_dispatch_has_one_of_its_own() {
    for with_middleware in [false, true] {
        let log: Seen = Arc::default();
        let mut bus = recording_bus(&log);
        if with_middleware {
            bus.add_middleware(Stamp);
        }
        bus.send(ada()).await.unwrap();
        bus.send(ada()).await.unwrap();
        let seen = seen(&log);
        let ids: Vec<_> = seen
            .iter()
            .map(|m| m.as_ref().expect("metadata").message_id)
            .collect();
        assert_eq!(ids[0], ids[1], "one message, one id ({with_middleware})");
        assert_eq!(ids[2], ids[3]);
        assert_ne!(ids[0], ids[2], "another message, another id");
        let first = seen[0].as_ref().unwrap();
        assert_eq!(
            (first.correlation_id, first.causation_id),
            (first.message_id, None),
            "a new conversation"
        );
    }
}

#[tokio::test]
async fn query_handlers_and_event_subscribers_read_the_metadata_of_their_dispatch() {
    let log: Seen = Arc::default();
    let mut queries = QueryBus::new();
    let query_log = log.clone();
    queries
        .register_fn(move |_: GetUserQuery| {
            query_log.lock().unwrap().push(current_metadata());
            async { Ok("Ada".to_owned()) }
        })
        .unwrap();
    let events = EventBus::new();
    for _ in 0..2 {
        let event_log = log.clone();
        events.subscribe_fn("UserCreated", move |_: Arc<UserCreated>| {
            let event_log = event_log.clone();
            async move {
                event_log.lock().unwrap().push(current_metadata());
                Ok(())
            }
        });
    }

    let query = MessageMetadata::new();
    let user = GetUserQuery {
        user_id: "u1".into(),
    };
    queries.execute_with(user, query.clone()).await.unwrap();
    let event = MessageMetadata::new();
    let created = UserCreated {
        user_id: "u1".into(),
    };
    assert_eq!(
        events.publish_with(created, event.clone()).await.delivered,
        2
    );
    assert_eq!(seen(&log), [Some(query), Some(event.clone()), Some(event)]);
}

/// A command sent from inside another command's handler.
struct Notify;

impl Command for Notify {
    type Output = MessageMetadata;
}

#[tokio::test]
async fn a_dispatch_from_inside_a_handler_continues_the_conversation() {
    let mut inner = CommandBus::new();
    inner
        .register_fn(|_: Notify| async { Ok(current_metadata().expect("metadata")) })
        .unwrap();
    let inner = Arc::new(inner);
    let mut outer = CommandBus::new();
    outer
        .register_fn(move |_: CreateUserCommand| {
            let inner = inner.clone();
            async move {
                let nested = inner.send(Notify).await?;
                Ok(serde_json::to_string(&nested).unwrap())
            }
        })
        .unwrap();

    let sent = MessageMetadata::new().with_header("tenant", "acme");
    let nested: MessageMetadata =
        serde_json::from_str(&outer.send_with(ada(), sent.clone()).await.unwrap()).unwrap();
    assert_eq!(nested.correlation_id, sent.correlation_id);
    assert_eq!(nested.causation_id, Some(sent.message_id));
    assert_ne!(nested.message_id, sent.message_id);
    assert_eq!(nested.headers, sent.headers);
}

#[tokio::test]
async fn a_spawned_task_sees_the_metadata_only_when_it_is_carried() {
    let log: Seen = Arc::default();
    let mut bus = CommandBus::new();
    let handler_log = log.clone();
    bus.register_fn(move |_: CreateUserCommand| {
        let log = handler_log.clone();
        async move {
            let bare = tokio::spawn(async { current_metadata() }).await.unwrap();
            let metadata = current_metadata().expect("metadata");
            let carried = tokio::spawn(with_current_metadata(metadata, async {
                current_metadata()
            }))
            .await
            .unwrap();
            log.lock().unwrap().extend([bare, carried]);
            Ok(String::new())
        }
    })
    .unwrap();
    let sent = MessageMetadata::new();
    bus.send_with(ada(), sent.clone()).await.unwrap();
    assert_eq!(seen(&log), [None, Some(sent)]);
}

/// Opens "acc-1" through the repository inside a command handler, then deposits `amount`
/// on "acc-1" once or twice.
struct Deposit {
    amount: u64,
    times: usize,
}

impl Command for Deposit {
    type Output = Vec<u64>;
}

fn account_bus(repo: &Arc<Repository<Account>>) -> CommandBus {
    let mut bus = CommandBus::new();
    let repo = repo.clone();
    bus.register_fn(move |cmd: Deposit| {
        let repo = repo.clone();
        async move {
            let mut versions = Vec::new();
            for _ in 0..cmd.times {
                let done = repo
                    .execute("acc-1", AccountCommand::Deposit(cmd.amount))
                    .await?;
                versions.push(done.version);
            }
            Ok(versions)
        }
    })
    .unwrap();
    bus
}

async fn open_account(store: &InMemoryEventStore) -> Arc<Repository<Account>> {
    let repo = Arc::new(Repository::new(Arc::new(store.clone())));
    repo.execute(
        "acc-1",
        AccountCommand::Open {
            owner: "Ada".into(),
        },
    )
    .await
    .unwrap();
    repo
}

#[tokio::test]
async fn execute_inside_a_handler_carries_the_commands_lineage() {
    let store = InMemoryEventStore::new();
    let repo = open_account(&store).await;
    let bus = account_bus(&repo);
    let sent = MessageMetadata::new().with_header("user", "ada");
    let deposit = Deposit {
        amount: 5,
        times: 1,
    };
    assert_eq!(bus.send_with(deposit, sent.clone()).await.unwrap(), [2]);
    let stored = store.read_stream("Account-acc-1", 2, 1).await.unwrap();
    assert_eq!(stored[0].metadata.correlation_id, Some(sent.correlation_id));
    assert_eq!(stored[0].metadata.causation_id, Some(sent.message_id));
    assert_eq!(
        stored[0].metadata.headers.get("user").map(String::as_str),
        Some("ada")
    );
}

#[tokio::test]
async fn a_command_sent_again_with_its_metadata_deposits_once() {
    let store = InMemoryEventStore::new();
    let repo = open_account(&store).await;
    let bus = account_bus(&repo);
    let sent = MessageMetadata::new();
    for _ in 0..3 {
        let deposit = Deposit {
            amount: 5,
            times: 1,
        };
        assert_eq!(bus.send_with(deposit, sent.clone()).await.unwrap(), [2]);
    }
    assert_eq!(store.len(), 2);
    assert_eq!(repo.load("acc-1").await.unwrap().state.balance, 5);
}

#[tokio::test]
async fn a_second_execute_on_one_aggregate_for_one_message_repeats_the_first() {
    let store = InMemoryEventStore::new();
    let repo = open_account(&store).await;
    let bus = account_bus(&repo);
    let sent = MessageMetadata::new();
    let twice = || Deposit {
        amount: 5,
        times: 2,
    };
    // Within one message, an execute on one stream is one unit of work: the second call
    // derives the first one's ids and returns its result.
    assert_eq!(bus.send_with(twice(), sent.clone()).await.unwrap(), [2, 2]);
    assert_eq!(bus.send_with(twice(), sent.clone()).await.unwrap(), [2, 2]);
    assert_eq!(store.len(), 2);
    // Without metadata of its own, each send is a message of its own.
    assert_eq!(bus.send(twice()).await.unwrap(), [3, 3]);
    assert_eq!(repo.load("acc-1").await.unwrap().state.balance, 10);
}

/// Deposits `amount` on "acc-1", then sends a `Deposit` of its own for a second one.
struct DepositThenSend(u64);

impl Command for DepositThenSend {
    type Output = Vec<u64>;
}

#[tokio::test]
async fn a_second_change_sent_as_a_message_of_its_own_lands_and_repeats_as_one() {
    let store = InMemoryEventStore::new();
    let repo = open_account(&store).await;
    let inner = Arc::new(account_bus(&repo));
    let mut outer = CommandBus::new();
    let handler_repo = repo.clone();
    outer
        .register_fn(move |DepositThenSend(amount): DepositThenSend| {
            let (repo, inner) = (handler_repo.clone(), inner.clone());
            async move {
                let first = repo
                    .execute("acc-1", AccountCommand::Deposit(amount))
                    .await?;
                // Named after this message, so a redelivery sends the same message again.
                let second = current_metadata()
                    .expect("metadata")
                    .caused_by_named("second deposit");
                let times = 1;
                let mut versions = inner.send_with(Deposit { amount, times }, second).await?;
                versions.insert(0, first.version);
                Ok(versions)
            }
        })
        .unwrap();
    let sent = MessageMetadata::new();
    for _ in 0..2 {
        let versions = outer
            .send_with(DepositThenSend(5), sent.clone())
            .await
            .unwrap();
        assert_eq!(versions, [2, 3]);
    }
    assert_eq!(store.len(), 3);
    assert_eq!(repo.load("acc-1").await.unwrap().state.balance, 10);
}

#[tokio::test]
async fn one_metadata_sent_with_two_commands_makes_the_second_a_repeat_of_the_first() {
    let store = InMemoryEventStore::new();
    let repo = open_account(&store).await;
    let bus = account_bus(&repo);
    let metadata = MessageMetadata::new();
    let deposit = |amount| Deposit { amount, times: 1 };
    assert_eq!(
        bus.send_with(deposit(5), metadata.clone()).await.unwrap(),
        [2]
    );
    // One message id names one message: the second command is taken for the first.
    assert_eq!(bus.send_with(deposit(7), metadata).await.unwrap(), [2]);
    assert_eq!(repo.load("acc-1").await.unwrap().state.balance, 5);
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn a_swallowed_failed_execute_is_not_taken_for_a_later_one_on_another_aggregate() {
    let store = InMemoryEventStore::new();
    let repo = open_account(&store).await;
    let mut bus = CommandBus::new();
    let handler_repo = repo.clone();
    bus.register_fn(move |_: Notify| {
        let repo = handler_repo.clone();
        async move {
            let refused = repo.execute("acc-1", AccountCommand::Withdraw(1_000)).await;
            assert!(refused.is_err(), "no funds");
            let open = AccountCommand::Open {
                owner: "Bob".into(),
            };
            let opened = repo.execute("acc-2", open).await?;
            assert_eq!((opened.version, opened.events.len()), (1, 1));
            Ok(current_metadata().expect("metadata"))
        }
    })
    .unwrap();
    let sent = MessageMetadata::new();
    for _ in 0..2 {
        bus.send_with(Notify, sent.clone()).await.unwrap();
    }
    assert_eq!(store.len(), 2, "acc-1 opened, acc-2 opened once");
    let stored = store.read_stream("Account-acc-2", 1, 10).await.unwrap();
    assert_eq!(stored[0].metadata.causation_id, Some(sent.message_id));
}

/// An event that credits "acc-1" in each subscriber.
struct Credited;

impl flext_protocols::Event for Credited {
    fn event_name(&self) -> &str {
        "Credited"
    }
}

type Results = Arc<Mutex<Vec<(&'static str, Executed<Account>)>>>;

/// A bus whose subscribers, named and subscribed in the order given, each deposit their
/// amount on "acc-1" for every `Credited`, and record what the repository returned.
fn crediting_bus(
    repo: &Arc<Repository<Account>>,
    subscribers: &[(&'static str, u64)],
    results: &Results,
) -> EventBus {
    let bus = EventBus::new();
    for &(name, amount) in subscribers {
        let (repo, results) = (repo.clone(), results.clone());
        let subscriber = handler_fn(name, move |_: Arc<Credited>| {
            let (repo, results) = (repo.clone(), results.clone());
            async move {
                let done = repo
                    .execute("acc-1", AccountCommand::Deposit(amount))
                    .await?;
                results.lock().unwrap().push((name, done));
                Ok(())
            }
        });
        bus.subscribe("Credited", subscriber);
    }
    bus
}

#[tokio::test]
async fn subscriber_event_ids_follow_the_subscribers_name_not_the_order_of_registration() {
    let store = InMemoryEventStore::new();
    let published = MessageMetadata::new();
    let results: Results = Arc::default();
    let repo = open_account(&store).await;
    let bus = crediting_bus(&repo, &[("mailer", 5), ("ledger", 7)], &results);
    let report = bus.publish_with(Credited, published.clone()).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(store.len(), 3, "one deposit per subscriber");
    let first: Vec<_> = results.lock().unwrap().drain(..).collect();

    // A restart: another bus and a cold repository, the subscribers in the other order.
    let repo = Arc::new(Repository::new(Arc::new(store.clone())));
    let bus = crediting_bus(&repo, &[("ledger", 7), ("mailer", 5)], &results);
    let report = bus.publish_with(Credited, published).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(store.len(), 3, "the redelivery deposits nothing");
    let mut again: Vec<_> = results.lock().unwrap().drain(..).collect();
    again.reverse();
    assert_eq!(again, first, "each subscriber gets its own original result");
    assert_eq!(repo.load("acc-1").await.unwrap().state.balance, 12);
}

#[tokio::test]
async fn subscribers_sharing_a_name_share_their_event_ids() {
    let store = InMemoryEventStore::new();
    let results: Results = Arc::default();
    let repo = open_account(&store).await;
    let bus = crediting_bus(&repo, &[("credit", 5), ("credit", 7)], &results);
    let report = bus.publish_with(Credited, MessageMetadata::new()).await;
    assert!(report.is_success(), "{report:?}");
    // The second is taken for a repeat of the first: subscribers that change aggregates
    // need names of their own.
    assert_eq!(store.len(), 2);
    let results = results.lock().unwrap();
    assert_eq!(results[0].1, results[1].1);
}

/// Records the current metadata when it is dropped.
struct DropProbe(Seen);

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(current_metadata());
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_dropped_unfinished_is_dropped_inside_its_scope() {
    for with_middleware in [false, true] {
        let log: Seen = Arc::default();
        let mut bus = CommandBus::new();
        let handler_log = log.clone();
        bus.register_fn(move |_: CreateUserCommand| {
            let probe = DropProbe(handler_log.clone());
            async move {
                let _probe = probe;
                std::future::pending::<()>().await;
                Ok(String::new())
            }
        })
        .unwrap();
        if with_middleware {
            bus.add_middleware(Stamp);
        }
        let mut sent = MessageMetadata::new();
        let call = bus.send_with(ada(), sent.clone());
        let timed_out = tokio::time::timeout(Duration::from_secs(1), call).await;
        assert!(timed_out.is_err());
        if with_middleware {
            sent = sent.with_header("stamped", "yes");
        }
        assert_eq!(seen(&log), [Some(sent)], "middleware: {with_middleware}");
        assert_eq!(current_metadata(), None);
    }

    // The same for a future run with `with_current_metadata`.
    let log: Seen = Arc::default();
    let probe = DropProbe(log.clone());
    let sent = MessageMetadata::new();
    let scoped = with_current_metadata(sent.clone(), async move {
        let _probe = probe;
        std::future::pending::<()>().await;
    });
    let timed_out = tokio::time::timeout(Duration::from_secs(1), scoped).await;
    assert!(timed_out.is_err());
    assert_eq!(seen(&log), [Some(sent)]);
}

type Parked = Pin<Box<dyn Future<Output = ()>>>;

thread_local! {
    /// A scoped future left unfinished on a thread, dropped when the thread ends.
    static PARKED: RefCell<Option<Parked>> = const { RefCell::new(None) };
}

#[test]
fn a_scoped_future_dropped_as_its_thread_ends_drops_without_panicking() {
    let log: Seen = Arc::default();
    let probe = DropProbe(log.clone());
    let ended = std::thread::spawn(move || {
        // Touched first, so destroyed last: the thread's current scope is gone by the time
        // the parked future is dropped.
        PARKED.with(|parked| assert!(parked.borrow().is_none()));
        let mut scoped: Parked = Box::pin(with_current_metadata(MessageMetadata::new(), async {
            let _probe = probe;
            std::future::pending::<()>().await;
        }));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(scoped.as_mut().poll(&mut cx).is_pending());
        PARKED.with(|parked| *parked.borrow_mut() = Some(scoped));
    })
    .join();
    assert!(ended.is_ok(), "the thread ended without a panic");
    assert_eq!(seen(&log).len(), 1, "the future was dropped");
}

#[tokio::test]
async fn a_panicking_or_nested_dispatch_leaves_each_handler_its_own_metadata() {
    let mut inner = CommandBus::new();
    inner
        .register_fn(|crate::Divide(n): crate::Divide| async move {
            assert!(n != 0, "division by zero");
            Ok(n)
        })
        .unwrap();
    let inner = Arc::new(inner);
    let mut outer = CommandBus::new();
    outer
        .register_fn(move |_: Notify| {
            let inner = inner.clone();
            async move {
                let before = current_metadata();
                let failed = inner.send(crate::Divide(0)).await;
                assert!(failed.is_err(), "the panic is an error");
                inner.send(crate::Divide(1)).await?;
                assert_eq!(current_metadata(), before, "restored after each");
                Ok(before.unwrap())
            }
        })
        .unwrap();
    let sent = MessageMetadata::new();
    assert_eq!(outer.send_with(Notify, sent.clone()).await.unwrap(), sent);
    assert_eq!(current_metadata(), None);
}

#[tokio::test]
async fn concurrent_deliveries_each_keep_their_own_metadata() {
    let log: Arc<Mutex<Vec<(usize, MessageMetadata)>>> = Arc::default();
    let bus = EventBus::new().with_delivery(flext_cqrs::Delivery::Concurrent);
    for subscriber in 0..2 {
        let log = log.clone();
        bus.subscribe_fn("UserCreated", move |_: Arc<UserCreated>| {
            let log = log.clone();
            async move {
                for _ in 0..3 {
                    let seen = current_metadata().expect("metadata");
                    log.lock().unwrap().push((subscriber, seen));
                    tokio::task::yield_now().await;
                }
                Ok(())
            }
        });
    }
    let created = UserCreated {
        user_id: "u1".into(),
    };
    assert_eq!(bus.publish(created).await.delivered, 2);
    let log = log.lock().unwrap();
    let ids = |who: usize| -> Vec<_> {
        log.iter()
            .filter(|(subscriber, _)| *subscriber == who)
            .map(|(_, seen)| seen.message_id)
            .collect()
    };
    let (first, second) = (ids(0), ids(1));
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|id| *id == first[0]), "{first:?}");
    assert!(second.iter().all(|id| *id == second[0]), "{second:?}");
    assert_ne!(first[0], second[0], "each delivery is a message of its own");
}
