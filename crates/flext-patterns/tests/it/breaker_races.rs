//! CircuitBreaker under concurrent load: callers racing state changes, results racing the
//! window's slots and resets. Each test runs many rounds on a multi-thread runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use flext_patterns::{BreakerState, CircuitBreaker, CircuitBreakerConfig, SlidingWindow};
use flext_types::{FlextError, FlextResult};

fn config(window: u32, minimum: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
        .with_sliding_window(SlidingWindow::CountBased(window))
        .with_minimum_number_of_calls(minimum)
        .with_permitted_calls_in_half_open(1)
}

/// Spawns `n` callers that call through `breaker` until `stop`; caller `i` fails when
/// `fails(i)`.
fn callers(
    breaker: &CircuitBreaker,
    stop: &Arc<AtomicBool>,
    n: usize,
    fails: impl Fn(usize) -> bool,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..n)
        .map(|i| {
            let (breaker, stop, fail) = (breaker.clone(), stop.clone(), fails(i));
            tokio::spawn(async move {
                let mut calls = 0u64;
                while !stop.load(Relaxed) {
                    let _ = breaker
                        .call(async move {
                            if fail {
                                Err(FlextError::timeout("no answer"))
                            } else {
                                FlextResult::Ok(())
                            }
                        })
                        .await;
                    calls += 1;
                    if calls.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
                calls
            })
        })
        .collect()
}

async fn stop_all(stop: &AtomicBool, callers: Vec<tokio::task::JoinHandle<u64>>) {
    stop.store(true, Relaxed);
    for caller in callers {
        caller.await.expect("a caller panicked");
    }
}

/// Before the fix, a caller that read the generation, then (after a move into `HALF_OPEN`)
/// the state, took the only trial permit under the old generation; its result was dropped
/// and the breaker rejected every call from then on. The old code stranded within the
/// 20 000 rounds in each of 5 runs (after 1 000 to 9 000 rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_half_open_breaker_is_never_stranded_by_a_caller_preempted_mid_acquire() {
    const ROUNDS: u32 = 20_000;
    let breaker = CircuitBreaker::new("stranded", config(1, 1)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = callers(&breaker, &stop, 3, |_| false);
    let mut stranded = None;
    'rounds: for round in 0..ROUNDS {
        breaker.transition_to_forced_open().unwrap();
        breaker.transition_to_half_open().unwrap();
        // Callers keep calling: one trial succeeds and closes the breaker at once, unless the
        // only trial permit went to a result that is never counted.
        let watchdog = Instant::now();
        while breaker.state() == BreakerState::HalfOpen {
            if watchdog.elapsed() > Duration::from_secs(2) {
                stranded = Some(round);
                break 'rounds;
            }
            std::hint::spin_loop();
        }
    }
    stop_all(&stop, running).await;
    assert_eq!(
        stranded, None,
        "the breaker stayed HALF_OPEN with its trial permit gone"
    );
}

/// Reads the failure rate until `stop`; returns the worst reading outside 0..=100 %, if any.
fn sampler(breaker: &CircuitBreaker, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<f64> {
    let (breaker, stop) = (breaker.clone(), stop.clone());
    tokio::spawn(async move {
        let mut worst = 0.0f64;
        while !stop.load(Relaxed) {
            worst = worst.max(out_of_range(&breaker));
            tokio::task::yield_now().await;
        }
        worst
    })
}

/// The failure rate if it is outside 0..=100 %, else 0.
fn out_of_range(breaker: &CircuitBreaker) -> f64 {
    let rate = breaker.metrics().failure_rate.unwrap_or(0.0);
    if (0.0..=100.0).contains(&rate) {
        0.0
    } else {
        rate
    }
}

/// A window of one slot, failures and successes replacing each other from four callers:
/// before the fix the failure count wrapped below zero to `u32::MAX` between a slot's swap and
/// the count's adjustment, and the failure rate read about 4e11 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn the_failure_rate_stays_within_0_and_100_while_results_race_for_a_slot() {
    const RUN: Duration = Duration::from_secs(2);
    let breaker = CircuitBreaker::new("slot", config(1, 1)).unwrap();
    breaker.transition_to_metrics_only().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = callers(&breaker, &stop, 4, |i| i % 2 == 0);
    let samplers: Vec<_> = (0..2).map(|_| sampler(&breaker, &stop)).collect();
    let started = Instant::now();
    let mut worst = 0.0f64;
    while started.elapsed() < RUN {
        worst = worst.max(out_of_range(&breaker));
    }
    stop_all(&stop, running).await;
    for sampler in samplers {
        worst = worst.max(sampler.await.unwrap());
    }
    assert_eq!(worst, 0.0, "a failure rate out of range");
    breaker.call(async { FlextResult::Ok(()) }).await.unwrap();
    assert_eq!(
        breaker.metrics().failure_rate,
        Some(0.0),
        "a window of one success"
    );
}

/// Resets and manual moves (each empties the window) while results land: before the fix the
/// window was emptied before the new generation began, a result in flight then took its
/// failure off the emptied count, and the count stayed wrapped until the next reset (a
/// window of successes read a failure rate of about 4e11 %, and in `CLOSED` a success
/// tripped the breaker).
#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn resets_and_manual_moves_under_load_leave_an_exact_window() {
    const RUN: Duration = Duration::from_secs(2);
    let breaker =
        CircuitBreaker::new("resets", config(1, 1).with_failure_rate_threshold(100.0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = callers(&breaker, &stop, 4, |i| i % 2 == 0);
    let samplers: Vec<_> = (0..2).map(|_| sampler(&breaker, &stop)).collect();
    let started = Instant::now();
    let mut worst = 0.0f64;
    let mut rounds = 0u64;
    while started.elapsed() < RUN {
        match rounds % 3 {
            0 => breaker.reset(),
            1 => {
                let _ = breaker.transition_to_closed();
            }
            _ => {
                let _ = breaker.transition_to_disabled();
            }
        }
        breaker.transition_to_metrics_only().unwrap();
        worst = worst.max(out_of_range(&breaker));
        rounds += 1;
    }
    stop_all(&stop, running).await;
    for sampler in samplers {
        worst = worst.max(sampler.await.unwrap());
    }
    assert_eq!(worst, 0.0, "a failure rate out of range ({rounds} rounds)");
    assert_eq!(breaker.state(), BreakerState::MetricsOnly);
    breaker.call(async { FlextResult::Ok(()) }).await.unwrap();
    assert_eq!(
        breaker.metrics().failure_rate,
        Some(0.0),
        "a window of one success"
    );
    breaker.transition_to_closed().unwrap();
    breaker.call(async { FlextResult::Ok(()) }).await.unwrap();
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "a success does not trip"
    );
}
