//! [`NatsConsumer`]: a durable pull consumer that applies each event once, in version
//! order per stream, with retries, dead letters and lag metrics.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, AckKind, Message};
use async_nats::{HeaderMap, Subject};
use flext_impl::catch_panic;
use flext_protocols::{CheckpointStore, MetricsSource};
use flext_types::{FlextError, FlextResult, MetricSet, MetricValue, StoredEvent};
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::codec::{self, escape, header, subject_token};
use crate::error::nats_error;
use crate::sink::EventSink;
use crate::streams::{EventStreams, check_name};

/// How a consumer retries an event whose handling failed, set in one place so the server's
/// settings and the consumer's agree:
///
/// - `max_deliver`: deliveries of an event before a failure sends it to the dead-letter
///   stream. Every delivery counts (a hand-back at shutdown, a consumer that died with it,
///   a stream held back), so a failure on a delivery at or past `max_deliver` is the last;
///   the handler is never called more than `max_deliver` times for failures;
/// - `backoff`: the wait before the next delivery after the n-th failure (`Nak` with that
///   delay; the last entry repeats). A failure is never answered with a `Nak` without a
///   delay (an immediate redelivery storm); the consumer never sets the server's own
///   `BackOff`, whose first entry would silently replace the ack wait;
/// - `ack_wait`: how long a delivery may go unanswered before the server gives it to
///   another consumer — the bound on a takeover after a consumer dies. A live consumer
///   extends it (`+WPI`) every third of it for every event it has queued, holds or
///   handles, from a task of its own, so a busy or slow consumer keeps what it has.
///
/// The server's `MaxDeliver` is unlimited: the consumer alone counts deliveries against
/// the policy, so an event whose last delivery ended in a `Nak` (a failed dead-letter
/// copy, a sink that could not be read) comes back instead of being dropped unseen.
///
/// ```
/// use std::time::Duration;
/// use flext_bus_nats::DeliveryPolicy;
///
/// let policy = DeliveryPolicy::new(4, Duration::from_secs(10))?
///     .with_backoff(vec![Duration::from_millis(100), Duration::from_secs(1)])?;
/// assert_eq!(policy.delay_after(1), Duration::from_millis(100));
/// assert_eq!(policy.delay_after(3), Duration::from_secs(1));
/// assert!(DeliveryPolicy::new(0, Duration::from_secs(10)).is_err());
/// # Ok::<(), flext_types::FlextError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    max_deliver: u32,
    ack_wait: Duration,
    backoff: Vec<Duration>,
}

impl DeliveryPolicy {
    /// At most `max_deliver` deliveries (1 to 10 000), an ack wait of `ack_wait` (100 ms to
    /// 1 hour), and a backoff of 1 s doubling to 30 s.
    pub fn new(max_deliver: u32, ack_wait: Duration) -> FlextResult<Self> {
        if !(1..=10_000).contains(&max_deliver) {
            return Err(FlextError::invalid_argument(format!(
                "max_deliver must be 1 to 10000, got {max_deliver}"
            )));
        }
        if ack_wait < Duration::from_millis(100) || ack_wait > Duration::from_secs(3600) {
            return Err(FlextError::invalid_argument(format!(
                "ack_wait must be 100 ms to 1 hour, got {ack_wait:?}"
            )));
        }
        Ok(Self {
            max_deliver,
            ack_wait,
            backoff: [1, 2, 4, 8, 16, 30]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        })
    }

    /// Waits `delays[n - 1]` after the n-th failure (the last entry repeats). At least one
    /// delay, each 1 ms to 1 hour.
    pub fn with_backoff(mut self, delays: Vec<Duration>) -> FlextResult<Self> {
        if delays.is_empty() {
            return Err(FlextError::invalid_argument(
                "backoff needs at least one delay (a Nak without a delay redelivers at once)",
            ));
        }
        if let Some(bad) = delays
            .iter()
            .find(|d| **d < Duration::from_millis(1) || **d > Duration::from_secs(3600))
        {
            return Err(FlextError::invalid_argument(format!(
                "every backoff delay must be 1 ms to 1 hour, got {bad:?}"
            )));
        }
        self.backoff = delays;
        Ok(self)
    }

    /// The deliveries of an event before it is dead-lettered.
    pub fn max_deliver(&self) -> u32 {
        self.max_deliver
    }

    /// The ack wait.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// The wait before the next delivery after the `failures`-th failure (from 1).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let i = (failures.max(1) as usize - 1).min(self.backoff.len() - 1);
        self.backoff[i]
    }
}

