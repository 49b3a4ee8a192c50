//! The NATS adapter beside raw async-nats on the same server, in the same run (the
//! physical limit):
//!
//! - `nats_relay/publish_1000`: [`NatsRelay`] publishing 1000 stored events from an
//!   `InMemoryEventStore` until every one is acknowledged, against
//!   `jetstream.publish_with_headers` of 1000 messages with message ids, pipelined with the
//!   same window of 256 publishes awaiting their acknowledgement;
//! - `nats_consume/ack_1000`: [`NatsConsumer`] applying 1000 events to a sink whose effect
//!   is nothing (it only keeps the versions it applied), against a raw pull consumer acknowledging 1000 messages;
//! - `nats_remote/round_trip`: one remote command through `CommandBus::register_remote`,
//!   [`NatsTransport`], [`NatsWorker`] and `RemoteHandlers` to a worker bus with a trivial
//!   handler, against `client.request` to a raw responder. Then 2000 sequential round
//!   trips of each give p50 and p99, written to `criterion/nats_remote/percentiles.json`
//!   for the performance report.
//!
//! `FLEXT_TEST_NATS_URL=nats://127.0.0.1:4222 cargo bench -p flext-bus-nats --bench nats`;
//! without the variable it says so and measures nothing. The streams and consumers carry
//! the process id in their names and are deleted at the end.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use async_trait::async_trait;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flext_bus_nats::async_nats;
use flext_bus_nats::codec;
use flext_bus_nats::{
    ConsumerConfig, EventSink, EventStreams, NatsConsumer, NatsRelay, NatsTransport, NatsWorker,
};
use flext_handlers::cqrs::{CommandBus, RemoteHandlers};
use flext_protocols::{CheckpointStore, Command, EventStore};
use flext_store::InMemoryEventStore;
use flext_types::{DeadLetter, ExpectedVersion, FlextResult, JsonPayload, NewEvent, StoredEvent};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, watch};

/// Events per iteration of the relay and consumer benchmarks.
const EVENTS: u64 = 1_000;

/// The streams (aggregates) those events are spread over, round-robin.
const STREAMS: u64 = 100;

/// Publishes awaiting their acknowledgement at once, in the relay and its baseline.
const IN_FLIGHT: usize = 256;

/// Sequential round trips measured for the percentiles.
const ROUND_TRIPS: usize = 2_000;

fn server() -> Option<String> {
    let url = std::env::var("FLEXT_TEST_NATS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipped: FLEXT_TEST_NATS_URL is not set");
    }
    url
}

/// A name unique to this run: `FLEXT_BENCH_{pid}_{what}`.
fn name(what: &str) -> String {
    format!("FLEXT_BENCH_{}_{what}", std::process::id())
}

/// The layout of `what`: stream `FLEXT_BENCH_{pid}_{what}`, subjects
/// `flext_bench_{pid}.{what}.*.*`.
fn layout(what: &str) -> EventStreams {
    EventStreams::new(
        name(what),
        format!("flext_bench_{}.{}", std::process::id(), what.to_lowercase()),
    )
    .expect("a valid layout")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn connect(url: &str) -> async_nats::Client {
    async_nats::connect(url)
        .await
        .expect("the NATS server is reachable")
}

/// A store holding `EVENTS` deposits over `STREAMS` accounts, interleaved in the log.
async fn filled_store() -> Arc<InMemoryEventStore> {
    let store = Arc::new(InMemoryEventStore::new());
    for i in 0..EVENTS {
        let account = i % STREAMS;
        let payload = JsonPayload::encode(&serde_json::json!({
            "account": format!("Account-{account}"),
            "amount": i,
            "currency": "EUR",
        }))
        .expect("a JSON payload");
        store
            .append(
                &format!("Account-{account}"),
                ExpectedVersion::Any,
                vec![NewEvent::new("Deposited", payload)],
            )
            .await
            .expect("the append succeeds");
    }
    store
}

/// A checkpoint store that tells when the relay saved a position.
#[derive(Debug)]
struct Watched {
    inner: Arc<InMemoryEventStore>,
    saved: watch::Sender<u64>,
}

#[async_trait]
impl CheckpointStore for Watched {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        self.inner.save_checkpoint(name, position).await?;
        self.saved.send_replace(position);
        Ok(())
    }

    async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()> {
        self.inner.add_dead_letter(name, letter).await
    }

    async fn dead_letters(&self, name: &str) -> FlextResult<Vec<DeadLetter>> {
        self.inner.dead_letters(name).await
    }

    async fn remove_dead_letter(&self, name: &str, position: u64) -> FlextResult<bool> {
        self.inner.remove_dead_letter(name, position).await
    }

    async fn reset(&self, name: &str) -> FlextResult<()> {
        self.inner.reset(name).await
    }
}

