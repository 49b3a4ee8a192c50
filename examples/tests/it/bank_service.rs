//! The flagship service over HTTP (its axum router, called in process): reads of one's
//! own writes, errors with their status, a race of two withdrawals, a restart, the fraud
//! service going down, and notifications sent once.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use flext_examples::bank::api::router;
use flext_examples::bank::domain::{FraudCheck, SimulatedFraud};
use flext_examples::bank::service::Bank;
use flext_handlers::Protocols::CheckpointStore;
use flext_handlers::stores::{PostgresEventStore, PostgresStoreOptions, SqliteEventStore};
use flext_handlers::tower::tower::ServiceExt as _;
use serde_json::{Value, json};

use crate::saga_processes::DroppedSchema;

/// A fresh database file, removed when the test ends.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("flext-bank-{}.db", uuid::Uuid::new_v4().simple())))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn call(
    bank: &Arc<Bank>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("a request");
    let response = router(bank.clone())
        .oneshot(request)
        .await
        .expect("an answer");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

/// Opens the account `id` for Ada and deposits `cents` (none for 0), checking both answers.
async fn opened(bank: &Arc<Bank>, id: &str, cents: u64) {
    let (status, body) = call(
        bank,
        "POST",
        "/accounts",
        Some(json!({"id": id, "owner": "Ada"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    if cents > 0 {
        let path = format!("/accounts/{id}/deposits");
        let (status, body) = call(bank, "POST", &path, Some(json!({"amount": cents}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

async fn open_bank(db: &TempDb, fraud: Arc<SimulatedFraud>) -> Arc<Bank> {
    Arc::new(Bank::open(&db.0, fraud).await.expect("the bank opens"))
}

async fn shut(bank: Arc<Bank>) {
    Arc::try_unwrap(bank)
        .expect("the only reference")
        .shutdown()
        .await
        .expect("a clean shutdown");
}

#[tokio::test]
async fn a_client_reads_its_own_writes_and_gets_errors_with_their_status() {
    let db = TempDb::new();
    let bank = open_bank(&db, Arc::new(SimulatedFraud::new(100_000))).await;
    let (status, receipt) = call(
        &bank,
        "POST",
        "/accounts",
        Some(json!({"id": "acc-1", "owner": "Ada"})),
    )
    .await;
    assert_eq!(
        (status, receipt["balance"].as_u64()),
        (StatusCode::CREATED, Some(0))
    );
    let (status, _) = call(
        &bank,
        "POST",
        "/accounts/acc-1/deposits",
        Some(json!({"amount": 50_000})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, receipt) = call(
        &bank,
        "POST",
        "/accounts/acc-1/withdrawals",
        Some(json!({"amount": 2_000})),
    )
    .await;
    assert_eq!(
        (status, receipt["balance"].as_u64()),
        (StatusCode::OK, Some(48_000))
    );
    // The read model already shows it: the command waited for the balances.
    let (status, account) = call(&bank, "GET", "/accounts/acc-1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        account,
        json!({"id": "acc-1", "owner": "Ada", "balance": 48_000})
    );

    let cases = [
        (
            "GET",
            "/accounts/nobody",
            None,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "POST",
            "/accounts/nobody/deposits",
            Some(json!({"amount": 5})),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "POST",
            "/accounts",
            Some(json!({"id": "acc-1", "owner": "Bob"})),
            StatusCode::CONFLICT,
            "DUPLICATE",
        ),
        (
            "POST",
            "/accounts/acc-1/deposits",
            Some(json!({"amount": 0})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "POST",
            "/accounts/acc-1/withdrawals",
            Some(json!({"amount": 99_999_999})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "BUSINESS_RULE_VIOLATION",
        ),
        (
            "POST",
            "/accounts/acc-1/withdrawals",
            Some(json!({"amount": 100_001})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "BUSINESS_RULE_VIOLATION",
        ),
        (
            "POST",
            "/accounts/acc-1/deposits",
            Some(json!({"amount": "ten"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "GET",
            "/accounts?limit=0",
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "GET",
            "/accounts?cursor=bogus",
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
    ];
    for (method, path, body, expected, name) in cases {
        let (status, error) = call(&bank, method, path, body.clone()).await;
        assert_eq!(status, expected, "{method} {path} {body:?}: {error}");
        assert_eq!(error["name"], name, "{method} {path}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    shut(bank).await;
}

#[tokio::test]
async fn a_withdrawal_held_for_review_is_forbidden() {
    let db = TempDb::new();
    let bank = open_bank(&db, Arc::new(SimulatedFraud::new(1_000))).await;
    opened(&bank, "acc-2", 5_000).await;
    let (status, error) = call(
        &bank,
        "POST",
        "/accounts/acc-2/withdrawals",
        Some(json!({"amount": 2_000})),
    )
    .await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::FORBIDDEN, Some("AUTHORIZATION_DENIED"))
    );
    shut(bank).await;
}

/// A fraud service that lets its first two callers through together only: two
/// withdrawals are both deciding at once, so one of them meets a conflict.
struct Together {
    gate: tokio::sync::Barrier,
    calls: std::sync::atomic::AtomicU64,
}

#[flext_handlers::async_trait]
impl FraudCheck for Together {
    async fn approve(
        &self,
        _account: &str,
        _amount: u64,
    ) -> flext_handlers::Types::FlextResult<()> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            self.gate.wait().await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_withdrawals_one_wins_and_the_other_decides_again_and_is_refused() {
    let db = TempDb::new();
    let fraud = Arc::new(Together {
        gate: tokio::sync::Barrier::new(2),
        calls: std::sync::atomic::AtomicU64::new(0),
    });
    let bank = Arc::new(
        Bank::open(&db.0, fraud.clone())
            .await
            .expect("the bank opens"),
    );
    opened(&bank, "acc-3", 10_000).await;
    let withdraw = |bank: Arc<Bank>| async move {
        call(
            &bank,
            "POST",
            "/accounts/acc-3/withdrawals",
            Some(json!({"amount": 7_000})),
        )
        .await
    };
    let (a, b) = tokio::join!(
        tokio::spawn(withdraw(bank.clone())),
        tokio::spawn(withdraw(bank.clone()))
    );
    let (a, b) = (a.expect("a task"), b.expect("a task"));
    let mut answers = [(a.0.as_u16(), a.1), (b.0.as_u16(), b.1)];
    answers.sort_by_key(|(status, _)| *status);
    assert_eq!(answers[0].0, 200, "one wins: {answers:?}");
    assert_eq!(answers[1].0, 422, "the other is refused: {answers:?}");
    // Refused on the balance the winner left, found by deciding again after the conflict.
    assert_eq!(answers[1].1["name"], "BUSINESS_RULE_VIOLATION");
    assert_eq!(answers[1].1["data"]["balance"], 3_000, "{:?}", answers[1].1);
    assert_eq!(
        fraud.calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "both decided at once"
    );
    let (_, account) = call(&bank, "GET", "/accounts/acc-3", None).await;
    assert_eq!(account["balance"], 3_000);
    shut(bank).await;
}

#[tokio::test]
async fn a_command_retried_under_its_idempotency_key_is_one_change() {
    let db = TempDb::new();
    let bank = open_bank(&db, Arc::new(SimulatedFraud::new(100_000))).await;
    opened(&bank, "acc-6", 0).await;
    let deposit = |key: &'static str| {
        let request = Request::builder()
            .method("POST")
            .uri("/accounts/acc-6/deposits")
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(json!({"amount": 2_500}).to_string()))
            .expect("a request");
        router(bank.clone()).oneshot(request)
    };
    let first = deposit("pay-1").await.expect("an answer");
    let again = deposit("pay-1").await.expect("an answer");
    assert_eq!(
        (first.status(), again.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let (_, account) = call(&bank, "GET", "/accounts/acc-6", None).await;
    assert_eq!(account["balance"], 2_500, "one deposit for one key");
    deposit("pay-2").await.expect("an answer");
    let (_, account) = call(&bank, "GET", "/accounts/acc-6", None).await;
    assert_eq!(account["balance"], 5_000, "another key, another deposit");
    shut(bank).await;
}

#[tokio::test]
async fn amounts_past_the_limit_are_refused_before_any_handler() {
    let db = TempDb::new();
    let bank = open_bank(&db, Arc::new(SimulatedFraud::new(100_000))).await;
    opened(&bank, "acc-7", 0).await;
    for amount in [100_000_000_001u64, u64::MAX] {
        let (status, error) = call(
            &bank,
            "POST",
            "/accounts/acc-7/deposits",
            Some(json!({"amount": amount})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(error["data"]["field"], "amount");
    }
    let (_, account) = call(&bank, "GET", "/accounts/acc-7", None).await;
    assert_eq!(account["balance"], 0);
    shut(bank).await;
}

/// Where a restart test keeps its bank.
enum Place<'a> {
    Sqlite(&'a TempDb),
    Postgres(&'a DroppedSchema),
}

impl Place<'_> {
    async fn open(&self, fraud: Arc<SimulatedFraud>) -> Arc<Bank> {
        let bank = match self {
            Self::Sqlite(db) => Bank::open(&db.0, fraud).await,
            Self::Postgres(schema) => Bank::open_postgres(&schema.url, &schema.name, fraud).await,
        };
        Arc::new(bank.expect("the bank opens"))
    }

    /// Forgets where the notifier was (the relay's checkpoint and its subscriber's), as
    /// after a crash before either was saved: it delivers every withdrawal again on the
    /// next start.
    async fn forget_the_notifiers_place(&self) {
        let store: Arc<dyn CheckpointStore> = match self {
            Self::Sqlite(db) => Arc::new(SqliteEventStore::open(&db.0).await.expect("opens")),
            Self::Postgres(schema) => Arc::new(
                PostgresEventStore::connect_with(
                    PostgresStoreOptions::new(&schema.url).with_schema(schema.name.clone()),
                )
                .await
                .expect("connects"),
            ),
        };
        for key in ["bank", "bank/large_withdrawals"] {
            let saved = store.load_checkpoint(key).await.expect("a checkpoint read");
            assert!(
                saved.is_some_and(|position| position >= 4),
                "{key}: {saved:?}"
            );
            store.reset(key).await.expect("reset");
            assert_eq!(store.load_checkpoint(key).await.expect("read"), None);
        }
    }
}

async fn restart_keeps_balances_and_notifies_once(place: Place<'_>) {
    let fraud = Arc::new(SimulatedFraud::new(100_000));
    let bank = place.open(fraud.clone()).await;
    opened(&bank, "acc-4", 50_000).await;
    call(
        &bank,
        "POST",
        "/accounts/acc-4/withdrawals",
        Some(json!({"amount": 20_000})),
    )
    .await;
    call(
        &bank,
        "POST",
        "/accounts/acc-4/withdrawals",
        Some(json!({"amount": 500})),
    )
    .await;
    bank.notified().await.expect("notified");
    let (_, notes) = call(&bank, "GET", "/notifications", None).await;
    assert_eq!(notes.as_array().map(Vec::len), Some(1), "{notes}");
    assert_eq!(notes[0]["amount"], 20_000);
    shut(bank).await;

    place.forget_the_notifiers_place().await;

    let bank = place.open(fraud).await;
    let (_, account) = call(&bank, "GET", "/accounts/acc-4", None).await;
    assert_eq!(
        account["balance"], 29_500,
        "the balance survives the restart"
    );
    bank.notified().await.expect("notified");
    assert_eq!(
        bank.large_withdrawals_delivered(),
        1,
        "the large withdrawal was delivered again"
    );
    let (_, notes) = call(&bank, "GET", "/notifications", None).await;
    assert_eq!(
        notes.as_array().map(Vec::len),
        Some(1),
        "still one notification: {notes}"
    );
    call(
        &bank,
        "POST",
        "/accounts/acc-4/deposits",
        Some(json!({"amount": 1})),
    )
    .await;
    let (_, account) = call(&bank, "GET", "/accounts/acc-4", None).await;
    assert_eq!(
        account["balance"], 29_501,
        "each event counted once in the balances"
    );
    shut(bank).await;
}

#[tokio::test]
async fn a_restart_keeps_balances_and_a_large_withdrawal_notifies_once() {
    let db = TempDb::new();
    restart_keeps_balances_and_notifies_once(Place::Sqlite(&db)).await;
}

#[tokio::test]
async fn on_postgres_a_restart_keeps_balances_and_notifies_once() {
    let Some(schema) = DroppedSchema::of_its_own("bank") else {
        return;
    };
    restart_keeps_balances_and_notifies_once(Place::Postgres(&schema)).await;
}

#[tokio::test]
async fn a_fraud_service_that_is_down_answers_503_and_opens_the_breaker() {
    let db = TempDb::new();
    let fraud = Arc::new(SimulatedFraud::new(100_000));
    let bank = open_bank(&db, fraud.clone()).await;
    opened(&bank, "acc-5", 10_000).await;
    fraud.set_down(true);
    let mut names = Vec::new();
    for _ in 0..6 {
        let (status, error) = call(
            &bank,
            "POST",
            "/accounts/acc-5/withdrawals",
            Some(json!({"amount": 100})),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
        names.push(error["name"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(names[0], "UNAVAILABLE");
    assert_eq!(
        names.last().map(String::as_str),
        Some("CIRCUIT_OPEN"),
        "{names:?}"
    );
    assert_eq!(
        bank.services().breaker.state(),
        flext_handlers::Patterns::BreakerState::Open
    );
    let (_, account) = call(&bank, "GET", "/accounts/acc-5", None).await;
    assert_eq!(account["balance"], 10_000, "nothing withdrawn");
    shut(bank).await;
}

#[tokio::test]
async fn accounts_list_in_pages_with_a_filter() {
    let db = TempDb::new();
    let bank = open_bank(&db, Arc::new(SimulatedFraud::new(100_000))).await;
    for n in 1..=7 {
        opened(&bank, &format!("acc-{n:02}"), n * 100).await;
    }
    let (status, first) = call(&bank, "GET", "/accounts?min_balance=300&limit=3", None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["total"], 5);
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|a| a["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), ["acc-03", "acc-04", "acc-05"]);
    let cursor = first["next_cursor"].as_str().expect("more").to_owned();
    let (_, second) = call(
        &bank,
        "GET",
        &format!("/accounts?min_balance=300&limit=3&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(ids(&second), ["acc-06", "acc-07"]);
    assert!(second["next_cursor"].is_null());
    shut(bank).await;
}

/// A fraud service that never answers.
struct Hanging;

#[flext_handlers::async_trait]
impl FraudCheck for Hanging {
    async fn approve(
        &self,
        _account: &str,
        _amount: u64,
    ) -> flext_handlers::Types::FlextResult<()> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_fraud_service_that_hangs_is_a_timeout_not_a_hung_withdrawal() {
    let db = TempDb::new();
    let bank = Arc::new(
        Bank::open(&db.0, Arc::new(Hanging))
            .await
            .expect("the bank opens"),
    );
    opened(&bank, "acc-8", 1_000).await;
    let started = std::time::Instant::now();
    let (status, error) = call(
        &bank,
        "POST",
        "/accounts/acc-8/withdrawals",
        Some(json!({"amount": 10})),
    )
    .await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::GATEWAY_TIMEOUT, Some("TIMEOUT")),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        bank.services().breaker.metrics().failed_calls,
        1,
        "the breaker counts it"
    );
    shut(bank).await;
}
