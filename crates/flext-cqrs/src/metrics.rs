//! Serializable metrics snapshots of the buses.

use std::collections::BTreeMap;

use flext_types::{LatencySummary, MetricSet, MetricValue};
use serde::{Deserialize, Serialize};

/// Metrics of one message type (a command or query type, or a named query).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageTypeMetrics {
    /// The name of the handler registered for it.
    pub handler: String,
    /// Dispatches that reached the handler or its validation.
    pub processed: u64,
    /// Dispatches that succeeded.
    pub successful: u64,
    /// Dispatches that failed, including validation rejections and panics.
    pub failed: u64,
    /// Latency of dispatches that reached the handler, middleware included, from a sample:
    /// the first dispatch and then one in
    /// [`LATENCY_SAMPLE_EVERY`](Self::LATENCY_SAMPLE_EVERY) are timed, so `latency.count`
    /// is the number of timed dispatches, not `processed` (the counts are exact).
    pub latency: LatencySummary,
}

impl MessageTypeMetrics {
    /// One dispatch in this many is timed for [`latency`](Self::latency), by the count of
    /// dispatches of the type so far (the first is always timed). Timing a dispatch is two
    /// clock reads and a histogram update, a fifth of a `send` to a handler that does
    /// nothing; sampled, it costs about a nanosecond on average. Dispatches racing on one
    /// type may both be timed, or neither: under concurrency the sample is about, not
    /// exactly, one in this many.
    pub const LATENCY_SAMPLE_EVERY: u64 = 16;
}

/// Metrics of a [`CommandBus`](crate::CommandBus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandBusMetrics {
    /// Every `send`, including those that found no handler.
    pub commands_processed: u64,
    /// Sends that succeeded.
    pub successful_commands: u64,
    /// Sends that failed.
    pub failed_commands: u64,
    /// Command types with a handler.
    pub registered_handlers: usize,
    /// Per command type, for the types registered now.
    pub commands: BTreeMap<String, MessageTypeMetrics>,
}

/// Metrics of a [`QueryBus`](crate::QueryBus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryBusMetrics {
    /// Every `execute` and `execute_named`, including those that found no handler.
    pub queries_processed: u64,
    /// Queries that succeeded.
    pub successful_queries: u64,
    /// Queries that failed.
    pub failed_queries: u64,
    /// Query types and names with a handler.
    pub registered_handlers: usize,
    /// Per query type or name, for those registered now.
    pub queries: BTreeMap<String, MessageTypeMetrics>,
}

/// Metrics of one event name on an [`EventBus`](crate::EventBus).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetrics {
    /// Events published under the name.
    pub published: u64,
    /// Deliveries to subscribers that succeeded.
    pub delivered: u64,
    /// Deliveries that failed.
    pub failed: u64,
}

/// Metrics of an [`EventBus`](crate::EventBus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBusMetrics {
    /// Events published.
    pub events_published: u64,
    /// Successful deliveries.
    pub deliveries: u64,
    /// Failed deliveries.
    pub failed_deliveries: u64,
    /// Deliveries refused because the subscriber of the event's name expects another type
    /// (also counted as failed deliveries): a subscriber that never fires.
    pub type_mismatches: u64,
    /// Active subscriptions.
    pub subscriptions: usize,
    /// Per event name.
    pub events: BTreeMap<String, EventMetrics>,
}

/// Adds a bus's per-type samples to `set`, labelled with the message type.
pub(crate) fn push_per_type(
    set: &mut MetricSet,
    label: &str,
    per_type: &BTreeMap<String, MessageTypeMetrics>,
) {
    for (name, m) in per_type {
        set.push_group(
            (label, name),
            [
                (
                    "processed",
                    "Dispatches by message type.",
                    MetricValue::Counter(m.processed),
                ),
                (
                    "failed",
                    "Failed dispatches by message type.",
                    MetricValue::Counter(m.failed),
                ),
                (
                    "latency",
                    "Dispatch latency by message type.",
                    MetricValue::Latency(m.latency),
                ),
            ],
        );
    }
}
