//! ProjectionRunner retries and dead letters: backoff, error classes, per-stream
//! sequencing, the skip policy, and listing, retrying and discarding letters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::{
    Backoff, DeadLetterPolicy, DeadLetterRetry, ErrorClass, InMemoryEventStore, ProjectionConfig,
    ProjectionProgress, ProjectionRunner,
};
use flext_protocols::{CheckpointStore, EventStore, Projection};
use flext_types::{
    DeadLetter, ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent, StoredEvent,
};
use tokio::time::Instant;

/// A projection that fails as told: per position, a queue of errors for its next tries,
/// or poisoned for good. It records every try and every event applied.
#[derive(Default)]
pub(crate) struct Scripted {
    planned: Mutex<HashMap<u64, VecDeque<FlextError>>>,
    poisoned: Mutex<HashSet<u64>>,
    tries: Mutex<Vec<(u64, Instant)>>,
    applied: Mutex<Vec<(String, u64)>>,
    /// Positions whose next try waits at a gate.
    gates: Mutex<HashMap<u64, Arc<Gate>>>,
}

/// A point a task waits at until the test opens it.
pub(crate) struct Gate {
    entered: tokio::sync::Notify,
    open: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            entered: tokio::sync::Notify::new(),
            open: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Gate {
    async fn pass(&self) {
        self.entered.notify_one();
        self.open.acquire().await.unwrap().forget();
    }

    pub(crate) async fn reached(&self) {
        self.entered.notified().await;
    }

    pub(crate) fn open(&self) {
        self.open.add_permits(1);
    }
}

#[async_trait]
impl Projection for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        let gate = self.gates.lock().unwrap().remove(&event.position);
        if let Some(gate) = gate {
            gate.pass().await;
        }
        self.tries
            .lock()
            .unwrap()
            .push((event.position, Instant::now()));
        if self.poisoned.lock().unwrap().contains(&event.position) {
            return Err(FlextError::validation(format!(
                "cannot project event {}",
                event.position
            )));
        }
        let planned = self
            .planned
            .lock()
            .unwrap()
            .get_mut(&event.position)
            .and_then(VecDeque::pop_front);
        if let Some(error) = planned {
            return Err(error);
        }
        self.applied
            .lock()
            .unwrap()
            .push((event.stream_id.to_string(), event.position));
        Ok(())
    }

    async fn reset(&self) -> FlextResult<()> {
        self.applied.lock().unwrap().clear();
        Ok(())
    }
}

impl Scripted {
    pub(crate) fn plan(&self, position: u64, errors: impl IntoIterator<Item = FlextError>) {
        self.planned
            .lock()
            .unwrap()
            .insert(position, errors.into_iter().collect());
    }

    pub(crate) fn poison(&self, position: u64) {
        self.poisoned.lock().unwrap().insert(position);
    }

    pub(crate) fn cure(&self, position: u64) {
        self.poisoned.lock().unwrap().remove(&position);
    }

    pub(crate) fn gate(&self, position: u64) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.gates.lock().unwrap().insert(position, gate.clone());
        gate
    }

    pub(crate) fn applied(&self) -> Vec<u64> {
        self.applied
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| *p)
            .collect()
    }

    pub(crate) fn applied_of(&self, stream: &str) -> Vec<u64> {
        self.applied
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, p)| *p)
            .collect()
    }

    pub(crate) fn tries_of(&self, position: u64) -> Vec<Instant> {
        self.tries
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| *p == position)
            .map(|(_, at)| *at)
            .collect()
    }
}

/// Appends one event to `stream`: its position.
pub(crate) async fn append(store: &impl EventStore, stream: &str) -> u64 {
    let event = NewEvent::new("Ping", JsonPayload::encode(&stream).unwrap());
    store
        .append(stream, ExpectedVersion::Any, vec![event])
        .await
        .unwrap()
        .last_position
}

/// Appends one event to each stream in turn: their positions.
async fn append_all(store: &InMemoryEventStore, streams: &[&str]) -> Vec<u64> {
    let mut positions = Vec::new();
    for stream in streams {
        positions.push(append(store, stream).await);
    }
    positions
}

fn runner(store: &InMemoryEventStore, projection: &Arc<Scripted>) -> ProjectionRunner {
    ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        projection.clone(),
    )
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn ms(values: &[u64]) -> Vec<Duration> {
    values.iter().map(|v| Duration::from_millis(*v)).collect()
}

fn positions(letters: &[DeadLetter]) -> Vec<(u64, Option<u64>)> {
    letters
        .iter()
        .map(|l| (l.position, l.parked_behind))
        .collect()
}

/// Backoff without jitter, so that waits are exact.
fn exact(initial: u64) -> Backoff {
    Backoff::exponential(Duration::from_millis(initial))
        .with_max_backoff(Duration::from_secs(1))
        .with_jitter(0.0)
}

