//! [`NatsRelay`]: publishes the store's log to JetStream; the log is the outbox.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, publish::PublishAck};
use flext_constants::ErrorCode;
use flext_protocols::{CheckpointStore, EventStore, MetricsSource};
use flext_types::{FlextError, FlextResult, MetricSet, MetricValue, StoredEvent};
use futures_util::stream::{FuturesOrdered, StreamExt};

use crate::codec::{category, default_subject, encode};
use crate::streams::EventStreams;

/// Publishes every event of an [`EventStore`] to the JetStream stream of an
/// [`EventStreams`] layout, in position order, and keeps its position in a
/// [`CheckpointStore`] under its name.
///
/// - Each event is one message on `{prefix}.{category}.{event type}`, its payload the body,
///   its id, type, schema version, stream id, version, position, time, correlation and
///   causation ids and metadata headers in headers; `Nats-Msg-Id` is the event id, so the
///   server drops a re-publish inside its duplicate window.
/// - Publishes are pipelined: up to [`max_in_flight`](NatsRelay::with_max_in_flight)
///   await their acknowledgement at once; the relay reads no further until the oldest is
///   acknowledged (backpressure). Each acknowledgement waits at most the JetStream
///   context's timeout (5 s unless the context was built with another:
///   `jetstream::context::ContextBuilder::timeout`).
/// - The checkpoint only moves past events the server acknowledged, in order: after a crash
///   between a commit and its publish, or between an acknowledgement and the checkpoint,
///   the relay publishes again from its checkpoint (a repeat is dropped by the server
///   inside the window and by the consumers' version gate after it). Nothing is lost.
/// - A publish that fails (no acknowledgement within the JetStream context's timeout, the
///   server away) is a pause, not an end: the relay waits (100 ms doubling to 5 s, back to
///   100 ms once publishes are acknowledged again), then publishes again from the first
///   unacknowledged event. A store that fails is treated the same way.
///   [`run`](NatsRelay::run) returns when its shutdown future completes (after saving the
///   checkpoint of what was acknowledged), when the checkpoint cannot be read at the start,
///   or with the error naming an event it can never publish (`INVALID_ARGUMENT`: larger
///   than the server's `max_payload`; `SERIALIZATION_ERROR`: it cannot be read from the
///   store or encoded): the relay cannot pass it without losing it, so it stops there, its
///   checkpoint just before it, for an operator to act on.
///
/// Several relays of one store (replicas) may run at once: each publishes everything and
/// the duplicates are dropped, at the cost of the repeated publishes.
pub struct NatsRelay {
    name: String,
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    jetstream: jetstream::Context,
    streams: EventStreams,
    category: Option<String>,
    max_in_flight: usize,
    checkpoint_every: u64,
    counters: Arc<RelayCounters>,
}

/// What a relay has done, for its metrics.
#[derive(Debug, Default)]
struct RelayCounters {
    published: AtomicU64,
    duplicates: AtomicU64,
    failures: AtomicU64,
    checkpoint: AtomicU64,
    in_flight: AtomicU64,
}

impl NatsRelay {
    /// A relay named `name` (its checkpoint's key in `checkpoints`) from `store` to the
    /// stream of `streams`.
    pub fn new(
        name: impl Into<String>,
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        jetstream: jetstream::Context,
        streams: EventStreams,
    ) -> Self {
        Self {
            name: name.into(),
            store,
            checkpoints,
            jetstream,
            streams,
            category: None,
            max_in_flight: 256,
            checkpoint_every: 256,
            counters: Arc::default(),
        }
    }

    /// Publishes only the streams of one category (`"{category}-…"`).
    #[must_use]
    pub fn for_category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// How many publishes may await their acknowledgement at once (256 by default; at
    /// least 1).
    pub fn with_max_in_flight(mut self, max: usize) -> FlextResult<Self> {
        if max == 0 {
            return Err(FlextError::invalid_argument(
                "max_in_flight must be at least 1, got 0",
            ));
        }
        self.max_in_flight = max;
        Ok(self)
    }

