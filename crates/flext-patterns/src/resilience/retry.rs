//! [`Retry`]: tries again on errors worth retrying, with exponential backoff and jitter.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::{ErrorCode, handler};
use flext_impl::{Backoff, catch_panic_sync};
use flext_protocols::{Middleware, Next};
use flext_types::{FlextError, FlextResult, HandlerConfig};
use serde::{Deserialize, Serialize};

/// The settings of a [`Retry`].
///
/// Start from [`Default`] and change what you need with the `with_*` setters; the fields are
/// public to read, and the struct is `#[non_exhaustive]` so a later setting is not a breaking
/// change.
///
/// ```
/// use std::time::Duration;
/// use flext_patterns::RetryConfig;
///
/// let config = RetryConfig::default()
///     .with_max_attempts(5)
///     .with_initial_backoff(Duration::from_millis(20))
///     .with_jitter(0.0);
/// assert_eq!((config.max_attempts, config.multiplier), (5, 2.0));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included (default [`handler::MAX_RETRIES`]).
    pub max_attempts: u32,
    /// The wait before the second attempt (default 100 ms).
    pub initial_backoff: Duration,
    /// Each later wait is this many times the one before (default 2).
    pub multiplier: f64,
    /// The longest wait (default 10 s).
    pub max_backoff: Duration,
    /// Each wait varies at random by up to this fraction either way (default 0.2).
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: handler::MAX_RETRIES,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(10),
            jitter: 0.2,
        }
    }
}

impl RetryConfig {
    /// Attempts in all, the first included.
    #[must_use]
    pub const fn with_max_attempts(mut self, value: u32) -> Self {
        self.max_attempts = value;
        self
    }

    /// The wait before the second attempt.
    #[must_use]
    pub const fn with_initial_backoff(mut self, value: Duration) -> Self {
        self.initial_backoff = value;
        self
    }

    /// Each later wait is this many times the one before.
    #[must_use]
    pub const fn with_multiplier(mut self, value: f64) -> Self {
        self.multiplier = value;
        self
    }

    /// The longest wait.
    #[must_use]
    pub const fn with_max_backoff(mut self, value: Duration) -> Self {
        self.max_backoff = value;
        self
    }

    /// Each wait varies at random by up to this fraction either way.
    #[must_use]
    pub const fn with_jitter(mut self, value: f64) -> Self {
        self.jitter = value;
        self
    }

