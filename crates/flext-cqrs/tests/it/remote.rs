//! Remote routes: a caller's bus and a worker's bus joined by a transport that hands each
//! call over as bytes (what a broker would carry), in one process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::{
    AuthorizationMiddleware, CommandBus, DispatchContext, QueryBus, RemoteHandlers,
    TimeoutMiddleware, current_metadata,
};
use flext_protocols::{Command, Query, RemoteCall, RemoteDispatch, RemoteKind, RemoteTransport};
use flext_types::{FlextError, FlextResult, MessageMetadata};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposit {
    account: String,
    amount: i64,
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
    type Output = Option<i64>;
}

/// Carries calls to a worker's dispatch, keeping what it saw.
#[derive(Debug)]
struct Loopback {
    worker: Arc<dyn RemoteDispatch>,
    calls: Mutex<Vec<RemoteCall>>,
}

#[async_trait]
impl RemoteTransport for Loopback {
    async fn call(&self, call: RemoteCall) -> FlextResult<Vec<u8>> {
        self.calls.lock().unwrap().push(call.clone());
        // Through JSON and back, as the error would travel.
        self.worker.dispatch(call).await.map_err(|error| {
            serde_json::from_str::<FlextError>(&serde_json::to_string(&error).unwrap()).unwrap()
        })
    }
}

/// What the worker's handler saw of the message it handled.
#[derive(Debug, Default)]
struct Seen {
    metadata: Mutex<Vec<MessageMetadata>>,
    runs: AtomicUsize,
}

fn worker(seen: &Arc<Seen>, work: Duration) -> (Arc<CommandBus>, Arc<QueryBus>) {
    let mut commands = CommandBus::new();
    let s = Arc::clone(seen);
    commands
        .register_fn(move |d: Deposit| {
            let s = Arc::clone(&s);
            async move {
                s.runs.fetch_add(1, Ordering::SeqCst);
                s.metadata.lock().unwrap().push(current_metadata().unwrap());
                tokio::time::sleep(work).await;
                if d.account == "frozen" {
                    return Err(FlextError::business_rule("Account frozen is frozen")
                        .with_data(serde_json::json!({"account": "frozen"})));
                }
                Ok(d.amount * 10)
            }
        })
        .unwrap();
    commands.add_middleware(AuthorizationMiddleware::new(
        "tenant_known",
        |ctx: &DispatchContext| {
            ctx.metadata().headers.get("tenant").map(String::as_str) != Some("mallory")
        },
    ));
    let mut queries = QueryBus::new();
    queries
        .register_fn(|q: Balance| async move { Ok((q.account == "a").then_some(42)) })
        .unwrap();
    (Arc::new(commands), Arc::new(queries))
}

fn joined(seen: &Arc<Seen>, work: Duration) -> (CommandBus, QueryBus, Arc<Loopback>) {
    let (commands, queries) = worker(seen, work);
    let served = RemoteHandlers::new()
        .command::<Deposit>(commands)
        .unwrap()
        .query::<Balance>(queries)
        .unwrap();
    let transport = Arc::new(Loopback {
        worker: Arc::new(served),
        calls: Mutex::default(),
    });
    let mut caller = CommandBus::new();
    caller
        .register_remote::<Deposit>(transport.clone())
        .unwrap();
    let mut caller_queries = QueryBus::new();
    caller_queries
        .register_remote::<Balance>(transport.clone())
        .unwrap();
    (caller, caller_queries, transport)
}

fn deposit(account: &str, amount: i64) -> Deposit {
    Deposit {
        account: account.into(),
        amount,
    }
}

