//! Run with `cargo run --example tracing_otel`.
//!
//! Connected traces in OpenTelemetry from the buses' own spans: a `tracing` subscriber
//! with the `tracing-opentelemetry` layer sends every span to an OpenTelemetry tracer whose
//! exporter prints them on standard output (no collector, no network). An order handler
//! sends a second command and publishes an event; each dispatch opens a `flext.dispatch`
//! span with the message type, the handler, and the message, correlation and causation
//! ids, and the nested dispatches open theirs inside the order's, so all of them share one
//! trace id. Each handler prints the ids it sees and the trace it runs in; then the
//! exporter's spans follow (each printed as it ends). The shop is in
//! `examples/src/tracing_otel.rs`.
//!
//! With a real collector, swap `opentelemetry_stdout::SpanExporter` for an OTLP exporter;
//! nothing else changes.

use std::sync::Arc;

use flext_examples::tracing_otel::{PlaceOrder, Shop, Witness};
use flext_handlers::prelude::*;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> FlextResult<()> {
    // Spans are exported one by one as they end (a batch processor would suit a service).
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("flext-examples")));
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| FlextError::operation(format!("cannot install the subscriber: {e}")))?;

    let witness: Witness = Arc::new(|handler, metadata| {
        let trace_id = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .trace_id();
        let causation = metadata
            .causation_id
            .map_or_else(|| "-".to_owned(), |id| id.to_string());
        println!(
            "{handler}: message_id={} correlation_id={} causation_id={causation} trace_id={trace_id}",
            metadata.message_id, metadata.correlation_id
        );
    });
    let shop = Shop::new(witness)?;
    let receipt = shop
        .orders
        .send(PlaceOrder {
            order_id: "order-1".to_owned(),
            items: 3,
        })
        .await?;
    println!("{receipt}");

    provider
        .shutdown()
        .map_err(|e| FlextError::operation(format!("cannot flush the spans: {e}")))
}
