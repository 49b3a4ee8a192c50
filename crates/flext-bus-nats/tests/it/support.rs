//! What the tests share: events, a recording sink, waiting.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flext_bus_nats::async_nats::jetstream;
use flext_bus_nats::{EventSink, EventStreams, NatsConsumer, NatsRelay};
use flext_protocols::EventStore;
use flext_types::{ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent, StoredEvent};

/// Appends `per_stream` deposits to each of `streams` streams `{category}-{i}`, round-robin,
/// so the streams interleave in the log; the amount of each is its version.
pub(crate) async fn append_round_robin(
    store: &dyn EventStore,
    category: &str,
    streams: usize,
    per_stream: u64,
) {
    for version in 1..=per_stream {
        for i in 0..streams {
            let event = NewEvent::new("Deposited", JsonPayload::encode(&version).unwrap());
            store
                .append(
                    &format!("{category}-{i}"),
                    ExpectedVersion::Any,
                    vec![event],
                )
                .await
                .unwrap();
        }
    }
}

/// A sink recording every application, in memory; it fails (and counts the tries of)
/// the streams it is told to.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) applied: Mutex<HashMap<String, u64>>,
    /// (stream, version) in the order applied, repeats included.
    pub(crate) log: Mutex<Vec<(String, u64)>>,
    pub(crate) poison: Mutex<Vec<String>>,
    pub(crate) tries: Mutex<Vec<(String, u64, tokio::time::Instant)>>,
    pub(crate) delay: Mutex<Duration>,
    /// Applications under way, and the most there were at once.
    pub(crate) running: std::sync::atomic::AtomicUsize,
    pub(crate) most_at_once: std::sync::atomic::AtomicUsize,
}

impl Recorder {
    pub(crate) fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Every (stream, version) applied exactly once and in version order per stream.
    pub(crate) fn assert_once_in_order(&self, expected: usize) {
        let log = self.log.lock().unwrap();
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (stream, version) in log.iter() {
            let before = last.insert(stream, *version).unwrap_or(0);
            assert_eq!(
                *version,
                before + 1,
                "{stream}: version {version} applied after {before}"
            );
        }
        assert_eq!(log.len(), expected, "applications");
    }
}

#[async_trait]
impl EventSink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn applied_version(&self, stream_id: &str) -> FlextResult<u64> {
        Ok(self
            .applied
            .lock()
            .unwrap()
            .get(stream_id)
            .copied()
            .unwrap_or(0))
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most_at_once.fetch_max(now, SeqCst);
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.running.fetch_sub(1, SeqCst);
        if self
            .poison
            .lock()
            .unwrap()
            .iter()
            .any(|p| **p == *event.stream_id)
        {
            self.tries.lock().unwrap().push((
                event.stream_id.to_string(),
                event.version,
                tokio::time::Instant::now(),
            ));
            return Err(FlextError::operation(format!(
                "{} v{} is poison",
                event.stream_id, event.version
            )));
        }
        self.log
            .lock()
            .unwrap()
            .push((event.stream_id.to_string(), event.version));
        self.pass(event).await
    }

    async fn pass(&self, event: &StoredEvent) -> FlextResult<()> {
        self.applied
            .lock()
            .unwrap()
            .insert(event.stream_id.to_string(), event.version);
        Ok(())
    }
}

/// Waits until `done` holds, at most `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The streams of a test, named after it.
pub(crate) fn streams(test: &str) -> EventStreams {
    EventStreams::new(test.to_uppercase(), format!("{test}.events")).unwrap()
}

/// How many messages the stream holds.
pub(crate) async fn stored(jetstream: &jetstream::Context, stream: &str) -> u64 {
    let mut stream = jetstream.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// Stops a task of [`until_stopped`] (so does dropping it).
pub(crate) type Stop = tokio::sync::oneshot::Sender<()>;
/// The task of [`until_stopped`]: what its run returned.
pub(crate) type Task = tokio::task::JoinHandle<FlextResult<()>>;

/// Spawns `run` with a shutdown future that completes when the returned [`Stop`] is sent
/// (or dropped).
pub(crate) fn until_stopped<F, Fut>(run: F) -> (Stop, Task)
where
    F: FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = FlextResult<()>> + Send + 'static,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = Box::pin(async move {
        let _ = stopped.await;
    });
    (stop, tokio::spawn(run(shutdown)))
}

/// Runs `relay` until stopped.
pub(crate) fn spawn_relay(relay: NatsRelay) -> (Stop, Task) {
    until_stopped(|shutdown| async move { relay.run(shutdown).await })
}

/// Runs `consumer` until stopped (an `Arc` to keep reading its metrics meanwhile).
pub(crate) fn spawn_consumer(consumer: impl Into<Arc<NatsConsumer>>) -> (Stop, Task) {
    let consumer = consumer.into();
    until_stopped(|shutdown| async move { consumer.run(shutdown).await })
}

/// What most tests start with: a private server, its JetStream, the test's streams
/// (created), an in-memory store.
pub(crate) struct Setup {
    pub(crate) server: crate::server::NatsServer,
    pub(crate) js: jetstream::Context,
    pub(crate) layout: EventStreams,
    pub(crate) store: Arc<flext_store::InMemoryEventStore>,
}

impl Setup {
    pub(crate) async fn start(test: &str) -> Self {
        Self::start_with(streams(test)).await
    }

    /// With a duplicate window of `window` instead of the server's 2 minutes.
    pub(crate) async fn start_with_window(test: &str, window: Duration) -> Self {
        Self::start_with(streams(test).with_duplicate_window(window).unwrap()).await
    }

    async fn start_with(layout: EventStreams) -> Self {
        let server = crate::server::NatsServer::start();
        let js = jetstream::new(server.client().await);
        layout.ensure(&js).await.unwrap();
        Self {
            server,
            js,
            layout,
            store: Arc::default(),
        }
    }
}

/// The relay of `store` to `layout`, named `relay`.
pub(crate) fn relay_of<S>(
    store: &Arc<S>,
    js: &jetstream::Context,
    layout: &EventStreams,
) -> NatsRelay
where
    S: EventStore + flext_protocols::CheckpointStore + 'static,
{
    NatsRelay::new(
        "relay",
        store.clone(),
        store.clone(),
        js.clone(),
        layout.clone(),
    )
}

/// What the server says of the consumer `durable` of `stream`, when it exists.
pub(crate) async fn consumer_info(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> Option<jetstream::consumer::Info> {
    let mut consumer: jetstream::consumer::PullConsumer =
        js.get_consumer_from_stream(durable, stream).await.ok()?;
    consumer.info().await.ok().cloned()
}