    /// Saves the checkpoint after this many acknowledged events (256 by default, at least
    /// 1), and whenever the relay has caught up with the store. A crash repeats at most
    /// this many publishes.
    pub fn with_checkpoint_every(mut self, every: u64) -> FlextResult<Self> {
        if every == 0 {
            return Err(FlextError::invalid_argument(
                "checkpoint_every must be at least 1, got 0",
            ));
        }
        self.checkpoint_every = every;
        Ok(self)
    }

    /// The relay's name (its checkpoint's key).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position of the last event published and acknowledged, as saved.
    pub async fn checkpoint(&self) -> FlextResult<u64> {
        Ok(self
            .checkpoints
            .load_checkpoint(&self.name)
            .await?
            .unwrap_or(0))
    }

    /// Publishes until `shutdown` completes, then saves the checkpoint of what was
    /// acknowledged and returns. Failures of the broker or the store are waited out (see
    /// [`NatsRelay`]); the error of a checkpoint that cannot be read at the start, or of an
    /// event too large for the broker, is returned.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> FlextResult<()> {
        let mut shutdown = pin!(shutdown);
        let mut acked = self.checkpoint().await?;
        self.counters.checkpoint.store(acked, Ordering::Relaxed);
        let mut pause = Duration::from_millis(100);
        loop {
            let before = acked;
            let outcome = {
                let round = self.publish_from(&mut acked);
                tokio::select! {
                    () = &mut shutdown => None,
                    outcome = round => Some(outcome),
                }
            };
            // What was acknowledged before the shutdown or the failure is kept.
            let saved = self.save(acked).await;
            let Some(error) = outcome else {
                return saved;
            };
            if error.is(ErrorCode::InvalidArgument) || error.is(ErrorCode::SerializationError) {
                // An event the broker will never take, or one that cannot be read or
                // encoded: waiting does not help.
                return Err(error);
            }
            if acked > before {
                pause = Duration::from_millis(100);
            }
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(relay = %self.name, %error, "relay paused");
            tokio::select! {
                () = &mut shutdown => return saved,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Publishes from `acked + 1` on, moving `acked` past each acknowledged event, until a
    /// failure, which it returns.
    async fn publish_from(&self, acked: &mut u64) -> FlextError {
        let mut events = match self.store.subscribe(*acked + 1).await {
            Ok(events) => events,
            Err(error) => return error,
        };
        let mut in_flight: FuturesOrdered<AckFuture> = FuturesOrdered::new();
        let mut since_save = 0;
        let mut next_event: Option<StoredEvent> = None;
        let error = 'publish: loop {
            self.counters
                .in_flight
                .store(in_flight.len() as u64, Ordering::Relaxed);
            let room = in_flight.len() < self.max_in_flight;
            tokio::select! {
                biased;
                Some((position, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    let ack = match result {
                        Ok(ack) => ack,
                        Err(error) => break 'publish error,
                    };
                    if let Some(ack) = ack {
                        self.counters.published.fetch_add(1, Ordering::Relaxed);
                        if ack.duplicate {
                            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    *acked = position;
                    since_save += 1;
                    if since_save >= self.checkpoint_every
                        || (in_flight.is_empty() && next_event.is_none())
                    {
                        since_save = 0;
                        if let Err(error) = self.save(*acked).await {
                            break 'publish error;
                        }
                    }
                }
                next = events.next(), if room && next_event.is_none() => match next {
                    Some(Ok(event)) => next_event = Some(event),
                    Some(Err(error)) => break 'publish error,
                    None => break 'publish FlextError::storage(format!(
                        "The store's subscription of relay {} ended", self.name
                    )),
                },
                () = std::future::ready(()), if room && next_event.is_some() => {
                    let Some(event) = next_event.take() else { continue };
                    let position = event.position;
                    if self.category.as_deref().is_some_and(|c| category(&event.stream_id) != c) {
                        // Not relayed: the checkpoint passes it once what is before it is
                        // acknowledged.
                        in_flight.push_back(Box::pin(async move { (position, Ok(None)) }));
                        continue;
                    }
                    match self.publish(&event).await {
                        Ok(ack) => in_flight.push_back(Box::pin(async move {
                            (position, ack.await.map(Some))
                        })),
                        Err(error) => break 'publish error,
                    }
                }
            }
        };
        // What was sent before the failure is kept as far as it was acknowledged, in
        // order: an event's acknowledgement counts only after all before it.
        while let Some((position, Ok(_))) = in_flight.next().await {
            *acked = position;
        }
        error
    }

    /// Sends `event`; the future of its acknowledgement.
    async fn publish(
        &self,
        event: &StoredEvent,
    ) -> FlextResult<impl Future<Output = FlextResult<PublishAck>> + Send + 'static> {
        let (headers, body) = encode(event)?;
        let subject = default_subject(self.streams.subject_prefix(), event);
        let id = event.event_id;
        let position = event.position;
        let stream = self.streams.stream().to_owned();
        let ack = self
            .jetstream
            .publish_with_headers(subject, headers, body)
            .await
            .map_err(|e| publish_error(&stream, id, position, e))?;
        Ok(async move {
            ack.into_future()
                .await
                .map_err(|e| publish_error(&stream, id, position, e))
        })
    }

    async fn save(&self, acked: u64) -> FlextResult<()> {
        if self.counters.checkpoint.load(Ordering::Relaxed) == acked {
            return Ok(());
        }
        self.checkpoints.save_checkpoint(&self.name, acked).await?;
        self.counters.checkpoint.store(acked, Ordering::Relaxed);
        Ok(())
    }
}

/// An event's position and its acknowledgement (`None` for an event the relay passes
/// over).
type AckFuture = Pin<Box<dyn Future<Output = (u64, FlextResult<Option<PublishAck>>)> + Send>>;

fn publish_error(
    stream: &str,
    id: uuid::Uuid,
    position: u64,
    error: jetstream::context::PublishError,
) -> FlextError {
    let message = format!(
        "Event {id} (position {position}) was not stored by JetStream stream {stream}: {error}"
    );
    match error.kind() {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
            FlextError::timeout(message).with_source(error)
        }
        // Too large for the server's max_payload: publishing it again cannot work.
        PublishErrorKind::MaxPayloadExceeded => {
            FlextError::invalid_argument(message).with_source(error)
        }
        _ => FlextError::unavailable(message).with_source(error),
    }
}

