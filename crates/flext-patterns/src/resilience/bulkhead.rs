//! [`Bulkhead`]: at most N calls at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_protocols::{Middleware, Next};
use flext_types::{FlextError, FlextResult};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// A bulkhead's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkheadMetrics {
    /// The bulkhead's name.
    pub name: String,
    /// Calls allowed at once.
    pub max_concurrent_calls: u32,
    /// Slots free now.
    pub available: u32,
    /// Calls turned away.
    pub rejected_calls: u64,
}

/// Lets at most `max_concurrent_calls` calls run at once; a call that finds it full waits up
/// to `max_wait` for a slot (not at all by default), then is rejected with `RATE_LIMITED`
/// "Bulkhead 'x' is full". A slot is freed when its call ends, also when it is cancelled.
///
/// ```
/// use std::time::Duration;
/// use flext_patterns::Bulkhead;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let bulkhead = Bulkhead::new("payments", 2, Duration::ZERO)?;
/// assert_eq!(bulkhead.call(async { Ok::<_, flext_types::FlextError>(1) }).await?, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<BulkheadInner>,
}

#[derive(Debug)]
struct BulkheadInner {
    name: String,
    max: u32,
    max_wait: Duration,
    slots: Semaphore,
    rejected: AtomicU64,
}

impl Bulkhead {
    /// A bulkhead of `max_concurrent_calls` slots (at least 1) with up to `max_wait` of
    /// waiting; 0 slots is an `INVALID_ARGUMENT`.
    pub fn new(
        name: impl Into<String>,
        max_concurrent_calls: u32,
        max_wait: Duration,
    ) -> FlextResult<Self> {
        if max_concurrent_calls == 0 {
            return Err(FlextError::invalid_argument(
                "Invalid max_concurrent_calls: 0. Expected at least 1",
            ));
        }
        Ok(Self {
            inner: Arc::new(BulkheadInner {
                name: name.into(),
                max: max_concurrent_calls,
                max_wait,
                slots: Semaphore::new(max_concurrent_calls as usize),
                rejected: AtomicU64::new(0),
            }),
        })
    }

    /// Runs `call` in a slot, or rejects it when none frees up in time.
    pub async fn call<T>(&self, call: impl Future<Output = FlextResult<T>>) -> FlextResult<T> {
        let inner = &self.inner;
        let permit = match inner.slots.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) if inner.max_wait.is_zero() => None,
            Err(_) => tokio::time::timeout(inner.max_wait, inner.slots.acquire())
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(_slot) = permit else {
            inner.rejected.fetch_add(1, Relaxed);
            return Err(FlextError::new(
                ErrorCode::RateLimited,
                format!(
                    "Bulkhead '{}' is full: {} concurrent calls",
                    inner.name, inner.max
                ),
            ));
        };
        call.await
    }

    /// The bulkhead's metrics.
    pub fn metrics(&self) -> BulkheadMetrics {
        BulkheadMetrics {
            name: self.inner.name.clone(),
            max_concurrent_calls: self.inner.max,
            available: u32::try_from(self.inner.slots.available_permits()).unwrap_or(u32::MAX),
            rejected_calls: self.inner.rejected.load(Relaxed),
        }
    }
}

#[async_trait]
impl<Req, Res> Middleware<Req, Res> for Bulkhead
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn call(&self, request: Req, next: Next<'_, Req, Res>) -> FlextResult<Res> {
        Bulkhead::call(self, next.run(request)).await
    }
}
