//! Saga: forward runs, compensation in reverse, panics, and recovery after a crash.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::InMemoryEventStore;
use flext_patterns::{Saga, SagaEvent, SagaStatus, StepContext};
use flext_protocols::{EventStore, EventStream};
use flext_types::{
    AppendResult, ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent, StoredEvent,
};

/// An external system that applies each idempotency key once, and logs what it did.
#[derive(Default)]
struct Ledger {
    applied: Mutex<HashSet<String>>,
    log: Mutex<Vec<String>>,
}

impl Ledger {
    fn apply(&self, ctx: &StepContext, what: &str) {
        if self
            .applied
            .lock()
            .unwrap()
            .insert(ctx.idempotency_key.clone())
        {
            self.log.lock().unwrap().push(what.to_owned());
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// The order saga: reserve stock, charge the card (fails for amounts over 100), ship.
fn order_saga(store: Arc<dyn EventStore>, ledger: Arc<Ledger>) -> Saga<u32> {
    build_order_saga(store, ledger).expect("the order saga is well formed")
}

fn build_order_saga(store: Arc<dyn EventStore>, ledger: Arc<Ledger>) -> FlextResult<Saga<u32>> {
    let (l1, l2, l3, l4, l5) = (
        ledger.clone(),
        ledger.clone(),
        ledger.clone(),
        ledger.clone(),
        ledger,
    );
    Saga::new("order", store)?
        .step(
            "reserve",
            move |amount, ctx| {
                l1.apply(&ctx, "reserve");
                async move { Ok(amount) }
            },
            move |_, ctx| {
                l2.apply(&ctx, "release");
                async { Ok(()) }
            },
        )?
        .step(
            "charge",
            move |amount, ctx| {
                let ledger = l3.clone();
                async move {
                    if amount > 100 {
                        return Err(FlextError::business_rule(format!(
                            "card declined for {amount}"
                        )));
                    }
                    ledger.apply(&ctx, "charge");
                    Ok(amount + 1_000)
                }
            },
            move |_, ctx| {
                l4.apply(&ctx, "refund");
                async { Ok(()) }
            },
        )?
        .step_without_compensation("ship", move |data, ctx| {
            l5.apply(&ctx, "ship");
            async move { Ok(data) }
        })
}

async fn event_types(store: &InMemoryEventStore, stream: &str) -> Vec<String> {
    store
        .read_stream(stream, 1, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_type.to_string())
        .collect()
}

#[tokio::test]
async fn a_successful_saga_runs_every_step_and_threads_the_data() {
    let store = InMemoryEventStore::new();
    let ledger = Arc::new(Ledger::default());
    let saga = order_saga(Arc::new(store.clone()), ledger.clone());
    let outcome = saga.run("o-1", 40).await.unwrap();
    assert_eq!(
        (outcome.status, outcome.data),
        (SagaStatus::Completed, 1_040)
    );
    assert!(outcome.failed_step.is_none() && outcome.compensated.is_empty());
    assert_eq!(ledger.log(), ["reserve", "charge", "ship"]);
    assert_eq!(
        event_types(&store, "Saga-order-o-1").await,
        [
            "SagaStarted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaCompleted"
        ]
    );
}

#[tokio::test]
async fn a_failed_step_compensates_the_completed_ones_in_reverse() {
    let store = InMemoryEventStore::new();
    let ledger = Arc::new(Ledger::default());
    let saga = order_saga(Arc::new(store.clone()), ledger.clone())
        .step(
            "notify",
            |d, _| async move { Ok(d) },
            |_, _| async { Ok(()) },
        )
        .unwrap();
    let outcome = saga.run("o-2", 500).await.unwrap();
    assert_eq!(outcome.status, SagaStatus::Compensated);
    assert_eq!(outcome.failed_step.as_deref(), Some("charge"));
    assert_eq!(
        outcome.error.as_ref().unwrap().to_string(),
        "card declined for 500"
    );
    assert_eq!(
        outcome.error.as_ref().unwrap().code(),
        ErrorCode::BusinessRuleViolation
    );
    assert_eq!(outcome.compensated, ["reserve"]);
    assert_eq!(ledger.log(), ["reserve", "release"]);
}

#[tokio::test]
async fn compensations_run_in_reverse_and_a_failing_one_does_not_stop_the_others() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let order = Arc::new(Mutex::new(Vec::new()));
    let (o1, o2, o3) = (order.clone(), order.clone(), order.clone());
    let saga = Saga::<u8>::new("chain", store)
        .unwrap()
        .step(
            "a",
            |d, _| async move { Ok(d) },
            move |_, _| {
                o1.lock().unwrap().push("undo a");
                async { Ok(()) }
            },
        )
        .unwrap()
        .step(
            "b",
            |d, _| async move { Ok(d) },
            move |_, _| {
                o2.lock().unwrap().push("undo b");
                async { Err(FlextError::storage("refund service down")) }
            },
        )
        .unwrap()
        .step(
            "c",
            |d, _| async move { Ok(d) },
            move |_, _| {
                o3.lock().unwrap().push("undo c");
                async { Ok(()) }
            },
        )
        .unwrap()
        .step(
            "d",
            |_, _| async { Err(FlextError::timeout("d timed out")) },
            |_, _| async { Ok(()) },
        )
        .unwrap();
    let outcome = saga.run("s", 0).await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["undo c", "undo b", "undo a"]);
    assert_eq!(outcome.compensated, ["c", "a"]);
    assert_eq!(outcome.compensation_failures.len(), 1);
    assert_eq!(outcome.compensation_failures[0].0, "b");
    assert_eq!(
        outcome.compensation_failures[0].1.to_string(),
        "refund service down"
    );
}

#[tokio::test]
async fn a_panicking_step_fails_and_is_compensated_around() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let saga = Saga::<u8>::new("fragile", store)
        .unwrap()
        .step("ok", |d, _| async move { Ok(d) }, |_, _| async { Ok(()) })
        .unwrap()
        .step(
            "boom",
            |_, _| async {
                if true {
                    panic!("step exploded")
                }
                Ok(0)
            },
            |_, _| async { Ok(()) },
        )
        .unwrap();
    let outcome = saga.run("f", 1).await.unwrap();
    assert_eq!(outcome.status, SagaStatus::Compensated);
    assert_eq!(
        outcome.error.unwrap().to_string(),
        "Handler execution failed: step exploded"
    );
    assert_eq!(outcome.compensated, ["ok"]);
}

