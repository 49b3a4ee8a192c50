//! [`Admin`]: what the admin surface shows, and the views it builds for each endpoint.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flext_management::{HandlerManager, HandlerRegistry, Health, HealthReport};
use flext_patterns::{BreakerState, CircuitBreaker, StateTransition};
use flext_protocols::MetricsSource;
use flext_types::{FlextError, FlextResult, LatencySummary, MetricSet, MetricValue};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::broadcast::{self, error::TryRecvError};

use crate::history::{ALL, History, Point, Totals};
use crate::probe::{ProjectionProbe, ProjectionView};

/// How long the dashboard's charts reach back by default.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(10 * 60);
/// How often handlers are sampled for the charts by default.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a projection probe may take before it counts as failed, by default.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Transitions kept per breaker.
const TRANSITIONS_KEPT: usize = 20;

/// The admin surface of a service: which handlers, metrics sources, breakers and
/// projections it shows, and who may see them. Build it, then mount
/// [`router`](Admin::router) in an axum app or [`serve`](Admin::serve) it alone.
///
/// Cheap to clone: clones share everything, the charts' history included.
///
/// ```
/// use std::sync::Arc;
/// use flext_admin::Admin;
/// use flext_cqrs::CommandBus;
/// use flext_management::HandlerManager;
///
/// let manager = Arc::new(HandlerManager::new());
/// let bus = CommandBus::new();
/// let admin = Admin::new()
///     .with_manager(manager)
///     .with_source(Arc::new(bus))
///     .with_token("s3cret")
///     .expect("a valid token");
/// let app = axum::Router::new().nest("/admin", admin.router());
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct Admin {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// What the surface shows and how: what the builder methods set.
    pub(crate) settings: Settings,
    /// Each breaker of the settings with the transitions seen of it.
    breakers: Vec<Breaker>,
    history: Mutex<Sampled>,
    /// Whether a sampler task runs.
    pub(crate) sampling: AtomicBool,
}

/// What an [`Admin`] is built from; each builder method changes a copy and builds anew.
#[derive(Clone)]
pub(crate) struct Settings {
    manager: Arc<HandlerManager>,
    sources: Vec<Arc<dyn MetricsSource>>,
    breakers: Vec<Arc<CircuitBreaker>>,
    projections: Vec<Arc<dyn ProjectionProbe>>,
    pub(crate) token: Option<String>,
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) sample_every: Duration,
    history_window: Duration,
    probe_timeout: Duration,
    degraded_ok: bool,
}

struct Sampled {
    history: History,
    last: Option<tokio::time::Instant>,
}

struct Breaker {
    breaker: Arc<CircuitBreaker>,
    seen: Mutex<Seen>,
}

struct Seen {
    receiver: broadcast::Receiver<StateTransition>,
    recent: VecDeque<TransitionView>,
    total: u64,
}

/// One state change of a breaker, as `GET /breakers` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct TransitionView {
    from: BreakerState,
    to: BreakerState,
    /// When the admin surface saw it (within a sample interval of when it happened).
    #[serde(with = "time::serde::rfc3339")]
    seen_at: OffsetDateTime,
}

impl Admin {
    /// An admin surface showing nothing yet: an empty handler registry, no sources, no
    /// breakers, no projections, no token.
    pub fn new() -> Self {
        Self::build(Settings::default())
    }

    fn build(settings: Settings) -> Self {
        let history = History::new(settings.history_window, settings.sample_every);
        Self {
            inner: Arc::new(Inner {
                breakers: settings
                    .breakers
                    .iter()
                    .cloned()
                    .map(Breaker::new)
                    .collect(),
                history: Mutex::new(Sampled {
                    history,
                    last: None,
                }),
                sampling: AtomicBool::new(false),
                settings,
            }),
        }
    }

    /// A new admin surface of these settings changed by `change` (its history and the
    /// transitions it saw start afresh).
    fn with(self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.inner.settings.clone();
        change(&mut settings);
        Self::build(settings)
    }

    /// Shows the handlers of `manager`: their health report (`GET /health`), listing and
    /// metrics (`GET /handlers`, `GET /metrics`) and charts.
    #[must_use]
    pub fn with_manager(self, manager: Arc<HandlerManager>) -> Self {
        self.with(|settings| settings.manager = manager)
    }