/// Relays `store` until its checkpoint reaches `EVENTS` (every event acknowledged).
async fn relay_all(
    js: &jetstream::Context,
    streams: &EventStreams,
    store: Arc<InMemoryEventStore>,
) {
    let (saved, mut seen) = watch::channel(0);
    let checkpoints = Arc::new(Watched {
        inner: Arc::clone(&store),
        saved,
    });
    let relay = NatsRelay::new("relay", store, checkpoints, js.clone(), streams.clone())
        .with_max_in_flight(IN_FLIGHT)
        .expect("a valid window");
    relay
        .run(async move {
            let _ = seen.wait_for(|position| *position >= EVENTS).await;
        })
        .await
        .expect("the relay runs");
}

async fn purge(js: &jetstream::Context, stream: &str) {
    js.get_stream(stream)
        .await
        .expect("the stream exists")
        .purge()
        .await
        .expect("the stream is purged");
}

/// The messages the raw baseline publishes: the relay's subjects and bodies, each with a
/// message id of its own.
fn raw_messages(streams: &EventStreams) -> Vec<(String, uuid::Uuid, Bytes)> {
    (0..EVENTS)
        .map(|i| {
            let body = serde_json::json!({
                "account": format!("Account-{}", i % STREAMS),
                "amount": i,
                "currency": "EUR",
            });
            (
                format!("{}.Account.Deposited", streams.subject_prefix()),
                uuid::Uuid::now_v7(),
                Bytes::from(body.to_string()),
            )
        })
        .collect()
}

/// Publishes `messages`, at most `IN_FLIGHT` awaiting their acknowledgement, and awaits
/// every acknowledgement.
async fn raw_publish(
    js: &jetstream::Context,
    messages: impl Iterator<Item = (String, HeaderMap, Bytes)>,
) {
    let mut in_flight: VecDeque<jetstream::context::PublishAckFuture> =
        VecDeque::with_capacity(IN_FLIGHT);
    for (subject, headers, body) in messages {
        if in_flight.len() == IN_FLIGHT
            && let Some(ack) = in_flight.pop_front()
        {
            let _: jetstream::publish::PublishAck = ack.await.expect("the publish is stored");
        }
        let ack = js
            .publish_with_headers(subject, headers, body)
            .await
            .expect("the publish is sent");
        in_flight.push_back(ack);
    }
    for ack in in_flight {
        let _: jetstream::publish::PublishAck = ack.await.expect("the publish is stored");
    }
}

/// Only the message id.
fn id_header((subject, id, body): (String, uuid::Uuid, Bytes)) -> (String, HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.to_string().as_str());
    (subject, headers, body)
}

/// The message the relay sends for `event`, sent here with async-nats alone: the same
/// subject, headers and body.
fn relay_message(streams: &EventStreams, event: &StoredEvent) -> (String, HeaderMap, Bytes) {
    let (headers, body) = codec::encode(event).expect("the event encodes");
    (
        codec::default_subject(streams.subject_prefix(), event),
        headers,
        body,
    )
}

fn relay(c: &mut Criterion) {
    let Some(url) = server() else {
        return;
    };
    let rt = runtime();
    let js = rt.block_on(async { jetstream::new(connect(&url).await) });
    let streams = layout("relay");
    rt.block_on(streams.ensure(&js)).expect("the streams exist");

    let mut group = c.benchmark_group("nats_relay");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(EVENTS));
    group.bench_function("publish_1000/flext", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (js, streams) = (js.clone(), streams.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A store of its own (fresh event ids, so the server stores every
                    // one) and an empty stream, outside the timing.
                    let store = filled_store().await;
                    purge(&js, streams.stream()).await;
                    let start = Instant::now();
                    relay_all(&js, &streams, store).await;
                    total += start.elapsed();
                }
                total
            }
        });
    });
    group.bench_function("publish_1000/raw_async_publish", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (js, streams) = (js.clone(), streams.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let messages = raw_messages(&streams);
                    purge(&js, streams.stream()).await;
                    let start = Instant::now();
                    raw_publish(&js, messages.into_iter().map(id_header)).await;
                    total += start.elapsed();
                }
                total
            }
        });
    });
    group.bench_function("publish_1000/raw_relay_headers", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (js, streams) = (js.clone(), streams.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let events = filled_store()
                        .await
                        .read_all(1, EVENTS as usize)
                        .await
                        .expect("the events are read");
                    purge(&js, streams.stream()).await;
                    let start = Instant::now();
                    raw_publish(&js, events.iter().map(|e| relay_message(&streams, e))).await;
                    total += start.elapsed();
                }
                total
            }
        });
    });
    group.finish();
}