#[test]
fn backoff_values_out_of_range_are_read_as_the_nearest_valid_one() {
    let second = Duration::from_secs(1);
    let shrinking = Backoff::fixed(second).with_multiplier(0.5);
    assert_eq!(
        shrinking.delay(5),
        second,
        "a multiplier below 1 reads as 1"
    );
    let nan = Backoff::fixed(second)
        .with_multiplier(f64::NAN)
        .with_jitter(f64::NAN);
    assert_eq!(nan.delay(3), second);
    let huge = Backoff::exponential(second)
        .with_max_backoff(Duration::MAX)
        .with_jitter(0.0);
    assert_eq!(
        huge.delay(64),
        Duration::from_secs(1 << 63),
        "2^63 s is in range"
    );
    for failure in [65, 1025, u32::MAX] {
        assert_eq!(
            huge.delay(failure),
            Duration::MAX,
            "past Duration's range at {failure}: the max backoff"
        );
    }
    let inverted = Backoff::exponential(second)
        .with_max_backoff(Duration::from_millis(1))
        .with_jitter(0.0);
    assert_eq!(
        inverted.delay(4),
        second,
        "max below initial reads as initial"
    );
    assert_eq!(Backoff::none().delay(9), Duration::ZERO);
}

#[test]
fn a_zero_initial_backoff_stays_zero_however_many_failures() {
    let zero = Backoff::exponential(Duration::ZERO).with_jitter(0.0);
    for failure in [1, 2, 1024, 1025, 5000, u32::MAX] {
        assert_eq!(zero.delay(failure), Duration::ZERO, "at failure {failure}");
    }
    let jittered = Backoff::exponential(Duration::ZERO);
    assert_eq!(jittered.delay(2000), Duration::ZERO);
}

#[test]
fn the_jitter_never_goes_past_max_backoff() {
    let second = Duration::from_secs(1);
    let capped = Backoff::exponential(Duration::from_millis(100)).with_max_backoff(second);
    let waits: Vec<Duration> = (0..200).map(|_| capped.delay(20)).collect();
    assert!(
        waits
            .iter()
            .all(|wait| (Duration::from_millis(800)..=second).contains(wait)),
        "at the cap, jitter only shortens a wait: {waits:?}"
    );
    assert!(
        waits.iter().any(|wait| *wait < second),
        "jitter still moves waits at the cap"
    );
    let minute = Duration::from_secs(60);
    let wide = Backoff::exponential(second)
        .with_max_backoff(minute)
        .with_jitter(5.0);
    for failure in [1, 7, 64, u32::MAX] {
        for _ in 0..50 {
            let wait = wide.delay(failure);
            assert!(wait <= minute, "{wait:?} at failure {failure}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_backoff_without_using_up_attempts() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.plan(
        1,
        [
            FlextError::storage("database down"),
            FlextError::timeout("slow"),
            FlextError::new(ErrorCode::RateLimited, "busy"),
            FlextError::storage("database down"),
            FlextError::storage("database down"),
            FlextError::storage("database down"),
        ],
    );
    let runner = runner(&store, &projection)
        .with_config(ProjectionConfig::default().with_backoff(exact(100)));
    let progress = runner.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.dead_lettered), (1, 0));
    assert!(runner.dead_letters().await.unwrap().is_empty());
    assert_eq!(projection.applied(), [1]);
    assert_eq!(
        gaps(&projection.tries_of(1)),
        ms(&[100, 200, 400, 800, 1000, 1000]),
        "exponential, capped at max_backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn the_default_backoff_grows_with_jitter() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.plan(1, (0..6).map(|_| FlextError::storage("database down")));
    let runner = runner(&store, &projection);
    runner.catch_up().await.unwrap();
    assert_eq!(
        projection.applied(),
        [1],
        "six transient failures, then it applies"
    );
    let gaps = gaps(&projection.tries_of(1));
    let nominal = [100_u64, 200, 400, 800, 1600, 3200];
    assert_eq!(
        gaps.len(),
        nominal.len(),
        "one wait after each of the six failures"
    );
    for (gap, nominal) in gaps.iter().zip(nominal) {
        let low = Duration::from_millis(nominal * 8 / 10);
        let high = Duration::from_millis(nominal * 12 / 10 + 1);
        assert!(
            (low..=high).contains(gap),
            "{gap:?} within ±20% of {nominal} ms"
        );
    }
    assert_ne!(gaps, ms(&nominal), "jitter moved at least one wait");
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_dead_lettered_only_at_the_give_up_time() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.plan(1, (0..1000).map(|_| FlextError::timeout("still down")));
    let runner = Arc::new(
        runner(&store, &projection).with_config(
            ProjectionConfig::default()
                .with_backoff(Backoff::fixed(Duration::from_secs(1)))
                .with_give_up_after(Duration::from_secs(10)),
        ),
    );
    let started = Instant::now();
    let task = tokio::spawn({
        let runner = runner.clone();
        async move { runner.catch_up().await }
    });
    tokio::time::sleep(Duration::from_millis(9500)).await;
    assert!(
        runner.dead_letters().await.unwrap().is_empty(),
        "not given up before the give-up time"
    );
    assert_eq!(projection.tries_of(1).len(), 10);
    let progress = task.await.unwrap().unwrap();
    assert_eq!(progress.dead_lettered, 1);
    let tries = projection.tries_of(1);
    assert_eq!(tries.len(), 11, "tries at 0, 1, …, 10 s");
    assert_eq!(*tries.last().unwrap() - started, Duration::from_secs(10));
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 11);
    assert_eq!(letters[0].error.code(), ErrorCode::Timeout);
    assert_eq!(letters[0].parked_behind, None);
}

