//! BasicHandler: pass-through, state, configuration, deadline, panic capture, reset.

use std::time::Duration;

use flext_constants::{Environment, ErrorCode, HandlerKind, HandlerState, LogLevel};
use flext_impl::{BasicHandler, ManagedHandler, handler_fn, sync_handler_fn};
use flext_protocols::{Handler, MetricsSource};
use flext_types::{FlextError, FlextResult, HandlerConfig, MetricValue};
use serde_json::json;

#[tokio::test]
async fn default_handler_passes_requests_through_and_counts_them() {
    let handler = BasicHandler::new("user_service");
    assert_eq!(handler.state(), HandlerState::Idle);
    assert_eq!(handler.kind(), HandlerKind::Basic);
    let request = json!({"action": "create_user", "user": {"name": "John Doe"}});
    let response = handler.handle(request.clone()).await.unwrap();
    assert_eq!(response, request);
    let m = handler.metrics();
    assert_eq!(m.handler_name, "user_service");
    assert_eq!(
        (
            m.requests_processed,
            m.successful_requests,
            m.failed_requests
        ),
        (1, 1, 0)
    );
    assert_eq!(m.latency.count, 1);
    assert_eq!(m.state, HandlerState::Completed);
    assert_eq!(m.success_rate(), 100.0);
}

#[tokio::test]
async fn failures_set_state_failed_and_count_as_errors() {
    let handler = BasicHandler::from_fn("checker", |n: i32| async move {
        if n < 0 {
            Err(FlextError::business_rule("negative"))
        } else {
            Ok(n)
        }
    });
    assert_eq!(handler.handle(1).await, Ok(1));
    assert_eq!(handler.state(), HandlerState::Completed);
    let err = handler.handle(-1).await.unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::BusinessRuleViolation,
        "the handler's own code is kept"
    );
    assert_eq!(err.to_string(), "negative");
    assert_eq!(handler.state(), HandlerState::Failed);
    let m = handler.metrics();
    assert_eq!(
        (m.requests_processed, m.failed_requests, m.error_count),
        (2, 1, 1)
    );
    assert_eq!(m.success_rate(), 50.0);
}

#[tokio::test]
async fn a_panicking_handler_is_an_operation_error_and_the_handler_lives_on() {
    let handler = BasicHandler::from_fn("fragile", |n: u32| async move {
        if n == 0 {
            panic!("division by zero in fragile");
        }
        Ok(100 / n)
    });
    let err = handler.handle(0).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler execution failed: division by zero in fragile"
    );
    assert_eq!(handler.state(), HandlerState::Failed);
    assert_eq!(handler.handle(4).await, Ok(25), "the handler keeps working");
    let m = handler.metrics();
    assert_eq!(
        (m.successful_requests, m.failed_requests, m.in_flight),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn a_panic_with_a_formatted_message_keeps_the_message() {
    let handler = BasicHandler::wrap(sync_handler_fn("sync", |id: u64| -> FlextResult<u64> {
        panic!("order {id} is corrupt")
    }));
    let err = handler.handle(7).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Handler execution failed: order 7 is corrupt"
    );
    assert_eq!(handler.kind(), HandlerKind::Custom);
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_deadline_times_out() {
    let handler = BasicHandler::from_fn("slow", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    });
    handler.configure(json!({"timeout": 50})).unwrap();
    assert_eq!(handler.handle(10).await, Ok(10));
    let started = tokio::time::Instant::now();
    let err = handler.handle(1_000).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(err.to_string(), "Handler 'slow' timed out after 50 ms");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(50),
        "the deadline ends the call"
    );
    assert_eq!(handler.state(), HandlerState::Timeout);
    let m = handler.metrics();
    assert_eq!((m.successful_requests, m.failed_requests), (1, 1));
    assert_eq!(m.latency.max, Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn the_environment_deadline_applies() {
    let handler = BasicHandler::from_fn("test_env", |()| async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        Ok(())
    });
    handler
        .configure(HandlerConfig::for_environment(Environment::Test))
        .unwrap();
    let err = handler.handle(()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Handler 'test_env' timed out after 5000 ms"
    );
}

#[tokio::test]
async fn state_is_processing_while_a_call_runs_and_dropping_the_call_releases_it() {
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = std::sync::Mutex::new(Some(release_rx));
    let handler = BasicHandler::from_fn("gate", move |()| {
        let rx = release_rx.lock().unwrap().take();
        async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
            Ok(())
        }
    });
    let mut call = Box::pin(handler.handle(()));
    assert!(
        futures_poll_once(&mut call).await.is_none(),
        "the call waits on the gate"
    );
    assert_eq!(handler.state(), HandlerState::Processing);
    assert_eq!(handler.metrics().in_flight, 1);
    drop(call);
    drop(release_tx);
    assert_eq!(
        handler.metrics().in_flight,
        0,
        "a dropped call is no longer in flight"
    );
    assert_eq!(handler.state(), HandlerState::Idle);
    assert_eq!(
        handler.metrics().requests_processed,
        0,
        "a dropped call has no outcome"
    );
}

