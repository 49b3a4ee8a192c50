//! The `flext.dispatch` span's fields: kind, message type, handler, and the message,
//! correlation and causation ids the handler sees; nested dispatches nest their spans.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use flext_cqrs::{CommandBus, EventBus, TimeoutMiddleware, current_metadata};
use flext_protocols::{Command, Event};
use flext_types::{FlextResult, MessageMetadata};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::NoSubscriber;
use tracing::{Dispatch, Event as TraceEvent, Metadata, Subscriber};

/// One span as the subscriber saw it.
#[derive(Debug, Clone, Default)]
struct SeenSpan {
    name: String,
    fields: BTreeMap<String, String>,
    parent: Option<u64>,
}

/// Records every span with its fields and its parent (explicit, or the span entered when
/// it was made). For one-thread tests: the stack of entered spans is one list.
#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Mutex<BTreeMap<u64, SeenSpan>>,
    entered: Mutex<Vec<u64>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let parent = match span.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if span.is_contextual() => self.entered.lock().unwrap().last().copied(),
            None => None,
        };
        let mut seen = SeenSpan {
            name: span.metadata().name().to_owned(),
            parent,
            ..SeenSpan::default()
        };
        span.record(&mut Fields(&mut seen.fields));
        self.spans.lock().unwrap().insert(id, seen);
        Id::from_u64(id)
    }

    fn record(&self, id: &Id, values: &Record<'_>) {
        if let Some(seen) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &TraceEvent<'_>) {}

    fn enter(&self, id: &Id) {
        self.entered.lock().unwrap().push(id.into_u64());
    }

    fn exit(&self, id: &Id) {
        let mut entered = self.entered.lock().unwrap();
        if let Some(at) = entered.iter().rposition(|e| *e == id.into_u64()) {
            entered.remove(at);
        }
    }
}

impl Recorder {
    /// The `flext.dispatch` spans, by id.
    fn dispatches(&self) -> BTreeMap<u64, SeenSpan> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.name == "flext.dispatch")
            .map(|(id, s)| (*id, s.clone()))
            .collect()
    }

    /// The nearest `flext.dispatch` span above `id`.
    fn dispatch_above(&self, id: u64) -> Option<u64> {
        let spans = self.spans.lock().unwrap();
        let mut at = spans.get(&id)?.parent;
        while let Some(parent) = at {
            let span = spans.get(&parent)?;
            if span.name == "flext.dispatch" {
                return Some(parent);
            }
            at = span.parent;
        }
        None
    }
}

/// Runs `f` with a [`Recorder`] as the thread's default subscriber.
async fn recorded<F: Future<Output = ()>>(f: F) -> Arc<Recorder> {
    // With a single live dispatcher, tracing caches a callsite's interest from whichever
    // thread hits it first; a second dispatcher kept alive makes it ask every subscriber.
    static KEEP_ALIVE: OnceLock<Dispatch> = OnceLock::new();
    KEEP_ALIVE.get_or_init(|| Dispatch::new(NoSubscriber::default()));
    let recorder = Arc::new(Recorder::default());
    let _default = tracing::subscriber::set_default(recorder.clone());
    f.await;
    recorder
}

struct Ship;

impl Command for Ship {
    type Output = MessageMetadata;
}

/// What the handler saw: its current metadata.
async fn seen(_: Ship) -> FlextResult<MessageMetadata> {
    Ok(current_metadata().expect("a handler has its message's metadata"))
}