#[tokio::test(start_paused = true)]
async fn transient_waits_stop_at_the_give_up_time() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.plan(1, (0..1000).map(|_| FlextError::storage("down")));
    let runner = runner(&store, &projection).with_config(
        ProjectionConfig::default()
            .with_backoff(exact(400))
            .with_give_up_after(Duration::from_millis(1000)),
    );
    runner.catch_up().await.unwrap();
    assert_eq!(
        gaps(&projection.tries_of(1)),
        ms(&[400, 600]),
        "the last wait is cut to the give-up time, and that try is the last"
    );
}

#[tokio::test(start_paused = true)]
async fn other_errors_use_up_attempts_with_backoff() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let runner = runner(&store, &projection).with_config(
        ProjectionConfig::default()
            .with_max_attempts(4)
            .with_backoff(exact(100)),
    );
    let started = Instant::now();
    let progress = runner.catch_up().await.unwrap();
    assert_eq!(progress.dead_lettered, 1);
    assert_eq!(gaps(&projection.tries_of(1)), ms(&[100, 200, 400]));
    assert_eq!(started.elapsed(), Duration::from_millis(700));
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(letters[0].attempts, 4);
    assert_eq!(letters[0].error.code(), ErrorCode::ValidationError);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_between_counted_ones_use_up_no_attempts() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.plan(
        1,
        [
            FlextError::validation("odd"),
            FlextError::storage("down"),
            FlextError::storage("down"),
            FlextError::validation("odd"),
            FlextError::timeout("slow"),
        ],
    );
    let runner = runner(&store, &projection).with_config(
        ProjectionConfig::default()
            .with_max_attempts(3)
            .with_backoff(Backoff::none()),
    );
    let progress = runner.catch_up().await.unwrap();
    assert_eq!(
        (progress.applied, progress.dead_lettered),
        (1, 0),
        "two counted failures of three allowed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_classifier_decides_what_is_transient_counted_or_permanent() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "B-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.plan(1, [FlextError::serialization("garbled")]);
    projection.plan(2, (0..5).map(|_| FlextError::business_rule("not yet")));
    let runner = runner(&store, &projection)
        .with_config(ProjectionConfig::default().with_backoff(Backoff::none()))
        .with_error_classifier(|error| match error.code() {
            ErrorCode::SerializationError => ErrorClass::Permanent,
            ErrorCode::BusinessRuleViolation => ErrorClass::Transient,
            _ => ErrorClass::of(error),
        });
    let progress = runner.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.dead_lettered), (1, 1));
    assert_eq!(projection.tries_of(1).len(), 1, "permanent: no retry");
    assert_eq!(
        projection.tries_of(2).len(),
        6,
        "transient: past max_attempts"
    );
    assert_eq!(projection.applied(), [2]);
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_parks_later_events_of_its_stream_but_not_other_streams() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "B-1", "A-1", "B-1", "A-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let runner = runner(&store, &projection)
        .with_config(ProjectionConfig::default().with_backoff(Backoff::none()));
    let progress = runner.catch_up().await.unwrap();
    assert_eq!(
        progress,
        ProjectionProgress {
            applied: 2,
            dead_lettered: 1,
            parked: 2,
            position: 5
        }
    );
    assert_eq!(projection.applied(), [2, 4], "only stream B");
    assert!(
        projection.tries_of(3).is_empty() && projection.tries_of(5).is_empty(),
        "parked events are not tried"
    );
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(positions(&letters), [(1, None), (3, Some(1)), (5, Some(1))]);
    assert_eq!((letters[0].attempts, letters[1].attempts), (3, 0));
    assert_eq!(letters[1].stream_id, "A-1");
    assert_eq!(
        letters[1].error.to_string(),
        "Parked behind the dead letter at position 1 of stream 'A-1'"
    );

    // Parking holds across a restart: a new runner reads the letters from the store.
    append_all(&store, &["A-1", "B-1"]).await;
    let restarted = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        projection.clone(),
    );
    let progress = restarted.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.parked), (1, 1));
    assert_eq!(projection.applied(), [2, 4, 7]);
    assert_eq!(restarted.dead_letters().await.unwrap().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_skip_policy_applies_later_events_of_the_stream() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "B-1", "A-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let runner = runner(&store, &projection).with_config(
        ProjectionConfig::default()
            .with_backoff(Backoff::none())
            .with_dead_letter_policy(DeadLetterPolicy::Skip),
    );
    let progress = runner.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.parked), (2, 0));
    assert_eq!(projection.applied(), [2, 3]);
    assert_eq!(
        positions(&runner.dead_letters().await.unwrap()),
        [(1, None)]
    );

    // A letter stands alone: its retry applies it and nothing else.
    projection.cure(1);
    let retry = runner.retry_dead_letter(1).await.unwrap();
    assert_eq!(retry.applied, [1]);
    assert_eq!(projection.applied(), [2, 3, 1]);
}