/// An in-memory store that can fail the first append of one event type (as if the process
/// died right there), hold its first `read_stream` calls until `rendezvous` callers have
/// all read (so concurrent resumers start from the same records), and remembers the limit
/// of every `read_all`.
#[derive(Default)]
struct TestStore {
    inner: InMemoryEventStore,
    crash_on: Mutex<Option<&'static str>>,
    rendezvous: Option<(tokio::sync::Barrier, usize)>,
    reads_held: AtomicUsize,
    read_all_limits: Mutex<Vec<usize>>,
}

impl TestStore {
    fn crashing_on(inner: &InMemoryEventStore, event_type: &'static str) -> Self {
        Self {
            inner: inner.clone(),
            crash_on: Mutex::new(Some(event_type)),
            ..Self::default()
        }
    }

    fn rendezvous(inner: &InMemoryEventStore, callers: usize) -> Self {
        Self {
            inner: inner.clone(),
            rendezvous: Some((tokio::sync::Barrier::new(callers), callers)),
            ..Self::default()
        }
    }
}

#[async_trait]
impl EventStore for TestStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        let crash = {
            let mut crash_on = self.crash_on.lock().unwrap();
            let hit = crash_on.is_some_and(|t| events.iter().any(|e| e.event_type == t));
            if hit {
                *crash_on = None;
            }
            hit
        };
        if crash {
            return Err(FlextError::storage("the process stopped"));
        }
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        let read = self.inner.read_stream(stream, from, limit).await;
        if let Some((barrier, callers)) = &self.rendezvous
            && self.reads_held.fetch_add(1, Ordering::SeqCst) < *callers
        {
            barrier.wait().await;
        }
        read
    }
    async fn read_all(&self, from: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
        self.read_all_limits.lock().unwrap().push(limit);
        self.inner.read_all(from, limit).await
    }
    async fn stream_version(&self, stream: &str) -> FlextResult<u64> {
        self.inner.stream_version(stream).await
    }
    async fn head_position(&self) -> FlextResult<u64> {
        self.inner.head_position().await
    }
    async fn subscribe(&self, from: u64) -> FlextResult<EventStream> {
        self.inner.subscribe(from).await
    }
}

