//! The runner's and the relay's dead letters and progress on SQLite (`:memory:`), where
//! letters are stored as JSON text and names hold a `/`. Without backoff: nothing here
//! waits (sqlx's pool timeouts would fire on a paused clock).

use std::sync::{Arc, Mutex};

use flext_cqrs::{Backoff, Envelope, EventBus, EventRelay, ProjectionConfig, ProjectionRunner};
use flext_handlers::stores::SqliteEventStore;
use flext_impl::handler_fn;
use flext_protocols::{CheckpointStore, Event};
use flext_types::FlextError;
use serde::Deserialize;

use crate::es_dead_letters::{Scripted, append};

async fn sqlite() -> Arc<SqliteEventStore> {
    Arc::new(SqliteEventStore::open(":memory:").await.unwrap())
}

fn runner(store: &Arc<SqliteEventStore>, projection: &Arc<Scripted>) -> ProjectionRunner {
    ProjectionRunner::new(store.clone(), store.clone(), projection.clone())
        .with_config(ProjectionConfig::default().with_backoff(Backoff::none()))
}

#[tokio::test]
async fn sequenced_dead_letters_park_restart_and_retry_on_sqlite() {
    let store = sqlite().await;
    for stream in ["A-1", "B-1", "A-1"] {
        append(&*store, stream).await;
    }
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let progress = runner(&store, &projection).catch_up().await.unwrap();
    assert_eq!(
        (progress.applied, progress.dead_lettered, progress.parked),
        (1, 1, 1)
    );

    // A restarted runner reads the parked stream back from the JSON letters.
    append(&*store, "A-1").await;
    let restarted = runner(&store, &projection);
    assert_eq!(restarted.catch_up().await.unwrap().parked, 1);
    let letters = restarted.dead_letters().await.unwrap();
    let parked: Vec<_> = letters
        .iter()
        .map(|l| (l.position, l.parked_behind))
        .collect();
    assert_eq!(parked, [(1, None), (3, Some(1)), (4, Some(1))]);

    projection.cure(1);
    let retry = restarted.retry_dead_letter(1).await.unwrap();
    assert_eq!(retry.applied, [1, 3, 4]);
    assert_eq!(projection.applied_of("A-1"), [1, 3, 4]);
    assert!(store.dead_letters("scripted").await.unwrap().is_empty());

    // A rebuild keeps letters: none are left, so it applies everything.
    let rebuilt = restarted.rebuild().await.unwrap();
    assert_eq!((rebuilt.applied, rebuilt.position), (4, 4));
}

#[derive(Debug, Deserialize)]
struct Ping(#[allow(dead_code, reason = "decoded, not read")] String);

impl Event for Ping {
    fn event_name(&self) -> &str {
        "Ping"
    }
}

#[tokio::test]
async fn a_relay_keeps_each_subscribers_progress_and_dead_letters_on_sqlite() {
    let store = sqlite().await;
    for stream in ["Ping-1", "Ping-2"] {
        append(&*store, stream).await;
    }
    let bus = Arc::new(EventBus::new());
    let audit = Arc::new(Mutex::new(Vec::new()));
    let seen = audit.clone();
    bus.subscribe(
        "Ping",
        handler_fn("audit", move |event: Arc<Envelope<Ping>>| {
            seen.lock().unwrap().push(event.position);
            async { Ok(()) }
        }),
    );
    bus.subscribe(
        "Ping",
        handler_fn("mailer", |event: Arc<Envelope<Ping>>| async move {
            match event.position {
                1 => Err(FlextError::validation("no address")),
                _ => Ok(()),
            }
        }),
    );
    let relay = Arc::new(
        EventRelay::<Ping>::new("pings", bus.clone(), store.clone())
            .with_config(ProjectionConfig::default().with_backoff(Backoff::none())),
    );
    let runner = ProjectionRunner::new(store.clone(), store.clone(), relay.clone());
    runner.catch_up().await.unwrap();
    assert_eq!(*audit.lock().unwrap(), [1, 2]);
    assert_eq!(store.load_checkpoint("pings/audit").await.unwrap(), Some(2));
    assert_eq!(
        store.load_checkpoint("pings/mailer").await.unwrap(),
        Some(2)
    );
    let letters = relay.dead_letters("mailer").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].position, letters[0].attempts), (1, 3));
    assert!(relay.discard_dead_letter("mailer", 1).await.unwrap());
    assert!(store.dead_letters("pings/mailer").await.unwrap().is_empty());
}

/// Counts the events it is given.
#[derive(Default)]
struct Tally(std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl flext_protocols::Projection for Tally {
    fn name(&self) -> &str {
        "tally"
    }
    async fn apply(&self, _: &flext_types::StoredEvent) -> flext_types::FlextResult<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    async fn reset(&self) -> flext_types::FlextResult<()> {
        Ok(())
    }
}

/// Catch-up throughput of a plain projection on a SQLite file, saving the checkpoint after
/// every event (as before batching) and with the default policy (100 events or 1 s). Run
/// with `cargo test -p flext-cqrs --release --test it measure_ -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_catch_up_on_sqlite_per_event_and_batched_checkpoints() {
    const EVENTS: usize = 20_000;
    let path = std::env::temp_dir().join(format!(
        "flext-measure-{}-{}.db",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    ));
    let store = Arc::new(SqliteEventStore::open(&path).await.unwrap());
    for chunk in 0..EVENTS / 100 {
        let events = (0..100)
            .map(|i| {
                flext_types::NewEvent::new(
                    "Tick",
                    flext_types::JsonPayload::encode(&(chunk * 100 + i)).unwrap(),
                )
            })
            .collect();
        flext_protocols::EventStore::append(
            &*store,
            &format!("Tick-{chunk}"),
            flext_types::ExpectedVersion::Any,
            events,
        )
        .await
        .unwrap();
    }
    for (label, every) in [("every event", 1), ("batched (default)", 100)] {
        store.reset("tally").await.unwrap();
        let tally = Arc::new(Tally::default());
        let runner = ProjectionRunner::new(store.clone(), store.clone(), tally.clone())
            .with_config(ProjectionConfig::default().with_checkpoint_every(every));
        let started = std::time::Instant::now();
        let progress = runner.catch_up().await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(progress.applied, EVENTS as u64);
        println!(
            "catch-up on SQLite, checkpoint {label}: {EVENTS} events in {elapsed:?}, {:.0} events/s",
            EVENTS as f64 / elapsed.as_secs_f64()
        );
    }
    let _ = std::fs::remove_file(&path);
}
