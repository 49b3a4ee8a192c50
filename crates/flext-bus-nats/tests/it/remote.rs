//! Remote commands and queries over NATS request/reply.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flext_bus_nats::{NatsTransport, NatsWorker};
use flext_constants::ErrorCode;
use flext_handlers::cqrs::{
    CommandBus, QueryBus, RemoteHandlers, TimeoutMiddleware, current_metadata,
};
use flext_protocols::{Command, EventStore, Query};
use flext_types::{FlextError, FlextResult, MessageMetadata};
use serde::{Deserialize, Serialize};

use crate::server::{NatsServer, connect, enabled};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposit {
    account: String,
    amount: i64,
    /// How long the worker takes, in milliseconds.
    work_ms: u64,
}

impl Command for Deposit {
    type Output = i64;

    fn validate(&self) -> FlextResult<()> {
        if self.amount <= 0 {
            return Err(FlextError::validation("Amount must be positive"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Balance {
    account: String,
}

impl Query for Balance {
    type Output = i64;
}

fn deposit(account: &str, amount: i64, work_ms: u64) -> Deposit {
    Deposit {
        account: account.into(),
        amount,
        work_ms,
    }
}

/// What a worker saw.
#[derive(Debug, Default)]
struct Seen {
    runs: AtomicUsize,
    correlations: Mutex<Vec<uuid::Uuid>>,
    tenants: Mutex<Vec<Option<String>>>,
}

/// A worker's buses: deposits (sleeping `work_ms`, refusing the `frozen` account) and
/// balances.
fn worker_dispatch(seen: Arc<Seen>) -> RemoteHandlers {
    let mut commands = CommandBus::new();
    commands
        .register_fn(move |d: Deposit| {
            let seen = Arc::clone(&seen);
            async move {
                seen.runs.fetch_add(1, Ordering::SeqCst);
                if let Some(m) = current_metadata() {
                    seen.correlations.lock().unwrap().push(m.correlation_id);
                    seen.tenants
                        .lock()
                        .unwrap()
                        .push(m.headers.get("tenant").cloned());
                }
                tokio::time::sleep(Duration::from_millis(d.work_ms)).await;
                if d.account == "frozen" {
                    return Err(FlextError::business_rule("Account frozen is frozen")
                        .with_data(serde_json::json!({"account": "frozen"})));
                }
                Ok(d.amount * 10)
            }
        })
        .unwrap();
    let mut queries = QueryBus::new();
    queries
        .register_fn(|q: Balance| async move { Ok(q.account.len() as i64) })
        .unwrap();
    RemoteHandlers::new()
        .command::<Deposit>(Arc::new(commands))
        .unwrap()
        .query::<Balance>(Arc::new(queries))
        .unwrap()
}

/// A worker of [`worker_dispatch`] on `server`, at most `concurrency` calls at once.
async fn start_worker(server: &NatsServer, seen: Arc<Seen>, concurrency: usize) -> NatsWorker {
    NatsWorker::start(
        server.client().await,
        "bank",
        "bank-worker",
        Arc::new(worker_dispatch(seen)),
        concurrency,
    )
    .await
    .unwrap()
}

fn caller(transport: NatsTransport) -> (CommandBus, QueryBus) {
    let transport = Arc::new(transport);
    let mut commands = CommandBus::new();
    commands
        .register_remote::<Deposit>(transport.clone())
        .unwrap();
    let mut queries = QueryBus::new();
    queries.register_remote::<Balance>(transport).unwrap();
    (commands, queries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_errors_and_the_correlation_id_cross_processes_typed() {
    if !enabled("results_errors_and_the_correlation_id_cross_processes_typed") {
        return;
    }
    let server = NatsServer::start();
    let seen = Arc::new(Seen::default());
    let worker = start_worker(&server, seen.clone(), 4).await;
    assert_eq!(
        worker.subjects(),
        [
            "bank.command.Deposit".to_owned(),
            "bank.query.Balance".to_owned()
        ]
    );
    let (commands, queries) = caller(NatsTransport::new(server.client().await, "bank").unwrap());

    let metadata = MessageMetadata::new().with_header("tenant", "acme");
    assert_eq!(
        commands
            .send_with(deposit("a", 4, 0), metadata.clone())
            .await
            .unwrap(),
        40
    );
    assert_eq!(
        seen.correlations.lock().unwrap()[0],
        metadata.correlation_id
    );
    assert_eq!(seen.tenants.lock().unwrap()[0].as_deref(), Some("acme"));
    assert_eq!(
        queries
            .execute(Balance {
                account: "abc".into()
            })
            .await
            .unwrap(),
        3
    );

    let err = commands.send(deposit("frozen", 1, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BusinessRuleViolation);
    assert_eq!(err.to_string(), "Account frozen is frozen");
    assert_eq!(err.data().unwrap()["account"], "frozen");

    // A call under a deadline that has not passed runs.
    let (mut bounded, _) = caller(NatsTransport::new(server.client().await, "bank").unwrap());
    bounded.add_middleware(TimeoutMiddleware::new(Duration::from_secs(5)));
    assert_eq!(bounded.send(deposit("a", 2, 0)).await.unwrap(), 20);

    // Validation runs on the caller: nothing reaches the worker.
    let runs = seen.runs.load(Ordering::SeqCst);
    let err = commands.send(deposit("a", -1, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(seen.runs.load(Ordering::SeqCst), runs);
    // A stopped worker serves nothing more: the service is unavailable until one is up.
    worker.stop().await;
    let err = commands.send(deposit("a", 1, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
}

#[tokio::test]
async fn bad_transport_and_worker_settings_are_refused_naming_them() {
    if !enabled("bad_transport_and_worker_settings_are_refused_naming_them") {
        return;
    }
    let server = NatsServer::start();
    let client = server.client().await;
    let err = NatsTransport::new(client.clone(), "bank..x").unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("bank..x"), "{err}");
    let transport = NatsTransport::new(client.clone(), "bank").unwrap();
    let err = transport
        .clone()
        .with_default_timeout(Duration::ZERO)
        .unwrap_err();
    assert!(err.to_string().contains("default_timeout"), "{err}");
    assert!(
        transport
            .with_default_timeout(Duration::from_millis(1))
            .is_ok()
    );
    let served = Arc::new(worker_dispatch(Arc::default()));
    let err = NatsWorker::start(client.clone(), "bank", "bank-worker", served.clone(), 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("concurrency"), "{err}");
    let err = NatsWorker::start(client, "bank.*", "bank-worker", served, 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_responders_a_timeout_and_a_broker_outage_are_told_apart_and_never_hang() {
    if !enabled("no_responders_a_timeout_and_a_broker_outage_are_told_apart_and_never_hang") {
        return;
    }
    let mut server = NatsServer::start();
    let transport = NatsTransport::new(server.client().await, "bank")
        .unwrap()
        .with_default_timeout(Duration::from_millis(300))
        .unwrap();
    let (commands, _) = caller(transport);

    // Nobody serves it: UNAVAILABLE at once, not after the timeout.
    let started = Instant::now();
    let err = commands.send(deposit("a", 1, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(
        err.to_string()
            .contains("No process serves Command Deposit"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    // A worker slower than the deadline: TIMEOUT at the deadline.
    let seen = Arc::new(Seen::default());
    let worker = start_worker(&server, seen.clone(), 1).await;
    let started = Instant::now();
    let err = commands.send(deposit("a", 1, 2_000)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1_500),
        "{waited:?}"
    );

    // The broker goes away: UNAVAILABLE at once, and calls work again when it is back.
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let err = commands.send(deposit("a", 1, 0)).await.unwrap_err();
    assert!(
        matches!(err.code(), ErrorCode::Unavailable | ErrorCode::Timeout),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    server.restart();
    let started = Instant::now();
    loop {
        match commands.send(deposit("a", 1, 0)).await {
            Ok(out) => {
                assert_eq!(out, 10);
                break;
            }
            Err(e) => {
                assert!(
                    matches!(e.code(), ErrorCode::Unavailable | ErrorCode::Timeout),
                    "{e}"
                );
                assert!(started.elapsed() < Duration::from_secs(10), "not back: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_does_not_run_a_command_whose_deadline_passed_while_it_waited() {
    if !enabled("a_worker_does_not_run_a_command_whose_deadline_passed_while_it_waited") {
        return;
    }
    let server = NatsServer::start();
    let seen = Arc::new(Seen::default());
    // One call at a time: the second waits behind the first.
    let worker = start_worker(&server, seen.clone(), 1).await;
    // The first call has no deadline; the second must be answered within 200 ms.
    let (patient, _) = caller(NatsTransport::new(server.client().await, "bank").unwrap());
    let (mut hasty, _) = caller(NatsTransport::new(server.client().await, "bank").unwrap());
    hasty.add_middleware(TimeoutMiddleware::new(Duration::from_millis(200)));
    let slow = tokio::spawn(async move { patient.send(deposit("a", 1, 600)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = hasty.send(deposit("b", 1, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(slow.await.unwrap().unwrap(), 10);
    // The second, taken up after its deadline, never ran.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);
    worker.stop().await;
}

const WORKER_CHILD: &str = "FLEXT_NATS_WORKER_CHILD_URL";

/// A worker process of the kill test: serves deposits (10 ms each), printing each
/// command it handles, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_child() {
    let Ok(url) = std::env::var(WORKER_CHILD) else {
        return; // Only the kill test runs this, in a child process.
    };
    let mut commands = CommandBus::new();
    commands
        .register_fn(|d: Deposit| async move {
            let id = current_metadata().map(|m| m.message_id).unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(d.work_ms)).await;
            println!("handled {id}");
            Ok(d.amount * 10)
        })
        .unwrap();
    let served = RemoteHandlers::new()
        .command::<Deposit>(Arc::new(commands))
        .unwrap();
    let _worker = NatsWorker::start(
        connect(&url).await,
        "bank",
        "bank-worker",
        Arc::new(served),
        8,
    )
    .await
    .unwrap();
    println!("serving");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// Three worker processes share a command type; one is SIGKILLed while commands flow:
/// every command is answered once or fails with a typed error, and no caller hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_a_command_and_losing_one_leaves_no_caller_hanging() {
    if !enabled("three_workers_share_a_command_and_losing_one_leaves_no_caller_hanging") {
        return;
    }
    let server = NatsServer::start();
    let handled = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let mut children = Vec::new();
    for n in 0..3 {
        let mut child = Process::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "remote::worker_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(WORKER_CHILD, server.url())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("a worker starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handled = Arc::clone(&handled);
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                // libtest's "test … ... " comes before the first line printed.
                if line.ends_with("serving") {
                    let _ = ready_tx.send(());
                } else if let Some(id) = line.strip_prefix("handled ") {
                    handled.lock().unwrap().push((n, id.to_owned()));
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the worker serves");
        children.push(child);
    }
    let transport = NatsTransport::new(server.client().await, "bank")
        .unwrap()
        .with_default_timeout(Duration::from_secs(2))
        .unwrap();
    let (commands, _) = caller(transport);
    let commands = Arc::new(commands);
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let total = 300;
    let ids: Vec<MessageMetadata> = (0..total).map(|_| MessageMetadata::new()).collect();
    for (i, metadata) in ids.iter().cloned().enumerate() {
        let commands = Arc::clone(&commands);
        calls.spawn(async move {
            // 10 at a time, spread over about 1.5 s.
            tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
            (
                metadata.message_id,
                commands.send_with(deposit("a", 1, 10), metadata).await,
            )
        });
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut victim = children.remove(1);
    victim.kill().unwrap();
    victim.wait().unwrap();

    let mut answered = 0;
    let mut failed = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (_, result) = joined.unwrap();
        match result {
            Ok(out) => {
                assert_eq!(out, 10);
                answered += 1;
            }
            Err(e) => {
                assert!(
                    matches!(e.code(), ErrorCode::Timeout | ErrorCode::Unavailable),
                    "a typed failure, got {e:?}"
                );
                failed.push(e);
            }
        }
    }
    let took = started.elapsed();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(answered + failed.len(), total);
    assert!(took < Duration::from_secs(15), "no caller hung: {took:?}");
    // Only calls the killed worker held can fail: at most its concurrency of 8 in flight.
    assert!(failed.len() <= 8, "{} failed: {failed:?}", failed.len());
    let handled = handled.lock().unwrap();
    let mut once = std::collections::HashSet::new();
    for (_, id) in handled.iter() {
        assert!(once.insert(id.clone()), "command {id} handled twice");
    }
    assert!(answered <= handled.len() + 8);
    for worker in [0, 1, 2] {
        assert!(
            handled.iter().any(|(n, _)| *n == worker),
            "worker {worker} took a share"
        );
    }
}

/// An account whose deposits are events: the worker executes commands through a
/// `Repository`, whose event ids derive from the message id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposited {
    amount: i64,
}

impl flext_protocols::Event for Deposited {
    fn event_name(&self) -> &str {
        "Deposited"
    }
}

impl flext_protocols::Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = Deposit;
    type Event = Deposited;

    fn handle(&self, command: Deposit) -> FlextResult<Vec<Deposited>> {
        Ok(vec![Deposited {
            amount: command.amount,
        }])
    }

    fn apply(&mut self, event: &Deposited) {
        self.balance += event.amount;
    }
}

/// A command retried after an ambiguous failure (the same message id) is one effect: the
/// worker's repository sees the id it already stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_command_with_its_message_id_is_one_effect() {
    if !enabled("a_retried_command_with_its_message_id_is_one_effect") {
        return;
    }
    let server = NatsServer::start();
    let store = Arc::new(flext_store::InMemoryEventStore::new());
    let repository = Arc::new(flext_handlers::cqrs::Repository::<Account>::new(
        store.clone(),
    ));
    let mut commands = CommandBus::new();
    commands
        .register_fn(move |d: Deposit| {
            let repository = Arc::clone(&repository);
            async move {
                let account = d.account.clone();
                let executed = repository.execute(&account, d).await?;
                Ok(executed.state.balance)
            }
        })
        .unwrap();
    let served = RemoteHandlers::new()
        .command::<Deposit>(Arc::new(commands))
        .unwrap();
    let worker = NatsWorker::start(
        server.client().await,
        "bank",
        "bank-worker",
        Arc::new(served),
        4,
    )
    .await
    .unwrap();
    let (caller, _) = caller(NatsTransport::new(server.client().await, "bank").unwrap());

    let metadata = MessageMetadata::new();
    assert_eq!(
        caller
            .send_with(deposit("a", 5, 0), metadata.clone())
            .await
            .unwrap(),
        5
    );
    // The answer was lost, say: the caller sends the same command again.
    assert_eq!(
        caller
            .send_with(deposit("a", 5, 0), metadata)
            .await
            .unwrap(),
        5
    );
    assert_eq!(store.stream_version("Account-a").await.unwrap(), 1);
    // A new command is a new effect.
    assert_eq!(caller.send(deposit("a", 5, 0)).await.unwrap(), 10);
    assert_eq!(store.stream_version("Account-a").await.unwrap(), 2);
    worker.stop().await;
}

/// A call without a deadline still carries the time its caller stops waiting: a worker
/// that takes it up later does not run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_deadline_is_not_run_after_its_caller_gave_up() {
    if !enabled("a_call_without_a_deadline_is_not_run_after_its_caller_gave_up") {
        return;
    }
    let server = NatsServer::start();
    let seen = Arc::new(Seen::default());
    let worker = start_worker(&server, seen.clone(), 1).await;
    let (patient, _) = caller(NatsTransport::new(server.client().await, "bank").unwrap());
    let (hasty, _) = caller(
        NatsTransport::new(server.client().await, "bank")
            .unwrap()
            .with_default_timeout(Duration::from_millis(150))
            .unwrap(),
    );
    let slow = tokio::spawn(async move { patient.send(deposit("a", 1, 500)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = hasty.send(deposit("b", 1, 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(slow.await.unwrap().unwrap(), 10);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1, "the second never ran");
    worker.stop().await;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dotted;

impl Command for Dotted {
    type Output = ();

    fn command_name() -> String {
        "Open.Account".into()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Underscored;

impl Command for Underscored {
    type Output = ();

    fn command_name() -> String {
        "Open_Account".into()
    }
}

/// Two names that make one subject are refused when the worker starts, and a call whose
/// name differs from the one the subject serves is refused by the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_would_share_a_subject_are_told_apart() {
    if !enabled("names_that_would_share_a_subject_are_told_apart") {
        return;
    }
    let server = NatsServer::start();
    let mut bus = CommandBus::new();
    bus.register_fn(|_: Dotted| async { Ok(()) }).unwrap();
    bus.register_fn(|_: Underscored| async { Ok(()) }).unwrap();
    let bus = Arc::new(bus);
    let both = RemoteHandlers::new()
        .command::<Dotted>(Arc::clone(&bus))
        .unwrap()
        .command::<Underscored>(Arc::clone(&bus))
        .unwrap();
    let err = NatsWorker::start(
        server.client().await,
        "bank",
        "bank-worker",
        Arc::new(both),
        1,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(
        err.to_string().contains("bank.command.Open_Account"),
        "{err}"
    );

    let one = RemoteHandlers::new().command::<Underscored>(bus).unwrap();
    let worker = NatsWorker::start(
        server.client().await,
        "bank",
        "bank-worker",
        Arc::new(one),
        1,
    )
    .await
    .unwrap();
    let mut caller = CommandBus::new();
    caller
        .register_remote::<Dotted>(Arc::new(
            NatsTransport::new(server.client().await, "bank").unwrap(),
        ))
        .unwrap();
    let err = caller.send(Dotted).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::WiringError, "{err}");
    assert!(err.to_string().contains("not Open.Account"), "{err}");
    worker.stop().await;
}
