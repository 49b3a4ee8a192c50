//! [`MetricsBridge`]: every metric of the registries and sources it is given, recorded
//! through the `metrics` crate's facade (feature `metrics`), under the names of the
//! Prometheus exposition.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flext_impl::catch_panic_sync;
use flext_protocols::MetricsSource;
use flext_types::{FlextError, FlextResult, MetricSet, MetricValue};
use metrics::{Label, Unit};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::HandlerRegistry;
use crate::exposition::{Kind, Series, quantiles, seconds_sum, series};

/// Records every metric of the handler registries and [`MetricsSource`]s it is given
/// through the [`metrics`] crate's facade, so the exporter an application already installs
/// (Prometheus, StatsD, OpenTelemetry, …) gets them.
///
/// Names and labels are those of [`to_prometheus`](crate::to_prometheus): `flext_{name}`,
/// counters ending in `_total`, a `source` label (the handler's or the source's name)
/// followed by the sample's own labels, each reduced and de-duplicated the same way. So a
/// dashboard built on the text exposition reads the bridge's series unchanged.
///
/// | sample | recorded as |
/// |---|---|
/// | counter | a counter, set with [`Counter::absolute`](metrics::Counter::absolute) to the source's count |
/// | gauge | a gauge, [`set`](metrics::Gauge::set) |
/// | latency summary | gauges `flext_{name}_seconds{quantile="0.5" \| "0.95" \| "0.99"}`, a gauge `flext_{name}_seconds_sum` and a counter `flext_{name}_seconds_count` |
///
/// The sources keep their own counts, percentiles included; the facade has no type that
/// takes a finished summary, and a histogram would need every observation again. So the
/// quantiles are gauges, the count a counter, and the sum a gauge, as it is a number of
/// seconds with a fraction, which an integer counter cannot hold. A source that resets its
/// counts (a handler registered anew) shows, in recorders that keep a counter's highest
/// value as `absolute` asks, its old count until the new one passes it.
///
/// A gauge series that a pass no longer yields — a breaker's previous `state`, the
/// gauges of a handler since unregistered — is set to 0 by that pass, since the facade
/// cannot remove a series; counters keep their last count.
///
/// Each name is described ([`describe_counter!`](metrics::describe_counter),
/// [`describe_gauge!`](metrics::describe_gauge), the latency ones in
/// [`Unit::Seconds`]) once per bridge, the first time it records it, to the recorder
/// installed then.
///
/// [`record`](Self::record) makes one pass; [`spawn`](Self::spawn) records on an interval
/// on tokio until its [`MetricsBridgeTask`] is dropped.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use flext_management::{HandlerRegistry, MetricsBridge};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let registry = Arc::new(HandlerRegistry::new());
/// let bridge = MetricsBridge::new().with_registry(registry.clone());
/// bridge.record(); // one pass, into the recorder installed (none here: a no-op)
/// let task = bridge.spawn(Duration::from_secs(10))?; // then every 10 s
/// drop(task); // stops it
/// # Ok(())
/// # }
/// ```
pub struct MetricsBridge {
    registries: Vec<Arc<HandlerRegistry>>,
    sources: Vec<Arc<dyn MetricsSource>>,
    /// What earlier passes recorded.
    memory: Mutex<Memory>,
}

/// What a bridge remembers between passes.
#[derive(Default)]
struct Memory {
    /// The names already described.
    described: HashSet<String>,
    /// The gauge series the last pass set: (name, labels).
    gauges: HashSet<(String, Vec<Label>)>,
}

impl MetricsBridge {
    /// A bridge of nothing yet.
    pub fn new() -> Self {
        Self {
            registries: Vec::new(),
            sources: Vec::new(),
            memory: Mutex::default(),
        }
    }

    /// The same bridge recording `registry`'s own metrics and those of every handler
    /// registered in it at each pass (one `source` per handler name).
    #[must_use]
    pub fn with_registry(mut self, registry: Arc<HandlerRegistry>) -> Self {
        self.registries.push(registry);
        self
    }