impl Default for DeliveryPolicy {
    /// 5 deliveries, 30 s ack wait, 1 s doubling to 30 s.
    fn default() -> Self {
        Self {
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            backoff: [1, 2, 4, 8, 16, 30]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }
}

/// The settings of a [`NatsConsumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    durable: String,
    category: Option<String>,
    policy: DeliveryPolicy,
    partitions: usize,
    max_ack_pending: usize,
    batch: usize,
    heartbeat: Duration,
}

impl ConsumerConfig {
    /// A consumer durable under `durable` (letters, digits, `_`, `-`): the subscriber
    /// group's name; processes that run it share its events and take over from each other.
    pub fn new(durable: impl Into<String>) -> FlextResult<Self> {
        let durable = durable.into();
        check_name("durable name", &durable)?;
        Ok(Self {
            durable,
            category: None,
            policy: DeliveryPolicy::default(),
            partitions: 4,
            max_ack_pending: 1024,
            batch: 128,
            heartbeat: Duration::from_secs(5),
        })
    }

    /// Reads only the streams of one category (`"{category}-…"`); by default every
    /// category. The consumer reads whole streams (every event type of them), which is
    /// what lets it tell a version that is missing from one it will never see.
    #[must_use]
    pub fn for_category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// The retry policy.
    #[must_use]
    pub fn with_policy(mut self, policy: DeliveryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How many streams this process applies at once (4 by default; 1 to 256): each stream
    /// belongs to one partition (a hash of its id), and a partition applies one event at a
    /// time.
    pub fn with_partitions(mut self, partitions: usize) -> FlextResult<Self> {
        if !(1..=256).contains(&partitions) {
            return Err(FlextError::invalid_argument(format!(
                "partitions must be 1 to 256, got {partitions}"
            )));
        }
        self.partitions = partitions;
        Ok(self)
    }

    /// At most this many events delivered and not yet acknowledged, over all the processes
    /// of the group (1 024 by default, at least 1): the server stops delivering past it,
    /// which bounds a slow consumer's memory.
    pub fn with_max_ack_pending(mut self, max: usize) -> FlextResult<Self> {
        if max == 0 {
            return Err(FlextError::invalid_argument(
                "max_ack_pending must be at least 1, got 0",
            ));
        }
        self.max_ack_pending = max;
        self.batch = self.batch.min(max);
        Ok(self)
    }

    /// How often the server sends a heartbeat on an idle pull (5 s by default, 100 ms to
    /// 30 s); two missed heartbeats and the pull is rebuilt.
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> FlextResult<Self> {
        if heartbeat < Duration::from_millis(100) || heartbeat > Duration::from_secs(30) {
            return Err(FlextError::invalid_argument(format!(
                "heartbeat must be 100 ms to 30 s, got {heartbeat:?}"
            )));
        }
        self.heartbeat = heartbeat;
        Ok(self)
    }

    /// The durable name.
    pub fn durable(&self) -> &str {
        &self.durable
    }

    /// The retry policy.
    pub fn policy(&self) -> &DeliveryPolicy {
        &self.policy
    }
}

/// Applies the events of an [`EventStreams`] layout to an [`EventSink`] through a durable
/// JetStream pull consumer: each event once by its effects, in version order per stream,
/// whatever JetStream repeats or reorders.
///
/// - **Durable.** The consumer is named by [`ConsumerConfig::new`]; a restarted process
///   resumes from the server's ack floor. A consumer deleted on the server is created
///   again: from the ack floor last saved in the floor store when one is set
///   ([`with_floor_store`](NatsConsumer::with_floor_store)), else from the stream's
///   start (the version gate drops what was applied). One whose settings changed (ack
///   wait, max ack pending, category) is updated on the server at the start.
/// - **Acknowledged after the effect.** An event is acknowledged once the sink applied it
///   (or it was a duplicate). A handler's failure (a panic included) is answered with a
///   `Nak` delayed by the [`DeliveryPolicy`]; a failure on the `max_deliver`-th delivery
///   copies the event to the dead-letter stream (subject `{dead-letter
///   prefix}.{durable}.{category}.{type}`, its headers plus the error's code and message,
///   the deliveries, the consumer, the original subject and sequence; its message id is
///   `{durable}:{event id}` and the event id moves to `Flext-Event-Id`, so
///   [`codec::decode_message`] reads a dead letter as the event), then passes it in the
///   sink, then terminates it — in that order, so a step that fails leaves the event to
///   come back, and the copy is stored once (its message id). A message that does not
///   decode (not an event of the relay's) is copied there and terminated at once.
/// - **In order per stream.** The sink's [`applied_version`](EventSink::applied_version),
///   asked for every delivery, is the gate: an older version is acknowledged as a
///   duplicate, the next one is applied, a later one waits (held, its ack wait extended)
///   until its predecessor is applied here or by another process of the group. Streams
///   are spread over partitions by a hash of their id; each applies one event at a time,
///   the partitions run at once, and a poisoned stream holds up only its own later events.
///   Those wait unacknowledged, so they count against `max_ack_pending` (which also bounds
///   what a process holds in memory) until the poison is applied or dead-lettered, at most
///   the policy's backoff in all: keep `max_ack_pending` above what one stream receives in
///   that time, or the other streams slow down with it.
/// - **Watched.** The pull asks for heartbeats; a missing heartbeat, a deleted consumer or
///   a lost connection rebuilds it. Every second the consumer reads the server's view
///   (pending, ack pending, redelivered), which its [`MetricsSource`] shows with its own
///   counts. Every acknowledgement waits at most 2 s on the client (a broker outage holds
///   nothing: an event not acknowledged comes back).
pub struct NatsConsumer {
    jetstream: jetstream::Context,
    streams: EventStreams,
    config: ConsumerConfig,
    sink: Arc<dyn EventSink>,
    floor: Option<Arc<dyn CheckpointStore>>,
    counters: Arc<Counters>,
}

/// What a consumer has done and what the server last said about it.
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    applied: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    held: AtomicU64,
    rebuilds: AtomicU64,
    pending: AtomicU64,
    ack_pending: AtomicU64,
    redelivered: AtomicU64,
}