/// Appends `events` to `stream` as a run would have recorded them.
async fn given(store: &InMemoryEventStore, stream: &str, events: Vec<SagaEvent<u32>>) {
    for event in events {
        let payload = JsonPayload::encode(&event).unwrap();
        store
            .append(
                stream,
                ExpectedVersion::Any,
                vec![NewEvent::new(event.event_name(), payload)],
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_restarted_process_finishes_a_saga_without_applying_a_step_twice() {
    let store = InMemoryEventStore::new();
    let ledger = Arc::new(Ledger::default());
    let crashing = Arc::new(TestStore::crashing_on(&store, "SagaStepCompleted"));
    // The first step runs, then the process dies before its completion is recorded.
    let first_life = order_saga(crashing, ledger.clone());
    let err = first_life.run("o-3", 50).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageError);
    assert_eq!(ledger.log(), ["reserve"]);
    assert_eq!(first_life.unfinished().await.unwrap(), ["o-3"]);

    // A new process finds the unfinished saga and finishes it.
    let second_life = order_saga(Arc::new(store.clone()), ledger.clone());
    let outcomes = second_life.resume_all().await.unwrap();
    assert_eq!(outcomes.len(), 1);
    let (id, outcome) = &outcomes[0];
    let outcome = outcome.as_ref().unwrap();
    assert_eq!(
        (id.as_str(), outcome.status, outcome.data),
        ("o-3", SagaStatus::Completed, 1_050)
    );
    assert_eq!(
        ledger.log(),
        ["reserve", "charge", "ship"],
        "the replayed reserve was applied once"
    );
    assert!(second_life.unfinished().await.unwrap().is_empty());

    // Resuming a finished saga returns its outcome and runs nothing.
    let again = second_life.resume("o-3").await.unwrap();
    assert_eq!(again.status, SagaStatus::Completed);
    assert_eq!(ledger.log().len(), 3);
}

#[tokio::test]
async fn a_crash_while_compensating_is_finished_on_resume() {
    let store = InMemoryEventStore::new();
    let ledger = Arc::new(Ledger::default());
    let crashing = Arc::new(TestStore::crashing_on(&store, "SagaStepCompensated"));
    let err = order_saga(crashing, ledger.clone())
        .run("o-4", 900)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageError);
    assert_eq!(
        ledger.log(),
        ["reserve", "release"],
        "the release ran before the crash"
    );
    let outcome = order_saga(Arc::new(store.clone()), ledger.clone())
        .resume("o-4")
        .await
        .unwrap();
    assert_eq!(
        (outcome.status, outcome.failed_step.as_deref()),
        (SagaStatus::Compensated, Some("charge"))
    );
    assert_eq!(outcome.compensated, ["reserve"]);
    assert_eq!(
        ledger.log(),
        ["reserve", "release"],
        "the release was not applied twice"
    );
}

#[tokio::test]
async fn bad_ids_are_rejected_and_a_saga_runs_once() {
    let store = InMemoryEventStore::new();
    let saga = order_saga(Arc::new(store.clone()), Arc::new(Ledger::default()));
    assert_eq!(
        saga.run(" ", 1).await.unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    saga.run("o-5", 1).await.unwrap();
    assert_eq!(
        saga.run("o-5", 1).await.unwrap_err().code(),
        ErrorCode::ConcurrencyConflict
    );
    let err = saga.resume("never").await.unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            ErrorCode::NotFound,
            "No saga recorded in stream Saga-order-never"
        )
    );
}

