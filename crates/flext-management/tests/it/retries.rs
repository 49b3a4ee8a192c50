//! A handler's configured `max_retries` takes effect when the manager executes it by name:
//! 1 + `max_retries` attempts at most, only on retryable errors, on a paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use flext_constants::{Environment, ErrorCode};
use flext_impl::handler_fn;
use flext_management::{HandlerManager, HandlerSpec};
use flext_types::{FlextError, FlextResult, HandlerConfig};
use serde_json::{Value, json};

/// A handler that fails with `error` on its first `failures` calls, then echoes; and its
/// call count.
fn flaky(
    failures: u32,
    error: fn() -> FlextError,
) -> (
    impl flext_protocols::Handler<Request = Value, Response = Value> + 'static,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handler = handler_fn("flaky", move |request: Value| {
        let calls = counted.clone();
        async move {
            if calls.fetch_add(1, SeqCst) < failures {
                Err(error())
            } else {
                Ok(request)
            }
        }
    });
    (handler, calls)
}

fn manager_with(handler: HandlerSpec) -> HandlerManager {
    let manager = HandlerManager::new();
    manager.register_ecosystem(vec![handler]).unwrap();
    manager
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_up_to_max_retries() {
    let (handler, calls) = flaky(2, || FlextError::timeout("slow backend"));
    let manager =
        manager_with(HandlerSpec::custom("flaky", handler).with_config(json!({"max_retries": 2})));
    let started = tokio::time::Instant::now();
    assert_eq!(manager.execute("flaky", json!(7)).await, Ok(json!(7)));
    assert_eq!(calls.load(SeqCst), 3, "1 + max_retries attempts");
    // Two backoffs of the default retry policy (100 ms and 200 ms, ±20 % jitter).
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(240) && waited <= Duration::from_millis(360),
        "{waited:?}"
    );

    let report = manager.health_report();
    let health = &report.handlers["flaky"];
    assert_eq!(
        health.requests_processed, 1,
        "one execute, however many attempts"
    );
    assert!(health.last_error.is_none());
}

#[tokio::test(start_paused = true)]
async fn the_attempts_run_out_after_one_plus_max_retries() {
    for (config, attempts) in [
        (json!({"max_retries": 1}), 2),
        (json!({"environment": "production", "max_retries": 1}), 2),
        (json!({"max_retries": 4}), 5),
    ] {
        let (handler, calls) = flaky(u32::MAX, || FlextError::storage("database down"));
        let manager = manager_with(HandlerSpec::custom("flaky", handler).with_config(config));
        let err = manager.execute("flaky", json!(1)).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::StorageError);
        assert_eq!(
            err.to_string(),
            format!("Gave up after {attempts} attempts: database down")
        );
        assert_eq!(calls.load(SeqCst), attempts);
        assert_eq!(
            manager.health_report().handlers["flaky"]
                .last_error
                .as_deref(),
            Some(err.to_string().as_str())
        );
    }
}

#[tokio::test(start_paused = true)]
async fn no_retries_configured_means_one_attempt() {
    let test_environment = HandlerConfig::for_environment(Environment::Test);
    for config in [
        json!({"max_retries": 0}),
        serde_json::to_value(test_environment).unwrap(),
    ] {
        let (handler, calls) = flaky(1, || FlextError::timeout("slow backend"));
        let manager = manager_with(HandlerSpec::custom("flaky", handler).with_config(config));
        let err = manager.execute("flaky", json!(1)).await.unwrap_err();
        assert_eq!(err.to_string(), "slow backend");
        assert_eq!(calls.load(SeqCst), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn rejections_and_other_errors_are_never_retried() {
    let errors: [fn() -> FlextError; 4] = [
        || FlextError::validation("Invalid email format"),
        || FlextError::authorization_denied("Role guest may not delete"),
        || FlextError::business_rule("Order already shipped"),
        || FlextError::not_found("User 7 not found"),
    ];
    for error in errors {
        let (handler, calls) = flaky(1, error);
        let manager = manager_with(
            HandlerSpec::custom("flaky", handler).with_config(json!({"max_retries": 3})),
        );
        let err = manager.execute("flaky", json!(1)).await.unwrap_err();
        assert_eq!(err, error(), "returned unchanged");
        assert_eq!(calls.load(SeqCst), 1, "{err}");
    }

    // A denial by an authorizing handler, and a request that does not decode.
    let checks = Arc::new(AtomicU32::new(0));
    let counted = checks.clone();
    let manager = manager_with(
        HandlerSpec::authorizing("admin_only", move |_: &Value| -> FlextResult<()> {
            counted.fetch_add(1, SeqCst);
            Err(FlextError::authorization_denied("Authorization denied"))
        })
        .with_config(json!({"max_retries": 3})),
    );
    let err = manager.execute("admin_only", json!({})).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(checks.load(SeqCst), 1);

    let typed = HandlerManager::new();
    typed
        .register_ecosystem(vec![
            HandlerSpec::custom(
                "double",
                handler_fn("double", |n: u32| async move { Ok(n * 2) }),
            )
            .with_config(json!({"max_retries": 3})),
        ])
        .unwrap();
    let err = typed.execute("double", json!("two")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SerializationError);
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_deadline_is_retried_with_a_fresh_deadline() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handler = handler_fn("slow_once", move |request: Value| {
        let calls = counted.clone();
        async move {
            if calls.fetch_add(1, SeqCst) == 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(request)
        }
    });
    let manager = manager_with(
        HandlerSpec::custom("slow_once", handler)
            .with_config(json!({"timeout": 50, "max_retries": 1})),
    );
    assert_eq!(
        manager.execute("slow_once", json!("ok")).await,
        Ok(json!("ok"))
    );
    assert_eq!(calls.load(SeqCst), 2);
    let metrics = manager
        .registry()
        .handler("slow_once")
        .unwrap()
        .core()
        .metrics();
    assert_eq!(
        (
            metrics.requests_processed,
            metrics.failed_requests,
            metrics.successful_requests
        ),
        (2, 1, 1),
        "the handler's own metrics count each attempt"
    );
}