#[tokio::test]
async fn a_remote_command_returns_its_typed_output_and_the_worker_sees_the_callers_message() {
    let seen = Arc::default();
    let (caller, queries, _) = joined(&seen, Duration::ZERO);
    let metadata = MessageMetadata::new().with_header("tenant", "acme");
    assert_eq!(
        caller
            .send_with(deposit("a", 3), metadata.clone())
            .await
            .unwrap(),
        30
    );
    let handled = seen.metadata.lock().unwrap()[0].clone();
    assert_eq!(handled.message_id, metadata.message_id);
    assert_eq!(handled.correlation_id, metadata.correlation_id);
    assert_eq!(
        handled.headers.get("tenant").map(String::as_str),
        Some("acme")
    );
    assert_eq!(
        queries
            .execute(Balance {
                account: "a".into()
            })
            .await
            .unwrap(),
        Some(42)
    );
    assert_eq!(
        queries
            .execute(Balance {
                account: "b".into()
            })
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn the_caller_validates_before_sending_and_the_worker_authorizes_before_running() {
    let seen: Arc<Seen> = Arc::default();
    let (caller, _, transport) = joined(&seen, Duration::ZERO);
    let err = caller.send(deposit("a", 0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert!(
        transport.calls.lock().unwrap().is_empty(),
        "nothing was sent"
    );

    let mallory = MessageMetadata::new().with_header("tenant", "mallory");
    let err = caller
        .send_with(deposit("a", 1), mallory)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(
        seen.runs.load(Ordering::SeqCst),
        0,
        "the worker's handler did not run"
    );

    let err = caller.send(deposit("frozen", 1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BusinessRuleViolation);
    assert_eq!(err.to_string(), "Account frozen is frozen");
    assert_eq!(err.data().unwrap()["account"], "frozen");
}

#[tokio::test(start_paused = true)]
async fn the_callers_deadline_travels_and_ends_the_work_on_the_worker() {
    let seen: Arc<Seen> = Arc::default();
    let (mut caller, _, transport) = joined(&seen, Duration::from_millis(200));
    caller.add_middleware(TimeoutMiddleware::new(Duration::from_millis(50)));
    let before = SystemTime::now();
    let err = caller.send(deposit("a", 1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    let call = transport.calls.lock().unwrap()[0].clone();
    let deadline = call.deadline.expect("the deadline travels");
    let budget = deadline.duration_since(before).unwrap();
    assert!(budget <= Duration::from_millis(60), "{budget:?}");

    // A call that arrives after its deadline does not run.
    let served = RemoteHandlers::new()
        .command::<Deposit>(worker(&seen, Duration::ZERO).0)
        .unwrap();
    let runs = seen.runs.load(Ordering::SeqCst);
    let late = RemoteCall {
        deadline: Some(SystemTime::now() - Duration::from_millis(1)),
        ..call
    };
    let err = served.dispatch(late).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert!(err.to_string().contains("Deposit"), "{err}");
    assert_eq!(seen.runs.load(Ordering::SeqCst), runs, "it did not run");
}

#[tokio::test]
async fn a_worker_names_what_it_cannot_decode_or_does_not_serve() {
    let seen: Arc<Seen> = Arc::default();
    let served = RemoteHandlers::new()
        .command::<Deposit>(worker(&seen, Duration::ZERO).0)
        .unwrap();
    let call = |name: &str, payload: &[u8]| RemoteCall {
        kind: RemoteKind::Command,
        name: name.into(),
        payload: payload.to_vec(),
        metadata: MessageMetadata::new(),
        deadline: None,
    };
    let err = served
        .dispatch(call("Deposit", b"{\"account\":1}"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SerializationError);
    assert!(
        err.to_string()
            .starts_with("Command Deposit does not decode"),
        "{err}"
    );
    let err = served.dispatch(call("Withdraw", b"{}")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::WiringError);
    assert_eq!(err.to_string(), "No remote handler for command Withdraw");
    let output = served
        .dispatch(call("Deposit", br#"{"account":"a","amount":2}"#))
        .await
        .unwrap();
    assert_eq!(output, b"20");
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);

    let err = served
        .clone()
        .command::<Deposit>(worker(&seen, Duration::ZERO).0)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Duplicate);
    assert_eq!(
        served.routes(),
        vec![(RemoteKind::Command, "Deposit".to_owned())]
    );
}

#[tokio::test]
async fn an_output_the_caller_cannot_decode_is_a_serialization_error() {
    #[derive(Debug)]
    struct Garbage;
    #[async_trait]
    impl RemoteTransport for Garbage {
        async fn call(&self, _: RemoteCall) -> FlextResult<Vec<u8>> {
            Ok(b"\"not a number\"".to_vec())
        }
    }
    let mut caller = CommandBus::new();
    caller
        .register_remote::<Deposit>(Arc::new(Garbage))
        .unwrap();
    let err = caller.send(deposit("a", 1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SerializationError);
    assert!(err.to_string().contains("command Deposit"), "{err}");
    let err = caller
        .register_remote::<Deposit>(Arc::new(Garbage))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Duplicate);
}

#[tokio::test]
async fn a_call_within_its_deadline_runs_and_answers() {
    let seen: Arc<Seen> = Arc::default();
    let (mut caller, _, transport) = joined(&seen, Duration::ZERO);
    caller.add_middleware(TimeoutMiddleware::new(Duration::from_secs(5)));
    assert_eq!(caller.send(deposit("a", 2)).await.unwrap(), 20);
    assert!(transport.calls.lock().unwrap()[0].deadline.is_some());
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);
}
