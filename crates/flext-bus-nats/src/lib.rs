//! The flext-handlers buses on NATS JetStream, for services that outgrow one process
//! (layer 45, adapter).
//!
//! - [`NatsRelay`]: the store's log is the outbox. Stored events are published to a
//!   JetStream stream (laid out by [`EventStreams`]) with their event id as the message id;
//!   the relay's checkpoint moves only past events the server acknowledged, so a crash
//!   loses nothing and a repeat is dropped (by the server inside its duplicate window, by
//!   the consumers after it).
//! - [`NatsConsumer`]: a durable pull consumer per subscriber group that applies each event
//!   to an [`EventSink`] once by its effects and in version order per stream, whatever
//!   JetStream repeats or reorders; failures are retried as a [`DeliveryPolicy`] says, then
//!   copied to a dead-letter stream; lag and counts are a `MetricsSource`.
//! - Remote commands and queries: [`NatsTransport`] carries a bus's remote routes
//!   (`CommandBus::register_remote`) as NATS requests; [`NatsWorker`] serves a worker's
//!   buses (`RemoteHandlers`) as a NATS service in a queue group, so N processes share a
//!   message type. Results and `FlextError`s travel typed; no responders, timeouts and
//!   broker outages are told apart and never hang.
//!
//! Delivery is at least once on the wire and once by effect in the sink: see
//! [`EventSink`] for what makes it exactly once.
//!
//! ```no_run
//! use std::sync::Arc;
//! use flext_bus_nats::async_nats::{self, jetstream};
//! use flext_bus_nats::{ConsumerConfig, EventStreams, NatsConsumer, NatsRelay, VersionedSink};
//! use flext_store::InMemoryEventStore;
//!
//! # async fn run() -> flext_types::FlextResult<()> {
//! let client = async_nats::connect("nats://127.0.0.1:4222")
//!     .await
//!     .map_err(|e| flext_types::FlextError::unavailable(e.to_string()))?;
//! let js = jetstream::new(client);
//! let streams = EventStreams::new("BANK", "bank.events")?;
//! streams.ensure(&js).await?;
//!
//! // The writer's side: its store's log goes to JetStream.
//! let store = Arc::new(InMemoryEventStore::new());
//! let relay = NatsRelay::new("bank-relay", store.clone(), store.clone(), js.clone(), streams.clone());
//! tokio::spawn(async move { relay.run(std::future::pending()).await });
//!
//! // A reader's side: each event once, in order per account.
//! let sink = VersionedSink::new("balances", store.clone(), |event| async move {
//!     println!("{} v{}: {}", event.stream_id, event.version, event.payload.as_str());
//!     Ok(())
//! });
//! let consumer = NatsConsumer::new(js, streams, ConsumerConfig::new("balances")?, Arc::new(sink));
//! consumer.run(std::future::pending()).await
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod codec;
mod consumer;
mod error;
mod relay;
pub mod remote;
mod sink;
mod streams;

pub use async_nats;
pub use consumer::{ConsumerConfig, DeliveryPolicy, NatsConsumer};
pub use relay::NatsRelay;
pub use remote::{NatsTransport, NatsWorker};
pub use sink::{EventSink, VersionedSink};
pub use streams::EventStreams;