impl fmt::Debug for NatsRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsRelay")
            .field("name", &self.name)
            .field("streams", &self.streams)
            .field("category", &self.category)
            .field("max_in_flight", &self.max_in_flight)
            .field("checkpoint_every", &self.checkpoint_every)
            .finish_non_exhaustive()
    }
}

impl MetricsSource for NatsRelay {
    fn metric_set(&self) -> MetricSet {
        let c = &self.counters;
        let mut set = MetricSet::new("nats_relay");
        set.push_group(
            ("relay", &self.name),
            [
                (
                    "relay_published_total",
                    "Events published and acknowledged by JetStream",
                    MetricValue::Counter(c.published.load(Ordering::Relaxed)),
                ),
                (
                    "relay_duplicates_total",
                    "Publishes JetStream dropped as duplicates",
                    MetricValue::Counter(c.duplicates.load(Ordering::Relaxed)),
                ),
                (
                    "relay_pauses_total",
                    "Times the relay paused on a failure of the broker or the store",
                    MetricValue::Counter(c.failures.load(Ordering::Relaxed)),
                ),
                (
                    "relay_checkpoint",
                    "The position saved as published",
                    MetricValue::Gauge(c.checkpoint.load(Ordering::Relaxed) as f64),
                ),
                (
                    "relay_in_flight",
                    "Publishes awaiting their acknowledgement",
                    MetricValue::Gauge(c.in_flight.load(Ordering::Relaxed) as f64),
                ),
            ],
        );
        set
    }
}