    /// Shows the handlers of `registry`, through a [`HandlerManager`] over it (whose
    /// health report counts the calls made through that manager; handlers called
    /// elsewhere show their own metrics in `GET /handlers`).
    #[must_use]
    pub fn with_registry(self, registry: Arc<HandlerRegistry>) -> Self {
        self.with_manager(Arc::new(HandlerManager::with_registry(registry)))
    }

    /// Adds a metrics source (a bus, a NATS relay or consumer, a projection runner…) to
    /// `GET /metrics` and to the dashboard's table of sources.
    #[must_use]
    pub fn with_source(self, source: Arc<dyn MetricsSource>) -> Self {
        self.with(|settings| settings.sources.push(source))
    }

    /// Shows `breaker` in `GET /breakers` (state, rates, transitions), `GET /metrics` and
    /// the health report (an open breaker makes it `degraded`).
    #[must_use]
    pub fn with_breaker(self, breaker: Arc<CircuitBreaker>) -> Self {
        self.with(|settings| settings.breakers.push(breaker))
    }

    /// Shows the projection `probe` asks for in `GET /projections` and the health report.
    #[must_use]
    pub fn with_projection(self, probe: Arc<dyn ProjectionProbe>) -> Self {
        self.with(|settings| settings.projections.push(probe))
    }

