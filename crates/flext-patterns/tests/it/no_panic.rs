//! Nothing panics across the API: panicking user predicates in chains, and extreme
//! settings (`Duration::MAX`, `u32::MAX`) for the rate limiter, the bulkhead and retry.

use std::time::Duration;

use flext_constants::ErrorCode;
use flext_patterns::{Bulkhead, HandlerChain, RateLimiter, Retry, RetryConfig};
use flext_protocols::{Handler, async_trait};
use flext_types::{FlextError, FlextResult};
use proptest::prelude::*;
use serde_json::json;

/// Cannot judge negative numbers: its `can_handle` panics on them.
struct Picky;

#[async_trait]
impl Handler for Picky {
    type Request = i64;
    type Response = i64;

    fn handler_name(&self) -> &str {
        "picky"
    }

    fn can_handle(&self, request: &i64) -> bool {
        assert!(*request >= 0, "cannot judge {request}");
        *request < 10
    }

    async fn handle(&self, request: i64) -> FlextResult<i64> {
        Ok(request)
    }
}

/// Accepts everything, adding 1000.
struct Anything;

#[async_trait]
impl Handler for Anything {
    type Request = i64;
    type Response = i64;

    fn handler_name(&self) -> &str {
        "anything"
    }

    async fn handle(&self, request: i64) -> FlextResult<i64> {
        Ok(request + 1000)
    }
}

fn picky_router(name: &str) -> HandlerChain<i64> {
    let mut chain = HandlerChain::first_match(name);
    chain.add_handler(Picky).unwrap();
    chain.add_handler(Anything).unwrap();
    chain
}

#[tokio::test]
async fn a_panicking_can_handle_fails_a_first_match_chain_with_an_operation_error() {
    let chain = picky_router("router");
    let err = chain.handle(-1).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler 'picky' failed: Handler execution failed: cannot judge -1"
    );
    assert_eq!(
        err.data(),
        Some(&json!({"chain": "router", "handler": "picky", "position": 1}))
    );
    // The chain lives on, and the next handler is not tried for the failed request.
    assert_eq!(chain.handle(3).await, Ok(3));
    assert_eq!(chain.handle(50).await, Ok(1050));
    let m = chain.metrics();
    assert_eq!(
        (m.total_requests, m.successful_requests, m.failed_requests),
        (3, 2, 1)
    );
    assert_eq!(
        (m.handlers[0].executions, m.handlers[0].failures),
        (2, 1),
        "the panic is the picky handler's failure"
    );
    assert_eq!((m.handlers[1].executions, m.handlers[1].failures), (1, 0));
}

#[tokio::test]
async fn a_nested_chains_panicking_can_handle_fails_the_outer_chain_with_an_operation_error() {
    let mut outer = HandlerChain::first_match("outer");
    outer.add_handler(picky_router("inner")).unwrap();
    let err = outer.handle(-2).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler 'inner' failed: Handler 'picky' failed: Handler execution failed: cannot judge -2"
    );
    assert_eq!(outer.handle(4).await, Ok(4));
    let m = outer.metrics();
    assert_eq!((m.successful_requests, m.failed_requests), (1, 1));
}