impl NatsConsumer {
    /// A consumer of `streams`' events, set by `config`, applying them to `sink`.
    pub fn new(
        jetstream: jetstream::Context,
        streams: EventStreams,
        config: ConsumerConfig,
        sink: Arc<dyn EventSink>,
    ) -> Self {
        Self {
            jetstream,
            streams,
            config,
            sink,
            floor: None,
            counters: Arc::default(),
        }
    }

    /// Saves the server's ack floor in `store` (under `"nats-ack-floor/{stream}/{durable}"`) each
    /// second, so a consumer deleted on the server is created again from there rather than
    /// from the stream's start.
    #[must_use]
    pub fn with_floor_store(mut self, store: Arc<dyn CheckpointStore>) -> Self {
        self.floor = Some(store);
        self
    }

    /// The settings.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    fn floor_key(&self) -> String {
        format!(
            "nats-ack-floor/{}/{}",
            self.streams.stream(),
            self.config.durable
        )
    }

    /// Consumes until `shutdown` completes; then the events it holds unapplied are handed
    /// back to the server (`Nak`, for the group's other processes) and it returns. Broker
    /// failures are waited out (the pull is rebuilt); the error of a consumer that cannot
    /// be created at the start is returned: `NOT_FOUND` for a stream that does not exist,
    /// `UNAVAILABLE` for a server that cannot be reached.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> FlextResult<()> {
        let mut shutdown = pin!(shutdown);
        let mut consumer = self.consumer().await?;
        let partitions: Vec<Arc<Partition>> = (0..self.config.partitions)
            .map(|_| Arc::new(Partition::default()))
            .collect();
        let mut workers = tokio::task::JoinSet::new();
        let mut extenders = tokio::task::JoinSet::new();
        for partition in &partitions {
            let worker = Worker {
                partition: Arc::clone(partition),
                sink: Arc::clone(&self.sink),
                jetstream: self.jetstream.clone(),
                dead_letter_prefix: self.streams.dead_letter_prefix().to_owned(),
                subject_prefix: self.streams.subject_prefix().to_owned(),
                durable: self.config.durable.clone(),
                policy: self.config.policy.clone(),
                counters: Arc::clone(&self.counters),
                streams: HashMap::new(),
            };
            workers.spawn(worker.run());
            extenders.spawn(extend(
                Arc::clone(partition),
                self.jetstream.client(),
                self.config.policy.ack_wait / 3,
            ));
        }
        let mut watch = tokio::time::interval(Duration::from_secs(1));
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pause = Duration::from_millis(100);
        let outcome = 'pulls: loop {
            let pull = consumer
                .stream()
                .max_messages_per_batch(self.config.batch)
                .heartbeat(self.config.heartbeat)
                .expires(self.config.heartbeat * 6)
                .messages()
                .await;
            match pull {
                Err(error) => {
                    tracing::warn!(durable = %self.config.durable, %error, "pull not started");
                }
                Ok(mut messages) => loop {
                    tokio::select! {
                        () = &mut shutdown => break 'pulls Ok(()),
                        Some(ended) = workers.join_next() => {
                            // Sink calls are guarded against panics; a worker ends only so.
                            break 'pulls Err(FlextError::operation(format!(
                                "A worker of consumer {} ended unexpectedly: {ended:?}",
                                self.config.durable
                            )));
                        }
                        _ = watch.tick() => self.watch(&mut consumer).await,
                        next = messages.next() => match next {
                            Some(Ok(message)) => {
                                pause = Duration::from_millis(100);
                                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                                let slot = partition_of(message.headers.as_ref(), partitions.len());
                                partitions[slot].push(message);
                            }
                            Some(Err(error)) => {
                                tracing::warn!(durable = %self.config.durable, %error, "pull rebuilt");
                                break;
                            }
                            None => break,
                        },
                    }
                },
            }
            // The pull did not start or ended (a missed heartbeat, a deleted consumer, a
            // lost connection): build it again after a pause.
            self.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = &mut shutdown => break 'pulls Ok(()),
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
            if let Ok(rebuilt) = self.consumer().await {
                consumer = rebuilt;
            }
        };
        for partition in &partitions {
            partition.stop();
        }
        while workers.join_next().await.is_some() {}
        extenders.abort_all();
        outcome
    }

    /// The durable consumer, created when missing (from the saved ack floor when there is
    /// one).
    async fn consumer(&self) -> FlextResult<PullConsumer> {
        let stream_name = self.streams.stream();
        let stream = self
            .jetstream
            .get_stream(stream_name)
            .await
            .map_err(|e| match e.kind() {
                GetStreamErrorKind::JetStream(error)
                    if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    FlextError::not_found(format!(
                        "JetStream stream {stream_name} does not exist: create it with \
                         EventStreams::ensure"
                    ))
                }
                _ => nats_error(format!("JetStream stream {stream_name} cannot be read"), e),
            })?;
        let filter_subject = match &self.config.category {
            Some(category) => format!(
                "{}.{}.*",
                self.streams.subject_prefix(),
                subject_token(category)
            ),
            None => self.streams.event_subjects(),
        };
        let mut config = pull::Config {
            durable_name: Some(self.config.durable.clone()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.config.policy.ack_wait,
            // Unlimited: the consumer counts deliveries against the policy itself, so the
            // server never drops an event whose last delivery ended in a `Nak`.
            max_deliver: -1,
            max_ack_pending: i64::try_from(self.config.max_ack_pending).unwrap_or(i64::MAX),
            filter_subject,
            ..Default::default()
        };
        let cannot = |what: &str, e: &dyn fmt::Display| {
            FlextError::unavailable(format!(
                "Consumer {} of JetStream stream {stream_name} cannot be {what}: {e}",
                self.config.durable
            ))
        };
        if let Ok(mut consumer) = stream
            .get_consumer::<pull::Config>(&self.config.durable)
            .await
        {
            let info = consumer
                .info()
                .await
                .map_err(|e| cannot("read", &e))?
                .config
                .clone();
            if info.ack_wait == config.ack_wait
                && info.max_deliver == config.max_deliver
                && info.max_ack_pending == config.max_ack_pending
                && info.filter_subject == config.filter_subject
                && info.ack_policy == config.ack_policy
            {
                return Ok(consumer);
            }
            // Settings changed since it was created: the server takes the new ones (its
            // start position stays as it was).
            config.deliver_policy = info.deliver_policy;
            return stream.create_consumer(config).await.map_err(|e| {
                FlextError::invalid_argument(format!(
                    "Consumer {} of JetStream stream {stream_name} exists with other settings \
                     (ack wait {:?}, max deliver {}, max ack pending {}, filter {:?}) and the \
                     server refused the new ones: {e}",
                    self.config.durable,
                    info.ack_wait,
                    info.max_deliver,
                    info.max_ack_pending,
                    info.filter_subject
                ))
            });
        }
        let floor = match &self.floor {
            Some(store) => store.load_checkpoint(&self.floor_key()).await?.unwrap_or(0),
            None => 0,
        };
        if floor > 0 {
            config.deliver_policy = DeliverPolicy::ByStartSequence {
                start_sequence: floor + 1,
            };
        }
        stream
            .get_or_create_consumer(&self.config.durable, config)
            .await
            .map_err(|e| cannot("created", &e))
    }

    /// Reads the server's view of the consumer into the gauges and saves the ack floor.
    async fn watch(&self, consumer: &mut PullConsumer) {
        let Ok(info) = consumer.info().await else {
            return;
        };
        let c = &self.counters;
        c.pending.store(info.num_pending, Ordering::Relaxed);
        c.ack_pending
            .store(info.num_ack_pending as u64, Ordering::Relaxed);
        c.redelivered
            .store(info.num_redelivered as u64, Ordering::Relaxed);
        let floor = info.ack_floor.stream_sequence;
        if let Some(store) = &self.floor
            && floor > 0
            && let Err(error) = store.save_checkpoint(&self.floor_key(), floor).await
        {
            tracing::warn!(durable = %self.config.durable, %error, "ack floor not saved");
        }
    }
}

