//! ProjectionRunner's batched checkpoints: one save per `checkpoint_every` events or per
//! `checkpoint_interval`, and always when caught up, before waiting and when stopping; a
//! crash repeats at most the unsaved batch and loses nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flext_cqrs::{InMemoryEventStore, ProjectionConfig, ProjectionRunner};
use flext_protocols::{CheckpointStore, EventStore, Projection};
use flext_types::{DeadLetter, ExpectedVersion, FlextResult, JsonPayload, NewEvent, StoredEvent};

/// The in-memory store, recording every checkpoint save.
#[derive(Clone)]
struct CountingCheckpoints {
    store: InMemoryEventStore,
    saves: Arc<Mutex<Vec<u64>>>,
}

impl CountingCheckpoints {
    fn new(store: &InMemoryEventStore) -> Self {
        Self {
            store: store.clone(),
            saves: Arc::default(),
        }
    }

    fn saves(&self) -> Vec<u64> {
        self.saves.lock().unwrap().clone()
    }
}

#[async_trait]
impl CheckpointStore for CountingCheckpoints {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        self.store.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        self.saves.lock().unwrap().push(position);
        self.store.save_checkpoint(name, position).await
    }
    async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()> {
        self.store.add_dead_letter(name, letter).await
    }
    async fn dead_letters(&self, name: &str) -> FlextResult<Vec<DeadLetter>> {
        self.store.dead_letters(name).await
    }
    async fn remove_dead_letter(&self, name: &str, position: u64) -> FlextResult<bool> {
        self.store.remove_dead_letter(name, position).await
    }
    async fn reset(&self, name: &str) -> FlextResult<()> {
        self.store.reset(name).await
    }
}

/// Counts how often each position was applied; can take time per event, hang at one
/// position, or ask for a shutdown once it applied one.
#[derive(Default)]
struct Counted {
    applied: Mutex<BTreeMap<u64, u32>>,
    per_event: Duration,
    hang_at: Option<u64>,
    hanging: std::sync::atomic::AtomicBool,
    shutdown_after: Mutex<Option<(u64, tokio::sync::oneshot::Sender<()>)>>,
    total: AtomicU64,
}

