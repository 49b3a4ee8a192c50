//! Timeout and TimeoutHandler: a result after the deadline is a timeout also when the call
//! never yields before it, and a managed handler counts the timeout once.

use std::time::Duration;

use flext_constants::{ErrorCode, HandlerKind, HandlerState};
use flext_impl::{BasicHandler, HandlerCore, ManagedHandler};
use flext_patterns::Timeout;
use flext_protocols::{Handler, async_trait};
use flext_types::{FlextError, FlextResult};
use serde_json::json;

fn counts(handler: &impl ManagedHandler) -> (u64, u64, u64) {
    let m = handler.metrics();
    (m.successful_requests, m.failed_requests, m.in_flight)
}

/// A handler whose step moves the paused clock by `ms` and answers without having yielded
/// to a timer before its result was ready.
fn clock_mover() -> BasicHandler<impl Handler<Request = u64, Response = u64>> {
    BasicHandler::from_fn("report", |ms: u64| async move {
        tokio::time::advance(Duration::from_millis(ms)).await;
        Ok(ms)
    })
}

#[tokio::test(start_paused = true)]
async fn timeout_run_turns_a_late_result_into_a_timeout() {
    let timeout = Timeout::new(Duration::from_millis(50));
    let late = timeout
        .run(async {
            tokio::time::advance(Duration::from_millis(80)).await;
            Ok::<_, FlextError>(1)
        })
        .await
        .unwrap_err();
    assert_eq!(late.to_string(), "Call timed out after 50 ms");
    let silent = timeout.run(std::future::pending::<FlextResult<()>>());
    assert_eq!(silent.await.unwrap_err().code(), ErrorCode::Timeout);
}

#[tokio::test(start_paused = true)]
async fn a_late_result_under_a_timeout_handler_is_a_timeout_counted_once() {
    let guarded = Timeout::new(Duration::from_millis(200)).wrap(clock_mover());
    assert_eq!(guarded.handle(100).await, Ok(100));
    let err = guarded.handle(300).await.unwrap_err();
    assert_eq!(err.to_string(), "Handler 'report' timed out after 200 ms");
    assert_eq!(guarded.inner().state(), HandlerState::Timeout);
    assert_eq!(counts(guarded.inner()), (1, 1, 0));
}

#[tokio::test]
async fn a_blocking_handler_under_a_timeout_handler_is_a_timeout_counted_once() {
    // The paused clock cannot see a thread sleep: a short real deadline instead.
    let blocker = BasicHandler::from_fn("report", |ms: u64| async move {
        std::thread::sleep(Duration::from_millis(ms));
        Ok(ms)
    });
    let guarded = Timeout::new(Duration::from_millis(5)).wrap(blocker);
    let err = guarded.handle(40).await.unwrap_err();
    assert_eq!(err.to_string(), "Handler 'report' timed out after 5 ms");
    assert_eq!(guarded.inner().state(), HandlerState::Timeout);
    assert_eq!(counts(guarded.inner()), (0, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_silent_handler_under_a_timeout_handler_is_a_timeout_counted_once() {
    let silent = BasicHandler::from_fn("report", |()| std::future::pending::<FlextResult<()>>());
    let guarded = Timeout::new(Duration::from_millis(200)).wrap(silent);
    let err = guarded.handle(()).await.unwrap_err();
    assert_eq!(err.to_string(), "Handler 'report' timed out after 200 ms");
    assert_eq!(guarded.inner().state(), HandlerState::Timeout);
    assert_eq!(counts(guarded.inner()), (0, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn the_handlers_own_earlier_deadline_passes_through_a_timeout_handler() {
    let slow = BasicHandler::from_fn("report", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    });
    slow.configure(json!({"timeout": 30})).unwrap();
    let guarded = Timeout::new(Duration::from_millis(200)).wrap(slow);
    let err = guarded.handle(1_000).await.unwrap_err();
    assert_eq!(err.to_string(), "Handler 'report' timed out after 30 ms");
    assert_eq!(counts(guarded.inner()), (0, 1, 0));
}

/// A managed handler whose calls do not run through its core: the wrapper records for it.
struct Uncored {
    core: HandlerCore,
}

#[async_trait]
impl Handler for Uncored {
    type Request = u64;
    type Response = u64;

    fn handler_name(&self) -> &str {
        self.core.name()
    }

    async fn handle(&self, ms: u64) -> FlextResult<u64> {
        tokio::time::advance(Duration::from_millis(ms)).await;
        Ok(ms)
    }
}

impl ManagedHandler for Uncored {
    fn core(&self) -> &HandlerCore {
        &self.core
    }
}

#[tokio::test(start_paused = true)]
async fn a_timeout_handler_records_for_a_handler_that_bypasses_its_core() {
    let guarded = Timeout::new(Duration::from_millis(200)).wrap(Uncored {
        core: HandlerCore::new("uncored", HandlerKind::Custom),
    });
    let err = guarded.handle(250).await.unwrap_err();
    assert_eq!(err.to_string(), "Handler 'uncored' timed out after 200 ms");
    assert_eq!(guarded.inner().state(), HandlerState::Timeout);
    assert_eq!(counts(guarded.inner()), (0, 1, 0));
    assert_eq!(
        guarded.inner().metrics().latency.max,
        Duration::from_millis(250)
    );
}
