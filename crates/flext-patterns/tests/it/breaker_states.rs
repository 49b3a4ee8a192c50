//! CircuitBreaker's state machine, scenario by scenario after resilience4j's own state-machine
//! tests, on a paused clock: permits in each state, the rates that trip it and what the
//! metrics show in each state, panics behind it, and settings out of bounds.

use std::time::Duration;

use flext_constants::ErrorCode;
use flext_patterns::{BreakerState, CircuitBreaker, CircuitBreakerConfig, SlidingWindow};
use flext_types::{FlextError, FlextResult};

/// resilience4j's test breaker: 50 % thresholds, 4 trial calls, slow at 4 s, a window of 5
/// calls, 5 s open.
fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
        .with_failure_rate_threshold(50.0)
        .with_slow_call_rate_threshold(50.0)
        .with_slow_call_duration(Duration::from_secs(4))
        .with_permitted_calls_in_half_open(4)
        .with_sliding_window(SlidingWindow::CountBased(5))
        .with_minimum_number_of_calls(5)
        .with_wait_duration_in_open(Duration::from_secs(5))
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::new("testName", config())
        .unwrap()
        .ignore_errors_if(|e| e.is(ErrorCode::ValidationError))
}

fn half_open() -> CircuitBreaker {
    let breaker = breaker();
    breaker.transition_to_open().unwrap();
    breaker.transition_to_half_open().unwrap();
    breaker
}

async fn ok(breaker: &CircuitBreaker) -> FlextResult<()> {
    breaker.call(async { Ok(()) }).await
}

async fn fail(breaker: &CircuitBreaker) -> FlextResult<()> {
    breaker
        .call(async { Err(FlextError::timeout("no answer")) })
        .await
}

async fn slow(breaker: &CircuitBreaker, fails: bool) -> FlextResult<()> {
    breaker
        .call(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if fails {
                Err(FlextError::timeout("no answer"))
            } else {
                Ok(())
            }
        })
        .await
}

async fn ignored(breaker: &CircuitBreaker) -> FlextResult<()> {
    breaker
        .call(async { Err(FlextError::validation("bad input")) })
        .await
}

/// `(failure_rate, successful, buffered, failed, not_permitted)` as resilience4j's tests read
/// them.
fn metrics(breaker: &CircuitBreaker) -> (Option<f64>, u64, u32, u64, u64) {
    let m = breaker.metrics();
    (
        m.failure_rate,
        m.successful_calls,
        m.buffered_calls,
        m.failed_calls,
        m.not_permitted_calls,
    )
}

fn permitted(breaker: &CircuitBreaker) -> bool {
    // A permit taken and dropped unrecorded is given back: keep it for the test's length.
    breaker.acquire().map(std::mem::forget).is_ok()
}

