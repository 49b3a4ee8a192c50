//! Durable consumers: the version gate, retries and dead letters, a broker killed and
//! restarted, a consumer process killed, backpressure.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flext_bus_nats::async_nats::jetstream;
use flext_bus_nats::codec::{self, header};
use flext_bus_nats::{ConsumerConfig, DeliveryPolicy, EventStreams, NatsConsumer, VersionedSink};
use flext_protocols::{EventStore, MetricsSource};
use flext_store::InMemoryEventStore;
use flext_types::{FlextResult, StoredEvent};
use futures_util::StreamExt;

use crate::server::{NatsServer, connect, enabled};
use crate::support::{
    Recorder, Setup, append_round_robin, consumer_info, eventually, relay_of, spawn_consumer,
    spawn_relay, stored, streams,
};

/// The stored events of `store`, in log order.
async fn log(store: &InMemoryEventStore) -> Vec<StoredEvent> {
    store.read_all(1, 100_000).await.unwrap()
}

/// Publishes `event` as the relay would.
async fn publish(js: &jetstream::Context, layout: &EventStreams, event: &StoredEvent) {
    let (headers, body) = codec::encode(event).unwrap();
    js.publish_with_headers(
        codec::default_subject(layout.subject_prefix(), event),
        headers,
        body,
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_gate_applies_each_version_once_in_order_whatever_the_arrival_order() {
    if !enabled("the_version_gate_applies_each_version_once_in_order_whatever_the_arrival_order") {
        return;
    }
    // A short window: the server stores the repeats, the gate must drop them.
    let Setup {
        server: _server,
        js,
        layout,
        store,
    } = Setup::start_with_window("gate", Duration::from_millis(100)).await;
    append_round_robin(&*store, "Account", 2, 3).await;
    let events = log(&store).await;
    let of = |stream: &str, version: u64| {
        events
            .iter()
            .find(|e| &*e.stream_id == stream && e.version == version)
            .unwrap()
            .clone()
    };
    // Account-0: 3, 1, 1, 2 (a gap, a duplicate); Account-1: 1, 2, 3, 2.
    for (stream, version) in [
        ("Account-0", 3),
        ("Account-1", 1),
        ("Account-0", 1),
        ("Account-1", 2),
        ("Account-1", 3),
    ] {
        publish(&js, &layout, &of(stream, version)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    for (stream, version) in [("Account-0", 1), ("Account-1", 2), ("Account-0", 2)] {
        publish(&js, &layout, &of(stream, version)).await;
    }
    assert_eq!(stored(&js, layout.stream()).await, 8);
    let recorder = Arc::new(Recorder::default());
    let (stop, task) = spawn_consumer(NatsConsumer::new(
        js.clone(),
        layout.clone(),
        ConsumerConfig::new("gate")
            .unwrap()
            .with_partitions(2)
            .unwrap(),
        recorder.clone(),
    ));
    eventually(
        Duration::from_secs(10),
        "every delivery answered",
        || async {
            consumer_info(&js, layout.stream(), "gate")
                .await
                .is_some_and(|i| {
                    i.num_ack_pending == 0 && i.num_pending == 0 && i.delivered.stream_sequence == 8
                })
                && recorder.count() == 6
        },
    )
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    recorder.assert_once_in_order(6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_retried_with_the_policys_delays_then_dead_lettered_while_other_streams_flow() {
    if !enabled(
        "poison_is_retried_with_the_policys_delays_then_dead_lettered_while_other_streams_flow",
    ) {
        return;
    }
    let Setup {
        server: _server,
        js,
        layout,
        store,
    } = Setup::start("poison").await;
    append_round_robin(&*store, "Account", 6, 5).await;
    let recorder = Arc::new(Recorder::default());
    recorder.poison.lock().unwrap().push("Account-3".into());
    let delays = [Duration::from_millis(300), Duration::from_millis(600)];
    let policy = DeliveryPolicy::new(3, Duration::from_secs(5))
        .unwrap()
        .with_backoff(delays.to_vec())
        .unwrap();
    let (stop_relay, relay) = spawn_relay(relay_of(&store, &js, &layout));
    let (stop, task) = spawn_consumer(NatsConsumer::new(
        js.clone(),
        layout.clone(),
        ConsumerConfig::new("poison").unwrap().with_policy(policy),
        recorder.clone(),
    ));
    // The other five streams flow at once, not after the poison's retries.
    eventually(
        Duration::from_millis(800),
        "the healthy streams applied",
        || async { recorder.count() >= 25 },
    )
    .await;
    // Account-3 v1 fails three times, then goes to the dead-letter stream; its later
    // versions follow it.
    eventually(
        Duration::from_secs(10),
        "the poisoned stream passed",
        || async { recorder.tries.lock().unwrap().len() >= 3 * 5 },
    )
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    stop_relay.send(()).unwrap();
    relay.await.unwrap().unwrap();

    let tries = recorder.tries.lock().unwrap().clone();
    let first: Vec<_> = tries
        .iter()
        .filter(|(_, v, _)| *v == 1)
        .map(|(_, _, t)| *t)
        .collect();
    assert_eq!(first.len(), 3, "delivered max_deliver times: {tries:?}");
    for (gap, delay) in first.windows(2).map(|w| w[1] - w[0]).zip(delays) {
        assert!(gap >= delay, "waited {gap:?}, the policy says {delay:?}");
        assert!(
            gap < delay + Duration::from_millis(700),
            "waited {gap:?} for {delay:?}"
        );
    }
    // In order: every try of v1 before any try of v2.
    let versions: Vec<u64> = tries.iter().map(|(_, v, _)| *v).collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    recorder.assert_once_in_order(25);

    let mut letters = js
        .get_stream(layout.dead_letter_stream())
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap()
        .fetch()
        .max_messages(10)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    let mut dead = Vec::new();
    while let Some(Ok(letter)) = letters.next().await {
        let headers = letter.headers.clone().unwrap();
        let event = codec::decode_message(Some(&headers), &letter.payload).unwrap();
        assert_eq!(&*event.stream_id, "Account-3");
        assert_eq!(
            headers.get(header::ERROR_CODE).unwrap().as_str(),
            "FLEXT_1002"
        );
        assert_eq!(headers.get(header::DELIVERED).unwrap().as_str(), "3");
        assert_eq!(headers.get(header::CONSUMER).unwrap().as_str(), "poison");
        assert!(
            headers
                .get(header::ERROR_MESSAGE)
                .unwrap()
                .as_str()
                .contains("is poison")
        );
        assert_eq!(
            letter.subject.as_str(),
            format!("{}.poison.Account.Deposited", layout.dead_letter_prefix())
        );
        dead.push(event.version);
    }
    assert_eq!(dead, [1, 2, 3, 4, 5]);
    let info = consumer_info(&js, layout.stream(), "poison").await.unwrap();
    assert_eq!(info.num_ack_pending, 0);
}

/// The broker is SIGKILLed twice while a relay publishes and a consumer applies: every
/// event is applied once, in per-stream order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_the_broker_mid_stream_loses_and_repeats_nothing() {
    if !enabled("killing_and_restarting_the_broker_mid_stream_loses_and_repeats_nothing") {
        return;
    }
    let mut server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let layout = streams("brokerkill");
    layout.ensure(&js).await.unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    let recorder = Arc::new(Recorder::default());
    let (stop_relay, relay) = spawn_relay(
        relay_of(&store, &js, &layout)
            .with_max_in_flight(32)
            .unwrap(),
    );
    let policy = DeliveryPolicy::new(50, Duration::from_secs(2))
        .unwrap()
        .with_backoff(vec![Duration::from_millis(100)])
        .unwrap();
    let config = ConsumerConfig::new("brokerkill")
        .unwrap()
        .with_policy(policy)
        .with_heartbeat(Duration::from_millis(500))
        .unwrap();
    let (stop, task) = spawn_consumer(NatsConsumer::new(
        js.clone(),
        layout.clone(),
        config,
        recorder.clone(),
    ));
    let writer = tokio::spawn({
        let store = store.clone();
        async move {
            for round in 0..6 {
                append_round_robin(&*store, "Account", 50, 10).await;
                tokio::time::sleep(Duration::from_millis(100 * round)).await;
            }
        }
    });
    for _ in 0..2 {
        eventually(Duration::from_secs(30), "some applied", || {
            let seen = recorder.count();
            async move { seen > 0 }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.restart();
    }
    writer.await.unwrap();
    eventually(Duration::from_secs(60), "all 3000 applied", || async {
        recorder.count() >= 3000
    })
    .await;
    // Late repeats would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    stop_relay.send(()).unwrap();
    relay.await.unwrap().unwrap();
    recorder.assert_once_in_order(3000);
}

/// A slow consumer: the server never has more than `max_ack_pending` events out, and the
/// consumer holds no more than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_keeps_ack_pending_and_what_it_holds_bounded() {
    if !enabled("a_slow_consumer_keeps_ack_pending_and_what_it_holds_bounded") {
        return;
    }
    let Setup {
        server: _server,
        js,
        layout,
        store,
    } = Setup::start("slow").await;
    append_round_robin(&*store, "Account", 20, 100).await;
    let (stop_relay, relay) = spawn_relay(relay_of(&store, &js, &layout));
    eventually(Duration::from_secs(20), "all published", || async {
        stored(&js, layout.stream()).await == 2000
    })
    .await;
    let recorder = Arc::new(Recorder::default());
    *recorder.delay.lock().unwrap() = Duration::from_millis(2);
    let consumer = NatsConsumer::new(
        js.clone(),
        layout.clone(),
        ConsumerConfig::new("slow")
            .unwrap()
            .with_max_ack_pending(40)
            .unwrap()
            .with_partitions(2)
            .unwrap(),
        recorder.clone(),
    );
    let consumer = Arc::new(consumer);
    let (stop, task) = spawn_consumer(Arc::clone(&consumer));
    let mut most = 0;
    let started = Instant::now();
    while recorder.count() < 600 {
        if let Some(info) = consumer_info(&js, layout.stream(), "slow").await {
            assert!(
                info.num_ack_pending <= 40,
                "ack pending {}",
                info.num_ack_pending
            );
            most = most.max(info.num_ack_pending);
        }
        let held = flext_protocols::MetricsSource::metric_set(&*consumer);
        let held = held
            .samples
            .iter()
            .find(|s| s.name == "consumer_held")
            .unwrap();
        assert!(
            matches!(held.value, flext_types::MetricValue::Gauge(g) if g <= 40.0),
            "{held:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(most > 0, "the consumer was loaded");
    let set = flext_protocols::MetricsSource::metric_set(&*consumer);
    let pending = set
        .samples
        .iter()
        .find(|s| s.name == "consumer_pending")
        .unwrap();
    assert!(
        matches!(pending.value, flext_types::MetricValue::Gauge(g) if g > 0.0),
        "the lag shows: {pending:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    stop_relay.send(()).unwrap();
    relay.await.unwrap().unwrap();
}

/// `{stream} {version} {nanos}` as the child prints it.
fn parse_applied(line: &str) -> (String, u64, u128) {
    let mut parts = line.rsplitn(3, ' ');
    let at = parts.next().unwrap().parse().unwrap();
    let version = parts.next().unwrap().parse().unwrap();
    (parts.next().unwrap().to_owned(), version, at)
}

const CONSUMER_CHILD: &str = "FLEXT_NATS_CONSUMER_CHILD";

/// A consumer process of the kill test: applies events slowly (5 ms), keeping its versions
/// in the SQLite file the parent names, printing each event it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_child() {
    let Ok(args) = std::env::var(CONSUMER_CHILD) else {
        return; // Only the kill test runs this, in a child process.
    };
    let (url, path) = args.split_once(' ').unwrap();
    run_file_consumer(url, path, "child").await;
}

/// The wall clock in nanoseconds: the processes of the kill test stamp what they apply
/// with it, one clock for both.
fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Consumes `kill`'s events into a sink whose versions live in the SQLite file `path`,
/// printing `{who} applied {stream} {version}` per event; forever.
async fn run_file_consumer(url: &str, path: &str, who: &'static str) {
    let versions = flext_handlers::stores::SqliteEventStore::open(path)
        .await
        .unwrap();
    let sink = VersionedSink::new(
        "kill",
        Arc::new(versions),
        move |event: StoredEvent| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            println!(
                "{who} applied {} {} {}",
                event.stream_id,
                event.version,
                now_nanos()
            );
            Ok(())
        },
    );
    let js = jetstream::new(connect(url).await);
    let config = ConsumerConfig::new("kill")
        .unwrap()
        .with_policy(DeliveryPolicy::new(5, Duration::from_secs(2)).unwrap())
        .with_max_ack_pending(64)
        .unwrap();
    println!("{who} consuming");
    NatsConsumer::new(js, streams("kill"), config, Arc::new(sink))
        .run(std::future::pending())
        .await
        .unwrap();
}

/// A consumer process is SIGKILLed mid-batch; a second one, waiting beside it on the same
/// durable, takes its events over within the ack wait, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_consumer_takes_over_from_a_killed_one_within_the_ack_wait() {
    if !enabled("a_second_consumer_takes_over_from_a_killed_one_within_the_ack_wait") {
        return;
    }
    let Setup {
        server,
        js,
        layout,
        store,
    } = Setup::start("kill").await;
    append_round_robin(&*store, "Account", 10, 60).await;
    let dir = std::env::temp_dir().join(format!("flext-nats-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("versions.db");
    let path = path.to_str().unwrap().to_owned();
    // The versions file exists before either process opens it.
    drop(
        flext_handlers::stores::SqliteEventStore::open(&path)
            .await
            .unwrap(),
    );

    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "consumer::consumer_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CONSUMER_CHILD, format!("{} {path}", server.url()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the consumer starts");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let tx = lines_tx.clone();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send((line, Instant::now()));
        }
    });
    let mut applied: Vec<(String, u64, u128)> = Vec::new();
    let next =
        |lines: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>| lines.try_recv().ok();
    // The child starts consuming; then the relay publishes.
    let started = Instant::now();
    loop {
        if let Some((line, _)) = next(&mut lines)
            && line.ends_with("child consuming")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (stop_relay, relay) = spawn_relay(relay_of(&store, &js, &layout));
    // The second consumer runs in this process, sharing the durable and the versions.
    let recorder_versions = Arc::new(
        flext_handlers::stores::SqliteEventStore::open(&path)
            .await
            .unwrap(),
    );
    let taken = Arc::new(std::sync::Mutex::new(
        Vec::<(String, u64, Instant, u128)>::new(),
    ));
    let sink = {
        let taken = Arc::clone(&taken);
        VersionedSink::new(
            "kill",
            recorder_versions.clone(),
            move |event: StoredEvent| {
                let taken = Arc::clone(&taken);
                async move {
                    taken.lock().unwrap().push((
                        event.stream_id.to_string(),
                        event.version,
                        Instant::now(),
                        now_nanos(),
                    ));
                    Ok(())
                }
            },
        )
    };
    // Wait until the child is mid-stream, then start the second consumer and kill the
    // child right away.
    loop {
        if let Some((line, _)) = next(&mut lines)
            && let Some(rest) = line.strip_prefix("child applied ")
        {
            applied.push(parse_applied(rest));
            if applied.len() >= 150 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child applied {}",
            applied.len()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let config = ConsumerConfig::new("kill")
        .unwrap()
        .with_policy(DeliveryPolicy::new(5, Duration::from_secs(2)).unwrap())
        .with_max_ack_pending(64)
        .unwrap();
    let (stop, task) = spawn_consumer(NatsConsumer::new(
        js.clone(),
        layout.clone(),
        config,
        Arc::new(sink),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().unwrap();
    let killed_at = Instant::now();
    child.wait().unwrap();
    while let Ok((line, _)) = lines.try_recv() {
        if let Some(rest) = line.strip_prefix("child applied ") {
            applied.push(parse_applied(rest));
        }
    }
    let by_child = applied.len();
    assert!(by_child < 600, "the child was killed mid-stream");
    eventually(Duration::from_secs(30), "all 600 applied", || {
        let done = by_child + taken.lock().unwrap().len() >= 600;
        async move { done }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    stop_relay.send(()).unwrap();
    relay.await.unwrap().unwrap();

    // Takeover: the events the child held (taken from the group, never acknowledged)
    // came to the second consumer one ack wait (2 s) after the kill, and with them the
    // last of the log: everything was applied by 2 s + a margin for a loaded machine.
    let taken = taken.lock().unwrap().clone();
    let last = taken.iter().map(|(_, _, t, _)| *t).max().unwrap();
    let done_after = last.saturating_duration_since(killed_at);
    assert!(
        done_after < Duration::from_secs(2) + Duration::from_millis(1_500),
        "the last event was applied {done_after:?} after the kill"
    );
    let ack_wait_later = taken
        .iter()
        .filter(|(_, _, t, _)| {
            t.saturating_duration_since(killed_at) >= Duration::from_millis(1_900)
        })
        .count();
    assert!(
        ack_wait_later > 0,
        "the child's unacknowledged events came back after the ack wait"
    );
    // Nothing lost; in order per stream; a repeat only of an event the child applied
    // and was killed before recording (at most its partitions' worth).
    // Both processes stamped each application with the wall clock: merged in that order,
    // each stream's versions must run 1, 2, 3, … (a repeat aside).
    let mut all = applied.clone();
    all.extend(taken.iter().map(|(s, v, _, at)| (s.clone(), *v, *at)));
    all.sort_by_key(|(_, _, at)| *at);
    let mut per_stream: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for (stream, version, _) in all {
        per_stream.entry(stream).or_default().push(version);
    }
    let mut repeats = 0;
    for (stream, versions) in &per_stream {
        let mut last = 0;
        for v in versions {
            if *v <= last {
                repeats += 1;
                continue;
            }
            assert_eq!(*v, last + 1, "{stream}: {versions:?}");
            last = *v;
        }
        assert_eq!(last, 60, "{stream} complete");
    }
    assert!(repeats <= 4, "{repeats} repeats");
    let _ = std::fs::remove_dir_all(dir);
}

/// The consumer is deleted on the server while its process runs: it is created again from
/// the ack floor it saved, not from the stream's start; its lag and rebuilds show in the
/// Prometheus exposition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_created_again_from_its_saved_ack_floor() {
    if !enabled("a_deleted_consumer_is_created_again_from_its_saved_ack_floor") {
        return;
    }
    let Setup {
        server: _server,
        js,
        layout,
        store,
    } = Setup::start("floor").await;
    append_round_robin(&*store, "Account", 10, 10).await;
    let (stop_relay, relay) = spawn_relay(relay_of(&store, &js, &layout));
    let recorder = Arc::new(Recorder::default());
    let floors = Arc::new(InMemoryEventStore::new());
    let consumer = Arc::new(
        NatsConsumer::new(
            js.clone(),
            layout.clone(),
            ConsumerConfig::new("floor")
                .unwrap()
                .with_heartbeat(Duration::from_millis(200))
                .unwrap(),
            recorder.clone(),
        )
        .with_floor_store(floors.clone()),
    );
    let (stop, task) = spawn_consumer(Arc::clone(&consumer));
    eventually(
        Duration::from_secs(10),
        "the floor saved at 100",
        || async {
            recorder.count() == 100
                && flext_protocols::CheckpointStore::load_checkpoint(
                    &*floors,
                    "nats-ack-floor/FLOOR/floor",
                )
                .await
                .unwrap()
                    == Some(100)
        },
    )
    .await;
    js.delete_consumer_from_stream("floor", layout.stream())
        .await
        .unwrap();
    append_round_robin(&*store, "Account", 10, 1).await;
    eventually(Duration::from_secs(15), "the later 10 applied", || async {
        recorder.count() == 110
    })
    .await;
    let info = consumer_info(&js, layout.stream(), "floor").await.unwrap();
    // Created again from sequence 101: the first 100 were not delivered again.
    assert_eq!(
        info.config.deliver_policy,
        jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: 101
        }
    );
    assert_eq!(info.delivered.stream_sequence, 110);
    assert_eq!(
        consumer
            .metric_set()
            .samples
            .iter()
            .find(|s| s.name == "consumer_duplicates_total")
            .unwrap()
            .value,
        flext_types::MetricValue::Counter(0)
    );

    let text = flext_handlers::Management::to_prometheus(&flext_handlers::Management::collect(&[
        &*consumer,
    ]));
    for family in [
        "consumer_pending",
        "consumer_ack_pending",
        "consumer_redelivered",
        "consumer_pull_rebuilds_total",
    ] {
        assert!(
            text.contains(&format!(
                "flext_{family}{{source=\"nats_consumer\",consumer=\"floor\"}}"
            )),
            "{family} in:\n{text}"
        );
    }
    let rebuilds = consumer
        .metric_set()
        .samples
        .into_iter()
        .find(|s| s.name == "consumer_pull_rebuilds_total")
        .unwrap();
    assert!(
        matches!(rebuilds.value, flext_types::MetricValue::Counter(n) if n >= 1),
        "{rebuilds:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    stop_relay.send(()).unwrap();
    relay.await.unwrap().unwrap();
    recorder.assert_once_in_order(110);
}

/// A sink that fails to pass a dead-lettered event once: the event comes back, is copied
/// once to the dead-letter stream, passed, and its stream's later versions follow.
#[derive(Debug)]
struct PassFailsOnce {
    inner: Recorder,
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl flext_bus_nats::EventSink for PassFailsOnce {
    fn name(&self) -> &str {
        "pass-fails-once"
    }

    async fn applied_version(&self, stream_id: &str) -> FlextResult<u64> {
        self.inner.applied_version(stream_id).await
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        self.inner.apply(event).await
    }

    async fn pass(&self, event: &StoredEvent) -> FlextResult<()> {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(flext_types::FlextError::storage("the read model is away"));
        }
        self.inner.pass(event).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_sink_cannot_pass_comes_back_and_its_stream_goes_on() {
    if !enabled("a_dead_letter_the_sink_cannot_pass_comes_back_and_its_stream_goes_on") {
        return;
    }
    let Setup {
        server: _server,
        js,
        layout,
        store,
    } = Setup::start("passfail").await;
    append_round_robin(&*store, "Account", 2, 3).await;
    let sink = Arc::new(PassFailsOnce {
        inner: Recorder::default(),
        failed: false.into(),
    });
    sink.inner.poison.lock().unwrap().push("Account-1".into());
    let (stop_relay, relay) = spawn_relay(relay_of(&store, &js, &layout));
    let policy = DeliveryPolicy::new(1, Duration::from_secs(5))
        .unwrap()
        .with_backoff(vec![Duration::from_millis(100)])
        .unwrap();
    let (stop, task) = spawn_consumer(NatsConsumer::new(
        js.clone(),
        layout.clone(),
        ConsumerConfig::new("passfail").unwrap().with_policy(policy),
        sink.clone(),
    ));
    // Account-1's three versions are poison: each is dead-lettered (the first after a
    // failed pass and one more delivery); Account-0 applies.
    eventually(Duration::from_secs(10), "Account-1 passed", || async {
        sink.inner.applied.lock().unwrap().get("Account-1") == Some(&3)
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    stop_relay.send(()).unwrap();
    relay.await.unwrap().unwrap();
    sink.inner.assert_once_in_order(3);
    let letters = stored(&js, layout.dead_letter_stream()).await;
    assert_eq!(letters, 3, "one copy each");
}

/// A stream whose first event waits out a long retry holds its 39 later events (below
/// `max_ack_pending`); the other streams, in the same single partition, flow past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_stream_holds_up_only_its_own_later_events() {
    if !enabled("a_blocked_stream_holds_up_only_its_own_later_events") {
        return;
    }
    let Setup {
        server: _server,
        js,
        layout,
        store,
    } = Setup::start("blocked").await;
    // Account-0 first, with 40 events; then 20 other streams.
    append_round_robin(&*store, "Account", 1, 40).await;
    append_round_robin(&*store, "Card", 20, 1).await;
    let recorder = Arc::new(Recorder::default());
    recorder.poison.lock().unwrap().push("Account-0".into());
    let policy = DeliveryPolicy::new(2, Duration::from_secs(5))
        .unwrap()
        .with_backoff(vec![Duration::from_secs(30)])
        .unwrap();
    let consumer = Arc::new(NatsConsumer::new(
        js.clone(),
        layout.clone(),
        ConsumerConfig::new("blocked")
            .unwrap()
            .with_policy(policy)
            .with_max_ack_pending(64)
            .unwrap()
            .with_partitions(1)
            .unwrap(),
        recorder.clone(),
    ));
    let (stop_relay, relay) = spawn_relay(relay_of(&store, &js, &layout));
    let (stop, task) = spawn_consumer(Arc::clone(&consumer));
    eventually(
        Duration::from_secs(10),
        "the 20 other streams applied",
        || async { recorder.count() == 20 },
    )
    .await;
    let held = consumer
        .metric_set()
        .samples
        .into_iter()
        .find(|s| s.name == "consumer_held")
        .unwrap();
    assert_eq!(held.value, flext_types::MetricValue::Gauge(39.0));
    assert_eq!(
        recorder.tries.lock().unwrap().len(),
        1,
        "v1 waits out its backoff"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    stop_relay.send(()).unwrap();
    relay.await.unwrap().unwrap();
}

/// A consumer whose settings changed since it was created is updated on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_settings_reach_an_existing_consumer() {
    if !enabled("changed_settings_reach_an_existing_consumer") {
        return;
    }
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let layout = streams("settings");
    layout.ensure(&js).await.unwrap();
    for (ack_wait, max_ack_pending) in [(5, 100), (7, 50)] {
        let config = ConsumerConfig::new("settings")
            .unwrap()
            .with_policy(DeliveryPolicy::new(3, Duration::from_secs(ack_wait)).unwrap())
            .with_max_ack_pending(max_ack_pending)
            .unwrap();
        let (stop, task) = spawn_consumer(NatsConsumer::new(
            js.clone(),
            layout.clone(),
            config,
            Arc::new(Recorder::default()),
        ));
        eventually(Duration::from_secs(5), "the consumer exists", || async {
            consumer_info(&js, layout.stream(), "settings")
                .await
                .is_some_and(|i| i.config.ack_wait == Duration::from_secs(ack_wait))
        })
        .await;
        let info = consumer_info(&js, layout.stream(), "settings")
            .await
            .unwrap();
        assert_eq!(info.config.max_ack_pending, max_ack_pending as i64);
        assert_eq!(info.config.max_deliver, -1);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}

/// A consumer of streams that were never created says so, naming the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_of_a_missing_stream_is_not_found_naming_it() {
    if !enabled("a_consumer_of_a_missing_stream_is_not_found_naming_it") {
        return;
    }
    let server = NatsServer::start();
    let js = jetstream::new(server.client().await);
    let consumer = NatsConsumer::new(
        js,
        streams("missing"),
        ConsumerConfig::new("missing").unwrap(),
        Arc::new(Recorder::default()),
    );
    let err = consumer.run(std::future::pending()).await.unwrap_err();
    assert_eq!(err.code(), flext_constants::ErrorCode::NotFound, "{err}");
    assert!(err.to_string().contains("MISSING"), "{err}");
}

/// A consumer for one category reads that category's streams only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_for_a_category_reads_its_streams_only() {
    if !enabled("a_consumer_for_a_category_reads_its_streams_only") {
        return;
    }
    let Setup {
        server: _server,
        js,
        layout,
        store,
    } = Setup::start("category").await;
    append_round_robin(&*store, "Account", 3, 2).await;
    append_round_robin(&*store, "Card", 2, 3).await;
    let (stop_relay, relay) = spawn_relay(relay_of(&store, &js, &layout));
    let recorder = Arc::new(Recorder::default());
    let (stop, task) = spawn_consumer(NatsConsumer::new(
        js.clone(),
        layout.clone(),
        ConsumerConfig::new("cards").unwrap().for_category("Card"),
        recorder.clone(),
    ));
    eventually(Duration::from_secs(10), "the 6 card events", || async {
        recorder.count() == 6
    })
    .await;
    let info = consumer_info(&js, layout.stream(), "cards").await.unwrap();
    assert_eq!(
        info.config.filter_subject,
        format!("{}.Card.*", layout.subject_prefix())
    );
    assert_eq!(info.num_pending, 0);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    stop_relay.send(()).unwrap();
    relay.await.unwrap().unwrap();
    recorder.assert_once_in_order(6);
    assert!(
        recorder
            .log
            .lock()
            .unwrap()
            .iter()
            .all(|(s, _)| s.starts_with("Card-"))
    );
}

/// Held versions that another process applies meanwhile are acknowledged when the
/// consumer asks the sink again; a second copy of a held version is acknowledged at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_versions_applied_elsewhere_are_acknowledged_without_effect() {
    if !enabled("held_versions_applied_elsewhere_are_acknowledged_without_effect") {
        return;
    }
    let Setup {
        server: _server,
        js,
        layout,
        store,
    } = Setup::start_with_window("elsewhere", Duration::from_millis(100)).await;
    append_round_robin(&*store, "Account", 1, 3).await;
    let events = log(&store).await;
    // v2, v3, then v3 again: v1 never comes through this stream.
    publish(&js, &layout, &events[1]).await;
    publish(&js, &layout, &events[2]).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    publish(&js, &layout, &events[2]).await;
    let recorder = Arc::new(Recorder::default());
    let consumer = Arc::new(NatsConsumer::new(
        js.clone(),
        layout.clone(),
        ConsumerConfig::new("elsewhere")
            .unwrap()
            .with_policy(DeliveryPolicy::new(3, Duration::from_millis(600)).unwrap()),
        recorder.clone(),
    ));
    let (stop, task) = spawn_consumer(Arc::clone(&consumer));
    let gauge = |name: &str| {
        consumer
            .metric_set()
            .samples
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    };
    eventually(
        Duration::from_secs(5),
        "two held, the copy acknowledged",
        || {
            let held = gauge("consumer_held");
            let duplicates = gauge("consumer_duplicates_total");
            async move {
                held == Some(flext_types::MetricValue::Gauge(2.0))
                    && duplicates == Some(flext_types::MetricValue::Counter(1))
            }
        },
    )
    .await;
    // Another process of the group applied v1 to v3.
    recorder
        .applied
        .lock()
        .unwrap()
        .insert("Account-0".into(), 3);
    eventually(
        Duration::from_secs(5),
        "the held versions acknowledged",
        || async {
            consumer_info(&js, layout.stream(), "elsewhere")
                .await
                .is_some_and(|i| i.num_ack_pending == 0)
        },
    )
    .await;
    assert_eq!(
        gauge("consumer_held"),
        Some(flext_types::MetricValue::Gauge(0.0))
    );
    assert_eq!(recorder.count(), 0, "nothing applied here");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
