//! [`RateLimiter`]: a token bucket.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_protocols::{Middleware, Next};
use flext_types::{FlextError, FlextResult};
use tokio::time::Instant;

/// A token bucket: up to `limit` calls per `period`, refilled continuously, with bursts of up
/// to `limit`. A call that finds no token waits for one if it comes within `max_wait` (its
/// token is reserved, so waiters are served in order), otherwise it is rejected with
/// `RATE_LIMITED` saying how far the next token is. Waits use tokio's clock.
///
/// ```
/// use std::time::Duration;
/// use flext_patterns::RateLimiter;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let limiter = RateLimiter::new("api", 2, Duration::from_secs(1), Duration::ZERO)?;
/// limiter.acquire().await?;
/// limiter.acquire().await?;
/// let err = limiter.acquire().await.unwrap_err();
/// assert_eq!(err.to_string(), "Rate limiter 'api' allows 2 calls per 1000 ms; the next is in 500 ms");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimiter {
    inner: Arc<LimiterInner>,
}

#[derive(Debug)]
struct LimiterInner {
    name: String,
    limit: u32,
    period: Duration,
    max_wait: Duration,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `limit` calls (at least 1) per `period` (positive), waiting up to `max_wait` for a
    /// token; a bad setting is an `INVALID_ARGUMENT` naming it.
    pub fn new(
        name: impl Into<String>,
        limit: u32,
        period: Duration,
        max_wait: Duration,
    ) -> FlextResult<Self> {
        if limit == 0 {
            return Err(FlextError::invalid_argument(
                "Invalid limit: 0. Expected at least 1 call per period",
            ));
        }
        if period.is_zero() {
            return Err(FlextError::invalid_argument(
                "Invalid period: 0. Expected a positive duration",
            ));
        }
        Ok(Self {
            inner: Arc::new(LimiterInner {
                name: name.into(),
                limit,
                period,
                max_wait,
                bucket: Mutex::new(Bucket {
                    tokens: f64::from(limit),
                    updated: Instant::now(),
                }),
            }),
        })
    }

    /// Takes a token, waiting for one if it comes within the limiter's `max_wait`.
    pub async fn acquire(&self) -> FlextResult<()> {
        let inner = &self.inner;
        let rate = f64::from(inner.limit) / inner.period.as_secs_f64();
        let wait = {
            let mut bucket = inner.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let refill = now.saturating_duration_since(bucket.updated).as_secs_f64() * rate;
            bucket.tokens = (bucket.tokens + refill).min(f64::from(inner.limit));
            bucket.updated = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                Duration::ZERO
            } else {
                // Saturating: a token more than `Duration::MAX` away (a period near it) is
                // `Duration::MAX` away, not a panic.
                let wait = Duration::try_from_secs_f64((1.0 - bucket.tokens) / rate)
                    .unwrap_or(Duration::MAX);
                if wait > inner.max_wait {
                    return Err(FlextError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "Rate limiter '{}' allows {} calls per {} ms; the next is in {} ms",
                            inner.name,
                            inner.limit,
                            inner.period.as_millis(),
                            wait.as_millis()
                        ),
                    ));
                }
                // Reserve the token now, so later callers queue behind this one.
                bucket.tokens -= 1.0;
                wait
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Runs `call` once a token is taken.
    pub async fn call<T>(&self, call: impl Future<Output = FlextResult<T>>) -> FlextResult<T> {
        self.acquire().await?;
        call.await
    }
}

#[async_trait]
impl<Req, Res> Middleware<Req, Res> for RateLimiter
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn call(&self, request: Req, next: Next<'_, Req, Res>) -> FlextResult<Res> {
        RateLimiter::call(self, next.run(request)).await
    }
}
