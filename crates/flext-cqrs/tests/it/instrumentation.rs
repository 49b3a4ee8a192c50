//! Instrumentation: what each bus records with metrics and tracing on (the default) and off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use flext_constants::ErrorCode;
use flext_cqrs::{CommandBus, EventBus, Instrumentation, QueryBus};
use flext_impl::{BasicHandler, handler_fn};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::NoSubscriber;
use tracing::{Dispatch, Event as TraceEvent, Metadata, Subscriber};

use crate::{CreateUserCommand, GetUserQuery, UserCreated};

/// Counts the `flext.dispatch` and `flext.handle` spans opened while it is the default
/// subscriber.
#[derive(Default)]
struct SpanCounter {
    dispatch_spans: AtomicUsize,
    handle_spans: AtomicUsize,
}

impl Subscriber for SpanCounter {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let counter = match span.metadata().name() {
            "flext.dispatch" => &self.dispatch_spans,
            "flext.handle" => &self.handle_spans,
            _ => return Id::from_u64(1),
        };
        Id::from_u64(counter.fetch_add(1, Ordering::SeqCst) as u64 + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &TraceEvent<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn command_bus(instrumentation: Instrumentation) -> CommandBus {
    let mut bus = CommandBus::new().with_instrumentation(instrumentation);
    bus.register_fn(|cmd: CreateUserCommand| async move { Ok(cmd.name) })
        .unwrap();
    bus
}

/// Runs `f` with a [`SpanCounter`] as the default subscriber; the dispatch spans it
/// counted.
async fn spans_of<F: Future<Output = ()>>(f: F) -> usize {
    counted(f).await.dispatch_spans.load(Ordering::SeqCst)
}

async fn counted<F: Future<Output = ()>>(f: F) -> Arc<SpanCounter> {
    let counter = Arc::new(SpanCounter::default());
    // With a single live dispatcher, tracing caches a callsite's interest from the default
    // of whichever thread hits it first: another test's thread, without a subscriber, would
    // cache "never" for a span this one counts. A second dispatcher kept alive makes tracing
    // ask every live subscriber instead.
    static KEEP_ALIVE: OnceLock<Dispatch> = OnceLock::new();
    KEEP_ALIVE.get_or_init(|| Dispatch::new(NoSubscriber::default()));
    let _default = tracing::subscriber::set_default(counter.clone());
    f.await;
    counter
}

#[tokio::test(flavor = "current_thread")]
async fn a_subscriber_sees_the_dispatch_span_and_the_handler_span() {
    let mut bus = CommandBus::new();
    bus.register(BasicHandler::wrap(handler_fn(
        "create_user",
        |cmd: CreateUserCommand| async move { Ok(cmd.name) },
    )))
    .unwrap();
    let counter = counted(async {
        for _ in 0..3 {
            bus.send(CreateUserCommand::new("Alice", "a@x.io"))
                .await
                .unwrap();
        }
    })
    .await;
    assert_eq!(counter.dispatch_spans.load(Ordering::SeqCst), 3);
    assert_eq!(counter.handle_spans.load(Ordering::SeqCst), 3);
    // Without a subscriber the calls work the same.
    let name = bus.send(CreateUserCommand::new("Alice", "a@x.io")).await;
    assert_eq!(name.unwrap(), "Alice");
}

#[tokio::test(flavor = "current_thread")]
async fn the_default_is_full_instrumentation() {
    assert_eq!(Instrumentation::default(), Instrumentation::FULL);
    assert_eq!(CommandBus::new().instrumentation(), Instrumentation::FULL);
    assert_eq!(QueryBus::new().instrumentation(), Instrumentation::FULL);
    assert_eq!(EventBus::new().instrumentation(), Instrumentation::FULL);

    let bus = command_bus(Instrumentation::FULL);
    let spans = spans_of(async {
        bus.send(CreateUserCommand::new("Alice", "a@x.io"))
            .await
            .unwrap();
    })
    .await;
    assert_eq!(spans, 1);
    assert_eq!(bus.metrics().successful_commands, 1);
    assert_eq!(bus.metrics().commands["CreateUserCommand"].latency.count, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn without_instrumentation_a_command_bus_records_nothing_and_still_checks() {
    let bus = command_bus(Instrumentation::NONE);
    let spans = spans_of(async {
        let name = bus.send(CreateUserCommand::new("Alice", "a@x.io")).await;
        assert_eq!(name.unwrap(), "Alice");
        // Validation and routing work as before.
        let invalid = bus.send(CreateUserCommand::new("A", "a@x.io")).await;
        assert!(invalid.unwrap_err().is(ErrorCode::ValidationError));
    })
    .await;
    assert_eq!(spans, 0);
    let metrics = bus.metrics();
    assert_eq!(metrics.commands_processed, 0);
    assert_eq!(metrics.commands["CreateUserCommand"].processed, 0);
    assert_eq!(metrics.registered_handlers, 1);

    let empty = CommandBus::new().with_instrumentation(Instrumentation::NONE);
    let missing = empty.send(CreateUserCommand::new("Alice", "a@x.io")).await;
    assert!(missing.unwrap_err().is(ErrorCode::WiringError));
    assert_eq!(empty.metrics().failed_commands, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn metrics_and_tracing_are_switched_separately() {
    for metrics in [false, true] {
        for tracing in [false, true] {
            let bus = command_bus(
                Instrumentation::NONE
                    .with_metrics(metrics)
                    .with_tracing(tracing),
            );
            let spans = spans_of(async {
                bus.send(CreateUserCommand::new("Alice", "a@x.io"))
                    .await
                    .unwrap();
            })
            .await;
            assert_eq!(
                (spans, bus.metrics().commands_processed),
                (usize::from(tracing), u64::from(metrics)),
                "metrics {metrics}, tracing {tracing}"
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn without_instrumentation_queries_and_events_record_nothing() {
    let mut queries = QueryBus::new().with_instrumentation(Instrumentation::NONE);
    queries
        .register_fn(|q: GetUserQuery| async move { Ok(format!("name of {}", q.user_id)) })
        .unwrap();
    let events = EventBus::new().with_instrumentation(Instrumentation::NONE);
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    events.subscribe_fn("UserCreated", move |_: Arc<UserCreated>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });

    let spans = spans_of(async {
        let name = queries.execute(GetUserQuery {
            user_id: "u1".into(),
        });
        assert_eq!(name.await.unwrap(), "name of u1");
        let report = events
            .publish(UserCreated {
                user_id: "u1".into(),
            })
            .await;
        assert_eq!(report.delivered, 1);
    })
    .await;
    assert_eq!(spans, 0);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(queries.metrics().queries_processed, 0);
    assert_eq!(events.metrics().events_published, 0);
}