fn assert_ids(span: &SeenSpan, metadata: &MessageMetadata) {
    assert_eq!(span.fields["message_id"], metadata.message_id.to_string());
    assert_eq!(
        span.fields["correlation_id"],
        metadata.correlation_id.to_string()
    );
    assert_eq!(
        span.fields.get("causation_id"),
        metadata.causation_id.map(|c| c.to_string()).as_ref()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_span_carries_the_ids_the_handler_sees_without_metadata_from_the_sender() {
    let mut bus = CommandBus::new();
    bus.register_fn(seen).unwrap();
    let mut handled = None;
    let recorder = recorded(async {
        handled = Some(bus.send(Ship).await.unwrap());
    })
    .await;
    let handled = handled.unwrap();
    let spans = recorder.dispatches();
    assert_eq!(spans.len(), 1);
    let span = spans.values().next().unwrap();
    assert_eq!(span.fields["kind"], "command");
    assert!(span.fields["message_type"].ends_with("Ship"), "{span:?}");
    assert!(!span.fields["handler"].is_empty(), "{span:?}");
    assert_ids(span, &handled);
    assert_eq!(handled.causation_id, None, "a new conversation");
    assert_eq!(handled.correlation_id, handled.message_id);
}

#[tokio::test(flavor = "current_thread")]
async fn the_span_carries_the_senders_ids_on_both_paths() {
    let mut direct = CommandBus::new();
    direct.register_fn(seen).unwrap();
    let mut layered = CommandBus::new();
    layered.register_fn(seen).unwrap();
    layered.add_middleware(TimeoutMiddleware::new(Duration::from_secs(5)));
    let parent = MessageMetadata::new();
    let sent = parent.caused_by();
    let mut handled = Vec::new();
    let recorder = recorded(async {
        handled.push(direct.send_with(Ship, sent.clone()).await.unwrap());
        handled.push(layered.send_with(Ship, sent.clone()).await.unwrap());
        handled.push(layered.send(Ship).await.unwrap());
    })
    .await;
    assert_eq!(handled[0], sent);
    assert_eq!(handled[1], sent);
    let spans: Vec<SeenSpan> = recorder.dispatches().into_values().collect();
    assert_eq!(spans.len(), 3);
    for (span, metadata) in spans.iter().zip(&handled) {
        assert_ids(span, metadata);
    }
    assert_eq!(
        spans[0].fields["causation_id"],
        parent.message_id.to_string()
    );
}

struct Order;

impl Command for Order {
    type Output = (MessageMetadata, MessageMetadata);
}

struct Ordered;

impl Event for Ordered {
    fn event_name(&self) -> &str {
        "Ordered"
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_dispatch_from_a_handler_nests_under_its_span_and_continues_its_conversation() {
    let mut shipping = CommandBus::new();
    shipping.register_fn(seen).unwrap();
    let shipping = Arc::new(shipping);
    let events = Arc::new(EventBus::new());
    let published = Arc::new(Mutex::new(None));
    events.subscribe_fn("Ordered", {
        let published = published.clone();
        move |_: Arc<Ordered>| {
            let published = published.clone();
            async move {
                *published.lock().unwrap() = current_metadata();
                Ok(())
            }
        }
    });
    let mut orders = CommandBus::new();
    orders
        .register_fn({
            let shipping = shipping.clone();
            let events = events.clone();
            move |_: Order| {
                let shipping = shipping.clone();
                let events = events.clone();
                async move {
                    let own = current_metadata().unwrap();
                    let shipped = shipping.send(Ship).await?;
                    assert_eq!(events.publish(Ordered).await.delivered, 1);
                    Ok((own, shipped))
                }
            }
        })
        .unwrap();
    let mut outcome = None;
    let recorder = recorded(async {
        outcome = Some(orders.send(Order).await.unwrap());
    })
    .await;
    let (order, ship) = outcome.unwrap();
    let event = published.lock().unwrap().clone().unwrap();

    let spans = recorder.dispatches();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let by_kind = |kind: &str, type_suffix: &str| {
        spans
            .iter()
            .find(|(_, s)| {
                s.fields["kind"] == kind && s.fields["message_type"].ends_with(type_suffix)
            })
            .map(|(id, s)| (*id, s.clone()))
            .unwrap_or_else(|| panic!("no {kind} span of {type_suffix}: {spans:#?}"))
    };
    let (order_id, order_span) = by_kind("command", "Order");
    let (ship_id, ship_span) = by_kind("command", "Ship");
    let (event_id, event_span) = by_kind("event", "Ordered");
    assert_ids(&order_span, &order);
    assert_ids(&ship_span, &ship);
    assert_ids(&event_span, &event);
    assert_eq!(recorder.dispatch_above(order_id), None);
    assert_eq!(recorder.dispatch_above(ship_id), Some(order_id));
    assert_eq!(recorder.dispatch_above(event_id), Some(order_id));
    for child in [&ship, &event] {
        assert_eq!(child.causation_id, Some(order.message_id));
        assert_eq!(child.correlation_id, order.correlation_id);
        assert_ne!(child.message_id, order.message_id);
    }
}