    /// Requires `Authorization: Bearer {token}` on every endpoint but the dashboard's page,
    /// which holds no data and passes the token its address carries
    /// (`/#token={token}`) to the requests it makes. A token that is empty or holds
    /// anything but visible ASCII is an `INVALID_ARGUMENT`.
    pub fn with_token(self, token: impl Into<String>) -> FlextResult<Self> {
        let token = token.into();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FlextError::invalid_argument(
                "Invalid admin token: it must be non-empty visible ASCII (no spaces)",
            ));
        }
        Ok(self.with(|settings| settings.token = Some(token)))
    }

    /// Without a token, answers requests addressed to `hosts` too, beside IP addresses and
    /// `localhost` (the only ones by default, so that a web page elsewhere cannot read the
    /// surface by rebinding its own name to this machine's address). A name that is empty
    /// or holds a space, a slash or a colon is an `INVALID_ARGUMENT`.
    pub fn with_allowed_hosts<I, S>(self, hosts: I) -> FlextResult<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let hosts: Vec<String> = hosts.into_iter().map(Into::into).collect();
        if let Some(bad) = hosts.iter().find(|h| {
            h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/' || c == ':')
        }) {
            return Err(FlextError::invalid_argument(format!(
                "Invalid admin host: {bad:?}; give a host name without port or path"
            )));
        }
        Ok(self.with(|settings| settings.allowed_hosts.extend(hosts)))
    }

    /// Keeps `window` of history for the charts, sampled every `every` (defaults: 10
    /// minutes, every second). A zero interval, or a window shorter than the interval, is
    /// an `INVALID_ARGUMENT`.
    pub fn with_history(self, window: Duration, every: Duration) -> FlextResult<Self> {
        if every.is_zero() || window < every {
            return Err(FlextError::invalid_argument(format!(
                "Invalid admin history: a window of {window:?} sampled every {every:?}; the \
                 interval must be positive and at most the window"
            )));
        }
        Ok(self.with(|settings| {
            settings.history_window = window;
            settings.sample_every = every;
        }))
    }

    /// Bounds each projection probe's answer by `limit` (default 2 s): a store that does
    /// not answer in time shows as that projection's `TIMEOUT` and makes the health
    /// report unhealthy, instead of holding up `GET /health` and `GET /metrics`. A zero
    /// limit is an `INVALID_ARGUMENT`.
    pub fn with_probe_timeout(self, limit: Duration) -> FlextResult<Self> {
        if limit.is_zero() {
            return Err(FlextError::invalid_argument(
                "Invalid admin probe timeout: it must be positive",
            ));
        }
        Ok(self.with(|settings| settings.probe_timeout = limit))
    }

    /// Answers `GET /health` with 200 when the service is `degraded` (a breaker open, a
    /// projection with dead letters) — for load balancers that should keep sending
    /// traffic to a service whose dependency is down. By default only `healthy` is 200.
    #[must_use]
    pub fn with_degraded_ok(self) -> Self {
        self.with(|settings| settings.degraded_ok = true)
    }

    /// The handler manager whose handlers are shown.
    pub fn manager(&self) -> &Arc<HandlerManager> {
        &self.inner.settings.manager
    }

    /// Takes a sample for the charts if at least half the interval has passed since the
    /// last one. The router's sampler task calls it every interval; where no task runs
    /// (the router was made outside a runtime), `GET /history` calls it, so the charts
    /// fill anyway, over intervals as long as the requests are apart.
    pub fn sample(&self) {
        let now = tokio::time::Instant::now();
        let mut sampled = self
            .inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if sampled.last.is_some_and(|last| {
            now.duration_since(last) < self.inner.settings.sample_every.mul_f64(0.5)
        }) {
            return;
        }
        sampled.last = Some(now);
        let totals = self.totals();
        sampled.history.record(unix_millis(), totals);
        drop(sampled);
        for breaker in &self.inner.breakers {
            breaker.drain();
        }
    }

    fn totals(&self) -> BTreeMap<String, Totals> {
        let registry = self.inner.settings.manager.registry();
        registry
            .list_handlers()
            .into_iter()
            .filter_map(|info| {
                let handler = registry.handler(&info.name).ok()?;
                let recorder = handler.core().recorder();
                // Each count read once: failures never exceed requests.
                let failures = recorder.failures();
                let totals = Totals {
                    requests: recorder.successes() + failures,
                    failures,
                    latency: recorder.latency_snapshot(),
                };
                Some((info.name, totals))
            })
            .collect()
    }

    /// `GET /health`: the manager's health report (each handler judged on its calls
    /// through the manager and its own metrics, so calls through a bus count), the
    /// breakers' states and the projections' progress, and a status: `healthy`,
    /// `degraded` (a breaker open or forced open, a projection with dead letters) or
    /// `unhealthy` (a handler whose calls all failed, a projection whose progress cannot be
    /// read in time), with the `problems` that make it so. The second value is the HTTP
    /// status: 200 when healthy (and when degraded, with [`Admin::with_degraded_ok`]),
    /// 503 otherwise.
    pub(crate) async fn health(&self) -> (Value, u16) {
        let report: HealthReport = self.inner.settings.manager.health_report();
        let mut problems = Vec::new();
        let mut unhealthy = false;
        for (name, handler) in &report.handlers {
            if handler.health == Health::Unhealthy {
                unhealthy = true;
                problems.push(format!("handler '{name}' has failed and never succeeded"));
            }
        }
        let mut degraded = false;
        let mut breakers = Vec::new();
        for breaker in &self.inner.breakers {
            let state = breaker.breaker.state();
            if matches!(state, BreakerState::Open | BreakerState::ForcedOpen) {
                degraded = true;
                problems.push(format!("breaker '{}' is {state}", breaker.breaker.name()));
            }
            breakers.push(json!({ "name": breaker.breaker.name(), "state": state }));
        }
        let mut projections = Vec::new();
        for (probe, status) in self.projection_statuses().await {
            match status {
                Ok(view) => {
                    if view.dead_letters > 0 {
                        degraded = true;
                        problems.push(format!(
                            "projection '{}' has {} dead letter(s)",
                            view.name, view.dead_letters
                        ));
                    }
                    projections.push(json!({
                        "name": view.name, "lag": view.lag, "dead_letters": view.dead_letters,
                    }));
                }
                Err(error) => {
                    unhealthy = true;
                    problems.push(format!(
                        "projection '{}' cannot report its progress: {error}",
                        probe.name()
                    ));
                    projections.push(json!({ "name": probe.name(), "error": error }));
                }
            }
        }
        let (status, code) = if unhealthy {
            ("unhealthy", 503)
        } else if degraded {
            (
                "degraded",
                if self.inner.settings.degraded_ok {
                    200
                } else {
                    503
                },
            )
        } else {
            ("healthy", 200)
        };
        let mut body = json!({
            "status": status,
            "problems": problems,
            "breakers": breakers,
            "projections": projections,
        });
        if let (Value::Object(body), Ok(Value::Object(report))) =
            (&mut body, serde_json::to_value(&report))
        {
            body.extend(report);
        }
        (body, code)
    }

    /// Every probe's answer, asked all at once, each bounded by the probe timeout: a store
    /// that does not answer is that projection's `TIMEOUT`, not a hung endpoint.
    async fn projection_statuses(
        &self,
    ) -> Vec<(&Arc<dyn ProjectionProbe>, FlextResult<ProjectionView>)> {
        let limit = self.inner.settings.probe_timeout;
        let asks = self
            .inner
            .settings
            .projections
            .iter()
            .map(|probe| async move {
                let status = match tokio::time::timeout(limit, probe.status()).await {
                    Ok(status) => status,
                    Err(_) => Err(FlextError::timeout(format!(
                        "Projection '{}' did not report its progress within {limit:?}",
                        probe.name()
                    ))),
                };
                (probe, status)
            });
        futures_util::future::join_all(asks).await
    }

    /// `GET /handlers`: every registered handler with its metrics, and the registry's.
    pub(crate) fn handlers(&self) -> Value {
        let registry = self.inner.settings.manager.registry();
        let handlers: Vec<Value> = registry
            .list_handlers()
            .into_iter()
            .filter_map(|info| {
                let handler = registry.handler(&info.name).ok()?;
                let metrics = handler.core().metrics();
                let finished = metrics.requests_processed;
                let error_rate = if finished == 0 {
                    0.0
                } else {
                    metrics.failed_requests as f64 * 100.0 / finished as f64
                };
                Some(json!({
                    "name": info.name,
                    "kind": info.kind.as_str(),
                    "state": info.state.as_str(),
                    "lifecycle": info.lifecycle,
                    "registered_at": rfc3339(info.registered_at),
                    "requests_processed": finished,
                    "successful_requests": metrics.successful_requests,
                    "failed_requests": metrics.failed_requests,
                    "error_rate": error_rate,
                    "in_flight": metrics.in_flight,
                    "latency": latency_ms(&metrics.latency),
                }))
            })
            .collect();
        json!({ "handlers": handlers, "registry": registry.metrics() })
    }

    /// `GET /breakers`.
    pub(crate) fn breakers(&self) -> Value {
        let breakers: Vec<Value> = self
            .inner
            .breakers
            .iter()
            .map(|breaker| {
                breaker.drain();
                let m = breaker.breaker.metrics();
                let seen = breaker.seen.lock().unwrap_or_else(PoisonError::into_inner);
                json!({
                    "name": m.name,
                    "state": m.state,
                    "failure_rate": m.failure_rate,
                    "slow_call_rate": m.slow_call_rate,
                    "buffered_calls": m.buffered_calls,
                    "successful_calls": m.successful_calls,
                    "failed_calls": m.failed_calls,
                    "slow_calls": m.slow_calls,
                    "not_permitted_calls": m.not_permitted_calls,
                    "ignored_calls": m.ignored_calls,
                    "transitions": seen.total,
                    "recent_transitions": seen.recent.iter().rev().collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "breakers": breakers })
    }

    /// `GET /projections`.
    pub(crate) async fn projections(&self) -> Value {
        let projections: Vec<Value> = self
            .projection_statuses()
            .await
            .into_iter()
            .map(|(probe, status)| match status {
                Ok(view) => json!(view),
                Err(error) => json!({
                    "name": probe.name(),
                    "error": error,
                }),
            })
            .collect();
        json!({ "projections": projections })
    }

    /// `GET /history?since=…`.
    pub(crate) fn history(&self, since: i64) -> Value {
        // Without a sampler task, requests sample; with one, they would make the
        // intervals uneven.
        if !self
            .inner
            .sampling
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.sample();
        }
        let sampled = self
            .inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (all, handlers): (Vec<Point>, BTreeMap<String, Vec<Point>>) =
            sampled.history.since(since);
        json!({
            "now_ms": unix_millis(),
            "interval_ms": self.inner.settings.sample_every.as_millis() as u64,
            "window_ms": self.inner.settings.history_window.as_millis() as u64,
            "all": all,
            "handlers": handlers,
            "all_key": ALL,
        })
    }

    /// Every metric set: the registry's, each handler's, each source's, each breaker's,
    /// each projection's (with its position, head and lag as gauges).
    pub(crate) async fn metric_sets(&self) -> Vec<MetricSet> {
        let mut sets = self.inner.settings.manager.metric_sets();
        sets.extend(
            self.inner
                .settings
                .sources
                .iter()
                .map(|source| source.metric_set()),
        );
        sets.extend(
            self.inner
                .breakers
                .iter()
                .map(|breaker| breaker.breaker.metric_set()),
        );
        for (probe, status) in self.projection_statuses().await {
            let mut set = probe
                .metric_set()
                .unwrap_or_else(|| MetricSet::new(probe.name()));
            set.source = probe.name().to_owned();
            let up = status.is_ok();
            if let Ok(view) = status {
                let gauge = |v: u64| MetricValue::Gauge(v as f64);
                for (name, help, value) in [
                    (
                        "projection_position",
                        "The last position finished.",
                        view.position,
                    ),
                    ("projection_head", "The store's head position.", view.head),
                    (
                        "projection_lag",
                        "Events between the position and the head.",
                        view.lag,
                    ),
                    (
                        "projection_dead_letters",
                        "Events given up on, and those parked behind them.",
                        view.dead_letters as u64,
                    ),
                ] {
                    // A runner's own set may hold some already.
                    if set.get(name).is_none() {
                        set.push(name, help, gauge(value));
                    }
                }
            }
            set.push(
                "projection_up",
                "1 when its progress can be read.",
                MetricValue::Gauge(if up { 1.0 } else { 0.0 }),
            );
            sets.push(set);
        }
        sets
    }

    /// The sources' metric sets as the dashboard's table shows them: counters and gauges.
    pub(crate) fn sources(&self) -> Value {
        let sources: Vec<Value> = self
            .inner
            .settings.sources
            .iter()
            .map(|source| {
                let set = source.metric_set();
                let samples: Vec<Value> = set
                    .samples
                    .iter()
                    .filter_map(|sample| {
                        let (kind, value) = match &sample.value {
                            MetricValue::Counter(n) => ("counter", json!(n)),
                            MetricValue::Gauge(g) => ("gauge", json!(g)),
                            MetricValue::Latency(_) => return None,
                        };
                        let labels: BTreeMap<&str, &str> = sample
                            .labels
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                        Some(json!({"name": sample.name, "labels": labels, "kind": kind, "value": value}))
                    })
                    .collect();
                json!({ "source": set.source, "samples": samples })
            })
            .collect();
        json!({ "sources": sources })
    }
}