#[tokio::test]
async fn a_chains_own_can_handle_does_not_panic_and_lets_handle_report_the_error() {
    let chain = picky_router("router");
    // Read as "accepts", so that `handle` runs and reports the panic as an error.
    assert!(Handler::can_handle(&chain, &-1));
    assert!(Handler::can_handle(&chain, &5));
    let mut sequential = HandlerChain::new("sequential");
    sequential.add_handler(Picky).unwrap();
    assert!(Handler::can_handle(&sequential, &-1));
    assert!(!Handler::can_handle(&sequential, &50));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limiter_of_one_call_per_duration_max_rejects_instead_of_panicking() {
    let limiter = RateLimiter::new("glacial", 1, Duration::MAX, Duration::ZERO).unwrap();
    limiter.acquire().await.unwrap();
    let err = limiter.acquire().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::RateLimited);
    assert!(
        err.to_string()
            .starts_with("Rate limiter 'glacial' allows 1 calls per "),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limiter_waiting_up_to_duration_max_waits_for_the_next_token() {
    let limiter = RateLimiter::new("patient", 1, Duration::from_secs(3600), Duration::MAX).unwrap();
    limiter.acquire().await.unwrap();
    let started = tokio::time::Instant::now();
    limiter.acquire().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(3600));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limiter_of_u32_max_calls_per_nanosecond_lets_calls_through() {
    let limiter =
        RateLimiter::new("torrent", u32::MAX, Duration::from_nanos(1), Duration::MAX).unwrap();
    for _ in 0..1000 {
        limiter.acquire().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_of_u32_max_slots_waiting_duration_max_runs_calls() {
    let bulkhead = Bulkhead::new("wide", u32::MAX, Duration::MAX).unwrap();
    assert_eq!(bulkhead.call(async { Ok::<_, FlextError>(1) }).await, Ok(1));
    assert_eq!(bulkhead.metrics().available, u32::MAX);
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_waiting_duration_max_gets_the_slot_when_it_frees() {
    let bulkhead = Bulkhead::new("narrow", 1, Duration::MAX).unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let bulkhead = bulkhead.clone();
        tokio::spawn(async move {
            bulkhead
                .call(async {
                    let _ = released.await;
                    Ok::<_, FlextError>(())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    assert_eq!(bulkhead.metrics().available, 0);
    let waiter = {
        let bulkhead = bulkhead.clone();
        tokio::spawn(async move { bulkhead.call(async { Ok::<_, FlextError>(2) }).await })
    };
    tokio::task::yield_now().await;
    release.send(()).unwrap();
    assert_eq!(holder.await.unwrap(), Ok(()));
    assert_eq!(waiter.await.unwrap(), Ok(2));
}

#[tokio::test(start_paused = true)]
async fn retry_with_duration_max_backoffs_waits_at_most_the_cap_and_does_not_panic() {
    let retry = Retry::new(
        RetryConfig::default()
            .with_max_attempts(2)
            .with_initial_backoff(Duration::MAX)
            .with_max_backoff(Duration::MAX)
            .with_multiplier(f64::MAX)
            .with_jitter(0.0),
    )
    .unwrap();
    assert_eq!(retry.backoff(1), Duration::MAX);
    assert_eq!(retry.backoff(u32::MAX), Duration::MAX);
    let mut tries = 0;
    let err = retry
        .run(|_| {
            tries += 1;
            async { Err::<(), _>(FlextError::timeout("slow")) }
        })
        .await
        .unwrap_err();
    assert_eq!((tries, err.code()), (2, ErrorCode::Timeout));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any accepted setting gives a token or a `RATE_LIMITED` error, never a panic.
    #[test]
    fn a_rate_limiter_never_panics_whatever_its_settings(
        limit in prop_oneof![Just(1_u32), Just(u32::MAX), any::<u32>()],
        period_nanos in prop_oneof![Just(1_u64), Just(u64::MAX), any::<u64>()],
        whole_period in any::<bool>(),
        max_wait in prop_oneof![Just(Duration::ZERO), Just(Duration::MAX), any::<u64>().prop_map(Duration::from_nanos)],
        calls in 1_usize..5,
    ) {
        // `Duration::MAX` itself, or up to u64::MAX nanoseconds.
        let period = if whole_period { Duration::MAX } else { Duration::from_nanos(period_nanos) };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let outcomes = runtime.block_on(async {
            match RateLimiter::new("any", limit, period, max_wait) {
                Err(error) => vec![Err(error)],
                Ok(limiter) => {
                    let mut outcomes = Vec::new();
                    for _ in 0..calls {
                        outcomes.push(limiter.acquire().await);
                    }
                    outcomes
                }
            }
        });
        for outcome in outcomes {
            if let Err(error) = outcome {
                prop_assert!(
                    matches!(error.code(), ErrorCode::RateLimited | ErrorCode::InvalidArgument),
                    "{error}"
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_timeout_of_duration_max_lets_a_slow_call_finish() {
    let timeout = flext_patterns::Timeout::new(Duration::MAX);
    let slow = async {
        tokio::time::sleep(Duration::from_secs(365 * 86_400)).await;
        Ok::<_, FlextError>(7)
    };
    assert_eq!(timeout.run(slow).await, Ok(7));
    let mut config = flext_types::HandlerConfig::default();
    config.timeout_ms = u64::MAX;
    let from_config = flext_patterns::Timeout::from_config(&config);
    assert_eq!(
        from_config.run(async { Ok::<_, FlextError>(8) }).await,
        Ok(8)
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_retry_predicate_is_an_operation_error_and_stops_retrying() {
    let retry = Retry::new(RetryConfig::default().with_max_attempts(5))
        .unwrap()
        .retry_if(|error| panic!("cannot judge '{}'", error.message()));
    let mut tries = 0;
    let err = retry
        .run(|_| {
            tries += 1;
            async { Err::<(), _>(FlextError::timeout("slow")) }
        })
        .await
        .unwrap_err();
    assert_eq!(tries, 1);
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler execution failed: cannot judge 'slow'"
    );
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(
        source.as_deref(),
        Some("slow"),
        "the call's error is its source"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limiter_names_the_wait_for_the_rest_of_a_partly_refilled_token() {
    let limiter = RateLimiter::new("api", 1, Duration::from_secs(1), Duration::ZERO).unwrap();
    limiter.acquire().await.unwrap();
    tokio::time::advance(Duration::from_millis(400)).await;
    let err = limiter.acquire().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Rate limiter 'api' allows 1 calls per 1000 ms; the next is in 600 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limiter_waits_for_a_token_exactly_max_wait_away() {
    let limiter =
        RateLimiter::new("api", 1, Duration::from_secs(1), Duration::from_secs(1)).unwrap();
    limiter.acquire().await.unwrap();
    let started = tokio::time::Instant::now();
    limiter.acquire().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}
