//! MetricsBridge: a handler, a command bus, a circuit breaker and a projection runner
//! recorded through the `metrics` facade under the names of the Prometheus exposition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::{Backoff, CommandBus, InMemoryEventStore, ProjectionConfig, ProjectionRunner};
use flext_impl::BasicHandler;
use flext_management::{HandlerRegistry, MetricsBridge, to_prometheus};
use flext_patterns::{CircuitBreaker, CircuitBreakerConfig, SlidingWindow};
use flext_protocols::{Command, EventStore, MetricsSource, Projection};
use flext_types::{
    ExpectedVersion, FlextError, FlextResult, JsonPayload, MetricSet, NewEvent, StoredEvent,
};
use metrics::Unit;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;

/// One recorded series: its kind, value, unit and description.
#[derive(Debug, Clone, PartialEq)]
struct Recorded {
    kind: MetricKind,
    value: f64,
    unit: Option<Unit>,
    help: Option<String>,
}

/// The snapshot by series, each written as the text exposition writes it:
/// `name{label="value",…}`. Taking it sets the recorder's values to 0 (its own rule), so a
/// series not recorded since reads 0.
fn take(snapshotter: &Snapshotter) -> BTreeMap<String, Recorded> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, unit, help, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
                .collect();
            let series = format!("{}{{{}}}", key.key().name(), labels.join(","));
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(v) => v.into_inner(),
                DebugValue::Histogram(_) => panic!("the bridge records no histogram: {series}"),
            };
            let recorded = Recorded {
                kind: key.kind(),
                value,
                unit,
                help: help.map(|h| h.to_string()),
            };
            (series, recorded)
        })
        .collect()
}

fn value(snapshot: &BTreeMap<String, Recorded>, series: &str) -> f64 {
    snapshot
        .get(series)
        .unwrap_or_else(|| panic!("{series} not recorded; recorded: {:#?}", snapshot.keys()))
        .value
}

struct Deposit(u64);

impl Command for Deposit {
    type Output = u64;
}

/// A projection that fails on position 2.
struct Ledger;

#[async_trait]
impl Projection for Ledger {
    fn name(&self) -> &str {
        "ledger"
    }
    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        if event.position == 2 {
            return Err(FlextError::validation("position 2 cannot be projected"));
        }
        Ok(())
    }
    async fn reset(&self) -> FlextResult<()> {
        Ok(())
    }
}

async fn append(store: &InMemoryEventStore, stream: &str) {
    let event = NewEvent::new("Deposited", JsonPayload::encode(&1).unwrap());
    store
        .append(stream, ExpectedVersion::Any, vec![event])
        .await
        .unwrap();
}

struct Service {
    registry: Arc<HandlerRegistry>,
    bus: Arc<CommandBus>,
    breaker: CircuitBreaker,
    store: InMemoryEventStore,
    runner: Arc<ProjectionRunner>,
}