/// A sink whose effect is nothing: it keeps the version it applied per stream (in memory,
/// as the consumer's version gate needs) and says when `EVENTS` are in.
#[derive(Debug, Default)]
struct Discard {
    versions: Mutex<HashMap<Arc<str>, u64>>,
    applied: AtomicU64,
    all_in: Notify,
}

#[async_trait]
impl EventSink for Discard {
    fn name(&self) -> &str {
        "discard"
    }

    async fn applied_version(&self, stream_id: &str) -> FlextResult<u64> {
        Ok(self
            .versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(stream_id)
            .copied()
            .unwrap_or(0))
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        self.pass(event).await?;
        if self.applied.fetch_add(1, Ordering::Relaxed) + 1 == EVENTS {
            self.all_in.notify_one();
        }
        Ok(())
    }

    async fn pass(&self, event: &StoredEvent) -> FlextResult<()> {
        self.versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(Arc::clone(&event.stream_id), event.version);
        Ok(())
    }
}

/// Creates the durable `durable` on `streams`' stream as `NatsConsumer` would (from the
/// start, explicit acks).
async fn create_durable(
    js: &jetstream::Context,
    streams: &EventStreams,
    durable: &str,
) -> jetstream::consumer::PullConsumer {
    let stream = js
        .get_stream(streams.stream())
        .await
        .expect("the stream exists");
    stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.to_owned()),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: 6,
            max_ack_pending: 1024,
            filter_subject: format!("{}.*.*", streams.subject_prefix()),
            ..Default::default()
        })
        .await
        .expect("the consumer is created")
}

async fn delete_durable(js: &jetstream::Context, streams: &EventStreams, durable: &str) {
    js.get_stream(streams.stream())
        .await
        .expect("the stream exists")
        .delete_consumer(durable)
        .await
        .expect("the consumer is deleted");
}

fn consume(c: &mut Criterion) {
    let Some(url) = server() else {
        return;
    };
    let rt = runtime();
    let js = rt.block_on(async { jetstream::new(connect(&url).await) });
    let streams = layout("consume");
    rt.block_on(async {
        streams.ensure(&js).await.expect("the streams exist");
        // The stream holds the 1000 events once; each iteration's consumer reads them all.
        purge(&js, streams.stream()).await;
        relay_all(&js, &streams, filled_store().await).await;
    });

    let mut group = c.benchmark_group("nats_consume");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(EVENTS));
    let mut round = 0_u64;
    group.bench_function("ack_1000/flext", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (js, streams) = (js.clone(), streams.clone());
            let first = round;
            round += iters;
            async move {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let durable = format!("flext-{}", first + i);
                    create_durable(&js, &streams, &durable).await;
                    let sink = Arc::new(Discard::default());
                    let consumer = NatsConsumer::new(
                        js.clone(),
                        streams.clone(),
                        ConsumerConfig::new(durable.as_str()).expect("a valid durable"),
                        sink.clone(),
                    );
                    let start = Instant::now();
                    consumer
                        .run(sink.all_in.notified())
                        .await
                        .expect("the consumer runs");
                    total += start.elapsed();
                    assert_eq!(sink.applied.load(Ordering::Relaxed), EVENTS);
                    delete_durable(&js, &streams, &durable).await;
                }
                total
            }
        });
    });
    group.bench_function("ack_1000/raw_pull_ack", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (js, streams) = (js.clone(), streams.clone());
            let first = round;
            round += iters;
            async move {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let durable = format!("raw-{}", first + i);
                    let consumer = create_durable(&js, &streams, &durable).await;
                    let start = Instant::now();
                    let mut messages = consumer
                        .stream()
                        .max_messages_per_batch(128)
                        .messages()
                        .await
                        .expect("the pull starts");
                    for _ in 0..EVENTS {
                        let message = messages
                            .next()
                            .await
                            .expect("a message")
                            .expect("a delivery");
                        message.ack().await.expect("the ack is sent");
                    }
                    drop(messages);
                    total += start.elapsed();
                    delete_durable(&js, &streams, &durable).await;
                }
                total
            }
        });
    });
    group.finish();
}

/// The remote command: its output is its input.
#[derive(Debug, Serialize, Deserialize)]
struct Echo {
    n: u64,
}

impl Command for Echo {
    type Output = u64;
}