    /// The same bridge recording `source`'s metrics too: a bus, a circuit breaker, a
    /// projection runner, a relay, …
    #[must_use]
    pub fn with_source(mut self, source: Arc<dyn MetricsSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// The metric sets one pass records: each registry's handlers and the registry itself,
    /// then each source, in the order given. A source whose `metric_set` panics is left
    /// out (and logged), so one broken source does not silence the others.
    pub fn metric_sets(&self) -> Vec<MetricSet> {
        let mut sets = Vec::new();
        for registry in &self.registries {
            sets.extend(registry.handler_metric_sets());
            sets.push(registry.metric_set());
        }
        for source in &self.sources {
            match catch_panic_sync(|| Ok(source.metric_set())) {
                Ok(set) => sets.push(set),
                Err(error) => {
                    tracing::warn!(%error, "a metrics source failed; its metrics are left out of this pass");
                }
            }
        }
        sets
    }

    /// Records every metric once, into the recorder installed now (the global one, or a
    /// local one set with [`metrics::with_local_recorder`]).
    pub fn record(&self) {
        let sets = self.metric_sets();
        // Held through the pass, so that two passes at once do not undo each other's
        // gauges; only the recorder is called under it, never a source.
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let mut gauges = HashSet::new();
        for series in series(&sets) {
            memory.describe(&series);
            let labels: Vec<Label> = series.labels.iter().map(Label::from).collect();
            let family = series.family;
            match series.value {
                MetricValue::Counter(count) => metrics::counter!(family, labels).absolute(*count),
                MetricValue::Gauge(value) => {
                    metrics::gauge!(family.clone(), labels.clone()).set(*value);
                    gauges.insert((family, labels));
                }
                MetricValue::Latency(summary) => {
                    for (quantile, seconds) in quantiles(summary) {
                        let mut labels = labels.clone();
                        labels.push(Label::new("quantile", quantile));
                        metrics::gauge!(family.clone(), labels.clone()).set(seconds);
                        gauges.insert((family.clone(), labels));
                    }
                    let sum = format!("{family}_sum");
                    metrics::gauge!(sum.clone(), labels.clone()).set(seconds_sum(summary));
                    gauges.insert((sum, labels.clone()));
                    metrics::counter!(format!("{family}_count"), labels).absolute(summary.count);
                }
            }
        }
        for (family, labels) in memory.gauges.difference(&gauges) {
            metrics::gauge!(family.clone(), labels.clone()).set(0.0);
        }
        memory.gauges = gauges;
    }

    /// Records every `every` on the current tokio runtime (the first pass at once) until
    /// the returned task is dropped or [aborted](MetricsBridgeTask::abort). It records into
    /// the global recorder (a task does not see a thread's local one unless it runs on that
    /// thread).
    ///
    /// `INVALID_ARGUMENT` for a zero interval; `OPERATION_ERROR` outside a tokio runtime.
    pub fn spawn(self, every: Duration) -> FlextResult<MetricsBridgeTask> {
        if every.is_zero() {
            return Err(FlextError::invalid_argument(
                "MetricsBridge::spawn: the interval must be longer than zero",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            FlextError::operation(
                "MetricsBridge::spawn needs a tokio runtime: call it from inside one",
            )
        })?;
        let handle = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.record();
            }
        });
        Ok(MetricsBridgeTask { handle })
    }
}

impl Memory {
    /// Describes `series`'s names, the first time the bridge records them.
    fn describe(&mut self, series: &Series<'_>) {
        if !self.described.insert(series.family.clone()) {
            return;
        }
        let help = series.help.to_owned();
        let family = series.family.clone();
        match series.kind {
            Kind::Counter => metrics::describe_counter!(family, help),
            Kind::Gauge => metrics::describe_gauge!(family, help),
            Kind::Summary => {
                metrics::describe_gauge!(
                    format!("{family}_sum"),
                    Unit::Seconds,
                    format!("{help} (total time)")
                );
                metrics::describe_counter!(
                    format!("{family}_count"),
                    format!("{help} (calls measured)")
                );
                metrics::describe_gauge!(family, Unit::Seconds, help);
            }
        }
    }
}

impl Default for MetricsBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MetricsBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsBridge")
            .field("registries", &self.registries.len())
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

/// A [`MetricsBridge`] recording on an interval: returned by [`MetricsBridge::spawn`]. It
/// stops when dropped.
#[derive(Debug)]
pub struct MetricsBridgeTask {
    handle: JoinHandle<()>,
}

impl MetricsBridgeTask {
    /// Stops recording (as dropping it does).
    pub fn abort(self) {
        self.handle.abort();
    }

    /// Whether the task has ended (it ends only when aborted or its runtime shuts down).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

impl Drop for MetricsBridgeTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