#[async_trait]
impl Projection for Counted {
    fn name(&self) -> &str {
        "counted"
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        if self.hang_at == Some(event.position) {
            self.hanging.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        if !self.per_event.is_zero() {
            tokio::time::sleep(self.per_event).await;
        }
        *self
            .applied
            .lock()
            .unwrap()
            .entry(event.position)
            .or_default() += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        {
            let mut shutdown = self.shutdown_after.lock().unwrap();
            if shutdown
                .as_ref()
                .is_some_and(|(at, _)| *at == event.position)
                && let Some((_, send)) = shutdown.take()
            {
                let _ = send.send(());
            }
        }
        // Lets a shutdown be seen between two events.
        tokio::task::yield_now().await;
        Ok(())
    }

    async fn reset(&self) -> FlextResult<()> {
        self.applied.lock().unwrap().clear();
        Ok(())
    }
}

impl Counted {
    fn counts(&self) -> BTreeMap<u64, u32> {
        self.applied.lock().unwrap().clone()
    }
}

async fn append_n(store: &InMemoryEventStore, n: usize) {
    for i in 0..n {
        let event = NewEvent::new("Tick", JsonPayload::encode(&i).unwrap());
        store
            .append(
                &format!("Tick-{}", i % 7),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
            .unwrap();
    }
}

fn runner(
    store: &InMemoryEventStore,
    checkpoints: &CountingCheckpoints,
    projection: &Arc<Counted>,
    config: ProjectionConfig,
) -> ProjectionRunner {
    ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(checkpoints.clone()),
        projection.clone(),
    )
    .with_config(config)
}

const HOUR: Duration = Duration::from_secs(3600);

/// Before batching, the runner saved the checkpoint after every event: 250 saves here.
#[tokio::test]
async fn catch_up_saves_once_per_n_events_and_once_when_caught_up() {
    let store = InMemoryEventStore::new();
    append_n(&store, 250).await;
    let checkpoints = CountingCheckpoints::new(&store);
    let projection = Arc::new(Counted::default());
    let config = ProjectionConfig::default()
        .with_checkpoint_every(100)
        .with_checkpoint_interval(HOUR)
        .with_batch_size(64);
    let progress = runner(&store, &checkpoints, &projection, config)
        .catch_up()
        .await
        .unwrap();
    assert_eq!((progress.applied, progress.position), (250, 250));
    assert_eq!(checkpoints.saves(), [100, 200, 250]);
    assert_eq!(store.load_checkpoint("counted").await.unwrap(), Some(250));

    // Nothing new: nothing to save.
    let again = runner(
        &store,
        &checkpoints,
        &projection,
        ProjectionConfig::default(),
    );
    assert_eq!(again.catch_up().await.unwrap().applied, 0);
    assert_eq!(checkpoints.saves().len(), 3);
}

/// The defaults are 100 events and one second; 1 (and 0, which reads as 1) keeps the old
/// save after every event.
#[tokio::test]
async fn the_default_policy_is_100_events_or_a_second_and_one_or_zero_saves_every_event() {
    let config = ProjectionConfig::default();
    assert_eq!(config.checkpoint_every, 100);
    assert_eq!(config.checkpoint_interval, Duration::from_secs(1));
    for every in [0, 1] {
        let store = InMemoryEventStore::new();
        append_n(&store, 5).await;
        let checkpoints = CountingCheckpoints::new(&store);
        let projection = Arc::new(Counted::default());
        let config = ProjectionConfig::default()
            .with_checkpoint_every(every)
            .with_checkpoint_interval(HOUR);
        runner(&store, &checkpoints, &projection, config)
            .catch_up()
            .await
            .unwrap();
        assert_eq!(checkpoints.saves(), [1, 2, 3, 4, 5], "every = {every}");
    }
    // A zero interval saves after every event too.
    let store = InMemoryEventStore::new();
    append_n(&store, 3).await;
    let checkpoints = CountingCheckpoints::new(&store);
    let config = ProjectionConfig::default().with_checkpoint_interval(Duration::ZERO);
    runner(&store, &checkpoints, &Arc::default(), config)
        .catch_up()
        .await
        .unwrap();
    assert_eq!(checkpoints.saves(), [1, 2, 3]);
}

/// On a paused clock, each event takes 300 ms: the checkpoint is saved once a second has
/// passed since the first unsaved event finished, long before 100 events. Before batching
/// it was saved after every event.
#[tokio::test(start_paused = true)]
async fn the_checkpoint_is_saved_once_the_interval_has_passed() {
    let store = InMemoryEventStore::new();
    append_n(&store, 10).await;
    let checkpoints = CountingCheckpoints::new(&store);
    let projection = Arc::new(Counted {
        per_event: Duration::from_millis(300),
        ..Counted::default()
    });
    let config = ProjectionConfig::default()
        .with_checkpoint_every(100)
        .with_checkpoint_interval(Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    runner(&store, &checkpoints, &projection, config)
        .catch_up()
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    // Event 1 finished at 0.3 s; at 1.5 s (event 5) 1.2 s had passed; event 6 finished at
    // 1.8 s and event 10 at 3.0 s.
    assert_eq!(checkpoints.saves(), [5, 10]);
}

/// The runner is dropped (a crash) while it applies event 25 of 40, saving every 10: the
/// checkpoint is 20. A new runner applies every event, repeating 21 to 24 only. Nothing is
/// lost, and what repeats is less than one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_batch_loses_nothing_and_repeats_at_most_the_unsaved_batch() {
    for round in 0..20u64 {
        let store = InMemoryEventStore::new();
        append_n(&store, 40).await;
        let checkpoints = CountingCheckpoints::new(&store);
        let hang_at = 21 + round % 10;
        let crashing = Arc::new(Counted {
            hang_at: Some(hang_at),
            ..Counted::default()
        });
        let config = ProjectionConfig::default()
            .with_checkpoint_every(10)
            .with_checkpoint_interval(HOUR)
            .with_batch_size(8);
        let first = runner(&store, &checkpoints, &crashing, config.clone());
        let task = tokio::spawn(async move { first.catch_up().await });
        tokio::time::timeout(Duration::from_secs(10), async {
            while !crashing.hanging.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the runner reaches the event it hangs at");
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(store.load_checkpoint("counted").await.unwrap(), Some(20));

        // The restarted process: its read model has what the first one applied.
        let restarted = Arc::new(Counted::default());
        *restarted.applied.lock().unwrap() = crashing.counts();
        let progress = runner(&store, &checkpoints, &restarted, config)
            .catch_up()
            .await
            .unwrap();
        assert_eq!(progress.position, 40);
        let counts = restarted.counts();
        assert_eq!(counts.len(), 40, "no event lost");
        let repeated: Vec<u64> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(repeated, (21..hang_at).collect::<Vec<_>>());
        assert!(repeated.len() < 10, "at most the unsaved batch repeats");
        assert!(counts.values().all(|n| *n <= 2));
    }
}

/// A shutdown in the middle of a catch-up saves the checkpoint of the last event finished,
/// though the batch is not full (before, every event was saved; a batched runner that did
/// not save on shutdown would leave it at 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_saves_the_checkpoint_of_the_last_event_finished() {
    let store = InMemoryEventStore::new();
    append_n(&store, 30).await;
    let checkpoints = CountingCheckpoints::new(&store);
    let (send, receive) = tokio::sync::oneshot::channel();
    let projection = Arc::new(Counted {
        shutdown_after: Mutex::new(Some((7, send))),
        ..Counted::default()
    });
    let config = ProjectionConfig::default()
        .with_checkpoint_every(100)
        .with_checkpoint_interval(HOUR);
    let runner = runner(&store, &checkpoints, &projection, config);
    let progress = runner
        .run_until(async {
            let _ = receive.await;
        })
        .await
        .unwrap();
    assert_eq!(progress.position, 7);
    assert_eq!(checkpoints.saves(), [7]);
    assert_eq!(runner.position().await.unwrap(), 7);
}

/// Following live, the runner saves once it has caught up and before it waits for the next
/// event, so an idle runner's checkpoint is not behind (without the save before waiting,
/// it would stay at 3 until 100 events or shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_runner_saves_before_it_waits_for_new_events() {
    let store = InMemoryEventStore::new();
    append_n(&store, 3).await;
    let checkpoints = CountingCheckpoints::new(&store);
    let projection = Arc::new(Counted::default());
    let config = ProjectionConfig::default()
        .with_checkpoint_every(100)
        .with_checkpoint_interval(HOUR);
    let runner = Arc::new(runner(&store, &checkpoints, &projection, config));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let runner = runner.clone();
        tokio::spawn(async move {
            runner
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    let saved = |at: u64| {
        let store = store.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                while store.load_checkpoint("counted").await.unwrap() != Some(at) {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .is_ok()
        }
    };
    assert!(saved(3).await, "saved once caught up");
    append_n(&store, 5).await;
    assert!(saved(8).await, "saved before waiting again");
    stop.send(()).unwrap();
    let progress = task.await.unwrap().unwrap();
    assert_eq!((progress.applied, progress.position), (8, 8));
    let saves = checkpoints.saves();
    assert!(
        saves.len() <= 6,
        "at most one save per wait, not one per event: {saves:?}"
    );
    assert_eq!(saves.last(), Some(&8));
    assert!(projection.counts().values().all(|n| *n == 1));
}