impl fmt::Debug for NatsConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConsumer")
            .field("streams", &self.streams)
            .field("config", &self.config)
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

impl MetricsSource for NatsConsumer {
    fn metric_set(&self) -> MetricSet {
        let c = &self.counters;
        let count = |a: &AtomicU64| MetricValue::Counter(a.load(Ordering::Relaxed));
        let gauge = |a: &AtomicU64| MetricValue::Gauge(a.load(Ordering::Relaxed) as f64);
        let mut set = MetricSet::new("nats_consumer");
        set.push_group(
            ("consumer", &self.config.durable),
            [
                (
                    "consumer_delivered_total",
                    "Deliveries received",
                    count(&c.delivered),
                ),
                (
                    "consumer_applied_total",
                    "Events applied",
                    count(&c.applied),
                ),
                (
                    "consumer_duplicates_total",
                    "Deliveries of events already applied, acknowledged without effect",
                    count(&c.duplicates),
                ),
                (
                    "consumer_retries_total",
                    "Failed handlings answered with a delayed Nak",
                    count(&c.retried),
                ),
                (
                    "consumer_dead_lettered_total",
                    "Events copied to the dead-letter stream",
                    count(&c.dead_lettered),
                ),
                (
                    "consumer_pull_rebuilds_total",
                    "Pulls rebuilt after a missed heartbeat or an error",
                    count(&c.rebuilds),
                ),
                (
                    "consumer_held",
                    "Events held until their stream's previous version is applied",
                    gauge(&c.held),
                ),
                (
                    "consumer_pending",
                    "Events in the stream not yet delivered to the group (server)",
                    gauge(&c.pending),
                ),
                (
                    "consumer_ack_pending",
                    "Events delivered and not yet acknowledged (server)",
                    gauge(&c.ack_pending),
                ),
                (
                    "consumer_redelivered",
                    "Events delivered more than once and not yet acknowledged (server)",
                    gauge(&c.redelivered),
                ),
            ],
        );
        set
    }
}