impl Default for Admin {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("sources", &self.inner.settings.sources.len())
            .field("breakers", &self.inner.breakers.len())
            .field("projections", &self.inner.settings.projections.len())
            .field("token", &self.inner.settings.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            manager: Arc::new(HandlerManager::new()),
            sources: Vec::new(),
            breakers: Vec::new(),
            projections: Vec::new(),
            token: None,
            allowed_hosts: Vec::new(),
            sample_every: DEFAULT_SAMPLE_INTERVAL,
            history_window: DEFAULT_HISTORY,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            degraded_ok: false,
        }
    }
}

impl Breaker {
    fn new(breaker: Arc<CircuitBreaker>) -> Self {
        let receiver = breaker.subscribe();
        Self {
            breaker,
            seen: Mutex::new(Seen {
                receiver,
                recent: VecDeque::new(),
                total: 0,
            }),
        }
    }

    /// Moves the transitions sent since the last drain into the recent list.
    fn drain(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match seen.receiver.try_recv() {
                Ok(transition) => {
                    seen.total += 1;
                    if seen.recent.len() == TRANSITIONS_KEPT {
                        seen.recent.pop_front();
                    }
                    seen.recent.push_back(TransitionView {
                        from: transition.from,
                        to: transition.to,
                        seen_at: OffsetDateTime::now_utc(),
                    });
                }
                Err(TryRecvError::Lagged(missed)) => seen.total += missed,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }
}

fn unix_millis() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn latency_ms(latency: &LatencySummary) -> Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    json!({
        "count": latency.count,
        "mean_ms": ms(latency.mean),
        "p50_ms": ms(latency.p50),
        "p95_ms": ms(latency.p95),
        "p99_ms": ms(latency.p99),
        "max_ms": ms(latency.max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_sample_is_taken_once_half_an_interval_has_passed() {
        let admin = Admin::new()
            .with_history(Duration::from_secs(60), Duration::from_secs(1))
            .expect("settings");
        let points = |admin: &Admin| {
            let sampled = admin
                .inner
                .history
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            sampled.history.since(-1).0.len()
        };
        admin.sample();
        admin.sample();
        assert_eq!(points(&admin), 1, "a second sample at once is skipped");
        tokio::time::advance(Duration::from_millis(499)).await;
        admin.sample();
        assert_eq!(points(&admin), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        admin.sample();
        assert_eq!(points(&admin), 2, "half an interval later it is taken");
    }

    #[test]
    fn transitions_are_all_counted_and_the_last_twenty_kept() {
        let breaker = Arc::new(
            CircuitBreaker::new("b", flext_patterns::CircuitBreakerConfig::default())
                .expect("a breaker"),
        );
        let admin = Admin::new().with_breaker(breaker.clone());
        // 30 transitions, drained at once: all counted, the last 20 kept.
        for _ in 0..15 {
            breaker.transition_to_open().expect("opens");
            breaker.transition_to_closed().expect("closes");
        }
        let view = admin.breakers();
        assert_eq!(view["breakers"][0]["transitions"].as_u64(), Some(30));
        let recent = view["breakers"][0]["recent_transitions"]
            .as_array()
            .expect("a list");
        assert_eq!(recent.len(), TRANSITIONS_KEPT);
        assert_eq!(
            (recent[0]["from"].as_str(), recent[0]["to"].as_str()),
            (Some("OPEN"), Some("CLOSED"))
        );
        // More than the breaker's channel holds between two drains: the missed ones count.
        for _ in 0..50 {
            breaker.transition_to_open().expect("opens");
            breaker.transition_to_closed().expect("closes");
        }
        assert_eq!(
            admin.breakers()["breakers"][0]["transitions"].as_u64(),
            Some(130)
        );
    }

    #[test]
    fn a_sampler_whose_runtime_ends_hands_sampling_back_to_requests() {
        let admin = Admin::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let _router = admin.router();
            tokio::task::yield_now().await;
        });
        assert!(
            admin
                .inner
                .sampling
                .load(std::sync::atomic::Ordering::SeqCst)
        );
        drop(runtime);
        assert!(
            !admin
                .inner
                .sampling
                .load(std::sync::atomic::Ordering::SeqCst)
        );
        // Requests sample now: the history fills without a task.
        let points = admin.history(0)["all"].as_array().map_or(0, Vec::len);
        assert_eq!(points, 1);
        let now = unix_millis();
        let t = admin.history(0)["all"][0]["t"].as_i64().expect("a time");
        assert!((now - t).abs() < 60_000, "{t} is not a time near {now}");
    }

    #[test]
    fn settings_keep_what_they_are_given() {
        let manager = Arc::new(HandlerManager::new());
        let admin = Admin::new().with_manager(manager.clone());
        assert!(Arc::ptr_eq(admin.manager(), &manager));
        assert_eq!(DEFAULT_HISTORY, Duration::from_secs(600));
        // A window as long as the interval keeps one point.
        let one = Admin::new()
            .with_history(Duration::from_secs(1), Duration::from_secs(1))
            .expect("a window of one interval");
        assert_eq!(one.inner.settings.history_window, Duration::from_secs(1));
        // Settings survive later changes, also of a shared (cloned) admin.
        let shared = one.clone();
        let token = shared.with_token("t").expect("a token").with_degraded_ok();
        assert_eq!(token.inner.settings.history_window, Duration::from_secs(1));
        assert!(
            token.inner.settings.degraded_ok && token.inner.settings.token.as_deref() == Some("t")
        );
        assert_eq!(token.inner.settings.probe_timeout, DEFAULT_PROBE_TIMEOUT);
        assert!(
            one.inner.settings.token.is_none(),
            "the clone it came from keeps no token"
        );
    }
}
