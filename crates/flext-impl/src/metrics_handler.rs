//! [`MetricsHandler`]: request/response sizes and errors by code on top of a
//! [`BasicHandler`].

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use flext_constants::{ErrorCode, HandlerKind, WireEnum};
use flext_protocols::Handler;
use flext_types::{HandlerMetrics, MetricValue, SizeSummary};
use serde::{Deserialize, Serialize};

use crate::delegate::delegate_to_base;
use crate::{BasicHandler, Identity, ManagedHandler};

/// A handler that also measures the size of each request and response (as JSON, in bytes)
/// and counts errors by code.
///
/// ```
/// use flext_impl::MetricsHandler;
/// use flext_protocols::Handler;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let handler = MetricsHandler::new("sized");
/// handler.handle(json!({"a": 1})).await.unwrap();
/// let report = handler.report();
/// assert_eq!(report.request_size.total_bytes, 7); // {"a":1}
/// assert_eq!(report.response_size.count, 1);
/// # }
/// ```
pub struct MetricsHandler<H: Handler = Identity<serde_json::Value>> {
    base: BasicHandler<H>,
    request_sizes: SizeStats,
    response_sizes: SizeStats,
    errors_by_code: Box<[AtomicU64]>,
}

/// Everything a [`MetricsHandler`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// The handler's base metrics.
    #[serde(flatten)]
    pub handler: HandlerMetrics,
    /// Request sizes, as JSON bytes.
    pub request_size: SizeSummary,
    /// Sizes of successful responses, as JSON bytes.
    pub response_size: SizeSummary,
    /// Failed calls by error code name (`VALIDATION_ERROR`, …); codes never seen are absent.
    pub errors_by_code: BTreeMap<String, u64>,
}

impl<T> MetricsHandler<Identity<T>>
where
    T: Serialize + Send + 'static,
{
    /// A measuring handler that returns each request unchanged.
    pub fn new(name: impl Into<String>) -> Self {
        Self::from_base(BasicHandler::with_kind(
            name,
            HandlerKind::Metrics,
            Identity::new(),
        ))
    }
}

impl<H> MetricsHandler<H>
where
    H: Handler,
    H::Request: Serialize,
    H::Response: Serialize,
{
    /// Measures the processing step `inner`, under `inner`'s name.
    pub fn wrap(inner: H) -> Self {
        let name = inner.handler_name().to_owned();
        Self::from_base(BasicHandler::with_kind(name, HandlerKind::Metrics, inner))
    }

    fn from_base(base: BasicHandler<H>) -> Self {
        Self {
            base,
            request_sizes: SizeStats::new(),
            response_sizes: SizeStats::new(),
            errors_by_code: ErrorCode::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A snapshot of everything measured.
    pub fn report(&self) -> MetricsReport {
        let errors_by_code = ErrorCode::ALL
            .iter()
            .zip(self.errors_by_code.iter())
            .map(|(code, count)| (code.name().to_owned(), count.load(Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect();
        MetricsReport {
            handler: self.base.core().metrics(),
            request_size: self.request_sizes.summary(),
            response_size: self.response_sizes.summary(),
            errors_by_code,
        }
    }

    /// The processing step.
    pub fn inner(&self) -> &H {
        self.base.inner()
    }
}

delegate_to_base! {
    impl<H> MetricsHandler<H> where { H::Request: Serialize, H::Response: Serialize, }
    handle(&self, request) {
        self.request_sizes.record(json_size(&request));
        let result = self.base.handle(request).await;
        match &result {
            Ok(response) => self.response_sizes.record(json_size(response)),
            Err(error) => {
                self.errors_by_code[error.code().index()].fetch_add(1, Relaxed);
            }
        }
        result
    }
    extend_metrics(&self, set) {
        let report = self.report();
        set.push(
            "request_bytes_total",
            "Bytes of all requests, as JSON.",
            MetricValue::Counter(report.request_size.total_bytes),
        );
        set.push(
            "response_bytes_total",
            "Bytes of all successful responses, as JSON.",
            MetricValue::Counter(report.response_size.total_bytes),
        );
        for (code, count) in report.errors_by_code {
            set.push_labelled(
                "errors_total",
                "Failed calls by error code.",
                vec![("code".to_owned(), code)],
                MetricValue::Counter(count),
            );
        }
    }
}

impl<H: Handler + std::fmt::Debug> std::fmt::Debug for MetricsHandler<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHandler")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The size of `value` serialized as JSON, counted without allocating the text; `None` when
/// it does not serialize.
fn json_size(value: &impl Serialize) -> Option<u64> {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.0)
}

struct ByteCounter(u64);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Lock-free count, total, minimum and maximum of sizes.
struct SizeStats {
    count: AtomicU64,
    total: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl SizeStats {
    fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            total: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }

    fn record(&self, size: Option<u64>) {
        let Some(size) = size else { return };
        self.total.fetch_add(size, Relaxed);
        self.min.fetch_min(size, Relaxed);
        self.max.fetch_max(size, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn summary(&self) -> SizeSummary {
        let count = self.count.load(Relaxed);
        if count == 0 {
            return SizeSummary::default();
        }
        let total_bytes = self.total.load(Relaxed);
        SizeSummary {
            count,
            total_bytes,
            min_bytes: self.min.load(Relaxed),
            max_bytes: self.max.load(Relaxed),
            average_bytes: total_bytes as f64 / count as f64,
        }
    }
}