/// The partition of the stream a message belongs to.
fn partition_of(headers: Option<&HeaderMap>, partitions: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    headers
        .and_then(|h| h.get(header::STREAM_ID))
        .map(|v| v.as_str())
        .unwrap_or("")
        .hash(&mut hasher);
    (hasher.finish() % partitions as u64) as usize
}

/// How long one acknowledgement or `+WPI` may wait on the client: while the client
/// reconnects it takes no commands, and a broker outage must not hold a worker, the
/// extender or a shutdown.
const ACK_LIMIT: Duration = Duration::from_secs(2);

/// Answers `message` with `kind`; whether the client took it in time.
async fn answer(message: &Message, kind: AckKind) -> bool {
    matches!(
        tokio::time::timeout(ACK_LIMIT, message.ack_with(kind)).await,
        Ok(Ok(()))
    )
}

/// The messages of a partition: queued for its worker in arrival order, and the ones the
/// worker has taken (held or being handled), whose ack wait the extender keeps extending.
#[derive(Default)]
struct Partition {
    queue: Mutex<VecDeque<Message>>,
    taken: Mutex<HashMap<String, Subject>>,
    wake: Notify,
    stopped: AtomicBool,
}

impl Partition {
    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, message: Message) {
        Self::lock(&self.queue).push_back(message);
        self.wake.notify_one();
    }

    fn pop(&self) -> Option<Message> {
        Self::lock(&self.queue).pop_front()
    }

    fn take(&self, message: &Message) {
        if let Some(reply) = &message.reply {
            Self::lock(&self.taken).insert(reply.to_string(), reply.clone());
        }
    }

    fn release(&self, message: &Message) {
        if let Some(reply) = &message.reply {
            Self::lock(&self.taken).remove(reply.as_str());
        }
    }

    /// The reply subjects of every message queued or taken.
    fn replies(&self) -> Vec<Subject> {
        let mut replies: Vec<Subject> = Self::lock(&self.queue)
            .iter()
            .filter_map(|m| m.reply.clone())
            .collect();
        replies.extend(Self::lock(&self.taken).values().cloned());
        replies
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// Extends the ack wait (`+WPI`) of every message of `partition` each `period`, whatever
/// its worker is doing, until aborted.
async fn extend(partition: Arc<Partition>, client: async_nats::Client, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        for reply in partition.replies() {
            let progress = client.publish(reply, bytes::Bytes::from_static(b"+WPI"));
            let _extended = tokio::time::timeout(ACK_LIMIT, progress).await;
        }
    }
}

