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
