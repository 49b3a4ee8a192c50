//! Spawned runners and their handles: read-your-writes without polling, shutdown with the
//! checkpoint saved, a run's error seen by every waiter, drops that stop the run.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::{
    Envelope, ErrorClass, EventBus, EventRelay, InMemoryEventStore, ProjectionConfig,
    ProjectionRunner, RunHandle, Runnable, Shutdown,
};
use flext_impl::handler_fn;
use flext_protocols::{CheckpointStore, Event, EventStore, Projection};
use flext_types::{ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent, StoredEvent};
use futures_util::FutureExt;
use serde::Deserialize;
use tokio::sync::{oneshot, watch};

/// The positions it applied; an event of type "Poison" fails it; dropped, it says so.
#[derive(Default)]
struct Seen {
    positions: Mutex<BTreeSet<u64>>,
    dropped: Mutex<Option<oneshot::Sender<()>>>,
}

impl Seen {
    fn positions(&self) -> Vec<u64> {
        self.positions.lock().unwrap().iter().copied().collect()
    }

    /// A projection that tells the receiver when it is dropped (with the runner that held
    /// it, at the end of its task).
    fn watched() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let seen = Self::default();
        *seen.dropped.lock().unwrap() = Some(tx);
        (seen, rx)
    }
}

impl Drop for Seen {
    fn drop(&mut self) {
        if let Some(tx) = self.dropped.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

#[async_trait]
impl Projection for Seen {
    fn name(&self) -> &str {
        "seen"
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        if &*event.event_type == "Poison" {
            return Err(FlextError::validation(format!(
                "cannot project the poison at {}",
                event.position
            )));
        }
        self.positions.lock().unwrap().insert(event.position);
        Ok(())
    }

    async fn reset(&self) -> FlextResult<()> {
        self.positions.lock().unwrap().clear();
        Ok(())
    }
}

/// Appends one event of `kind` to `stream`: its position.
async fn append(store: &InMemoryEventStore, stream: &str, kind: &str) -> u64 {
    let event = NewEvent::new(kind, JsonPayload::encode(&stream).unwrap());
    store
        .append(stream, ExpectedVersion::Any, vec![event])
        .await
        .unwrap()
        .last_position
}

fn runner(store: &InMemoryEventStore, projection: Arc<Seen>) -> ProjectionRunner {
    ProjectionRunner::new(Arc::new(store.clone()), Arc::new(store.clone()), projection)
}

#[tokio::test]
async fn wait_for_the_append_s_last_position_then_the_read_model_has_it() {
    let store = InMemoryEventStore::new();
    let seen = Arc::new(Seen::default());
    let handle = runner(&store, seen.clone()).spawn().unwrap();
    assert_eq!(handle.name(), "seen");

    for expected in 1..=3 {
        let position = append(&store, "Ping-a", "Ping").await;
        assert_eq!(position, expected);
        handle.wait_for(position).await.unwrap();
        assert!(seen.positions().contains(&position), "read-your-writes");
        assert!(handle.position() >= position);
    }
    assert!(!handle.is_finished());
    let progress = handle.shutdown().await.unwrap();
    assert_eq!((progress.applied, progress.position), (3, 3));
}

#[tokio::test]
async fn caught_up_waits_for_the_head_as_of_the_call() {
    let store = InMemoryEventStore::new();
    for _ in 0..40 {
        append(&store, "Ping-a", "Ping").await;
    }
    let seen = Arc::new(Seen::default());
    let handle = runner(&store, seen.clone())
        .with_config(ProjectionConfig::default().with_batch_size(7))
        .spawn()
        .unwrap();
    assert_eq!(handle.caught_up().await.unwrap(), 40);
    assert_eq!(seen.positions().len(), 40);
    assert_eq!(handle.position(), 40);

    // Caught up again after more: the head as of the second call.
    let last = append(&store, "Ping-b", "Ping").await;
    assert_eq!(handle.caught_up().await.unwrap(), last);
    assert!(seen.positions().contains(&last));
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn caught_up_on_an_empty_log_returns_at_once() {
    let store = InMemoryEventStore::new();
    let handle = runner(&store, Arc::new(Seen::default())).spawn().unwrap();
    assert_eq!(handle.caught_up().await.unwrap(), 0);
    assert_eq!(handle.shutdown().await.unwrap().applied, 0);
}

#[tokio::test]
async fn shutdown_saves_the_checkpoint_and_a_new_runner_resumes_after_it() {
    let store = InMemoryEventStore::new();
    // A policy that would not save before the end of the run by itself.
    let lazy = ProjectionConfig::default()
        .with_checkpoint_every(1000)
        .with_checkpoint_interval(Duration::from_secs(3600));
    let seen = Arc::new(Seen::default());
    let handle = runner(&store, seen.clone())
        .with_config(lazy.clone())
        .spawn()
        .unwrap();
    let mut last = 0;
    for _ in 0..5 {
        last = append(&store, "Ping-a", "Ping").await;
    }
    handle.wait_for(last).await.unwrap();
    let progress = handle.shutdown().await.unwrap();
    assert_eq!((progress.applied, progress.position), (5, last));
    assert_eq!(store.load_checkpoint("seen").await.unwrap(), Some(last));

    let more = append(&store, "Ping-a", "Ping").await;
    let again = Arc::new(Seen::default());
    let handle = runner(&store, again.clone())
        .with_config(lazy)
        .spawn()
        .unwrap();
    handle.wait_for(more).await.unwrap();
    assert_eq!(
        again.positions(),
        vec![more],
        "only what came after the checkpoint"
    );
    let progress = handle.shutdown().await.unwrap();
    assert_eq!((progress.applied, progress.position), (1, more));
}

#[tokio::test]
async fn a_passed_position_is_waited_for_at_once() {
    let store = InMemoryEventStore::new();
    for _ in 0..3 {
        append(&store, "Ping-a", "Ping").await;
    }
    let handle = runner(&store, Arc::new(Seen::default())).spawn().unwrap();
    handle.wait_for(3).await.unwrap();
    for position in [0, 1, 3] {
        assert_eq!(
            handle.wait_for(position).now_or_never().map(Result::unwrap),
            Some(()),
            "position {position} is passed: no await needed"
        );
    }
    handle.shutdown().await.unwrap();
}

/// Stops the run at a poisoned event instead of dead-lettering it.
fn stopping_runner(store: &InMemoryEventStore, seen: Arc<Seen>) -> ProjectionRunner {
    runner(store, seen).with_error_classifier(|error| match error.code() {
        ErrorCode::ValidationError => ErrorClass::Stop,
        _ => ErrorClass::of(error),
    })
}

#[tokio::test]
async fn a_run_ended_by_an_error_fails_join_and_every_waiter_with_it() {
    let store = InMemoryEventStore::new();
    let first = append(&store, "Ping-a", "Ping").await;
    let handle = stopping_runner(&store, Arc::new(Seen::default()))
        .spawn()
        .unwrap();
    handle.wait_for(first).await.unwrap();

    // A waiter for a position past the poison, pending when it comes.
    let (waited, poison) = tokio::join!(handle.wait_for(first + 5), async {
        tokio::task::yield_now().await;
        append(&store, "Ping-a", "Poison").await
    });
    let error = waited.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ValidationError);
    assert!(
        error
            .message()
            .contains(&format!("cannot project the poison at {poison}")),
        "{error}"
    );
    assert!(handle.is_finished());
    assert_eq!(handle.position(), first, "stopped before the poison");

    // A wait after the end fails at once, the same way; one before it still succeeds.
    let late = handle.wait_for(poison).now_or_never().expect("at once");
    assert_eq!(late.unwrap_err().code(), ErrorCode::ValidationError);
    assert!(handle.wait_for(first).now_or_never().unwrap().is_ok());

    let joined = handle.join().await.unwrap_err();
    assert_eq!(joined.code(), ErrorCode::ValidationError);
    assert_eq!(
        store.load_checkpoint("seen").await.unwrap(),
        Some(first),
        "the checkpoint before the poison"
    );
}

#[tokio::test(start_paused = true)]
async fn wait_for_within_times_out_naming_the_projection_and_the_positions() {
    let store = InMemoryEventStore::new();
    let first = append(&store, "Ping-a", "Ping").await;
    let handle = runner(&store, Arc::new(Seen::default())).spawn().unwrap();
    handle
        .wait_for_within(first, Duration::from_secs(1))
        .await
        .unwrap();

    let started = tokio::time::Instant::now();
    let error = handle
        .wait_for_within(first + 10, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(error.code(), ErrorCode::Timeout);
    assert!(
        error.message().contains("'seen'") && error.message().contains("position 11"),
        "{error}"
    );
    let data = error.data().unwrap();
    assert_eq!(
        (
            data["projection"].as_str(),
            data["position"].as_u64(),
            data["reached"].as_u64()
        ),
        (Some("seen"), Some(11), Some(1))
    );
    // The run goes on.
    assert!(!handle.is_finished());
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropping_the_handle_stops_the_run_and_saves_its_checkpoint() {
    let store = InMemoryEventStore::new();
    let (seen, gone) = Seen::watched();
    let handle = runner(&store, Arc::new(seen))
        .with_config(ProjectionConfig::default().with_checkpoint_every(1000))
        .spawn()
        .unwrap();
    let last = append(&store, "Ping-a", "Ping").await;
    handle.wait_for(last).await.unwrap();
    drop(handle);
    // The projection goes with the runner, when the task ends.
    gone.await.unwrap();
    assert_eq!(store.load_checkpoint("seen").await.unwrap(), Some(last));
}

#[tokio::test]
async fn the_runner_is_reachable_while_it_runs() {
    let store = InMemoryEventStore::new();
    let handle = runner(&store, Arc::new(Seen::default())).spawn().unwrap();
    let last = append(&store, "Ping-a", "Ping").await;
    handle.wait_for(last).await.unwrap();
    let status = handle.runner().status().await.unwrap();
    assert_eq!((status.position, status.head, status.lag), (last, last, 0));
    assert!(format!("{handle:?}").contains("seen"));
    handle.shutdown().await.unwrap();
}

#[test]
fn spawning_outside_a_runtime_is_an_operation_error() {
    let store = InMemoryEventStore::new();
    let error = runner(&store, Arc::new(Seen::default()))
        .spawn()
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::OperationError);
    assert!(
        error.message().contains("'seen'") && error.message().contains("tokio runtime"),
        "{error}"
    );
}

/// A runner of the test's own: it moves to the positions it is told, then ends as told.
struct Scripted {
    positions: watch::Sender<u64>,
    ending: Mutex<Option<oneshot::Receiver<Ending>>>,
}

enum Ending {
    Done,
    Panic,
}

impl Scripted {
    fn new() -> (Arc<Self>, oneshot::Sender<Ending>) {
        let (tx, rx) = oneshot::channel();
        let runner = Arc::new(Self {
            positions: watch::Sender::new(0),
            ending: Mutex::new(Some(rx)),
        });
        (runner, tx)
    }
}

#[async_trait]
impl Runnable for Scripted {
    type Progress = u64;

    fn name(&self) -> &str {
        "scripted"
    }

    fn positions(&self) -> &watch::Sender<u64> {
        &self.positions
    }

    async fn head(&self) -> FlextResult<u64> {
        Ok(2)
    }

    async fn run(&self, shutdown: Shutdown) -> FlextResult<u64> {
        let ending = self.ending.lock().unwrap().take().unwrap();
        self.positions.send_replace(1);
        tokio::select! {
            () = shutdown => Ok(*self.positions.borrow()),
            ending = ending => match ending {
                Ok(Ending::Done) | Err(_) => Ok(1),
                Ok(Ending::Panic) => panic!("scripted to panic"),
            },
        }
    }
}

#[tokio::test]
async fn a_run_that_ends_by_itself_fails_waits_past_it_with_a_clear_error() {
    let (runner, end) = Scripted::new();
    let handle = RunHandle::spawn(runner).unwrap();
    handle.wait_for(1).await.unwrap();
    let (waited, ()) = tokio::join!(handle.wait_for(2), async {
        tokio::task::yield_now().await;
        let _ = end.send(Ending::Done);
    });
    let error = waited.unwrap_err();
    assert_eq!(error.code(), ErrorCode::OperationError);
    assert!(
        error
            .message()
            .contains("'scripted' will not finish position 2")
            && error.message().contains("at position 1"),
        "{error}"
    );
    let caught_up = handle.caught_up().await.unwrap_err();
    assert_eq!(caught_up.code(), ErrorCode::OperationError);
    assert_eq!(handle.join().await.unwrap(), 1);
}

#[tokio::test]
async fn a_panicking_run_fails_its_waiters_and_its_join() {
    let (runner, end) = Scripted::new();
    let handle = RunHandle::spawn(runner).unwrap();
    handle.wait_for(1).await.unwrap();
    let (waited, ()) = tokio::join!(handle.wait_for(2), async {
        tokio::task::yield_now().await;
        let _ = end.send(Ending::Panic);
    });
    let error = waited.unwrap_err();
    assert_eq!(error.code(), ErrorCode::OperationError);
    assert!(error.message().contains("panicked"), "{error}");
    assert!(handle.is_finished());
    let joined = handle.join().await.unwrap_err();
    assert_eq!(joined.code(), ErrorCode::OperationError);
    assert!(
        joined
            .message()
            .contains("'scripted' panicked: scripted to panic"),
        "{joined}"
    );
}

#[tokio::test]
async fn shutdown_of_a_scripted_run_returns_its_progress() {
    let (runner, _end) = Scripted::new();
    let handle = RunHandle::spawn(runner.clone()).unwrap();
    handle.wait_for(1).await.unwrap();
    assert!(Arc::ptr_eq(handle.runner(), &runner));
    assert_eq!(handle.shutdown().await.unwrap(), 1);
}

/// The relayed event.
#[derive(Debug, Deserialize)]
struct Ping(#[allow(dead_code, reason = "decoded, not read")] String);

impl Event for Ping {
    fn event_name(&self) -> &str {
        "Ping"
    }
}

#[tokio::test]
async fn a_spawned_relay_has_delivered_to_every_subscriber_once_waited_for() {
    let store = InMemoryEventStore::new();
    let bus = Arc::new(EventBus::new());
    let delivered: Arc<Mutex<Vec<(&'static str, u64)>>> = Arc::default();
    for name in ["audit", "mailer"] {
        let delivered = delivered.clone();
        bus.subscribe(
            "Ping",
            handler_fn(name, move |event: Arc<Envelope<Ping>>| {
                let delivered = delivered.clone();
                async move {
                    delivered.lock().unwrap().push((name, event.position));
                    Ok(())
                }
            }),
        );
    }
    let relay = Arc::new(EventRelay::<Ping>::new(
        "pings",
        bus,
        Arc::new(store.clone()),
    ));
    let handle = relay.clone().spawn(Arc::new(store.clone())).unwrap();
    assert_eq!(handle.name(), "pings");

    let position = append(&store, "Ping-a", "Ping").await;
    handle.wait_for(position).await.unwrap();
    assert_eq!(
        *delivered.lock().unwrap(),
        vec![("audit", position), ("mailer", position)]
    );
    assert!(relay.dead_letters("audit").await.unwrap().is_empty());

    let progress = handle.shutdown().await.unwrap();
    assert_eq!((progress.applied, progress.position), (1, position));
    assert_eq!(
        store.load_checkpoint("pings").await.unwrap(),
        Some(position)
    );
}

#[tokio::test]
async fn a_relay_stopped_by_its_error_fails_its_waiters() {
    let store = InMemoryEventStore::new();
    let bus = Arc::new(EventBus::new());
    // Two subscribers sharing a name: the relay refuses the event and its run stops.
    let called = Arc::new(AtomicBool::new(false));
    for _ in 0..2 {
        let called = called.clone();
        bus.subscribe(
            "Ping",
            handler_fn("twin", move |_: Arc<Envelope<Ping>>| {
                called.store(true, Ordering::SeqCst);
                async { Ok(()) }
            }),
        );
    }
    let relay = Arc::new(EventRelay::<Ping>::new(
        "pings",
        bus,
        Arc::new(store.clone()),
    ));
    let handle = relay.spawn(Arc::new(store.clone())).unwrap();
    let position = append(&store, "Ping-a", "Ping").await;
    let error = handle.wait_for(position).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(error.message().contains("'twin'"), "{error}");
    assert!(!called.load(Ordering::SeqCst));
    assert_eq!(
        handle.join().await.unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
}