/// Applies a partition's messages.
struct Worker {
    partition: Arc<Partition>,
    sink: Arc<dyn EventSink>,
    jetstream: jetstream::Context,
    dead_letter_prefix: String,
    subject_prefix: String,
    durable: String,
    policy: DeliveryPolicy,
    counters: Arc<Counters>,
    /// Per stream, the later versions waiting for their predecessor.
    streams: HashMap<Arc<str>, BTreeMap<u64, Message>>,
}

impl Worker {
    async fn run(mut self) {
        let period = self.policy.ack_wait / 3;
        let mut next_check = tokio::time::Instant::now() + period;
        loop {
            while let Some(message) = self.partition.pop() {
                if self.partition.is_stopped() {
                    // Handed back for the group's other processes.
                    answer(&message, AckKind::Nak(None)).await;
                    continue;
                }
                self.handle(message).await;
                if tokio::time::Instant::now() >= next_check {
                    self.recheck().await;
                    next_check = tokio::time::Instant::now() + period;
                }
            }
            if self.partition.is_stopped() {
                break;
            }
            tokio::select! {
                () = self.partition.wake.notified() => {}
                () = tokio::time::sleep_until(next_check) => {
                    self.recheck().await;
                    next_check = tokio::time::Instant::now() + period;
                }
            }
        }
        for message in std::mem::take(&mut self.streams)
            .into_values()
            .flat_map(BTreeMap::into_values)
        {
            self.counters.held.fetch_sub(1, Ordering::Relaxed);
            self.partition.release(&message);
            answer(&message, AckKind::Nak(None)).await;
        }
    }

    /// Handles one delivery, then the held events it lets through.
    async fn handle(&mut self, message: Message) {
        let mut todo = Some(message);
        while let Some(message) = todo.take() {
            self.partition.take(&message);
            todo = self.step(&message).await;
            if !self.is_held(&message) {
                self.partition.release(&message);
            }
        }
    }

    fn is_held(&self, message: &Message) -> bool {
        let Some(reply) = &message.reply else {
            return false;
        };
        self.streams
            .values()
            .any(|held| held.values().any(|m| m.reply.as_ref() == Some(reply)))
    }

    /// Handles one delivery; the held successor of its event when the event was applied
    /// or passed, to handle next.
    async fn step(&mut self, message: &Message) -> Option<Message> {
        let (delivered, sequence) = delivery(message);
        let event = match codec::decode_message(message.headers.as_ref(), &message.payload) {
            Ok(event) => event,
            Err(error) => {
                // Nothing to pass: the message is not an event of the relay's.
                if self
                    .copy_to_dead_letters(message, None, &error, delivered, sequence)
                    .await
                {
                    answer(message, AckKind::Term).await;
                }
                return None;
            }
        };
        // Asked every time: another process of the group (or a copy of this event
        // published again) may have moved it since this worker last looked.
        let applied = match catch_panic(self.sink.applied_version(&event.stream_id)).await {
            Ok(applied) => applied,
            Err(error) => {
                self.retry(message, &error, delivered).await;
                return None;
            }
        };
        if event.version <= applied {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            answer(message, AckKind::Ack).await;
            return self.advance(&event.stream_id, applied);
        }
        if event.version > applied + 1 {
            self.hold(message.clone(), &event).await;
            return None;
        }
        match catch_panic(self.sink.apply(&event)).await {
            Ok(()) => {
                self.counters.applied.fetch_add(1, Ordering::Relaxed);
                answer(message, AckKind::Ack).await;
                self.advance(&event.stream_id, event.version)
            }
            // Deliveries count every hand-back and crash too, so a failure on a delivery
            // past `max_deliver` is the last one.
            Err(error) if delivered < self.policy.max_deliver => {
                self.retry(message, &error, delivered).await;
                None
            }
            Err(error) => {
                self.give_up(message, &event, &error, delivered, sequence)
                    .await
            }
        }
    }