#[tokio::test]
async fn the_saga_fixture_reads_as_given_when_then() {
    use flext_testing::SagaFixture;
    let build = |store| build_order_saga(store, Arc::new(Ledger::default()));
    let ok = SagaFixture::new(build).when_run(10).await;
    ok.then_completed(&1_010);
    ok.then_recorded(&[
        "SagaStarted",
        "SagaStepStarted",
        "SagaStepCompleted",
        "SagaStepStarted",
        "SagaStepCompleted",
        "SagaStepStarted",
        "SagaStepCompleted",
        "SagaCompleted",
    ])
    .await;

    let declined = SagaFixture::new(build).when_run(101).await;
    declined.then_compensated("charge", &["reserve"]);
    declined
        .then_recorded(&[
            "SagaStarted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaStepStarted",
            "SagaStepFailed",
            "SagaCompensationStarted",
            "SagaStepCompensated",
            "SagaCompensated",
        ])
        .await;

    // A crash during the release: the resume releases again, under the same key.
    SagaFixture::new(build)
        .given(vec![
            SagaEvent::Started { data: 101 },
            SagaEvent::StepStarted {
                step: "reserve".into(),
            },
            SagaEvent::StepCompleted {
                step: "reserve".into(),
                data: 101,
            },
            SagaEvent::StepStarted {
                step: "charge".into(),
            },
            SagaEvent::StepFailed {
                step: "charge".into(),
                error: FlextError::business_rule("card declined for 101"),
            },
            SagaEvent::CompensationStarted {
                step: "reserve".into(),
            },
        ])
        .await
        .when_resumed()
        .await
        .then_compensated("charge", &["reserve"]);

    // A saga that does not build fails every run.
    SagaFixture::new(|store| Saga::<u32>::new("order-v2", store))
        .when_run(1)
        .await
        .then_error(ErrorCode::InvalidArgument);

    let resumed = SagaFixture::new(build)
        .given(vec![
            SagaEvent::Started { data: 7 },
            SagaEvent::StepStarted {
                step: "reserve".into(),
            },
        ])
        .await
        .when_resumed()
        .await;
    resumed.then_completed(&1_007);

    SagaFixture::new(build)
        .given(vec![
            SagaEvent::Started { data: 7 },
            SagaEvent::StepStarted {
                step: "teleport".into(),
            },
            SagaEvent::StepCompleted {
                step: "teleport".into(),
                data: 8,
            },
        ])
        .await
        .when_resumed()
        .await
        .then_error(ErrorCode::InvalidArgument);
}

/// Steps `a` and `b` add 1 and 10 and count their compensations; `c` always fails.
fn counting_saga(store: Arc<dyn EventStore>, counts: Arc<[AtomicU32; 4]>) -> Saga<u32> {
    let (c0, c1, c2, c3) = (counts.clone(), counts.clone(), counts.clone(), counts);
    Saga::new("pay", store)
        .unwrap()
        .step(
            "a",
            move |n, _| {
                c0[0].fetch_add(1, Ordering::SeqCst);
                async move { Ok(n + 1) }
            },
            move |_, _| {
                c1[1].fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            },
        )
        .unwrap()
        .step(
            "b",
            |n, _| async move { Ok(n + 10) },
            move |_, _| {
                c2[2].fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            },
        )
        .unwrap()
        .step(
            "c",
            move |_, _| {
                c3[3].fetch_add(1, Ordering::SeqCst);
                async { Err(FlextError::business_rule("c refused")) }
            },
            |_, _| async { Ok(()) },
        )
        .unwrap()
}

#[tokio::test]
async fn two_resumers_of_one_crashed_run_run_each_compensation_once() {
    let store = InMemoryEventStore::new();
    // The run failed at `c` and its process died before compensating anything.
    given(
        &store,
        "Saga-pay-p-1",
        vec![
            SagaEvent::Started { data: 0 },
            SagaEvent::StepStarted { step: "a".into() },
            SagaEvent::StepCompleted {
                step: "a".into(),
                data: 1,
            },
            SagaEvent::StepStarted { step: "b".into() },
            SagaEvent::StepCompleted {
                step: "b".into(),
                data: 11,
            },
            SagaEvent::StepStarted { step: "c".into() },
            SagaEvent::StepFailed {
                step: "c".into(),
                error: FlextError::business_rule("c refused"),
            },
        ],
    )
    .await;
    // Two processes resume it from the same records.
    let shared: Arc<dyn EventStore> = Arc::new(TestStore::rendezvous(&store, 2));
    let counts = Arc::new([const { AtomicU32::new(0) }; 4]);
    let first = counting_saga(shared.clone(), counts.clone());
    let second = counting_saga(shared, counts.clone());
    let (one, two) = tokio::join!(first.resume("p-1"), second.resume("p-1"));

    let counted: Vec<u32> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(counted[1..3], [1, 1], "each compensation ran once");
    let (won, lost) = match (one, two) {
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
        other => panic!("one resumer drives the run, the other is turned away: {other:?}"),
    };
    assert_eq!(won.status, SagaStatus::Compensated);
    assert_eq!(won.compensated, ["b", "a"]);
    assert_eq!(lost.code(), ErrorCode::ConcurrencyConflict, "{lost}");
    assert!(
        lost.to_string()
            .starts_with("Saga 'pay' run 'p-1' is being driven elsewhere: "),
        "{lost}"
    );
    assert_eq!(
        event_types(&store, "Saga-pay-p-1").await[7..],
        [
            "SagaCompensationStarted",
            "SagaStepCompensated",
            "SagaCompensationStarted",
            "SagaStepCompensated",
            "SagaCompensated"
        ],
        "one resumer recorded each compensation"
    );
}