/// Polls `fut` once; `Some` if it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(fut).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test]
async fn configure_accepts_the_guide_values_and_rejects_bad_ones_without_change() {
    let handler: BasicHandler = BasicHandler::new("configurable");
    let production = BasicHandler::create_environment_handler_config("production").unwrap();
    handler.configure(production.clone()).unwrap();
    assert_eq!(handler.handler_config(), production);

    for level in ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "TRACE"] {
        handler.configure(json!({"log_level": level})).unwrap();
    }
    assert_eq!(handler.handler_config().log_level, LogLevel::Trace);

    let before = handler.handler_config();
    let err = handler
        .configure(json!({"log_level": "DEBUG", "environment": "moon"}))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "Invalid environment: moon. Valid values: development, staging, production, test, local"
    );
    assert_eq!(
        handler.handler_config(),
        before,
        "a rejected patch changes nothing"
    );

    let err = BasicHandler::create_environment_handler_config("qa").unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn reset_returns_to_idle_and_reset_metrics_keeps_state() {
    let handler = BasicHandler::new("resettable");
    handler.handle(json!(1)).await.unwrap();
    handler.reset_metrics();
    assert_eq!(handler.metrics().requests_processed, 0);
    assert_eq!(handler.state(), HandlerState::Completed);
    handler.handle(json!(2)).await.unwrap();
    handler.reset();
    assert_eq!(handler.state(), HandlerState::Idle);
    let m = handler.metrics();
    assert_eq!((m.requests_processed, m.latency.count), (0, 0));
    assert_eq!(m.total_processing_time, Duration::ZERO);
}

#[tokio::test]
async fn disabling_performance_metrics_stops_timing_but_keeps_counts() {
    let handler = BasicHandler::new("untimed");
    handler
        .configure(json!({"enable_performance_metrics": false}))
        .unwrap();
    handler.handle(json!(1)).await.unwrap();
    let m = handler.metrics();
    assert_eq!(m.requests_processed, 1);
    assert_eq!(m.latency.count, 0);
}

#[tokio::test]
async fn closures_are_handlers_and_basic_handlers_are_metrics_sources() {
    let raw = handler_fn("raw", |s: String| async move { Ok(s.len()) });
    assert_eq!(raw.handle("four".into()).await, Ok(4));
    let managed = BasicHandler::wrap(raw);
    assert_eq!(managed.handler_name(), "raw");
    managed.handle("abc".into()).await.unwrap();
    let set = managed.metric_set();
    assert_eq!(set.source, "raw");
    assert_eq!(
        set.get("successful_requests"),
        Some(&MetricValue::Counter(1))
    );
}

#[test]
fn outside_a_tokio_runtime_calls_run_without_a_deadline() {
    let handler = BasicHandler::new("no_runtime");
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut call = Box::pin(handler.handle(json!("plain")));
    match call.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(result) => assert_eq!(result.unwrap(), json!("plain")),
        std::task::Poll::Pending => panic!("an identity call finishes on its first poll"),
    }
}

#[tokio::test]
async fn a_timeout_reported_by_the_step_itself_also_sets_state_timeout() {
    let handler = BasicHandler::from_fn("caller", |()| async {
        Err::<(), _>(FlextError::timeout("inventory service did not answer"))
    });
    let err = handler.handle(()).await.unwrap_err();
    assert_eq!(err.to_string(), "inventory service did not answer");
    assert_eq!(handler.state(), HandlerState::Timeout);
}

#[tokio::test]
async fn catch_panic_keeps_results_and_converts_panics() {
    use flext_impl::catch_panic;
    assert_eq!(catch_panic(async { Ok::<_, FlextError>(5) }).await, Ok(5));
    let err = catch_panic(async { Err::<(), _>(FlextError::not_found("x")) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    let err = catch_panic(async {
        let v: Vec<u8> = Vec::new();
        #[allow(clippy::indexing_slicing, reason = "the test needs a real panic")]
        let first = v[0];
        Ok(first)
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert!(
        err.to_string()
            .starts_with("Handler execution failed: index out of bounds"),
        "{err}"
    );
}

#[tokio::test]
async fn get_metrics_is_the_guides_spelling_of_metrics() {
    let handler = BasicHandler::new("user_service");
    handler
        .handle(json!({"action": "create_user"}))
        .await
        .unwrap();
    assert_eq!(handler.get_metrics(), handler.metrics());
    assert_eq!(handler.get_metrics().requests_processed, 1);
}