    /// Holds `message` until its predecessor is applied.
    /// A second copy of a version already held is acknowledged at once: the held one will
    /// be applied (or, if this process stops, come back to the group).
    async fn hold(&mut self, message: Message, event: &StoredEvent) {
        let held = self
            .streams
            .entry(Arc::clone(&event.stream_id))
            .or_default();
        if held.contains_key(&event.version) {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            self.partition.release(&message);
            answer(&message, AckKind::Ack).await;
            return;
        }
        held.insert(event.version, message);
        self.counters.held.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that `stream` is applied up to `applied`: acknowledges the held copies at or
    /// below it, and takes out the held successor, if any.
    fn advance(&mut self, stream: &Arc<str>, applied: u64) -> Option<Message> {
        let held = self.streams.get_mut(stream)?;
        let later = held.split_off(&(applied + 1));
        let done = std::mem::replace(held, later);
        let next = held.remove(&(applied + 1));
        if held.is_empty() {
            self.streams.remove(stream);
        }
        let released = done.len() + usize::from(next.is_some());
        self.counters
            .held
            .fetch_sub(released as u64, Ordering::Relaxed);
        if !done.is_empty() {
            self.counters
                .duplicates
                .fetch_add(done.len() as u64, Ordering::Relaxed);
            // Copies of versions applied: acknowledged without effect.
            let partition = Arc::clone(&self.partition);
            tokio::spawn(async move {
                for message in done.into_values() {
                    partition.release(&message);
                    answer(&message, AckKind::Ack).await;
                }
            });
        }
        next
    }

    /// Asks the sink again about every stream with held events (another process may have
    /// applied the missing version) and handles what that lets through.
    async fn recheck(&mut self) {
        let waiting: Vec<Arc<str>> = self.streams.keys().cloned().collect();
        for stream in waiting {
            let Ok(applied) = catch_panic(self.sink.applied_version(&stream)).await else {
                continue;
            };
            if let Some(next) = self.advance(&stream, applied) {
                self.handle(next).await;
            }
        }
    }

    /// Answers a failed handling with a `Nak` delayed by the policy.
    async fn retry(&self, message: &Message, error: &FlextError, delivered: u32) {
        self.counters.retried.fetch_add(1, Ordering::Relaxed);
        let delay = self.policy.delay_after(delivered);
        tracing::warn!(consumer = %self.durable, %error, delivered, ?delay, "event retried");
        answer(message, AckKind::Nak(Some(delay))).await;
    }

    /// Copies `event` to the dead-letter stream, passes it in the sink, then terminates
    /// it, in that order; its held successor when all of that was done (else the message
    /// was answered with a delayed `Nak` and comes back to try again — the dead-letter
    /// copy is stored once, by its message id).
    async fn give_up(
        &mut self,
        message: &Message,
        event: &StoredEvent,
        error: &FlextError,
        delivered: u32,
        sequence: u64,
    ) -> Option<Message> {
        if !self
            .copy_to_dead_letters(message, Some(event), error, delivered, sequence)
            .await
        {
            return None;
        }
        if let Err(error) = catch_panic(self.sink.pass(event)).await {
            self.retry(message, &error, delivered).await;
            return None;
        }
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::error!(consumer = %self.durable, %error, delivered, "event dead-lettered");
        answer(message, AckKind::Term).await;
        self.advance(&event.stream_id, event.version)
    }

    /// Stores a copy of `message` in the dead-letter stream with the error; `false` (and a
    /// delayed `Nak`) when the copy was not stored.
    async fn copy_to_dead_letters(
        &self,
        message: &Message,
        event: Option<&StoredEvent>,
        error: &FlextError,
        delivered: u32,
        sequence: u64,
    ) -> bool {
        let mut headers = message.headers.clone().unwrap_or_default();
        let id = match event {
            Some(event) => {
                headers.insert(header::DEAD_EVENT_ID, event.event_id.to_string());
                format!("{}:{}", self.durable, event.event_id)
            }
            None => format!("{}:seq:{sequence}", self.durable),
        };
        headers.insert("Nats-Msg-Id", id);
        headers.insert(header::ERROR_CODE, error.code().as_str());
        headers.insert(header::ERROR_MESSAGE, escape(&error.to_string()));
        headers.insert(header::DELIVERED, delivered.to_string());
        headers.insert(header::CONSUMER, self.durable.as_str());
        headers.insert(header::ORIGINAL_SUBJECT, message.subject.as_str());
        headers.insert(header::ORIGINAL_SEQUENCE, sequence.to_string());
        // `{category}.{type}`, as the event was published.
        let tail = message
            .subject
            .as_str()
            .strip_prefix(self.subject_prefix.as_str())
            .and_then(|t| t.strip_prefix('.'))
            .unwrap_or("_._");
        let subject = format!("{}.{}.{tail}", self.dead_letter_prefix, self.durable);
        let stored = match self
            .jetstream
            .publish_with_headers(subject, headers, message.payload.clone())
            .await
        {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if !stored {
            self.retry(message, error, delivered).await;
        }
        stored
    }
}

/// How many times `message` was delivered, and its sequence in the stream.
fn delivery(message: &Message) -> (u32, u64) {
    match message.info() {
        Ok(info) => (
            u32::try_from(info.delivered).unwrap_or(u32::MAX),
            info.stream_sequence,
        ),
        Err(_) => (1, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_refuses_settings_outside_their_ranges_naming_them() {
        let ok = |max, wait| DeliveryPolicy::new(max, Duration::from_millis(wait)).is_ok();
        assert!(ok(1, 100) && ok(10_000, 3_600_000));
        assert!(!ok(0, 1_000) && !ok(10_001, 1_000));
        assert!(!ok(3, 99) && !ok(3, 3_600_001));
        let err = DeliveryPolicy::new(3, Duration::from_millis(99)).unwrap_err();
        assert!(err.to_string().contains("ack_wait"), "{err}");

        let policy = DeliveryPolicy::new(5, Duration::from_secs(1)).unwrap();
        let backoff = |delays: &[u64]| {
            policy
                .clone()
                .with_backoff(delays.iter().map(|d| Duration::from_millis(*d)).collect())
        };
        assert!(backoff(&[1, 3_600_000]).is_ok());
        assert!(backoff(&[]).is_err());
        assert!(backoff(&[0]).is_err());
        let err = backoff(&[5, 3_600_001]).unwrap_err();
        assert!(err.to_string().contains("backoff"), "{err}");
    }

    #[test]
    fn the_nth_failure_waits_the_nth_delay_and_the_last_repeats() {
        let policy = DeliveryPolicy::new(9, Duration::from_secs(1))
            .unwrap()
            .with_backoff(vec![
                Duration::from_millis(10),
                Duration::from_millis(20),
                Duration::from_millis(30),
            ])
            .unwrap();
        let delays: Vec<u64> = (0..=5)
            .map(|n| policy.delay_after(n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [10, 10, 20, 30, 30, 30]);
        assert_eq!(
            DeliveryPolicy::default().delay_after(1),
            Duration::from_secs(1)
        );
        assert_eq!(DeliveryPolicy::default().max_deliver(), 5);
    }

    #[test]
    fn the_consumer_settings_refuse_values_outside_their_ranges() {
        let config = ConsumerConfig::new("group-1").unwrap();
        assert_eq!(config.durable(), "group-1");
        assert!(ConsumerConfig::new("a.b").is_err());
        assert!(config.clone().with_partitions(0).is_err());
        assert!(config.clone().with_partitions(257).is_err());
        assert!(config.clone().with_partitions(256).is_ok());
        assert!(config.clone().with_max_ack_pending(0).is_err());
        let small = config.clone().with_max_ack_pending(10).unwrap();
        assert_eq!((small.max_ack_pending, small.batch), (10, 10));
        let hb = |ms| config.clone().with_heartbeat(Duration::from_millis(ms));
        assert!(hb(100).is_ok() && hb(30_000).is_ok());
        assert!(hb(99).is_err() && hb(30_001).is_err());
    }

    #[test]
    fn a_streams_messages_always_go_to_one_partition_and_streams_spread() {
        let of = |stream: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::STREAM_ID, stream);
            partition_of(Some(&headers), 8)
        };
        assert_eq!(of("Account-1"), of("Account-1"));
        let used: std::collections::HashSet<usize> =
            (0..64).map(|i| of(&format!("Account-{i}"))).collect();
        assert!(used.len() > 4, "{used:?}");
        assert!(used.iter().all(|p| *p < 8));
        assert!(partition_of(None, 8) < 8);
    }
}
