//! The metrics-source contract.

use flext_types::MetricSet;

/// Anything that reports metrics: handlers, buses, chains, pipelines, breakers.
///
/// Exporters (JSON, Prometheus text) render any source the same way.
pub trait MetricsSource: Send + Sync {
    /// A snapshot of the source's metrics, taken without blocking its callers.
    fn metric_set(&self) -> MetricSet;
}
