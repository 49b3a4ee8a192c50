//! Retry, Timeout, Bulkhead and RateLimiter on a paused clock, alone and as middleware.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flext_constants::{ErrorCode, HandlerState};
use flext_impl::{BasicHandler, ManagedHandler, handler_fn};
use flext_patterns::{
    Bulkhead, CircuitBreaker, CircuitBreakerConfig, Layered, RateLimiter, Retry, RetryConfig,
    Timeout,
};
use flext_protocols::Handler;
use flext_types::{FlextError, FlextResult};
use tokio::time::Instant;

fn no_jitter(max_attempts: u32) -> Retry {
    Retry::new(
        RetryConfig::default()
            .with_max_attempts(max_attempts)
            .with_jitter(0.0),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_backs_off_exponentially_and_succeeds() {
    let retry = no_jitter(4);
    let started = Instant::now();
    let tries = AtomicU32::new(0);
    let value = retry
        .run(|attempt| {
            let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
            assert_eq!(attempt, n);
            async move {
                if n < 3 {
                    Err(FlextError::new(ErrorCode::ConcurrencyConflict, "conflict"))
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(value, 3);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(100 + 200),
        "waits of 100 ms then 200 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_never_retries_a_rejection_and_gives_up_naming_the_attempts() {
    let retry = no_jitter(3);
    let tries = AtomicU32::new(0);
    let err = retry
        .run(|_| {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(FlextError::validation("bad input")) }
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.to_string().as_str(), tries.load(Ordering::SeqCst)),
        ("bad input", 1)
    );

    let err = retry
        .run(|_| async { Err::<(), _>(FlextError::timeout("slow")) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(err.to_string(), "Gave up after 3 attempts: slow");

    let custom = no_jitter(2).retry_if(|e| e.is(ErrorCode::NotFound));
    let tries = AtomicU32::new(0);
    let _ = custom
        .run(|_| {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(FlextError::not_found("x")) }
        })
        .await;
    assert_eq!(tries.load(Ordering::SeqCst), 2);
}

#[test]
fn backoff_is_capped_and_jitter_stays_in_bounds() {
    let retry = Retry::new(
        RetryConfig::default()
            .with_max_attempts(10)
            .with_initial_backoff(Duration::from_millis(100))
            .with_multiplier(3.0)
            .with_max_backoff(Duration::from_secs(1))
            .with_jitter(0.25),
    )
    .unwrap();
    for attempt in 1..10 {
        for _ in 0..50 {
            let wait = retry.backoff(attempt).as_secs_f64();
            let base = (0.1 * 3f64.powi(attempt as i32 - 1)).min(1.0);
            assert!(
                wait >= base * 0.75 - 1e-9 && wait <= base * 1.25 + 1e-9,
                "attempt {attempt}: {wait} vs {base}"
            );
        }
    }
    let err = Retry::new(RetryConfig::default().with_jitter(1.5)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Invalid jitter: 1.5. Expected a fraction from 0 to 1"
    );
    assert_eq!(
        Retry::new(RetryConfig::default().with_max_attempts(0))
            .unwrap_err()
            .code(),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test(start_paused = true)]
async fn resilience_stacks_around_a_handler_retry_outside_the_breaker() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let flaky = handler_fn("flaky", move |x: u32| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                Err(FlextError::timeout("flaky"))
            } else {
                Ok(x * 10)
            }
        }
    });
    let breaker = CircuitBreaker::new(
        "flaky",
        CircuitBreakerConfig::default().with_minimum_number_of_calls(10),
    )
    .unwrap();
    let guarded = Layered::new(flaky)
        .with(no_jitter(5))
        .with(Timeout::new(Duration::from_secs(1)))
        .with(breaker.clone());
    assert_eq!(guarded.handle(4).await, Ok(40));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let m = breaker.metrics();
    assert_eq!(
        (m.failed_calls, m.successful_calls),
        (2, 1),
        "the breaker saw every attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_ends_slow_calls_and_marks_a_managed_handler() {
    let timeout = Timeout::new(Duration::from_millis(200));
    assert_eq!(timeout.run(async { Ok::<_, FlextError>(1) }).await, Ok(1));
    let slow = BasicHandler::from_fn("report", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    });
    let guarded = timeout.wrap(slow);
    assert_eq!(guarded.handle(100).await, Ok(100));
    let started = Instant::now();
    let err = guarded.handle(5_000).await.unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            ErrorCode::Timeout,
            "Handler 'report' timed out after 200 ms"
        )
    );
    assert_eq!(err.data().unwrap()["handler"], "report");
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    assert_eq!(guarded.inner().state(), HandlerState::Timeout);
    let m = guarded.inner().metrics();
    assert_eq!(
        (m.successful_requests, m.failed_requests, m.in_flight),
        (1, 1, 0)
    );
    let config = flext_types::HandlerConfig::for_environment(flext_constants::Environment::Test);
    assert_eq!(
        Timeout::from_config(&config).deadline(),
        Duration::from_secs(5)
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_the_handler_reports_itself_passes_through_and_counts_once() {
    let upstream = BasicHandler::from_fn("upstream", |()| async {
        Err::<(), _>(FlextError::timeout("inventory service did not answer"))
    });
    let guarded = Timeout::new(Duration::from_secs(1)).wrap(upstream);
    let err = guarded.handle(()).await.unwrap_err();
    assert_eq!(err.to_string(), "inventory service did not answer");
    assert_eq!(err.data(), None, "not the deadline's error");
    assert_eq!(guarded.inner().state(), HandlerState::Timeout);
    assert_eq!(guarded.inner().metrics().failed_requests, 1);
}

#[test]
fn outside_a_tokio_runtime_a_timeout_runs_the_call_without_a_deadline() {
    let timeout = Timeout::new(Duration::from_millis(1));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut call = Box::pin(timeout.run(async { Ok::<_, FlextError>(3) }));
    assert_eq!(call.as_mut().poll(&mut cx), std::task::Poll::Ready(Ok(3)));
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_admits_at_most_its_size_and_frees_slots_on_cancel() {
    let bulkhead = Bulkhead::new("reports", 2, Duration::ZERO).unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    let hold = |bulkhead: Bulkhead, gate: Arc<tokio::sync::Notify>| {
        tokio::spawn(async move {
            bulkhead
                .call(async move {
                    gate.notified().await;
                    Ok::<_, FlextError>(())
                })
                .await
        })
    };
    let first = hold(bulkhead.clone(), gate.clone());
    let second = hold(bulkhead.clone(), gate.clone());
    tokio::task::yield_now().await;
    let err = bulkhead
        .call(async { Ok::<_, FlextError>(()) })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            ErrorCode::RateLimited,
            "Bulkhead 'reports' is full: 2 concurrent calls"
        )
    );
    first.abort();
    let _ = first.await;
    assert_eq!(
        bulkhead.metrics().available,
        1,
        "the cancelled call's slot was freed"
    );
    bulkhead
        .call(async { Ok::<_, FlextError>(()) })
        .await
        .unwrap();
    gate.notify_waiters();
    second.await.unwrap().unwrap();
    assert_eq!(bulkhead.metrics().rejected_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_with_a_wait_queues_for_a_slot() {
    let bulkhead = Bulkhead::new("queued", 1, Duration::from_secs(2)).unwrap();
    let busy = {
        let bulkhead = bulkhead.clone();
        tokio::spawn(async move {
            bulkhead
                .call(async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<_, FlextError>(())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    let started = Instant::now();
    bulkhead
        .call(async { Ok::<_, FlextError>(()) })
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "it waited for the busy call"
    );
    busy.await.unwrap().unwrap();
    assert_eq!(
        Bulkhead::new("zero", 0, Duration::ZERO).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limiter_allows_bursts_then_waits_or_rejects() {
    let strict = RateLimiter::new("strict", 3, Duration::from_secs(3), Duration::ZERO).unwrap();
    for _ in 0..3 {
        strict.acquire().await.unwrap();
    }
    let err = strict.acquire().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::RateLimited);
    assert_eq!(
        err.to_string(),
        "Rate limiter 'strict' allows 3 calls per 3000 ms; the next is in 1000 ms"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    strict.acquire().await.expect("one token refilled");

    let patient =
        RateLimiter::new("patient", 2, Duration::from_secs(1), Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    for _ in 0..6 {
        patient
            .call(async { Ok::<_, FlextError>(()) })
            .await
            .unwrap();
    }
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "two at once, then one every 500 ms"
    );
    let err: FlextResult<RateLimiter> =
        RateLimiter::new("bad", 0, Duration::from_secs(1), Duration::ZERO);
    assert_eq!(err.unwrap_err().code(), ErrorCode::InvalidArgument);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_and_a_bulkhead_sit_on_a_command_bus() {
    struct Charge(u32);
    impl flext_protocols::Command for Charge {
        type Output = u32;
    }
    let breaker = CircuitBreaker::new(
        "payments",
        CircuitBreakerConfig::default()
            .with_sliding_window(flext_patterns::SlidingWindow::CountBased(2))
            .with_minimum_number_of_calls(2),
    )
    .unwrap();
    let mut bus = flext_cqrs::CommandBus::new();
    bus.register_fn(|Charge(n): Charge| async move {
        if n == 0 {
            Err(FlextError::timeout("gateway timeout"))
        } else {
            Ok(n)
        }
    })
    .unwrap();
    bus.add_middleware(breaker.clone());
    bus.add_middleware(Bulkhead::new("payments", 4, Duration::ZERO).unwrap());
    assert_eq!(bus.send(Charge(5)).await, Ok(5));
    bus.send(Charge(0)).await.unwrap_err();
    bus.send(Charge(0)).await.unwrap_err();
    let err = bus.send(Charge(5)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::CircuitOpen);
    assert_eq!(
        err.to_string(),
        "Circuit breaker 'payments' is OPEN and does not permit further calls"
    );
    assert_eq!(bus.metrics().failed_commands, 3);
}
