//! Serializable metrics snapshots.

use std::borrow::Cow;
use std::time::Duration;

use flext_constants::HandlerState;
use serde::{Deserialize, Serialize};

/// A latency distribution: call count, mean, minimum, percentiles and maximum.
///
/// Durations serialize as milliseconds (floats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// How many calls were measured.
    pub count: u64,
    /// The mean duration.
    #[serde(with = "crate::serde_helpers::millis", rename = "mean_ms")]
    pub mean: Duration,
    /// The shortest duration.
    #[serde(with = "crate::serde_helpers::millis", rename = "min_ms")]
    pub min: Duration,
    /// The median.
    #[serde(with = "crate::serde_helpers::millis", rename = "p50_ms")]
    pub p50: Duration,
    /// The 95th percentile.
    #[serde(with = "crate::serde_helpers::millis", rename = "p95_ms")]
    pub p95: Duration,
    /// The 99th percentile.
    #[serde(with = "crate::serde_helpers::millis", rename = "p99_ms")]
    pub p99: Duration,
    /// The longest duration.
    #[serde(with = "crate::serde_helpers::millis", rename = "max_ms")]
    pub max: Duration,
}

/// A handler's metrics at one moment, with the guide's field names.
///
/// `requests_processed` counts finished calls (`successful_requests + failed_requests`);
/// calls still running are `in_flight`. `error_count` equals `failed_requests` and keeps the
/// guide's spelling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandlerMetrics {
    /// The handler's name.
    pub handler_name: String,
    /// The handler's state when the snapshot was taken.
    #[serde(with = "crate::serde_helpers::wire")]
    pub state: HandlerState,
    /// Finished calls.
    pub requests_processed: u64,
    /// Calls that succeeded.
    pub successful_requests: u64,
    /// Calls that failed, timed out or panicked.
    pub failed_requests: u64,
    /// The same as `failed_requests`.
    pub error_count: u64,
    /// Calls running now.
    pub in_flight: u64,
    /// Time spent in finished calls.
    #[serde(
        with = "crate::serde_helpers::millis",
        rename = "total_processing_time_ms"
    )]
    pub total_processing_time: Duration,
    /// Mean time of a finished call.
    #[serde(
        with = "crate::serde_helpers::millis",
        rename = "average_processing_time_ms"
    )]
    pub average_processing_time: Duration,
    /// The latency distribution of finished calls.
    pub latency: LatencySummary,
}

impl HandlerMetrics {
    /// Successful calls as a percentage of finished calls (0 when none finished).
    pub fn success_rate(&self) -> f64 {
        if self.requests_processed == 0 {
            0.0
        } else {
            self.successful_requests as f64 / self.requests_processed as f64 * 100.0
        }
    }

    /// The snapshot as generic samples, for exposition (JSON, Prometheus text).
    pub fn to_metric_set(&self) -> MetricSet {
        let mut set = MetricSet::new(self.handler_name.clone());
        set.push(
            "requests_processed",
            "Finished calls.",
            MetricValue::Counter(self.requests_processed),
        );
        set.push(
            "successful_requests",
            "Calls that succeeded.",
            MetricValue::Counter(self.successful_requests),
        );
        set.push(
            "failed_requests",
            "Calls that failed, timed out or panicked.",
            MetricValue::Counter(self.failed_requests),
        );
        set.push(
            "in_flight",
            "Calls running now.",
            MetricValue::Gauge(self.in_flight as f64),
        );
        set.push(
            "latency",
            "Latency of finished calls.",
            MetricValue::Latency(self.latency),
        );
        set
    }
}

/// Sizes of payloads (for example requests serialized as JSON), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SizeSummary {
    /// How many payloads were measured.
    pub count: u64,
    /// Their total size.
    pub total_bytes: u64,
    /// The smallest.
    pub min_bytes: u64,
    /// The largest.
    pub max_bytes: u64,
    /// The mean size.
    pub average_bytes: f64,
}

/// Metrics of one source (a handler, a bus, a chain, a breaker) as generic named samples, so
/// one exporter can render any of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSet {
    /// The source's name, for example a handler's name.
    pub source: String,
    /// The samples, in the order they were pushed.
    pub samples: Vec<MetricSample>,
}

/// One named sample of a [`MetricSet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// The metric's name, in `snake_case`.
    pub name: Cow<'static, str>,
    /// One sentence saying what it measures.
    pub help: Cow<'static, str>,
    /// Extra labels (for example an event name), beyond the source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: MetricValue,
}

