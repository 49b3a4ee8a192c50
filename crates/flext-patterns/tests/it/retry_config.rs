//! `Retry::from_config`: a handler configuration's `max_retries` as a retry policy.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use flext_constants::{Environment, ErrorCode};
use flext_patterns::{RETRYABLE_BY_DEFAULT, Retry, RetryConfig};
use flext_types::{FlextError, HandlerConfig};

#[test]
fn attempts_are_one_plus_max_retries() {
    let attempts = |environment| {
        Retry::from_config(&HandlerConfig::for_environment(environment))
            .config()
            .max_attempts
    };
    assert_eq!(attempts(Environment::Production), 2);
    assert_eq!(attempts(Environment::Development), 6);
    assert_eq!(attempts(Environment::Test), 1);
    assert_eq!(attempts(Environment::Staging), 4);

    let mut config = HandlerConfig::default();
    config.max_retries = u32::MAX;
    let retry = Retry::from_config(&config);
    assert_eq!(
        retry.config().max_attempts,
        u32::MAX,
        "saturates, never wraps"
    );
    // The waits are the defaults, so the policy is valid.
    let defaults = RetryConfig::default();
    assert_eq!(
        (
            retry.config().initial_backoff,
            retry.config().max_backoff,
            retry.config().jitter
        ),
        (
            defaults.initial_backoff,
            defaults.max_backoff,
            defaults.jitter
        )
    );
    assert!(retry.config().validate().is_ok());
}

#[test]
fn only_passing_failures_are_retryable() {
    let retry = Retry::from_config(&HandlerConfig::default());
    for code in RETRYABLE_BY_DEFAULT {
        assert!(
            retry.is_retryable(&FlextError::new(code, "passing")),
            "{code:?}"
        );
    }
    for error in [
        FlextError::validation("bad"),
        FlextError::authorization_denied("no"),
        FlextError::business_rule("rule"),
        FlextError::operation("panicked"),
        FlextError::new(ErrorCode::CircuitOpen, "open"),
    ] {
        assert!(!retry.is_retryable(&error), "{error}");
    }
    let custom = retry.retry_if(|e| e.is(ErrorCode::ValidationError));
    assert!(custom.is_retryable(&FlextError::validation("bad")));
    assert!(!custom.is_retryable(&FlextError::timeout("slow")));
}

#[tokio::test(start_paused = true)]
async fn a_production_policy_tries_twice() {
    let retry = Retry::from_config(&HandlerConfig::for_environment(Environment::Production));
    let tries = AtomicU32::new(0);
    let err = retry
        .run(|_| async {
            tries.fetch_add(1, SeqCst);
            Err::<(), _>(FlextError::timeout("slow"))
        })
        .await
        .unwrap_err();
    assert_eq!(tries.load(SeqCst), 2);
    assert_eq!(err.to_string(), "Gave up after 2 attempts: slow");
}

#[test]
fn without_a_timer_to_wait_on_the_retry_gives_up_instead_of_panicking() {
    // A runtime built without timers: tokio panics when asked for a sleep there.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let retry = Retry::from_config(&HandlerConfig::default());
    let tries = AtomicU32::new(0);
    let err = runtime
        .block_on(retry.run(|_| async {
            tries.fetch_add(1, SeqCst);
            Err::<(), _>(FlextError::timeout("slow"))
        }))
        .unwrap_err();
    assert_eq!(tries.load(SeqCst), 1);
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(
        err.to_string(),
        "Gave up after 1 attempts: slow (no tokio timer to wait for the next attempt)"
    );
}
