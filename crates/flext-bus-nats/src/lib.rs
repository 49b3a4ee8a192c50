//! The flext-handlers buses on NATS JetStream.
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