/// The value of a [`MetricSample`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum MetricValue {
    /// A count that only grows (until reset).
    Counter(u64),
    /// A value that goes up and down.
    Gauge(f64),
    /// A latency distribution.
    Latency(LatencySummary),
}

impl MetricSet {
    /// An empty set for `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            samples: Vec::new(),
        }
    }

    /// Adds an unlabelled sample.
    pub fn push(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        help: impl Into<Cow<'static, str>>,
        value: MetricValue,
    ) {
        self.samples.push(MetricSample {
            name: name.into(),
            help: help.into(),
            labels: Vec::new(),
            value,
        });
    }

    /// Adds a sample with labels.
    pub fn push_labelled(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        help: impl Into<Cow<'static, str>>,
        labels: Vec<(String, String)>,
        value: MetricValue,
    ) {
        self.samples.push(MetricSample {
            name: name.into(),
            help: help.into(),
            labels,
            value,
        });
    }

    /// Adds a group of samples that share one label, such as every sample of one message
    /// type or one chain link: each `(name, help, value)` becomes a sample labelled
    /// `label.0 = label.1`.
    ///
    /// ```
    /// use flext_types::{MetricSet, MetricValue};
    ///
    /// let mut set = MetricSet::new("chain");
    /// set.push_group(
    ///     ("handler", "auth"),
    ///     [
    ///         ("handler_executions", "Runs per handler.", MetricValue::Counter(3)),
    ///         ("handler_failures", "Failures per handler.", MetricValue::Counter(1)),
    ///     ],
    /// );
    /// assert_eq!(set.samples.len(), 2);
    /// assert_eq!(set.samples[1].labels, [("handler".to_owned(), "auth".to_owned())]);
    /// ```
    pub fn push_group(
        &mut self,
        label: (&str, &str),
        samples: impl IntoIterator<Item = (&'static str, &'static str, MetricValue)>,
    ) {
        for (name, help, value) in samples {
            self.push_labelled(
                name,
                help,
                vec![(label.0.to_owned(), label.1.to_owned())],
                value,
            );
        }
    }

    /// The first sample called `name` with no labels, if any.
    pub fn get(&self, name: &str) -> Option<&MetricValue> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels.is_empty())
            .map(|s| &s.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> HandlerMetrics {
        HandlerMetrics {
            handler_name: "user_service".into(),
            state: HandlerState::Completed,
            requests_processed: 4,
            successful_requests: 3,
            failed_requests: 1,
            error_count: 1,
            in_flight: 0,
            total_processing_time: Duration::from_millis(8),
            average_processing_time: Duration::from_millis(2),
            latency: LatencySummary {
                count: 4,
                mean: Duration::from_millis(2),
                ..LatencySummary::default()
            },
        }
    }

    #[test]
    fn success_rate_is_a_percentage_and_zero_when_idle() {
        assert_eq!(snapshot().success_rate(), 75.0);
        let idle = HandlerMetrics {
            requests_processed: 0,
            successful_requests: 0,
            ..snapshot()
        };
        assert_eq!(idle.success_rate(), 0.0);
    }

    #[test]
    fn serializes_with_the_guides_names_and_milliseconds() {
        let v = serde_json::to_value(snapshot()).unwrap();
        assert_eq!(v["state"], "completed");
        assert_eq!(v["requests_processed"], 4);
        assert_eq!(v["average_processing_time_ms"], 2.0);
        assert_eq!(v["latency"]["mean_ms"], 2.0);
        let back: HandlerMetrics = serde_json::from_value(v).unwrap();
        assert_eq!(back, snapshot());
    }

    #[test]
    fn metric_set_exposes_counters_and_latency() {
        let set = snapshot().to_metric_set();
        assert_eq!(set.source, "user_service");
        assert_eq!(
            set.get("requests_processed"),
            Some(&MetricValue::Counter(4))
        );
        assert!(matches!(set.get("latency"), Some(MetricValue::Latency(l)) if l.count == 4));
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(json["samples"][0]["value"]["kind"], "counter");
    }

    #[test]
    fn negative_milliseconds_do_not_deserialize() {
        let mut v = serde_json::to_value(snapshot()).unwrap();
        v["total_processing_time_ms"] = serde_json::json!(-1.0);
        assert!(serde_json::from_value::<HandlerMetrics>(v).is_err());
    }
}