    /// Checks every value; the first bad one is an `INVALID_ARGUMENT` error naming it.
    pub fn validate(&self) -> FlextResult<()> {
        if self.max_attempts == 0 {
            return Err(FlextError::invalid_argument(
                "Invalid max_attempts: 0. Expected at least 1",
            ));
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(FlextError::invalid_argument(format!(
                "Invalid multiplier: {}. Expected a finite number of at least 1",
                self.multiplier
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(FlextError::invalid_argument(format!(
                "Invalid jitter: {}. Expected a fraction from 0 to 1",
                self.jitter
            )));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(FlextError::invalid_argument(
                "Invalid max_backoff: shorter than initial_backoff",
            ));
        }
        Ok(())
    }
}

type Predicate = Arc<dyn Fn(&FlextError) -> bool + Send + Sync>;

/// The error codes [`Retry`] tries again on unless told otherwise: passing failures
/// (`TIMEOUT`, `CONCURRENCY_CONFLICT`, `STORAGE_ERROR`, `RATE_LIMITED`, `UNAVAILABLE`),
/// never a rejection such as `VALIDATION_ERROR`.
pub const RETRYABLE_BY_DEFAULT: [ErrorCode; 5] = [
    ErrorCode::Timeout,
    ErrorCode::ConcurrencyConflict,
    ErrorCode::StorageError,
    ErrorCode::RateLimited,
    ErrorCode::Unavailable,
];

/// Runs a call again when it fails with an error worth retrying, waiting longer each time
/// (exponential backoff with jitter), up to a number of attempts.
///
/// An error not worth retrying is returned at once, unchanged; a predicate
/// ([`retry_if`](Retry::retry_if)) that panics is an `OPERATION_ERROR` with the call's
/// error as its source, and no retry. When the attempts run out,
/// the last error is returned with its code and "Gave up after N attempts: …". Waits use
/// tokio's clock; where there is none (outside a tokio runtime, or in one without timers)
/// the retry gives up after the failed attempt instead of waiting. As a [`Middleware`] it
/// runs the rest of the stack again (the request must be `Clone`).
///
/// ```
/// use std::time::Duration;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use flext_patterns::{Retry, RetryConfig};
/// use flext_types::FlextError;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let retry = Retry::new(RetryConfig::default().with_max_attempts(3).with_jitter(0.0))?;
/// let tries = AtomicU32::new(0);
/// let value = retry
///     .run(|_attempt| async {
///         if tries.fetch_add(1, Ordering::SeqCst) < 2 { Err(FlextError::timeout("slow")) } else { Ok(7) }
///     })
///     .await?;
/// assert_eq!((value, tries.load(Ordering::SeqCst)), (7, 3));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Retry {
    config: RetryConfig,
    /// `None`: [`RETRYABLE_BY_DEFAULT`] (no allocation for the usual policy).
    retry_if: Option<Predicate>,
}

impl Retry {
    /// A retry with `config`, retrying [`RETRYABLE_BY_DEFAULT`]; a bad setting is an
    /// `INVALID_ARGUMENT` error naming it.
    pub fn new(config: RetryConfig) -> FlextResult<Self> {
        config.validate()?;
        Ok(Self {
            config,
            retry_if: None,
        })
    }

    /// The retry policy of a handler's configuration: `1 + max_retries` attempts in all
    /// (`max_retries` 0 is a single attempt), the default waits of [`RetryConfig`]
    /// (100 ms, doubling, at most 10 s, ±20 % jitter) and [`RETRYABLE_BY_DEFAULT`] errors
    /// only, so a validation or authorization failure is never tried again. Each attempt
    /// gets the handler's whole `timeout_ms` deadline of its own.
    ///
    /// ```
    /// use flext_constants::Environment;
    /// use flext_patterns::Retry;
    /// use flext_types::HandlerConfig;
    ///
    /// let production = Retry::from_config(&HandlerConfig::for_environment(Environment::Production));
    /// assert_eq!(production.config().max_attempts, 2); // 1 retry
    /// let test = Retry::from_config(&HandlerConfig::for_environment(Environment::Test));
    /// assert_eq!(test.config().max_attempts, 1); // no retry
    /// ```
    pub fn from_config(config: &HandlerConfig) -> Self {
        Self {
            config: RetryConfig::default().with_max_attempts(config.max_retries.saturating_add(1)),
            retry_if: None,
        }
    }

    /// Retries exactly the errors `predicate` accepts.
    #[must_use]
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&FlextError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_if = Some(Arc::new(predicate));
        self
    }

    /// Whether `error` is worth another attempt under this policy.
    pub fn is_retryable(&self, error: &FlextError) -> bool {
        match &self.retry_if {
            Some(predicate) => predicate(error),
            None => RETRYABLE_BY_DEFAULT.contains(&error.code()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The wait before attempt `attempt + 1` (`attempt` counts from 1), jitter included,
    /// never past `max_backoff` (the one computation of a wait, [`Backoff`]).
    pub fn backoff(&self, attempt: u32) -> Duration {
        Backoff::exponential(self.config.initial_backoff)
            .with_multiplier(self.config.multiplier)
            .with_max_backoff(self.config.max_backoff)
            .with_jitter(self.config.jitter)
            .delay(attempt)
    }

    /// Runs `attempt(n)` for n = 1, 2, … until it succeeds, fails with an error not worth
    /// retrying, or the attempts run out.
    pub async fn run<T, F, Fut>(&self, mut attempt: F) -> FlextResult<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = FlextResult<T>>,
    {
        let mut n = 1;
        loop {
            let error = match attempt(n).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            // The predicate is user code: a panic in it is an `OPERATION_ERROR` (with the
            // call's error as its source), and no retry.
            match catch_panic_sync(|| Ok(self.is_retryable(&error))) {
                Err(panic) => return Err(panic.with_source(error)),
                Ok(false) => return Err(error),
                Ok(true) => {}
            }
            if n >= self.config.max_attempts {
                return Err(FlextError::new(
                    error.code(),
                    format!("Gave up after {n} attempts: {}", error.message()),
                )
                .with_source(error));
            }
            let wait = self.backoff(n);
            let Some(sleep) = timer(wait) else {
                return Err(FlextError::new(
                    error.code(),
                    format!(
                        "Gave up after {n} attempts: {} (no tokio timer to wait for the next attempt)",
                        error.message()
                    ),
                )
                .with_source(error));
            };
            tracing::debug!(attempt = n, ?wait, %error, "retrying");
            sleep.await;
            n += 1;
        }
    }
}

/// A sleep of `wait` on tokio's clock, or `None` where tokio has no clock to give — outside
/// a runtime, or in one built without timers — and would panic creating it.
fn timer(wait: Duration) -> Option<tokio::time::Sleep> {
    if tokio::runtime::Handle::try_current().is_err() {
        return None;
    }
    catch_panic_sync(|| Ok(tokio::time::sleep(wait))).ok()
}

#[async_trait]
impl<Req, Res> Middleware<Req, Res> for Retry
where
    Req: Clone + Send + Sync + 'static,
    Res: Send + 'static,
{
    fn name(&self) -> &str {
        "retry"
    }

    async fn call(&self, request: Req, next: Next<'_, Req, Res>) -> FlextResult<Res> {
        self.run(|_| next.run(request.clone())).await
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
