//! CircuitBreaker on a paused clock: trips, half-open trials, permits, transitions.

use std::sync::Arc;
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_patterns::{BreakerState, CircuitBreaker, CircuitBreakerConfig, SlidingWindow};
use flext_types::{FlextError, FlextResult};

fn config(window: u32, minimum: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
        .with_sliding_window(SlidingWindow::CountBased(window))
        .with_minimum_number_of_calls(minimum)
        .with_wait_duration_in_open(Duration::from_secs(10))
        .with_max_wait_duration_in_open(Duration::from_secs(60))
        .with_permitted_calls_in_half_open(2)
}

async fn succeed(breaker: &CircuitBreaker) -> FlextResult<()> {
    breaker.call(async { Ok(()) }).await
}

async fn fail(breaker: &CircuitBreaker) -> FlextResult<()> {
    breaker
        .call(async { Err(FlextError::timeout("downstream did not answer")) })
        .await
}

#[tokio::test(start_paused = true)]
async fn a_failure_rate_at_the_threshold_trips_the_breaker_once_enough_calls_are_in() {
    let breaker = CircuitBreaker::new("payments", config(10, 4)).unwrap();
    for _ in 0..3 {
        fail(&breaker).await.unwrap_err();
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "three calls are below the minimum of four"
    );
    assert_eq!(breaker.metrics().failure_rate, None);
    succeed(&breaker).await.unwrap();
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "3 of 4 failed: 75% >= 50%"
    );

    let err = succeed(&breaker).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::CircuitOpen);
    assert_eq!(
        err.to_string(),
        "Circuit breaker 'payments' is OPEN and does not permit further calls"
    );
    let m = breaker.metrics();
    assert_eq!(
        (m.failed_calls, m.successful_calls, m.not_permitted_calls),
        (3, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn exactly_at_the_threshold_trips_and_below_does_not() {
    let breaker = CircuitBreaker::new("edge", config(4, 4)).unwrap();
    fail(&breaker).await.unwrap_err();
    succeed(&breaker).await.unwrap();
    succeed(&breaker).await.unwrap();
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed, "25% < 50%");
    fail(&breaker).await.unwrap_err();
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "the new failure replaced the oldest call, the first failure"
    );
    assert_eq!(breaker.metrics().failure_rate, Some(25.0));
    fail(&breaker).await.unwrap_err();
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "2 failures of 4: 50% >= 50%"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_breaker() {
    let breaker = CircuitBreaker::new(
        "slow",
        config(4, 4)
            .with_slow_call_duration(Duration::from_secs(1))
            .with_slow_call_rate_threshold(50.0),
    )
    .unwrap();
    let slow = || {
        breaker.call(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, FlextError>(())
        })
    };
    slow().await.unwrap();
    succeed(&breaker).await.unwrap();
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
    slow().await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Open, "2 of 4 slow: 50%");
    assert_eq!(breaker.metrics().slow_calls, 2);
}

async fn opened(name: &str, multiplier: f64) -> CircuitBreaker {
    let breaker =
        CircuitBreaker::new(name, config(2, 2).with_wait_duration_multiplier(multiplier)).unwrap();
    fail(&breaker).await.unwrap_err();
    fail(&breaker).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Open);
    breaker
}