#[tokio::test]
async fn two_resumers_of_a_run_crashed_mid_step_run_the_step_once() {
    let store = InMemoryEventStore::new();
    // The process died while `a` ran.
    given(
        &store,
        "Saga-pay-p-2",
        vec![
            SagaEvent::Started { data: 0 },
            SagaEvent::StepStarted { step: "a".into() },
        ],
    )
    .await;
    let shared: Arc<dyn EventStore> = Arc::new(TestStore::rendezvous(&store, 2));
    let counts = Arc::new([const { AtomicU32::new(0) }; 4]);
    let first = counting_saga(shared.clone(), counts.clone());
    let second = counting_saga(shared, counts.clone());
    let (one, two) = tokio::join!(first.resume("p-2"), second.resume("p-2"));
    assert_eq!(counts[0].load(Ordering::SeqCst), 1, "step a ran again once");
    assert_eq!(counts[3].load(Ordering::SeqCst), 1, "step c ran once");
    assert!(
        one.is_ok() != two.is_ok(),
        "one resumer drives the run: {one:?} {two:?}"
    );
}

#[tokio::test]
async fn a_compensation_is_recorded_as_started_before_it_runs() {
    let store = InMemoryEventStore::new();
    let saga = order_saga(Arc::new(store.clone()), Arc::new(Ledger::default()));
    saga.run("o-6", 500).await.unwrap();
    assert_eq!(
        event_types(&store, "Saga-order-o-6").await,
        [
            "SagaStarted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaStepStarted",
            "SagaStepFailed",
            "SagaCompensationStarted",
            "SagaStepCompensated",
            "SagaCompensated"
        ]
    );
}

#[tokio::test]
async fn a_saga_does_not_see_the_runs_of_a_saga_whose_name_extends_its_own() {
    let store = InMemoryEventStore::new();
    // A name with the separator of the stream ids is refused: `order-v2`'s runs would be
    // `Saga-order-v2-{id}`, which saga `order` reads as its runs `v2-{id}`.
    for bad in ["order-v2", "", " "] {
        let err = Saga::<u32>::new(bad, Arc::new(store.clone())).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{bad:?}: {err}");
    }
    let err = Saga::<u32>::new("order-v2", Arc::new(store.clone())).unwrap_err();
    assert!(err.to_string().contains("cannot contain '-'"), "{err}");

    // Sagas whose names extend one another each see their own crashed runs only, whatever
    // their ids look like.
    let ledger = Arc::new(Ledger::default());
    let crashing = Arc::new(TestStore::crashing_on(&store, "SagaStepCompleted"));
    let v2 = Saga::<u32>::new("order_v2", crashing)
        .unwrap()
        .step(
            "reserve",
            |n, _| async move { Ok(n) },
            |_, _| async { Ok(()) },
        )
        .unwrap();
    v2.run("x", 1).await.unwrap_err();
    let crashing = Arc::new(TestStore::crashing_on(&store, "SagaStepCompleted"));
    order_saga(crashing, ledger.clone())
        .run("v2-x", 1)
        .await
        .unwrap_err();

    let order = order_saga(Arc::new(store.clone()), ledger);
    assert_eq!(order.unfinished().await.unwrap(), ["v2-x"]);
    assert_eq!(order.stream_id("v2-x"), "Saga-order-v2-x");
    let v2 = Saga::<u32>::new("order_v2", Arc::new(store.clone())).unwrap();
    assert_eq!(v2.unfinished().await.unwrap(), ["x"]);
    let resumed = order.resume_all().await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].0, "v2-x");
    assert_eq!(resumed[0].1.as_ref().unwrap().status, SagaStatus::Completed);
}

