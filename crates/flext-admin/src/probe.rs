//! What the admin surface shows of a projection, and how it asks.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use flext_types::{FlextResult, MetricSet};
use serde::Serialize;

/// A projection's progress as `GET /projections` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProjectionView {
    /// The projection's name.
    pub name: String,
    /// The last position it finished.
    pub position: u64,
    /// The store's head: the last position readers can see.
    pub head: u64,
    /// How far it is behind: events (or, where positions have gaps, positions) between
    /// its position and the head.
    pub lag: u64,
    /// Events it gave up on (and those parked behind them), waiting for an operator.
    pub dead_letters: usize,
    /// The process holding its lease, where projections run under leases.
    pub owner: Option<String>,
}

impl ProjectionView {
    /// A view of `name` at `position` with the store's head at `head`: the lag is their
    /// difference, no dead letters, no owner.
    pub fn new(name: impl Into<String>, position: u64, head: u64) -> Self {
        Self {
            name: name.into(),
            position,
            head,
            lag: head.saturating_sub(position),
            dead_letters: 0,
            owner: None,
        }
    }

    /// The same view with `lag` counted by the store (positions with gaps).
    #[must_use]
    pub fn with_lag(mut self, lag: u64) -> Self {
        self.lag = lag;
        self
    }

    /// The same view with `count` dead letters.
    #[must_use]
    pub fn with_dead_letters(mut self, count: usize) -> Self {
        self.dead_letters = count;
        self
    }

    /// The same view with the lease's owner.
    #[must_use]
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }
}

/// Something the admin surface can ask for a projection's progress: a
/// [`ProjectionRunner`](flext_cqrs::ProjectionRunner), or a closure over any store's status
/// ([`projection_probe`]).
#[async_trait]
pub trait ProjectionProbe: Send + Sync {
    /// The projection's name.
    fn name(&self) -> &str;

    /// Its progress now; an error (an unreachable store) shows as the projection's error
    /// and makes the health report unhealthy.
    async fn status(&self) -> FlextResult<ProjectionView>;

    /// Its metrics, if it keeps any, for `GET /metrics`.
    fn metric_set(&self) -> Option<MetricSet> {
        None
    }
}

#[async_trait]
impl ProjectionProbe for flext_cqrs::ProjectionRunner {
    fn name(&self) -> &str {
        flext_cqrs::ProjectionRunner::name(self)
    }

    async fn status(&self) -> FlextResult<ProjectionView> {
        let status = flext_cqrs::ProjectionRunner::status(self).await?;
        Ok(
            ProjectionView::new(status.name, status.position, status.head)
                .with_lag(status.lag)
                .with_dead_letters(status.dead_letters),
        )
    }

    fn metric_set(&self) -> Option<MetricSet> {
        Some(flext_protocols::MetricsSource::metric_set(self))
    }
}

/// A [`ProjectionProbe`] named `name` that calls `status` for each request.
///
/// ```
/// use flext_admin::{ProjectionView, projection_probe};
///
/// let probe = projection_probe("balances", || async {
///     // Ask the store here, e.g. a PostgreSQL store's `projection_status("balances")`.
///     Ok(ProjectionView::new("balances", 40, 42).with_owner("replica-1"))
/// });
/// # let _ = probe;
/// ```
pub fn projection_probe<F, Fut>(name: impl Into<String>, status: F) -> FnProbe<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = FlextResult<ProjectionView>> + Send,
{
    FnProbe {
        name: name.into(),
        status,
    }
}

/// The probe [`projection_probe`] makes.
pub struct FnProbe<F> {
    name: String,
    status: F,
}

#[async_trait]
impl<F, Fut> ProjectionProbe for FnProbe<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = FlextResult<ProjectionView>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn status(&self) -> FlextResult<ProjectionView> {
        let future: Pin<Box<dyn Future<Output = _> + Send + '_>> = Box::pin((self.status)());
        future.await
    }
}

impl<F> std::fmt::Debug for FnProbe<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnProbe")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