#[tokio::test(start_paused = true)]
async fn after_the_wait_successful_trials_close_the_breaker() {
    let breaker = opened("trial-ok", 1.0).await;
    let mut events = breaker.subscribe();
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(
        succeed(&breaker).await.unwrap_err().code(),
        ErrorCode::CircuitOpen,
        "still waiting"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    succeed(&breaker).await.unwrap();
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "two successful trials"
    );
    let moves: Vec<_> = [events.try_recv().unwrap(), events.try_recv().unwrap()]
        .into_iter()
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        moves,
        [
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Closed)
        ]
    );
    assert_eq!(
        breaker.metrics().buffered_calls,
        0,
        "a closed breaker starts with an empty window"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_with_a_longer_wait() {
    let breaker = opened("trial-fail", 2.0).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    fail(&breaker).await.unwrap_err();
    succeed(&breaker).await.unwrap();
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "one of two trials failed: 50%"
    );
    tokio::time::advance(Duration::from_secs(19)).await;
    assert_eq!(
        succeed(&breaker).await.unwrap_err().code(),
        ErrorCode::CircuitOpen,
        "the wait doubled to 20 s"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_in_half_open_get_exactly_the_permitted_trials() {
    let breaker =
        CircuitBreaker::new("crowd", config(2, 2).with_permitted_calls_in_half_open(3)).unwrap();
    fail(&breaker).await.unwrap_err();
    fail(&breaker).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(10)).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let breaker = breaker.clone();
            let release = release.clone();
            tokio::spawn(async move {
                breaker
                    .call(async move {
                        release.notified().await;
                        Ok::<_, FlextError>(())
                    })
                    .await
            })
        })
        .collect();
    tokio::task::yield_now().await;
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        breaker.metrics().not_permitted_calls,
        7,
        "seven of ten were turned away while three ran"
    );
    release.notify_waiters();
    let mut admitted = 0;
    for caller in callers {
        if caller.await.unwrap().is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "three successful trials"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_gives_its_permit_back() {
    let breaker =
        CircuitBreaker::new("cancel", config(2, 2).with_permitted_calls_in_half_open(1)).unwrap();
    fail(&breaker).await.unwrap_err();
    fail(&breaker).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(10)).await;
    let hung = breaker.call(std::future::pending::<FlextResult<()>>());
    let timed_out = tokio::time::timeout(Duration::from_secs(1), hung).await;
    assert!(timed_out.is_err(), "the trial call was dropped mid-call");
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    succeed(&breaker)
        .await
        .expect("the dropped call's permit was released for this one");
    assert_eq!(breaker.state(), BreakerState::Closed);

    let permit = breaker.acquire().unwrap();
    drop(permit);
    assert_eq!(
        breaker.metrics().successful_calls,
        1,
        "an unrecorded permit counts as nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn ignored_errors_count_as_nothing_and_unrecorded_errors_as_successes() {
    let breaker = CircuitBreaker::new("filters", config(4, 4))
        .unwrap()
        .record_errors_if(|e| e.is(ErrorCode::Timeout))
        .ignore_errors_if(|e| e.is(ErrorCode::ValidationError));
    for _ in 0..4 {
        breaker
            .call(async { Err::<(), _>(FlextError::validation("bad input")) })
            .await
            .unwrap_err();
    }
    for _ in 0..4 {
        breaker
            .call(async { Err::<(), _>(FlextError::not_found("no such user")) })
            .await
            .unwrap_err();
    }
    let m = breaker.metrics();
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(
        (
            m.ignored_calls,
            m.successful_calls,
            m.failed_calls,
            m.buffered_calls
        ),
        (4, 4, 0, 4)
    );
}

#[tokio::test(start_paused = true)]
async fn a_time_based_window_forgets_old_calls() {
    let breaker = CircuitBreaker::new(
        "timed",
        config(1, 1)
            .with_sliding_window(SlidingWindow::TimeBased(Duration::from_secs(10)))
            .with_minimum_number_of_calls(4),
    )
    .unwrap();
    fail(&breaker).await.unwrap_err();
    fail(&breaker).await.unwrap_err();
    fail(&breaker).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(11)).await;
    succeed(&breaker).await.unwrap();
    assert_eq!(
        breaker.metrics().buffered_calls,
        1,
        "the failures left the window"
    );
    fail(&breaker).await.unwrap_err();
    succeed(&breaker).await.unwrap();
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed, "1 of 4 failed");
    fail(&breaker).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Closed, "2 of 5 is 40%");
    fail(&breaker).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Open, "3 of 6 is 50%");
}

#[tokio::test(start_paused = true)]
async fn half_open_gives_up_after_its_max_wait() {
    let breaker = CircuitBreaker::new(
        "stuck",
        config(2, 2)
            .with_max_wait_in_half_open(Duration::from_secs(5))
            .with_permitted_calls_in_half_open(1),
    )
    .unwrap();
    fail(&breaker).await.unwrap_err();
    fail(&breaker).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(10)).await;
    let permit = breaker.acquire().unwrap();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        succeed(&breaker).await.unwrap_err().code(),
        ErrorCode::CircuitOpen
    );
    assert_eq!(breaker.state(), BreakerState::Open);
    permit.record(&Ok::<(), FlextError>(()));
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "a late trial result does not count in the new state"
    );
}

#[tokio::test(start_paused = true)]
async fn manual_states_and_illegal_transitions() {
    let breaker = CircuitBreaker::new("manual", config(2, 2)).unwrap();
    let err = breaker.transition_to_half_open().unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "Circuit breaker 'manual' cannot move from CLOSED to HALF_OPEN"
    );

    breaker.transition_to_forced_open().unwrap();
    let err = succeed(&breaker).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Circuit breaker 'manual' is FORCED_OPEN and does not permit further calls"
    );
    tokio::time::advance(Duration::from_secs(600)).await;
    assert_eq!(
        breaker.state(),
        BreakerState::ForcedOpen,
        "only a hand moves it out"
    );

    breaker.transition_to_disabled().unwrap();
    for _ in 0..5 {
        fail(&breaker).await.unwrap_err();
    }
    assert_eq!(
        (breaker.state(), breaker.metrics().buffered_calls),
        (BreakerState::Disabled, 0)
    );

    breaker.transition_to_metrics_only().unwrap();
    for _ in 0..5 {
        fail(&breaker).await.unwrap_err();
    }
    let m = breaker.metrics();
    assert_eq!(
        (m.state, m.buffered_calls, m.failure_rate),
        (BreakerState::MetricsOnly, 2, Some(100.0)),
        "measured, never tripped"
    );

    breaker.transition_to_open().unwrap();
    breaker.transition_to_half_open().unwrap();
    breaker.reset();
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.metrics().failed_calls, 0);
}

#[test]
fn bad_settings_are_named() {
    let cases = [
        (
            CircuitBreakerConfig::default().with_failure_rate_threshold(0.0),
            "Invalid failure_rate_threshold: 0",
        ),
        (
            CircuitBreakerConfig::default().with_slow_call_rate_threshold(101.0),
            "Invalid slow_call_rate_threshold: 101",
        ),
        (
            CircuitBreakerConfig::default().with_sliding_window(SlidingWindow::CountBased(0)),
            "Invalid sliding_window",
        ),
        (
            CircuitBreakerConfig::default().with_minimum_number_of_calls(0),
            "Invalid minimum_number_of_calls: 0",
        ),
        (
            CircuitBreakerConfig::default().with_wait_duration_multiplier(0.5),
            "Invalid wait_duration_multiplier: 0.5",
        ),
    ];
    for (config, message) in cases {
        let err = CircuitBreaker::new("bad", config).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.message().starts_with(message), "{err}");
    }
}