#[tokio::test]
async fn duplicate_step_names_are_rejected_when_the_saga_is_built() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let err = Saga::<u32>::new("dup", store.clone())
        .unwrap()
        .step(
            "a",
            |n, _| async move { Ok(n + 1) },
            |_, _| async { Ok(()) },
        )
        .unwrap()
        .step(
            "b",
            |n, _| async move { Ok(n + 10) },
            |_, _| async { Ok(()) },
        )
        .unwrap()
        .step_without_compensation("a", |n, _| async move { Ok(n + 100) })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Duplicate);
    assert_eq!(
        err.to_string(),
        "Saga 'dup' already has a step named 'a': a run's records name its steps, so each \
         name must be unique"
    );
    let err = Saga::<u32>::new("dup", store)
        .unwrap()
        .step(" ", |n, _| async move { Ok(n) }, |_, _| async { Ok(()) })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn resume_all_goes_on_past_a_failing_run_and_reports_each_outcome() {
    let store = InMemoryEventStore::new();
    let ledger = Arc::new(Ledger::default());
    // Run `a-bad` names a step the saga does not have; `b-good` crashed after reserving;
    // `c-good` crashed while compensating.
    given(
        &store,
        "Saga-order-a-bad",
        vec![
            SagaEvent::Started { data: 1 },
            SagaEvent::StepStarted {
                step: "teleport".into(),
            },
            SagaEvent::StepCompleted {
                step: "teleport".into(),
                data: 2,
            },
        ],
    )
    .await;
    let crashing = Arc::new(TestStore::crashing_on(&store, "SagaStepCompleted"));
    order_saga(crashing, ledger.clone())
        .run("b-good", 5)
        .await
        .unwrap_err();
    let crashing = Arc::new(TestStore::crashing_on(&store, "SagaStepCompensated"));
    order_saga(crashing, ledger.clone())
        .run("c-good", 500)
        .await
        .unwrap_err();

    let saga = order_saga(Arc::new(store.clone()), ledger);
    let results = saga.resume_all().await.unwrap();
    let ids: Vec<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a-bad", "b-good", "c-good"]);
    let err = results[0].1.as_ref().unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("'teleport'"), "{err}");
    let b = results[1].1.as_ref().unwrap();
    assert_eq!((b.status, b.data), (SagaStatus::Completed, 1_005));
    let c = results[2].1.as_ref().unwrap();
    assert_eq!(
        (c.status, c.compensated.as_slice()),
        (SagaStatus::Compensated, &["reserve".to_owned()][..])
    );
    assert_eq!(
        saga.unfinished().await.unwrap(),
        ["a-bad"],
        "only the bad run is left"
    );
}

#[tokio::test]
async fn unfinished_reads_the_log_in_pages_and_finds_every_run() {
    let store = InMemoryEventStore::new();
    let saga = order_saga(Arc::new(store.clone()), Arc::new(Ledger::default()));
    for i in 0..150 {
        saga.run(&format!("done-{i:03}"), 1).await.unwrap();
    }
    for id in ["open-1", "open-2"] {
        given(
            &store,
            &format!("Saga-order-{id}"),
            vec![SagaEvent::Started { data: 1 }],
        )
        .await;
    }
    let counting = Arc::new(TestStore {
        inner: store.clone(),
        ..TestStore::default()
    });
    let saga = order_saga(counting.clone(), Arc::new(Ledger::default()));
    assert_eq!(saga.unfinished().await.unwrap(), ["open-1", "open-2"]);
    let limits = counting.read_all_limits.lock().unwrap().clone();
    assert!(
        limits.len() > 1 && limits.iter().all(|&limit| limit <= 1_000),
        "the log is read in pages: {limits:?}"
    );
}

#[tokio::test]
async fn a_step_closure_that_panics_before_returning_its_future_fails_the_step() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let saga = Saga::<u8>::new("eager", store)
        .unwrap()
        .step("ok", |d, _| async move { Ok(d) }, |_, _| async { Ok(()) })
        .unwrap()
        .step(
            "boom",
            |d, _| -> std::future::Ready<FlextResult<u8>> {
                if d < 10 {
                    panic!("closure exploded")
                }
                std::future::ready(Ok(d))
            },
            |_, _| async { Ok(()) },
        )
        .unwrap();
    let outcome = saga.run("e", 1).await.unwrap();
    assert_eq!(outcome.status, SagaStatus::Compensated);
    assert_eq!(
        outcome.error.unwrap().to_string(),
        "Handler execution failed: closure exploded"
    );
}