impl Service {
    fn new() -> Self {
        let registry = Arc::new(HandlerRegistry::new());
        registry
            .register(
                "doubler",
                BasicHandler::from_fn("doubler", |n: u32| std::future::ready(Ok(n * 2))),
            )
            .unwrap();
        let mut bus = CommandBus::new();
        bus.register_fn(|d: Deposit| async move {
            if d.0 == 0 {
                return Err(FlextError::validation("nothing to deposit"));
            }
            Ok(d.0)
        })
        .unwrap();
        let breaker = CircuitBreaker::new(
            "inventory",
            CircuitBreakerConfig::default()
                .with_sliding_window(SlidingWindow::CountBased(4))
                .with_minimum_number_of_calls(4),
        )
        .unwrap();
        let store = InMemoryEventStore::new();
        let runner = ProjectionRunner::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(Ledger),
        )
        .with_config(
            ProjectionConfig::default()
                .with_max_attempts(2)
                .with_backoff(Backoff::none()),
        );
        Self {
            registry,
            bus: Arc::new(bus),
            breaker,
            store,
            runner: Arc::new(runner),
        }
    }

    fn bridge(&self) -> MetricsBridge {
        MetricsBridge::new()
            .with_registry(self.registry.clone())
            .with_source(self.bus.clone())
            .with_source(Arc::new(self.breaker.clone()))
            .with_source(self.runner.clone())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_source_is_recorded_under_the_expositions_names_and_moves_on_the_next_pass() {
    let service = Service::new();
    for n in [1, 2] {
        service.registry.execute("doubler", json!(n)).await.unwrap();
    }
    service.bus.send(Deposit(5)).await.unwrap();
    service.bus.send(Deposit(7)).await.unwrap();
    service.bus.send(Deposit(0)).await.unwrap_err();
    service.breaker.call(async { Ok(()) }).await.unwrap();
    // Position 2, of account-2, fails: a dead letter; the other stream goes on.
    for stream in ["account-1", "account-2", "account-1"] {
        append(&service.store, stream).await;
    }
    service.runner.catch_up().await.unwrap();

    let bridge = service.bridge();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || bridge.record());
    let first = take(&snapshotter);

    // A handler of the registry, and the registry.
    let handled = "flext_requests_processed_total{source=\"doubler\"}";
    assert_eq!(value(&first, handled), 2.0);
    assert_eq!(first[handled].kind, MetricKind::Counter);
    assert_eq!(first[handled].help.as_deref(), Some("Finished calls."));
    assert_eq!(
        value(&first, "flext_latency_seconds_count{source=\"doubler\"}"),
        2.0
    );
    let median = &first["flext_latency_seconds{source=\"doubler\",quantile=\"0.5\"}"];
    assert_eq!(
        (median.kind, median.unit),
        (MetricKind::Gauge, Some(Unit::Seconds))
    );
    assert!(median.value >= 0.0);
    assert!(first.contains_key("flext_latency_seconds_sum{source=\"doubler\"}"));
    assert_eq!(
        value(&first, "flext_handlers{source=\"handler_registry\"}"),
        1.0
    );

    // The command bus, with its per-type labels.
    assert_eq!(
        value(
            &first,
            "flext_commands_processed_total{source=\"command_bus\"}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &first,
            "flext_failed_commands_total{source=\"command_bus\"}"
        ),
        1.0
    );
    let per_type = first
        .keys()
        .find(|k| k.starts_with("flext_processed_total{source=\"command_bus\",command=\""))
        .expect("per command type");
    assert_eq!(value(&first, per_type), 3.0);

    // The breaker.
    assert_eq!(
        value(&first, "flext_state{source=\"inventory\",state=\"CLOSED\"}"),
        1.0
    );
    assert_eq!(
        value(&first, "flext_successful_calls_total{source=\"inventory\"}"),
        1.0
    );

    // The projection runner.
    let ledger = |name: &str| format!("flext_projection_{name}{{source=\"ledger\"}}");
    assert_eq!(value(&first, &ledger("events_applied_total")), 2.0);
    assert_eq!(value(&first, &ledger("failures_total")), 2.0);
    assert_eq!(value(&first, &ledger("dead_lettered_total")), 1.0);
    assert_eq!(value(&first, &ledger("position")), 3.0);
    assert_eq!(value(&first, &ledger("dead_letters")), 1.0);

    // Every series is one of the text exposition's, with the same value for counters.
    let text = to_prometheus(&bridge.metric_sets());
    for (series, recorded) in &first {
        let line = text
            .lines()
            .find(|line| line.rsplit_once(' ').is_some_and(|(s, _)| s == series))
            .unwrap_or_else(|| panic!("{series} is not in the exposition:\n{text}"));
        if recorded.kind == MetricKind::Counter {
            let exposed: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
            assert_eq!(exposed, recorded.value, "{series}");
        }
    }

    // A second pass with the breaker still closed, then more traffic and a third pass.
    metrics::with_local_recorder(&recorder, || bridge.record());
    service.registry.execute("doubler", json!(3)).await.unwrap();
    service.bus.send(Deposit(1)).await.unwrap();
    // One success and three failures in a window of four: 75% failed, the breaker opens.
    for _ in 0..3 {
        let failed = service
            .breaker
            .call(async { Err::<(), _>(FlextError::timeout("no answer")) })
            .await;
        assert_eq!(failed.unwrap_err().code(), ErrorCode::Timeout);
    }
    let rejected = service.breaker.call(async { Ok(()) }).await;
    assert_eq!(rejected.unwrap_err().code(), ErrorCode::CircuitOpen);
    append(&service.store, "account-1").await;
    service.runner.catch_up().await.unwrap();
    metrics::with_local_recorder(&recorder, || bridge.record());
    let next = take(&snapshotter);
    assert_eq!(value(&next, handled), 3.0);
    assert_eq!(
        value(
            &next,
            "flext_commands_processed_total{source=\"command_bus\"}"
        ),
        4.0
    );
    assert_eq!(
        value(&next, "flext_state{source=\"inventory\",state=\"OPEN\"}"),
        1.0
    );
    assert_eq!(
        value(&next, "flext_state{source=\"inventory\",state=\"CLOSED\"}"),
        0.0,
        "a gauge series the source no longer yields is set to 0"
    );
    assert_eq!(
        value(&next, "flext_failed_calls_total{source=\"inventory\"}"),
        3.0
    );
    assert_eq!(
        value(
            &next,
            "flext_not_permitted_calls_total{source=\"inventory\"}"
        ),
        1.0
    );
    assert_eq!(value(&next, &ledger("events_applied_total")), 3.0);
    assert_eq!(value(&next, &ledger("position")), 4.0);
}

/// A source that panics.
struct Broken;

impl MetricsSource for Broken {
    fn metric_set(&self) -> MetricSet {
        panic!("no metrics today")
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_panicking_source_is_left_out_and_the_others_are_recorded() {
    let service = Service::new();
    let bridge = MetricsBridge::new()
        .with_source(Arc::new(Broken))
        .with_source(service.bus.clone());
    assert_eq!(bridge.metric_sets().len(), 1);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || bridge.record());
    let recorded = take(&snapshotter);
    assert_eq!(
        value(
            &recorded,
            "flext_commands_processed_total{source=\"command_bus\"}"
        ),
        0.0
    );
}

#[test]
fn spawn_refuses_a_zero_interval_and_a_missing_runtime() {
    let error = MetricsBridge::new().spawn(Duration::ZERO).unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(error.message().contains("interval"), "{error}");
    let error = MetricsBridge::new()
        .spawn(Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::OperationError);
    assert!(error.message().contains("tokio runtime"), "{error}");
}

#[test]
fn a_spawned_bridge_records_every_interval_until_dropped() {
    let service = Service::new();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let bus = service.bus.clone();
    let sent = "flext_commands_processed_total{source=\"command_bus\"}";
    // The runtime runs its tasks on this thread, inside `block_on`, so they see the
    // thread's local recorder.
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let task = service.bridge().spawn(Duration::from_secs(10)).unwrap();
            tokio::task::yield_now().await;
            assert_eq!(
                value(&take(&snapshotter), sent),
                0.0,
                "the first pass at once"
            );

            bus.send(Deposit(1)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(
                value(&take(&snapshotter), sent),
                0.0,
                "nothing between two passes"
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
            tokio::task::yield_now().await;
            assert_eq!(value(&take(&snapshotter), sent), 1.0);

            drop(task);
            bus.send(Deposit(1)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert_eq!(
                value(&take(&snapshotter), sent),
                0.0,
                "stopped when dropped"
            );
        });
    });
}