/// Stream A's first event poisoned, with two more events of A parked behind it.
async fn parked_stream() -> (InMemoryEventStore, Arc<Scripted>, ProjectionRunner) {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "B-1", "A-1", "B-1", "A-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let runner = runner(&store, &projection)
        .with_config(ProjectionConfig::default().with_backoff(Backoff::none()));
    runner.catch_up().await.unwrap();
    (store, projection, runner)
}

#[tokio::test(start_paused = true)]
async fn retry_applies_the_head_and_its_parked_events_in_order() {
    let (store, projection, runner) = parked_stream().await;
    projection.cure(1);
    let retry = runner.retry_dead_letter(1).await.unwrap();
    assert_eq!(
        retry,
        DeadLetterRetry {
            applied: vec![1, 3, 5],
            ..DeadLetterRetry::default()
        }
    );
    assert_eq!(projection.applied_of("A-1"), [1, 3, 5]);
    assert!(runner.dead_letters().await.unwrap().is_empty());

    // The stream is no longer parked.
    append(&store, "A-1").await;
    assert_eq!(runner.catch_up().await.unwrap().applied, 1);
    assert_eq!(projection.applied_of("A-1"), [1, 3, 5, 6]);
}

#[tokio::test(start_paused = true)]
async fn retry_stops_at_the_first_event_that_fails_again() {
    let (store, projection, runner) = parked_stream().await;
    projection.cure(1);
    projection.poison(3);
    let retry = runner.retry_dead_letter(1).await.unwrap();
    assert_eq!(
        retry,
        DeadLetterRetry {
            applied: vec![1],
            failed: vec![3],
            ..DeadLetterRetry::default()
        }
    );
    assert!(projection.tries_of(5).is_empty(), "5 stays behind 3");
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(positions(&letters), [(3, None), (5, Some(3))]);
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(letters[0].error.to_string(), "cannot project event 3");
    assert_eq!(
        letters[1].error.to_string(),
        "Parked behind the dead letter at position 3 of stream 'A-1'"
    );

    // New events of the stream park behind the new head.
    append(&store, "A-1").await;
    assert_eq!(runner.catch_up().await.unwrap().parked, 1);
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(positions(&letters)[2], (6, Some(3)));
}

#[tokio::test(start_paused = true)]
async fn retrying_a_parked_or_missing_letter_is_refused_with_a_clear_error() {
    let (_store, projection, runner) = parked_stream().await;
    projection.cure(1);
    let error = runner.retry_dead_letter(3).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(
        error.message().contains("parked behind position 1"),
        "{error}"
    );
    let error = runner.retry_dead_letter(2).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::NotFound);
    assert_eq!(
        error.to_string(),
        "No dead letter at position 2 for 'scripted'"
    );
    assert!(projection.tries_of(3).is_empty(), "nothing was applied");
    assert_eq!(runner.dead_letters().await.unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_dead_letters_retries_every_stream() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "B-1", "A-1", "B-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    projection.poison(2);
    let runner = runner(&store, &projection)
        .with_config(ProjectionConfig::default().with_backoff(Backoff::none()));
    assert_eq!(runner.catch_up().await.unwrap().parked, 2);
    projection.cure(1);
    let retry = runner.retry_dead_letters().await.unwrap();
    assert_eq!(retry.applied, [1, 3]);
    assert_eq!(retry.failed, [2]);
    assert_eq!(
        positions(&runner.dead_letters().await.unwrap()),
        [(2, None), (4, Some(2))]
    );
}

#[tokio::test(start_paused = true)]
async fn discarding_the_head_releases_the_next_parked_event_for_retry() {
    let (_store, projection, runner) = parked_stream().await;
    assert!(runner.discard_dead_letter(1).await.unwrap());
    assert!(!runner.discard_dead_letter(1).await.unwrap(), "gone");
    assert!(
        projection.tries_of(3).is_empty(),
        "released, not applied by itself"
    );
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(positions(&letters), [(3, None), (5, Some(3))]);
    assert_eq!(letters[0].attempts, 0);
    assert_eq!(
        letters[0].error.to_string(),
        "Released for retry: the dead letter at position 1 it was parked behind was discarded"
    );
    let retry = runner.retry_dead_letter(3).await.unwrap();
    assert_eq!(retry.applied, [3, 5]);
    assert_eq!(projection.applied_of("A-1"), [3, 5], "1 was discarded");
}