/// The p50 and p99 of `samples`, in nanoseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_nanos() as f64
    };
    (at(0.50), at(0.99))
}

/// Where criterion saves its results in this run.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("criterion")
}

fn remote(c: &mut Criterion) {
    let Some(url) = server() else {
        return;
    };
    let rt = runtime();
    let prefix = format!("flext_bench_{}.rpc", std::process::id());
    let raw_subject = format!("{prefix}.raw.Echo");
    let (bus, worker, raw_client, responder) = rt.block_on(async {
        // The caller and the worker each have a connection of their own, as two
        // processes would.
        let caller = connect(&url).await;
        let served = connect(&url).await;
        let mut worker_bus = CommandBus::new();
        worker_bus
            .register_fn(|echo: Echo| async move { Ok(echo.n) })
            .expect("the handler registers");
        let handlers = RemoteHandlers::new()
            .command::<Echo>(Arc::new(worker_bus))
            .expect("the route is served");
        let worker = NatsWorker::start(
            served.clone(),
            prefix.as_str(),
            &name("worker"),
            Arc::new(handlers),
            16,
        )
        .await
        .expect("the worker starts");
        let mut bus = CommandBus::new();
        bus.register_remote::<Echo>(Arc::new(
            NatsTransport::new(caller.clone(), prefix.as_str()).expect("a valid prefix"),
        ))
        .expect("the remote route registers");

        let mut requests = served
            .subscribe(raw_subject.clone())
            .await
            .expect("the responder subscribes");
        served.flush().await.expect("the subscription is sent");
        let responder = tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _sent = served.publish(reply, request.payload).await;
                }
            }
        });
        (bus, worker, caller, responder)
    });
    let payload = Bytes::from(serde_json::to_vec(&Echo { n: 7 }).expect("JSON"));
    let raw_request = || {
        let (client, subject, payload) = (raw_client.clone(), raw_subject.clone(), payload.clone());
        async move {
            let answer = client
                .request(subject, payload)
                .await
                .expect("the responder answers");
            assert_eq!(answer.payload.as_ref(), br#"{"n":7}"#);
        }
    };
    let flext_send = || async {
        assert_eq!(
            bus.send(Echo { n: 7 }).await.expect("the worker answers"),
            7
        );
    };

    let mut group = c.benchmark_group("nats_remote");
    group.sample_size(50);
    group.bench_function("round_trip/flext", |b| {
        b.to_async(&rt).iter(flext_send);
    });
    group.bench_function("round_trip/raw_request", |b| {
        b.to_async(&rt).iter(raw_request);
    });
    group.finish();

    // The tail: sequential round trips of each, timed one by one.
    let (flext, raw) = rt.block_on(async {
        let mut flext = Vec::with_capacity(ROUND_TRIPS);
        let mut raw = Vec::with_capacity(ROUND_TRIPS);
        for _ in 0..ROUND_TRIPS {
            let start = Instant::now();
            flext_send().await;
            flext.push(start.elapsed());
            let start = Instant::now();
            raw_request().await;
            raw.push(start.elapsed());
        }
        (percentiles(flext), percentiles(raw))
    });
    let report = serde_json::json!({
        "round_trips": ROUND_TRIPS,
        "flext": {"p50_ns": flext.0, "p99_ns": flext.1},
        "raw_request": {"p50_ns": raw.0, "p99_ns": raw.1},
    });
    println!(
        "nats_remote/round_trip over {ROUND_TRIPS} sequential calls: flext p50 {:.1} µs, p99 \
         {:.1} µs; raw request p50 {:.1} µs, p99 {:.1} µs",
        flext.0 / 1e3,
        flext.1 / 1e3,
        raw.0 / 1e3,
        raw.1 / 1e3
    );
    let dir = criterion_dir().join("nats_remote");
    std::fs::create_dir_all(&dir).expect("the results directory exists");
    std::fs::write(dir.join("percentiles.json"), report.to_string())
        .expect("the percentiles are written");

    rt.block_on(async {
        worker.stop().await;
        responder.abort();
    });
}

/// Deletes the streams (and with them the consumers) this run made.
fn cleanup(_: &mut Criterion) {
    let Some(url) = server() else {
        return;
    };
    runtime().block_on(async {
        let js = jetstream::new(connect(&url).await);
        for what in ["relay", "consume"] {
            let streams = layout(what);
            for stream in [streams.stream(), streams.dead_letter_stream()] {
                let _deleted = js.delete_stream(stream).await;
            }
        }
    });
}

criterion_group!(benches, relay, consume, remote, cleanup);
criterion_main!(benches);
