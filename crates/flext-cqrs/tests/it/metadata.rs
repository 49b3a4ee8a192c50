//! The message a handler is handling: its metadata without threading it by hand, through
//! middleware, into nested dispatches and into `Repository::execute`.

use std::sync::{Arc, Mutex};

use flext_cqrs::{
    CommandBus, Dispatch, DispatchOutput, EventBus, InMemoryEventStore, QueryBus, Repository,
    current_metadata, with_current_metadata,
};
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
async fn two_commands_on_one_aggregate_in_one_handler_both_land_and_repeat_as_one() {
    let store = InMemoryEventStore::new();
    let repo = open_account(&store).await;
    let bus = account_bus(&repo);
    let sent = MessageMetadata::new();
    let twice = || Deposit {
        amount: 5,
        times: 2,
    };
    assert_eq!(bus.send_with(twice(), sent.clone()).await.unwrap(), [2, 3]);
    assert_eq!(bus.send_with(twice(), sent.clone()).await.unwrap(), [2, 3]);
    assert_eq!(store.len(), 3);
    // Without metadata of its own, each send is a message of its own.
    assert_eq!(bus.send(twice()).await.unwrap(), [4, 5]);
    assert_eq!(bus.send(twice()).await.unwrap(), [6, 7]);
    assert_eq!(repo.load("acc-1").await.unwrap().state.balance, 30);
}

/// An event that credits "acc-1" once in each subscriber.
struct Credited(u64);

impl flext_protocols::Event for Credited {
    fn event_name(&self) -> &str {
        "Credited"
    }
}

#[tokio::test]
async fn subscribers_changing_one_aggregate_for_one_event_both_land_and_repeat_as_one() {
    let store = InMemoryEventStore::new();
    let repo = open_account(&store).await;
    let bus = EventBus::new();
    for _ in 0..2 {
        let repo = repo.clone();
        bus.subscribe_fn("Credited", move |event: Arc<Credited>| {
            let repo = repo.clone();
            async move {
                repo.execute("acc-1", AccountCommand::Deposit(event.0))
                    .await
                    .map(drop)
            }
        });
    }
    let published = MessageMetadata::new();
    for _ in 0..2 {
        let report = bus.publish_with(Credited(5), published.clone()).await;
        assert!(report.is_success(), "{report:?}");
    }
    assert_eq!(
        store.len(),
        3,
        "one deposit per subscriber, redelivery included"
    );
    assert_eq!(repo.load("acc-1").await.unwrap().state.balance, 10);
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