#[tokio::test(start_paused = true)]
async fn discarding_a_parked_letter_drops_only_that_event() {
    let (_store, projection, runner) = parked_stream().await;
    assert!(runner.discard_dead_letter(3).await.unwrap());
    assert_eq!(
        positions(&runner.dead_letters().await.unwrap()),
        [(1, None), (5, Some(1))]
    );
    projection.cure(1);
    assert_eq!(runner.retry_dead_letter(1).await.unwrap().applied, [1, 5]);
}

#[tokio::test(start_paused = true)]
async fn discarding_the_last_letter_of_a_stream_unparks_it() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let runner = runner(&store, &projection)
        .with_config(ProjectionConfig::default().with_backoff(Backoff::none()));
    runner.catch_up().await.unwrap();
    assert!(runner.discard_dead_letter(1).await.unwrap());
    append(&store, "A-1").await;
    assert_eq!(runner.catch_up().await.unwrap().applied, 1);
    assert_eq!(projection.applied(), [2]);
    assert!(runner.dead_letters().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn rebuild_keeps_dead_letters_and_parked_streams_stay_parked() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "A-1", "B-1", "A-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.poison(2);
    let runner = runner(&store, &projection)
        .with_config(ProjectionConfig::default().with_backoff(Backoff::none()));
    runner.catch_up().await.unwrap();
    let before = runner.dead_letters().await.unwrap();
    assert_eq!(positions(&before), [(2, None), (4, Some(2))]);

    let progress = runner.rebuild().await.unwrap();
    assert_eq!(
        (progress.applied, progress.dead_lettered, progress.position),
        (2, 0, 4)
    );
    assert_eq!(
        projection.applied(),
        [1, 3],
        "A's event before its head, and B"
    );
    assert_eq!(
        projection.tries_of(2).len(),
        3,
        "the letter was not tried again"
    );
    assert_eq!(
        runner.dead_letters().await.unwrap(),
        before,
        "same letters, same attempts"
    );
}

#[tokio::test(start_paused = true)]
async fn clearing_dead_letters_then_rebuilding_tries_every_event_again() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "A-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let runner = runner(&store, &projection)
        .with_config(ProjectionConfig::default().with_backoff(Backoff::none()));
    runner.catch_up().await.unwrap();
    projection.cure(1);
    assert_eq!(runner.clear_dead_letters().await.unwrap(), 2);
    assert!(runner.dead_letters().await.unwrap().is_empty());
    let progress = runner.rebuild().await.unwrap();
    assert_eq!(progress.applied, 2);
    assert_eq!(projection.applied(), [1, 2]);
}

/// The in-memory store, whose checkpoint saves fail while `failing` is set.
#[derive(Clone)]
struct FlakyCheckpoints {
    store: InMemoryEventStore,
    failing: Arc<AtomicBool>,
}

#[async_trait]
impl CheckpointStore for FlakyCheckpoints {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        self.store.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(FlextError::storage("checkpoint table unreachable"));
        }
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

