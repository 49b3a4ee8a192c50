//! The timeout middleware and a handler core's own deadline agree: a timeout is the same
//! outcome on the bus and on the handler, counted once on each, also for a handler that
//! answers after the deadline without yielding, blocks, or never answers.

use std::sync::Arc;
use std::time::Duration;

use flext_constants::{ErrorCode, HandlerState};
use flext_cqrs::{CommandBus, TimeoutMiddleware};
use flext_impl::{BasicHandler, ManagedHandler};
use flext_protocols::Handler;
use flext_types::FlextResult;
use serde_json::json;

use crate::Divide;

/// A bus with a 100 ms timeout middleware, sending `Divide` to `handler`.
fn bus_with(handler: &Arc<impl Handler<Request = Divide, Response = u32> + 'static>) -> CommandBus {
    let mut bus = CommandBus::new();
    bus.register(handler.clone()).unwrap();
    bus.add_middleware(TimeoutMiddleware::new(Duration::from_millis(100)));
    bus
}

/// Successes and failures on the bus, overall and for `Divide`.
fn bus_counts(bus: &CommandBus) -> (u64, u64, u64, u64) {
    let m = bus.metrics();
    let divide = &m.commands["Divide"];
    (
        m.successful_commands,
        m.failed_commands,
        divide.successful,
        divide.failed,
    )
}

/// Successes, failures and calls in flight of the handler.
fn handler_counts(handler: &impl ManagedHandler) -> (u64, u64, u64) {
    let m = handler.metrics();
    (m.successful_requests, m.failed_requests, m.in_flight)
}

fn assert_bus_timeout(error: &flext_types::FlextError) {
    assert_eq!(error.code(), ErrorCode::Timeout);
    assert_eq!(
        error.to_string(),
        "Command Divide timed out after 100 ms (handler 'divider')"
    );
}

#[tokio::test(start_paused = true)]
async fn a_bus_timeout_is_recorded_on_the_handler_too() {
    let handler = Arc::new(BasicHandler::from_fn(
        "divider",
        |Divide(ms): Divide| async move {
            tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
            Ok(ms)
        },
    ));
    let bus = bus_with(&handler);
    assert_eq!(bus.send(Divide(99)).await, Ok(99));
    let started = tokio::time::Instant::now();
    let err = bus.send(Divide(5_000)).await.unwrap_err();
    assert_bus_timeout(&err);
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(handler_counts(&*handler), (1, 1, 0));
    assert_eq!(bus_counts(&bus), (1, 1, 1, 1));
    assert_eq!(handler.metrics().latency.max, Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_result_after_the_bus_deadline_without_a_yield_is_a_timeout_on_both() {
    let handler = Arc::new(BasicHandler::from_fn(
        "divider",
        |Divide(ms): Divide| async move {
            tokio::time::advance(Duration::from_millis(u64::from(ms))).await;
            Ok(ms)
        },
    ));
    let bus = bus_with(&handler);
    assert_eq!(bus.send(Divide(99)).await, Ok(99));
    let err = bus.send(Divide(150)).await.unwrap_err();
    assert_bus_timeout(&err);
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(handler_counts(&*handler), (1, 1, 0));
    assert_eq!(bus_counts(&bus), (1, 1, 1, 1));
}

#[tokio::test]
async fn a_handler_that_blocks_past_the_bus_deadline_is_a_timeout_on_both() {
    // The paused clock cannot see a thread sleep: a real one, past a 100 ms deadline.
    let handler = Arc::new(BasicHandler::from_fn(
        "divider",
        |Divide(ms): Divide| async move {
            std::thread::sleep(Duration::from_millis(u64::from(ms)));
            Ok(ms)
        },
    ));
    let bus = bus_with(&handler);
    let err = bus.send(Divide(150)).await.unwrap_err();
    assert_bus_timeout(&err);
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(handler_counts(&*handler), (0, 1, 0));
    assert_eq!(bus_counts(&bus), (0, 1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_never_answers_is_a_timeout_on_both() {
    let handler = Arc::new(BasicHandler::from_fn("divider", |_: Divide| {
        std::future::pending::<FlextResult<u32>>()
    }));
    let bus = bus_with(&handler);
    let err = bus.send(Divide(1)).await.unwrap_err();
    assert_bus_timeout(&err);
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(handler_counts(&*handler), (0, 1, 0));
    assert_eq!(bus_counts(&bus), (0, 1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn the_handlers_own_earlier_deadline_passes_through_the_bus() {
    let handler = Arc::new(BasicHandler::from_fn(
        "divider",
        |Divide(ms): Divide| async move {
            tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
            Ok(ms)
        },
    ));
    handler.configure(json!({"timeout": 30})).unwrap();
    let bus = bus_with(&handler);
    let started = tokio::time::Instant::now();
    let err = bus.send(Divide(5_000)).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(30));
    assert_eq!(err.to_string(), "Handler 'divider' timed out after 30 ms");
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(handler_counts(&*handler), (0, 1, 0));
    assert_eq!(bus_counts(&bus), (0, 1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_handler_without_a_core_is_still_ended_by_the_bus() {
    let mut bus = CommandBus::new();
    bus.register_fn(|Divide(ms): Divide| async move {
        tokio::time::advance(Duration::from_millis(u64::from(ms))).await;
        Ok(ms)
    })
    .unwrap();
    bus.add_middleware(TimeoutMiddleware::new(Duration::from_millis(100)));
    let err = bus.send(Divide(150)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Command Divide timed out after 100 ms (handler 'Divide')"
    );
    assert_eq!(bus_counts(&bus), (0, 1, 0, 1));
}

/// Before, a handler that called another handler (here through the same kind of core) and
/// then blocked past the bus deadline was a success on the bus and on itself: the inner
/// core's in-time verdict stood for the whole dispatch.
#[tokio::test]
async fn a_handler_that_blocks_after_calling_another_is_a_timeout_on_both() {
    let helper = Arc::new(BasicHandler::from_fn(
        "helper",
        |ms: u32| async move { Ok(ms) },
    ));
    let callee = helper.clone();
    let handler = Arc::new(BasicHandler::from_fn(
        "divider",
        move |Divide(ms): Divide| {
            let callee = callee.clone();
            async move {
                let ms = callee.handle(ms).await?;
                // The paused clock cannot see a thread sleep: the real one runs here.
                std::thread::sleep(Duration::from_millis(u64::from(ms)));
                Ok(ms)
            }
        },
    ));
    let bus = bus_with(&handler);
    let err = bus.send(Divide(150)).await.unwrap_err();
    assert_bus_timeout(&err);
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(handler_counts(&*handler), (0, 1, 0));
    assert_eq!(bus_counts(&bus), (0, 1, 0, 1));
    assert_eq!(
        handler_counts(&*helper),
        (1, 0, 0),
        "the helper answered in time"
    );
}
