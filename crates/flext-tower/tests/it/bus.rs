//! Tower's middleware on a command bus route: rate and concurrency limits, load shedding,
//! buffers and timeouts around a command handler, their errors mapped and named.

use std::sync::Arc;
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_handlers::cqrs::CommandBus;
use flext_tower::{HandlerExt, HandlerService, ServiceHandler};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceBuilder;
use tower::buffer::Buffer;

use crate::support::{CreateUser, CreateUserHandler};

/// Sends `count` commands at once, each taking `delay`; their results in order of value.
async fn send_concurrently(
    bus: &Arc<CommandBus>,
    count: u64,
    delay: Duration,
) -> Vec<Result<u64, flext_types::FlextError>> {
    let mut sends = JoinSet::new();
    for value in 0..count {
        let bus = Arc::clone(bus);
        sends.spawn(async move { (value, bus.send(CreateUser::taking(value, delay)).await) });
    }
    let mut results = sends.join_all().await;
    results.sort_by_key(|(value, _)| *value);
    results.into_iter().map(|(_, result)| result).collect()
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_lets_n_through_per_period_and_the_next_waits() {
    let handler = CreateUserHandler::new();
    let mut bus = CommandBus::new();
    bus.register::<CreateUser>(
        handler
            .clone()
            .layer(ServiceBuilder::new().rate_limit(2, Duration::from_secs(1))),
    )
    .unwrap();

    let started = Instant::now();
    assert_eq!(bus.send(CreateUser::now(1)).await, Ok(1));
    assert_eq!(bus.send(CreateUser::now(2)).await, Ok(2));
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "two fit in the first period"
    );
    assert_eq!(bus.send(CreateUser::now(3)).await, Ok(3));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "the third waited for the next period"
    );
    assert_eq!(handler.in_flight.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_under_load_shed_sheds_the_call_past_its_budget() {
    let handler = CreateUserHandler::new();
    let mut bus = CommandBus::new();
    bus.register::<CreateUser>(
        handler.clone().layer(
            ServiceBuilder::new()
                .load_shed()
                .rate_limit(2, Duration::from_secs(1)),
        ),
    )
    .unwrap();

    assert_eq!(bus.send(CreateUser::now(1)).await, Ok(1));
    assert_eq!(bus.send(CreateUser::now(2)).await, Ok(2));
    let err = bus.send(CreateUser::now(3)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::RateLimited);
    assert_eq!(
        err.message(),
        "load_shed layer of 'create_user': service overloaded, request shed"
    );
    assert_eq!(
        err.data(),
        Some(&json!({"layer": "load_shed", "handler": "create_user"}))
    );
    assert_eq!(handler.in_flight.calls(), 2, "the shed call never ran");

    // The next period has room again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bus.send(CreateUser::now(4)).await, Ok(4));
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_limit_keeps_at_most_n_in_the_handler() {
    let handler = CreateUserHandler::new();
    let mut bus = CommandBus::new();
    bus.register::<CreateUser>(
        handler
            .clone()
            .layer(ServiceBuilder::new().concurrency_limit(3)),
    )
    .unwrap();
    let bus = Arc::new(bus);

    let started = Instant::now();
    let results = send_concurrently(&bus, 10, Duration::from_millis(100)).await;
    assert_eq!(results, (0..10).map(Ok).collect::<Vec<_>>());
    assert_eq!(handler.in_flight.most(), 3);
    // Ten calls of 100 ms, three at a time: four rounds.
    assert_eq!(started.elapsed(), Duration::from_millis(400));
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_limit_under_load_shed_sheds_the_calls_past_it() {
    let handler = CreateUserHandler::new();
    let mut bus = CommandBus::new();
    bus.register::<CreateUser>(
        handler
            .clone()
            .layer(ServiceBuilder::new().load_shed().concurrency_limit(2)),
    )
    .unwrap();
    let bus = Arc::new(bus);

    let results = send_concurrently(&bus, 5, Duration::from_millis(100)).await;
    let served = results.iter().filter(|r| r.is_ok()).count();
    let shed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(served, 2);
    assert_eq!(shed.len(), 3);
    assert!(shed.iter().all(|e| e.code() == ErrorCode::RateLimited));
    assert_eq!(handler.in_flight.calls(), 2);
    assert_eq!(handler.in_flight.most(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_a_timeout_naming_the_layer() {
    let mut bus = CommandBus::new();
    bus.register::<CreateUser>(
        CreateUserHandler::new().layer(ServiceBuilder::new().timeout(Duration::from_secs(2))),
    )
    .unwrap();

    assert_eq!(
        bus.send(CreateUser::taking(7, Duration::from_secs(1)))
            .await,
        Ok(7)
    );
    let started = Instant::now();
    let err = bus
        .send(CreateUser::taking(8, Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(
        err.message(),
        "timeout layer of 'create_user': request timed out"
    );
    assert_eq!(
        err.data(),
        Some(&json!({"layer": "timeout", "handler": "create_user"}))
    );
}

#[tokio::test(start_paused = true)]
async fn a_buffer_serves_concurrent_senders() {
    let handler = CreateUserHandler::new();
    let mut bus = CommandBus::new();
    bus.register::<CreateUser>(
        handler
            .clone()
            .layer(ServiceBuilder::new().buffer(4).concurrency_limit(8)),
    )
    .unwrap();
    let bus = Arc::new(bus);

    let results = send_concurrently(&bus, 32, Duration::from_millis(10)).await;
    assert_eq!(results, (0..32).map(Ok).collect::<Vec<_>>());
    assert_eq!(handler.in_flight.calls(), 32);
    assert!(handler.in_flight.most() <= 8);
}

#[tokio::test(start_paused = true)]
async fn a_buffer_whose_worker_is_gone_is_an_operation_error() {
    let (buffer, worker) = Buffer::pair(HandlerService::new(CreateUserHandler::new()), 4);
    drop(worker);
    let mut bus = CommandBus::new();
    bus.register::<CreateUser>(ServiceHandler::new("create_user", buffer))
        .unwrap();

    let err = bus.send(CreateUser::now(1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.message(),
        "buffer layer of 'create_user': the buffer's worker is closed"
    );
    assert_eq!(
        err.data(),
        Some(&json!({"layer": "buffer", "handler": "create_user"}))
    );
}

#[tokio::test(start_paused = true)]
async fn the_whole_stack_on_one_route() {
    let handler = CreateUserHandler::new();
    let mut bus = CommandBus::new();
    bus.register::<CreateUser>(
        handler.clone().layer(
            ServiceBuilder::new()
                .buffer(16)
                .load_shed()
                .concurrency_limit(4)
                .rate_limit(100, Duration::from_secs(1))
                .timeout(Duration::from_millis(500)),
        ),
    )
    .unwrap();
    let bus = Arc::new(bus);

    assert_eq!(bus.send(CreateUser::now(1)).await, Ok(1));
    let err = bus
        .send(CreateUser::taking(2, Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    let results = send_concurrently(&bus, 8, Duration::from_millis(50)).await;
    assert!(results.iter().any(Result::is_ok), "{results:?}");
    assert!(results.iter().all(|r| match r {
        Ok(_) => true,
        Err(e) => e.code() == ErrorCode::RateLimited,
    }));
    assert!(handler.in_flight.most() <= 4);
}