#[tokio::test(start_paused = true)]
async fn a_dead_letter_whose_checkpoint_save_failed_is_listed_once_after_a_restart() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "B-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let checkpoints = FlakyCheckpoints {
        store: store.clone(),
        failing: Arc::new(AtomicBool::new(true)),
    };
    let config = ProjectionConfig::default().with_backoff(Backoff::none());
    let first = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(checkpoints.clone()),
        projection.clone(),
    )
    .with_config(config.clone());
    let error = first.catch_up().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageError);
    assert_eq!(store.dead_letters("scripted").await.unwrap().len(), 1);
    assert_eq!(store.load_checkpoint("scripted").await.unwrap(), None);

    // The process restarts; the checkpoint store works again.
    checkpoints.failing.store(false, Ordering::SeqCst);
    let restarted = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(checkpoints),
        projection.clone(),
    )
    .with_config(config);
    let progress = restarted.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.position), (1, 2));
    let letters = restarted.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1, "listed once");
    assert_eq!(letters[0].attempts, 3);
    assert_eq!(
        projection.tries_of(1).len(),
        3,
        "a dead letter is not tried again by the runner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_while_the_runner_follows_live_keeps_each_stream_in_order() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let runner = Arc::new(
        runner(&store, &projection)
            .with_config(ProjectionConfig::default().with_backoff(Backoff::none())),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let live = tokio::spawn({
        let runner = runner.clone();
        async move {
            runner
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    let writer = tokio::spawn({
        let store = store.clone();
        async move {
            for _ in 0..200 {
                append(&store, "A-1").await;
                append(&store, "B-1").await;
                tokio::task::yield_now().await;
            }
        }
    });
    // Wait for the head to be dead-lettered, then retry while events keep coming. The
    // deadlines only catch a hang: they are generous for a loaded machine.
    tokio::time::timeout(Duration::from_secs(60), async {
        while runner.dead_letters().await.unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the head was dead-lettered");
    projection.cure(1);
    let mut writing = Some(writer);
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            // A stream being parked by the runner (its letter stored, its checkpoint not
            // yet) or retried already is refused, and retried on the next turn.
            let report = runner.retry_dead_letters().await.unwrap();
            for (_, error) in &report.errors {
                assert_eq!(error.code(), ErrorCode::ConcurrencyConflict, "{error}");
            }
            if writing.as_ref().is_some_and(|w| w.is_finished()) {
                writing.take().unwrap().await.unwrap();
            }
            let done = writing.is_none()
                && runner.dead_letters().await.unwrap().is_empty()
                && projection.applied().len() == 401;
            if done {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every event applied in the end");
    stop.send(()).unwrap();
    live.await.unwrap().unwrap();
    let a = projection.applied_of("A-1");
    assert_eq!(a.len(), 201, "each event of A applied once");
    assert!(a.windows(2).all(|w| w[0] < w[1]), "in order: {a:?}");
    assert_eq!(projection.applied_of("B-1").len(), 200);
}

/// The in-memory store, whose recording of a parked letter waits at a gate when one is set.
#[derive(Clone, Default)]
struct GatedParking {
    store: InMemoryEventStore,
    gate: Arc<Mutex<Option<Arc<Gate>>>>,
}

#[async_trait]
impl CheckpointStore for GatedParking {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        self.store.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        self.store.save_checkpoint(name, position).await
    }
    async fn add_dead_letter(&self, name: &str, letter: DeadLetter) -> FlextResult<()> {
        let gate = match letter.parked_behind {
            Some(_) => self.gate.lock().unwrap().take(),
            None => None,
        };
        if let Some(gate) = gate {
            gate.pass().await;
        }
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

/// A runner over `store` keeping its checkpoint and letters in `checkpoints`, without
/// backoff.
fn gated_runner(
    store: &InMemoryEventStore,
    checkpoints: &GatedParking,
    projection: &Arc<Scripted>,
) -> Arc<ProjectionRunner> {
    Arc::new(
        ProjectionRunner::new(
            Arc::new(store.clone()),
            Arc::new(checkpoints.clone()),
            projection.clone(),
        )
        .with_config(ProjectionConfig::default().with_backoff(Backoff::none())),
    )
}

#[tokio::test(start_paused = true)]
async fn an_event_parked_as_its_streams_retry_finishes_is_applied_by_the_runner() {
    let store = InMemoryEventStore::new();
    let checkpoints = GatedParking {
        store: store.clone(),
        ..GatedParking::default()
    };
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let runner = gated_runner(&store, &checkpoints, &projection);
    runner.catch_up().await.unwrap();

    // The runner decides to park event 2 behind 1; while it records that, 1 is retried
    // to the end.
    append(&store, "A-1").await;
    projection.cure(1);
    let gate = Arc::new(Gate::default());
    *checkpoints.gate.lock().unwrap() = Some(gate.clone());
    let live = tokio::spawn({
        let runner = runner.clone();
        async move { runner.catch_up().await }
    });
    gate.reached().await;
    assert_eq!(runner.retry_dead_letter(1).await.unwrap().applied, [1]);
    gate.open();
    let progress = live.await.unwrap().unwrap();
    assert_eq!((progress.applied, progress.parked), (1, 0));
    assert_eq!(
        projection.applied_of("A-1"),
        [1, 2],
        "in order, none left behind"
    );
    assert!(runner.dead_letters().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_event_parked_while_its_stream_is_retried_is_applied_by_the_retry() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    let runner = Arc::new(
        runner(&store, &projection)
            .with_config(ProjectionConfig::default().with_backoff(Backoff::none())),
    );
    runner.catch_up().await.unwrap();

    // The retry is applying 1 when event 2 arrives: 2 parks, and the retry applies it.
    projection.cure(1);
    let gate = projection.gate(1);
    let retry = tokio::spawn({
        let runner = runner.clone();
        async move { runner.retry_dead_letter(1).await }
    });
    gate.reached().await;
    append(&store, "A-1").await;
    assert_eq!(runner.catch_up().await.unwrap().parked, 1);
    let error = runner.retry_dead_letter(1).await.unwrap_err();
    assert_eq!(
        error.code(),
        ErrorCode::ConcurrencyConflict,
        "one retry of a stream at a time"
    );
    assert_eq!(
        runner.discard_dead_letter(2).await.unwrap_err().code(),
        ErrorCode::ConcurrencyConflict,
        "nor a discard"
    );
    gate.open();
    assert_eq!(retry.await.unwrap().unwrap().applied, [1, 2]);
    assert_eq!(projection.applied_of("A-1"), [1, 2]);
    assert!(runner.dead_letters().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn zero_waits_between_transient_retries_let_other_tasks_run() {
    let store = InMemoryEventStore::new();
    append(&store, "A-1").await;
    let projection = Arc::new(Scripted::default());
    projection.plan(1, (0..100_000).map(|_| FlextError::storage("down")));
    let runner = Arc::new(
        runner(&store, &projection)
            .with_config(ProjectionConfig::default().with_backoff(Backoff::none())),
    );
    let task = tokio::spawn({
        let runner = runner.clone();
        async move { runner.catch_up().await }
    });
    // On this one-thread runtime the test's task runs again only when the runner yields.
    tokio::task::yield_now().await;
    projection.plan(1, []);
    let progress = task.await.unwrap().unwrap();
    assert_eq!(progress.applied, 1);
    let tries = projection.tries_of(1).len();
    assert!(
        tries < 1_000,
        "the runner yielded between tries: {tries} tries before the failures stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_transient_retry_returns_at_once_with_the_checkpoint_before_the_event() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["B-1", "A-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.plan(2, (0..1000).map(|_| FlextError::storage("database down")));
    let runner = runner(&store, &projection).with_config(
        ProjectionConfig::default().with_backoff(Backoff::fixed(Duration::from_secs(1))),
    );
    let started = Instant::now();
    let progress = runner
        .run_until(tokio::time::sleep(Duration::from_millis(2500)))
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(2500),
        "shutdown ended the wait between two tries"
    );
    assert_eq!((progress.applied, progress.position), (1, 1));
    assert_eq!(
        runner.position().await.unwrap(),
        1,
        "the checkpoint is before the event"
    );
    assert!(
        runner.dead_letters().await.unwrap().is_empty(),
        "nothing recorded"
    );
    assert_eq!(projection.tries_of(2).len(), 3, "tried at 0, 1 and 2 s");

    // At least once: the next run applies it.
    projection.plan(2, []);
    let progress = runner.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.position), (1, 2));
    assert_eq!(projection.applied(), [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_between_events_of_a_catch_up_stops_before_the_next_event() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "A-1", "A-1"]).await;
    let projection = Arc::new(Scripted::default());
    let gate = projection.gate(2);
    let runner = Arc::new(runner(&store, &projection));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let runner = runner.clone();
        async move {
            runner
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    gate.reached().await;
    stop.send(()).unwrap();
    tokio::task::yield_now().await;
    gate.open();
    let progress = task.await.unwrap().unwrap();
    assert_eq!(
        (progress.applied, progress.position),
        (2, 2),
        "the event being applied finishes, the next one waits for the next run"
    );
    assert_eq!(projection.applied(), [1, 2]);
}

/// A projection remembering the last version it applied of each stream, as the
/// `Projection` contract suggests: an event delivered again is skipped, a retried dead
/// letter (an older position than events of other streams applied since) is not.
#[derive(Default)]
struct VersionGuarded {
    last: Mutex<HashMap<String, u64>>,
    applied: Mutex<Vec<(String, u64)>>,
    failing: Mutex<HashSet<u64>>,
}

#[async_trait]
impl Projection for VersionGuarded {
    fn name(&self) -> &str {
        "version-guarded"
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        if self.failing.lock().unwrap().contains(&event.position) {
            return Err(FlextError::validation("read model rejected it"));
        }
        let mut last = self.last.lock().unwrap();
        let seen = last.entry(event.stream_id.to_string()).or_default();
        if event.version <= *seen {
            return Ok(());
        }
        *seen = event.version;
        self.applied
            .lock()
            .unwrap()
            .push((event.stream_id.to_string(), event.version));
        Ok(())
    }

    async fn reset(&self) -> FlextResult<()> {
        self.last.lock().unwrap().clear();
        self.applied.lock().unwrap().clear();
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_projection_guarding_by_stream_version_applies_its_retried_letter() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "B-1", "B-1"]).await;
    let projection = Arc::new(VersionGuarded::default());
    projection.failing.lock().unwrap().insert(1);
    let runner = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        projection.clone(),
    )
    .with_config(ProjectionConfig::default().with_backoff(Backoff::none()));
    let progress = runner.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.dead_lettered), (2, 1));

    projection.failing.lock().unwrap().clear();
    assert_eq!(runner.retry_dead_letter(1).await.unwrap().applied, [1]);
    assert_eq!(
        *projection.applied.lock().unwrap(),
        [
            ("B-1".to_owned(), 1),
            ("B-1".to_owned(), 2),
            ("A-1".to_owned(), 1)
        ],
        "the retried letter, older than B's events, is applied"
    );

    // An event delivered again (a restart before its checkpoint) is still skipped.
    let again = store.read_all(3, 1).await.unwrap();
    projection.apply(&again[0]).await.unwrap();
    assert_eq!(projection.applied.lock().unwrap().len(), 3);
}

/// The in-memory store, whose checkpoint saves of positions above `limit` fail.
#[derive(Clone)]
struct CheckpointsUpTo {
    store: InMemoryEventStore,
    limit: Arc<std::sync::atomic::AtomicU64>,
}

impl CheckpointsUpTo {
    fn new(store: &InMemoryEventStore) -> Self {
        Self {
            store: store.clone(),
            limit: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
        }
    }

    fn limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::SeqCst);
    }
}

#[async_trait]
impl CheckpointStore for CheckpointsUpTo {
    async fn load_checkpoint(&self, name: &str) -> FlextResult<Option<u64>> {
        self.store.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: u64) -> FlextResult<()> {
        if position > self.limit.load(Ordering::SeqCst) {
            return Err(FlextError::storage("checkpoint table unreachable"));
        }
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

fn runner_over(
    store: &InMemoryEventStore,
    checkpoints: &CheckpointsUpTo,
    projection: &Arc<Scripted>,
) -> ProjectionRunner {
    ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(checkpoints.clone()),
        projection.clone(),
    )
    // Saving after every event: these tests fail the checkpoint event by event.
    .with_config(
        ProjectionConfig::default()
            .with_backoff(Backoff::none())
            .with_checkpoint_every(1),
    )
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_failed_rebuild_is_refused_until_the_runner_gets_past_the_letter() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "A-1", "B-1", "A-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.poison(2);
    let checkpoints = CheckpointsUpTo::new(&store);
    let runner = runner_over(&store, &checkpoints, &projection);
    runner.catch_up().await.unwrap();
    assert_eq!(
        positions(&runner.dead_letters().await.unwrap()),
        [(2, None), (4, Some(2))]
    );

    // The rebuild stops after event 1: the checkpoint is 1, the letters are kept.
    checkpoints.limit(1);
    let error = runner.rebuild().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageError);
    assert_eq!(runner.position().await.unwrap(), 1);

    projection.cure(2);
    let error = runner.retry_dead_letter(2).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ConcurrencyConflict);
    assert_eq!(
        error.to_string(),
        "'scripted' has finished position 1 (its checkpoint), not yet the dead letter at position 2 of stream 'A-1': a retry now could apply the stream's events out of order or twice; retry once it has got past position 2"
    );
    assert_eq!(projection.applied(), [1], "nothing was applied");
    assert_eq!(
        runner.dead_letters().await.unwrap().len(),
        2,
        "letters kept"
    );

    // The rebuild finishes; then the retry applies the stream's letters, each once.
    checkpoints.limit(u64::MAX);
    let progress = runner.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.position), (1, 4));
    assert_eq!(runner.retry_dead_letter(2).await.unwrap().applied, [2, 4]);
    assert_eq!(projection.applied_of("A-1"), [1, 2, 4]);
    assert_eq!(projection.applied_of("B-1"), [3]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_is_refused_while_a_parked_letter_is_past_the_saved_checkpoint() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "A-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    // Event 2 is parked (its letter stored), then its checkpoint cannot be saved.
    let checkpoints = CheckpointsUpTo::new(&store);
    checkpoints.limit(1);
    let first = runner_over(&store, &checkpoints, &projection);
    assert_eq!(
        first.catch_up().await.unwrap_err().code(),
        ErrorCode::StorageError
    );
    assert_eq!(
        positions(&first.dead_letters().await.unwrap()),
        [(1, None), (2, Some(1))]
    );

    // After a restart, before the runner got past event 2 again.
    checkpoints.limit(u64::MAX);
    let restarted = runner_over(&store, &checkpoints, &projection);
    projection.cure(1);
    let error = restarted.retry_dead_letter(1).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ConcurrencyConflict);
    assert!(
        error.message().contains(
            "finished position 1 (its checkpoint), not yet the dead letter at position 2"
        ),
        "{error}"
    );
    assert!(projection.applied().is_empty(), "nothing was applied");

    let progress = restarted.catch_up().await.unwrap();
    assert_eq!((progress.applied, progress.position), (0, 2), "2 is held");
    assert_eq!(
        restarted.retry_dead_letter(1).await.unwrap().applied,
        [1, 2]
    );
    assert_eq!(projection.applied_of("A-1"), [1, 2], "each once, in order");
}

#[tokio::test(start_paused = true)]
async fn retry_dead_letters_goes_on_past_a_stream_it_cannot_retry_and_reports_it() {
    let store = InMemoryEventStore::new();
    append_all(&store, &["A-1", "B-1"]).await;
    let projection = Arc::new(Scripted::default());
    projection.poison(1);
    projection.poison(2);
    let runner = Arc::new(
        runner(&store, &projection)
            .with_config(ProjectionConfig::default().with_backoff(Backoff::none())),
    );
    runner.catch_up().await.unwrap();
    projection.cure(1);
    projection.cure(2);

    // A's retry is running when every stream is retried.
    let gate = projection.gate(1);
    let retry = tokio::spawn({
        let runner = runner.clone();
        async move { runner.retry_dead_letter(1).await }
    });
    gate.reached().await;
    let report = runner.retry_dead_letters().await.unwrap();
    assert_eq!(report.applied, [2], "B was retried after A could not be");
    assert!(report.failed.is_empty());
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].0, 1);
    assert_eq!(report.errors[0].1.code(), ErrorCode::ConcurrencyConflict);
    gate.open();
    assert_eq!(retry.await.unwrap().unwrap().applied, [1]);
    assert!(runner.dead_letters().await.unwrap().is_empty());
}