#[tokio::test(start_paused = true)]
async fn open_and_forced_open_reject_and_count_the_rejection() {
    for force in [false, true] {
        let breaker = breaker();
        if force {
            breaker.transition_to_forced_open().unwrap();
        } else {
            breaker.transition_to_open().unwrap();
        }
        let err = breaker.acquire().unwrap_err();
        assert_eq!(err.code(), ErrorCode::CircuitOpen);
        assert_eq!(breaker.metrics().not_permitted_calls, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_permits_its_trial_calls_and_a_given_back_permit_once_more() {
    let breaker = half_open();
    let mut permits: Vec<_> = (0..4).map(|_| breaker.acquire().unwrap()).collect();
    assert!(breaker.acquire().is_err());
    assert!(breaker.acquire().is_err());
    drop(permits.pop());
    permits.push(
        breaker
            .acquire()
            .expect("the dropped permit was given back"),
    );
    assert!(breaker.acquire().is_err());
}

#[tokio::test(start_paused = true)]
async fn each_half_open_phase_permits_its_trial_calls_afresh() {
    let breaker = half_open();
    for _ in 0..2 {
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!((0..6).filter(|_| permitted(&breaker)).count(), 4);
        breaker.transition_to_open().unwrap();
        breaker.transition_to_half_open().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_the_failure_rate_threshold_and_open_keeps_the_rates_that_tripped_it() {
    let breaker = breaker();
    for n in 1..=3 {
        fail(&breaker).await.unwrap_err();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(metrics(&breaker), (None, 0, n, u64::from(n), 0));
    }
    ok(&breaker).await.unwrap();
    assert_eq!(metrics(&breaker), (None, 1, 4, 3, 0));
    ok(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Open, "3 of 5 failed: 60 %");
    assert_eq!(metrics(&breaker), (Some(60.0), 2, 5, 3, 0));
    ok(&breaker).await.unwrap_err();
    assert_eq!(
        metrics(&breaker),
        (Some(60.0), 2, 5, 3, 1),
        "OPEN keeps the rates that tripped it"
    );
}

#[tokio::test(start_paused = true)]
async fn opens_after_the_slow_call_rate_threshold() {
    let breaker = breaker();
    slow(&breaker, true).await.unwrap_err();
    slow(&breaker, false).await.unwrap();
    fail(&breaker).await.unwrap_err();
    ok(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
    slow(&breaker, false).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Open, "3 of 5 slow: 60 %");
    let m = breaker.metrics();
    assert_eq!(
        (m.buffered_calls, m.slow_calls, m.slow_call_rate),
        (5, 3, Some(60.0))
    );
}

#[tokio::test(start_paused = true)]
async fn goes_half_open_once_the_wait_has_passed() {
    let breaker = breaker();
    breaker.transition_to_open().unwrap();
    assert!(!permitted(&breaker));
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(!permitted(&breaker));
    assert_eq!(metrics(&breaker), (None, 0, 0, 0, 2));
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(permitted(&breaker));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(
        breaker.metrics().buffered_calls,
        0,
        "half-open counts its own trials"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_phase_waits_longer_each_time() {
    let breaker = CircuitBreaker::new(
        "interval",
        config()
            .with_wait_duration_multiplier(1.5)
            .with_max_wait_duration_in_open(Duration::from_secs(60)),
    )
    .unwrap();
    breaker.transition_to_open().unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    for _ in 0..4 {
        fail(&breaker).await.unwrap_err();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_millis(7_499)).await;
    assert!(!permitted(&breaker), "the wait grew to 7.5 s");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(permitted(&breaker));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn half_open_opens_again_on_failed_trials_and_open_shows_the_trials_rates() {
    let breaker = half_open();
    assert_eq!(metrics(&breaker), (None, 0, 0, 0, 0));
    fail(&breaker).await.unwrap_err();
    fail(&breaker).await.unwrap_err();
    ok(&breaker).await.unwrap();
    assert_eq!(
        metrics(&breaker),
        (None, 1, 3, 2, 0),
        "HALF_OPEN counts its trial calls; no rate before all four are in"
    );
    fail(&breaker).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(metrics(&breaker), (Some(75.0), 1, 4, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn half_open_opens_again_on_slow_trials() {
    let breaker = half_open();
    for _ in 0..3 {
        slow(&breaker, false).await.unwrap();
    }
    ok(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
    let m = breaker.metrics();
    assert_eq!(
        (m.slow_calls, m.slow_call_rate, m.failure_rate),
        (3, Some(75.0), Some(0.0))
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_on_good_trials_and_closed_starts_afresh() {
    let breaker = half_open();
    fail(&breaker).await.unwrap_err();
    for _ in 0..3 {
        ok(&breaker).await.unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    let m = breaker.metrics();
    assert_eq!((m.buffered_calls, m.failure_rate), (0, None));
    ok(&breaker).await.unwrap();
    assert_eq!(breaker.metrics().buffered_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn ignored_errors_in_half_open_give_their_permit_back() {
    let breaker = half_open();
    for _ in 0..4 {
        ignored(&breaker).await.unwrap_err();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }
    assert_eq!(metrics(&breaker), (None, 0, 0, 0, 0));
    for _ in 0..3 {
        ok(&breaker).await.unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    ok(&breaker).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn reset_empties_the_window_and_the_counts() {
    let breaker = breaker();
    ok(&breaker).await.unwrap();
    fail(&breaker).await.unwrap_err();
    assert_eq!(metrics(&breaker), (None, 1, 2, 1, 0));
    breaker.transition_to_open().unwrap();
    breaker.reset();
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(metrics(&breaker), (None, 0, 0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn disabled_lets_every_call_through_and_measures_nothing() {
    let breaker = breaker();
    breaker.transition_to_disabled().unwrap();
    ok(&breaker).await.unwrap();
    for _ in 0..5 {
        fail(&breaker).await.unwrap_err();
    }
    slow(&breaker, false).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Disabled);
    assert_eq!(metrics(&breaker), (None, 0, 0, 0, 0));
    assert_eq!(breaker.metrics().slow_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn forced_open_never_goes_half_open_by_itself() {
    let breaker = breaker();
    breaker.transition_to_forced_open().unwrap();
    assert!(!permitted(&breaker));
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(!permitted(&breaker));
    assert_eq!(breaker.state(), BreakerState::ForcedOpen);
    assert_eq!(metrics(&breaker), (None, 0, 0, 0, 2));
}

#[tokio::test(start_paused = true)]
async fn metrics_only_measures_and_never_trips() {
    let breaker = breaker();
    breaker.transition_to_metrics_only().unwrap();
    ok(&breaker).await.unwrap();
    for _ in 0..5 {
        fail(&breaker).await.unwrap_err();
    }
    assert_eq!(breaker.state(), BreakerState::MetricsOnly);
    assert_eq!(metrics(&breaker), (Some(100.0), 1, 5, 5, 0));
}

#[tokio::test(start_paused = true)]
async fn illegal_moves_are_named_and_change_nothing() {
    let breaker = breaker();
    for (result, to) in [
        (breaker.transition_to_half_open(), "HALF_OPEN"),
        (breaker.transition_to_closed(), "CLOSED"),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(
            err.to_string(),
            format!("Circuit breaker 'testName' cannot move from CLOSED to {to}")
        );
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn state_reads_open_once_the_half_open_maximum_wait_has_passed() {
    let breaker = CircuitBreaker::new(
        "patience",
        config().with_max_wait_in_half_open(Duration::from_secs(3)),
    )
    .unwrap();
    breaker.transition_to_open().unwrap();
    breaker.transition_to_half_open().unwrap();
    let mut events = breaker.subscribe();
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "without waiting for the next call"
    );
    assert_eq!(breaker.metrics().state, BreakerState::Open);
    let moved = events.try_recv().unwrap();
    assert_eq!(
        (moved.from, moved.to),
        (BreakerState::HalfOpen, BreakerState::Open)
    );
}

#[tokio::test(start_paused = true)]
async fn a_count_window_smaller_than_the_minimum_trips_once_it_is_full() {
    let breaker = CircuitBreaker::new(
        "small",
        CircuitBreakerConfig::default().with_sliding_window(SlidingWindow::CountBased(10)),
    )
    .unwrap();
    assert_eq!(breaker.config().minimum_number_of_calls, 100);
    for _ in 0..9 {
        fail(&breaker).await.unwrap_err();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.metrics().failure_rate, None);
    fail(&breaker).await.unwrap_err();
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "the minimum is min(100, 10)"
    );
    assert_eq!(breaker.metrics().failure_rate, Some(100.0));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_call_is_a_failure_and_an_operation_error() {
    let breaker = CircuitBreaker::new(
        "panics",
        config()
            .with_sliding_window(SlidingWindow::CountBased(2))
            .with_minimum_number_of_calls(2),
    )
    .unwrap();
    for _ in 0..2 {
        let err = breaker
            .call::<()>(async { panic!("handler bug") })
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::OperationError);
        assert_eq!(err.to_string(), "Handler execution failed: handler bug");
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.metrics().failed_calls, 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_trial_call_counts_as_a_failed_trial() {
    let breaker = half_open();
    for _ in 0..4 {
        let _ = breaker.call::<()>(async { panic!("handler bug") }).await;
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.metrics().failure_rate, Some(100.0));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_error_filter_counts_a_failure_and_keeps_no_permit() {
    for which in ["record", "ignore"] {
        let breaker = CircuitBreaker::new(
            which,
            config()
                .with_permitted_calls_in_half_open(1)
                .with_sliding_window(SlidingWindow::CountBased(1))
                .with_minimum_number_of_calls(1),
        )
        .unwrap();
        let breaker = if which == "record" {
            breaker.record_errors_if(|_| panic!("filter bug"))
        } else {
            breaker.ignore_errors_if(|_| panic!("filter bug"))
        };
        breaker.transition_to_open().unwrap();
        breaker.transition_to_half_open().unwrap();
        let err = fail(&breaker).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "the call's own error");
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "{which}: the trial counted as a failure"
        );
        assert_eq!(breaker.metrics().failed_calls, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_huge_wait_stays_within_its_maximum_without_overflow() {
    let max = Duration::from_secs(86_400);
    let breaker = CircuitBreaker::new(
        "long",
        config()
            .with_wait_duration_in_open(max)
            .with_max_wait_duration_in_open(max)
            .with_wait_duration_multiplier(100.0)
            .with_permitted_calls_in_half_open(1),
    )
    .unwrap();
    breaker.transition_to_open().unwrap();
    for _ in 0..3 {
        breaker.transition_to_half_open().unwrap();
        fail(&breaker).await.unwrap_err();
        assert_eq!(breaker.state(), BreakerState::Open);
    }
    tokio::time::advance(max - Duration::from_secs(1)).await;
    assert!(!permitted(&breaker), "still waiting its maximum");
}

#[test]
fn settings_out_of_bounds_are_invalid_arguments_naming_the_field() {
    let base = CircuitBreakerConfig::default;
    let cases = [
        (
            base().with_wait_duration_multiplier(1e300),
            "wait_duration_multiplier",
        ),
        (
            base()
                .with_wait_duration_in_open(Duration::MAX)
                .with_max_wait_duration_in_open(Duration::MAX),
            "wait_duration_in_open",
        ),
        (
            base().with_max_wait_duration_in_open(Duration::MAX),
            "max_wait_duration_in_open",
        ),
        (
            base().with_sliding_window(SlidingWindow::CountBased(u32::MAX)),
            "sliding_window",
        ),
        (
            base().with_sliding_window(SlidingWindow::TimeBased(Duration::MAX)),
            "sliding_window",
        ),
        (
            base().with_sliding_window(SlidingWindow::CountBased(1_000_001)),
            "sliding_window",
        ),
        (
            base().with_wait_duration_multiplier(100.5),
            "wait_duration_multiplier",
        ),
        (
            base().with_sliding_window(SlidingWindow::TimeBased(Duration::from_millis(999))),
            "sliding_window",
        ),
    ];
    for (config, field) in cases {
        // `validate` only: building a breaker of a huge window would allocate it.
        let err = config.validate().unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{field}");
        assert!(
            err.message().starts_with(&format!("Invalid {field}: ")),
            "{field}: {err}"
        );
    }
}

#[test]
fn the_largest_settings_are_valid() {
    let largest = CircuitBreakerConfig::default()
        .with_sliding_window(SlidingWindow::CountBased(
            CircuitBreakerConfig::MAX_SLIDING_WINDOW_CALLS,
        ))
        .with_wait_duration_multiplier(CircuitBreakerConfig::MAX_WAIT_DURATION_MULTIPLIER)
        .with_wait_duration_in_open(CircuitBreakerConfig::MAX_WAIT_DURATION_IN_OPEN)
        .with_max_wait_duration_in_open(CircuitBreakerConfig::MAX_WAIT_DURATION_IN_OPEN);
    assert_eq!(largest.validate(), Ok(()));
    assert_eq!(CircuitBreakerConfig::MAX_SLIDING_WINDOW_CALLS, 1_000_000);
    assert_eq!(CircuitBreakerConfig::MAX_WAIT_DURATION_MULTIPLIER, 100.0);
    assert_eq!(
        CircuitBreakerConfig::MAX_WAIT_DURATION_IN_OPEN,
        Duration::from_secs(86_400)
    );
    for span in [
        Duration::from_secs(1),
        CircuitBreakerConfig::MAX_SLIDING_WINDOW_SPAN,
    ] {
        let timed =
            CircuitBreakerConfig::default().with_sliding_window(SlidingWindow::TimeBased(span));
        assert_eq!(timed.validate(), Ok(()), "{span:?}");
    }
    assert_eq!(
        CircuitBreakerConfig::MAX_SLIDING_WINDOW_SPAN,
        Duration::from_secs(3_600)
    );
}

#[tokio::test(start_paused = true)]
async fn a_result_from_an_earlier_phase_of_the_same_state_does_not_count() {
    let breaker = breaker();
    breaker.transition_to_open().unwrap();
    breaker.transition_to_closed().unwrap();
    let permit = breaker.acquire().unwrap();
    assert_eq!(
        format!("{permit:?}"),
        r#"Permit { breaker: "testName", state: Closed }"#
    );
    breaker.transition_to_open().unwrap();
    breaker.transition_to_closed().unwrap();
    permit.record(&Err::<(), _>(FlextError::timeout("no answer")));
    let m = breaker.metrics();
    assert_eq!(
        (m.buffered_calls, m.failed_calls),
        (0, 1),
        "counted, but not in the window of a later CLOSED"
    );
}
