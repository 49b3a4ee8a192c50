//! Saga: forward runs, compensation in reverse, panics, and recovery after a crash.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::InMemoryEventStore;
use flext_patterns::{Saga, SagaEvent, SagaStatus, StepContext};
use flext_protocols::{BoxLease, EventStore, EventStream, HeldLease, Leases};
use flext_types::{
    AppendResult, ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent, StoredEvent,
};

/// An external system that applies each idempotency key once, and logs what it did; it
/// also counts every call, repeats included, with the key it was given.
#[derive(Default)]
struct Ledger {
    applied: Mutex<HashSet<String>>,
    log: Mutex<Vec<String>>,
    calls: Mutex<Vec<(String, String)>>,
}

impl Ledger {
    fn apply(&self, ctx: &StepContext, what: &str) {
        self.calls
            .lock()
            .unwrap()
            .push((what.to_owned(), ctx.idempotency_key.clone()));
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

    /// Every call of `what`, by key.
    fn calls_of(&self, what: &str) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| w == what)
            .map(|(_, key)| key.clone())
            .collect()
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
    assert_eq!(outcome.status, SagaStatus::CompensationFailed);
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
    assert_eq!(
        ledger.calls_of("release"),
        ["order/reserve/compensation/o-4"]
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
    // The release had no recorded end, so the resume ran it again (at least once), under
    // the key of the first call; the ledger applied that key once.
    assert_eq!(
        ledger.calls_of("release"),
        [
            "order/reserve/compensation/o-4",
            "order/reserve/compensation/o-4"
        ],
        "the release was called again once, with the same key"
    );
    assert_eq!(
        ledger.calls_of("reserve"),
        ["order/reserve/action/o-4"],
        "nothing else ran again"
    );
    assert_eq!(
        ledger.log(),
        ["reserve", "release"],
        "the release was not applied twice"
    );
    // A finished run resumed again calls nothing.
    order_saga(Arc::new(store.clone()), ledger.clone())
        .resume("o-4")
        .await
        .unwrap();
    assert_eq!(ledger.calls_of("release").len(), 2);
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

    // A release that failed is retried by the resume, under the same key.
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
            SagaEvent::CompensationFailed {
                step: "reserve".into(),
                error: FlextError::storage("warehouse down"),
            },
        ])
        .await
        .when_resumed()
        .await
        .then_compensated("charge", &["reserve"]);

    // A compensation that keeps failing leaves the run waiting for a retry.
    let stuck = |store| {
        Saga::<u32>::new("stuck", store)?
            .step(
                "reserve",
                |n, _| async move { Ok(n) },
                |_, _| async { Err(FlextError::storage("warehouse down")) },
            )?
            .step_without_compensation("charge", |_, _| async {
                Err(FlextError::business_rule("declined"))
            })
    };
    let stuck = SagaFixture::new(stuck).when_run(1).await;
    stuck.then_compensation_failed("charge", &[], &["reserve"]);
    stuck
        .then_recorded(&[
            "SagaStarted",
            "SagaStepStarted",
            "SagaStepCompleted",
            "SagaStepStarted",
            "SagaStepFailed",
            "SagaCompensationStarted",
            "SagaCompensationFailed",
        ])
        .await;

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

/// A regression test of the case the `…Started` records settle: two resumers that load the
/// same records of a run whose process died inside step `a`. One records `a`'s start again
/// and re-runs it (at least once: it ran before the crash too), the other is turned away
/// before running anything. It does not cover a resumer that loads while another is inside
/// the step: that one runs the step again, until runs have owners (leases).
#[tokio::test]
async fn two_resumers_loading_the_same_records_of_a_run_crashed_mid_step_rerun_it_once() {
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
    assert_eq!(
        counts[0].load(Ordering::SeqCst),
        1,
        "of the two resumers, one ran step a again"
    );
    assert_eq!(counts[3].load(Ordering::SeqCst), 1, "step c ran once");
    let lost = match (one, two) {
        (Ok(_), Err(lost)) | (Err(lost), Ok(_)) => lost,
        other => panic!("one resumer drives the run, the other is turned away: {other:?}"),
    };
    assert_eq!(lost.code(), ErrorCode::ConcurrencyConflict, "{lost}");
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

/// Steps `a` and `b` add 1 and 10; their compensations log `(what, key)` to `calls`, and
/// `b`'s fails its first `b_failures` calls; `c` always fails.
fn flaky_saga(
    store: Arc<dyn EventStore>,
    b_failures: u32,
    calls: Arc<Mutex<Vec<(String, String)>>>,
) -> Saga<u32> {
    let (undo_a, undo_b) = (calls.clone(), calls);
    let failures_left = AtomicU32::new(b_failures);
    Saga::new("flaky", store)
        .unwrap()
        .step(
            "a",
            |n, _| async move { Ok(n + 1) },
            move |_, ctx| {
                undo_a
                    .lock()
                    .unwrap()
                    .push(("undo a".to_owned(), ctx.idempotency_key));
                async { Ok(()) }
            },
        )
        .unwrap()
        .step(
            "b",
            |n, _| async move { Ok(n + 10) },
            move |_, ctx| {
                undo_b
                    .lock()
                    .unwrap()
                    .push(("undo b".to_owned(), ctx.idempotency_key));
                let fail = failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                async move {
                    if fail {
                        Err(FlextError::storage("refund service down"))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .unwrap()
        .step(
            "c",
            |_, _| async { Err(FlextError::business_rule("c refused")) },
            |_, _| async { Ok(()) },
        )
        .unwrap()
}

fn failures<D>(outcome: &flext_patterns::SagaOutcome<D>) -> Vec<(&str, String)> {
    outcome
        .compensation_failures
        .iter()
        .map(|(step, error)| (step.as_str(), error.to_string()))
        .collect()
}

#[tokio::test]
async fn a_failed_compensation_leaves_the_run_unfinished_and_resume_retries_only_it() {
    let store = InMemoryEventStore::new();
    let calls = Arc::new(Mutex::new(Vec::new()));
    // `b`'s compensation fails twice, then succeeds.
    let saga = flaky_saga(Arc::new(store.clone()), 2, calls.clone());

    let outcome = saga.run("r-1", 0).await.unwrap();
    assert_eq!(outcome.status, SagaStatus::CompensationFailed);
    assert_eq!(outcome.failed_step.as_deref(), Some("c"));
    assert_eq!(outcome.compensated, ["a"]);
    assert_eq!(
        failures(&outcome),
        [("b", "refund service down".to_owned())]
    );
    assert_eq!(
        saga.unfinished().await.unwrap(),
        ["r-1"],
        "a run with a failed compensation is not finished"
    );

    // The first resume retries `b` alone, which fails again: still not finished.
    let outcome = saga.resume("r-1").await.unwrap();
    assert_eq!(outcome.status, SagaStatus::CompensationFailed);
    assert_eq!(outcome.compensated, ["a"]);
    assert_eq!(
        failures(&outcome),
        [("b", "refund service down".to_owned())]
    );
    assert_eq!(saga.unfinished().await.unwrap(), ["r-1"]);

    // The second resume retries `b` alone, which succeeds: the run is compensated.
    let outcome = saga.resume("r-1").await.unwrap();
    assert_eq!(outcome.status, SagaStatus::Compensated);
    assert_eq!(outcome.compensated, ["a", "b"]);
    assert!(outcome.compensation_failures.is_empty(), "{outcome:?}");
    assert!(saga.unfinished().await.unwrap().is_empty());

    // Finished: a resume runs nothing.
    let again = saga.resume("r-1").await.unwrap();
    assert_eq!(again.status, SagaStatus::Compensated);

    let (a, b) = ("flaky/a/compensation/r-1", "flaky/b/compensation/r-1");
    let expected: Vec<(String, String)> =
        [("undo b", b), ("undo a", a), ("undo b", b), ("undo b", b)]
            .iter()
            .map(|(what, key)| ((*what).to_owned(), (*key).to_owned()))
            .collect();
    assert_eq!(
        *calls.lock().unwrap(),
        expected,
        "`a` was compensated once; `b` until it succeeded, always under one key"
    );
    assert_eq!(
        event_types(&store, "Saga-flaky-r-1").await[7..],
        [
            "SagaCompensationStarted",
            "SagaCompensationFailed",
            "SagaCompensationStarted",
            "SagaStepCompensated",
            "SagaCompensationStarted",
            "SagaCompensationFailed",
            "SagaCompensationStarted",
            "SagaStepCompensated",
            "SagaCompensated"
        ]
    );
}

#[tokio::test]
async fn resume_all_retries_failed_compensations_and_reports_them_while_they_fail() {
    let store = InMemoryEventStore::new();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let saga = flaky_saga(Arc::new(store.clone()), 1, calls.clone());
    saga.run("r-2", 0).await.unwrap();
    let resumed = saga.resume_all().await.unwrap();
    assert_eq!(resumed.len(), 1);
    let outcome = resumed[0].1.as_ref().unwrap();
    assert_eq!(
        (resumed[0].0.as_str(), outcome.status),
        ("r-2", SagaStatus::Compensated)
    );
    assert!(saga.resume_all().await.unwrap().is_empty());
    assert_eq!(calls.lock().unwrap().len(), 3, "b, a, then b again");
}

#[tokio::test]
async fn idempotency_keys_of_steps_compensations_and_runs_never_collide() {
    // Before, the key was `{saga}/{id}/{step}` and a compensation's had `/compensate`
    // after it: the action of a step named `compensate` in run `x/a` had the key of the
    // compensation of step `a` in run `x` (`keys/x/a/compensate`).
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let keys = Arc::new(Mutex::new(Vec::<String>::new()));
    let (k1, k2, k3) = (keys.clone(), keys.clone(), keys.clone());
    let saga = Saga::<u32>::new("keys", store)
        .unwrap()
        .step(
            "a",
            move |n, ctx| {
                k1.lock().unwrap().push(ctx.idempotency_key);
                async move { Ok(n) }
            },
            move |_, ctx| {
                k2.lock().unwrap().push(ctx.idempotency_key);
                async { Ok(()) }
            },
        )
        .unwrap()
        .step_without_compensation("compensate", move |n, ctx| {
            k3.lock().unwrap().push(ctx.idempotency_key);
            async move {
                if n == 0 {
                    Err(FlextError::business_rule("refused"))
                } else {
                    Ok(n)
                }
            }
        })
        .unwrap();
    assert_eq!(
        saga.run("x", 0).await.unwrap().status,
        SagaStatus::Compensated
    );
    assert_eq!(
        saga.run("x/a", 1).await.unwrap().status,
        SagaStatus::Completed
    );
    let keys = keys.lock().unwrap().clone();
    assert_eq!(
        keys,
        [
            "keys/a/action/x",
            "keys/compensate/action/x",
            "keys/a/compensation/x",
            "keys/a/action/x/a",
            "keys/compensate/action/x/a",
        ]
    );
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "every key is its own: {keys:?}");
}

#[tokio::test]
async fn saga_and_step_names_with_a_slash_are_rejected_when_built() {
    // With a `/` in names, saga `s/t` run `x` and saga `s` run `t/x` had one key per step.
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let err = Saga::<u32>::new("orders/eu", store.clone()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    assert!(err.to_string().contains("cannot contain '/'"), "{err}");
    let err = Saga::<u32>::new("orders", store.clone())
        .unwrap()
        .step(
            "reserve/eu",
            |n, _| async move { Ok(n) },
            |_, _| async { Ok(()) },
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    assert_eq!(
        err.to_string(),
        "Saga 'orders': step name 'reserve/eu' cannot contain '/': it separates the parts of \
         idempotency keys ({saga}/{step}/{action|compensation}/{id})"
    );
    let err = Saga::<u32>::new("orders", store)
        .unwrap()
        .step_without_compensation("ship/", |n, _| async move { Ok(n) })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
}

/// The step's (or compensation's) error that `err` carries: typed in its data, and as its
/// source.
fn unrecorded_error(err: &FlextError) -> FlextError {
    let data = err.data().unwrap_or_else(|| panic!("no data: {err:?}"));
    let carried: FlextError = serde_json::from_value(data["unrecorded_error"].clone())
        .unwrap_or_else(|e| panic!("the work's error is in the data: {e}: {err:?}"));
    let source = std::error::Error::source(err)
        .unwrap_or_else(|| panic!("the work's error is the source: {err:?}"));
    assert_eq!(source.to_string(), carried.to_string());
    carried
}

#[tokio::test]
async fn a_failure_that_cannot_be_recorded_is_returned_with_the_store_error() {
    let store = InMemoryEventStore::new();
    let ledger = Arc::new(Ledger::default());
    // The charge is declined, and recording that fails.
    let crashing = Arc::new(TestStore::crashing_on(&store, "SagaStepFailed"));
    let err = order_saga(crashing, ledger.clone())
        .run("o-7", 500)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageError, "{err}");
    assert_eq!(
        err.to_string(),
        "Saga 'order' run 'o-7': step 'charge' failed (card declined for 500) and its \
         failure was not recorded: the process stopped"
    );
    assert_eq!(
        unrecorded_error(&err),
        FlextError::business_rule("card declined for 500")
    );
    let data = err.data().unwrap();
    assert_eq!(
        (
            &data["saga"],
            &data["saga_id"],
            &data["step"],
            &data["work"]
        ),
        (
            &serde_json::json!("order"),
            &serde_json::json!("o-7"),
            &serde_json::json!("charge"),
            &serde_json::json!("action")
        )
    );
    // The step has no recorded end: the resume runs it again, and it is declined again.
    let outcome = order_saga(Arc::new(store.clone()), ledger)
        .resume("o-7")
        .await
        .unwrap();
    assert_eq!(
        (outcome.status, outcome.failed_step.as_deref()),
        (SagaStatus::Compensated, Some("charge"))
    );

    // A compensation fails, and recording that fails.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let crashing = Arc::new(TestStore::crashing_on(&store, "SagaCompensationFailed"));
    let err = flaky_saga(crashing, 1, calls.clone())
        .run("r-3", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageError, "{err}");
    assert_eq!(
        err.to_string(),
        "Saga 'flaky' run 'r-3': compensation of step 'b' failed (refund service down) and \
         its failure was not recorded: the process stopped"
    );
    assert_eq!(
        unrecorded_error(&err),
        FlextError::storage("refund service down")
    );
    assert_eq!(err.data().unwrap()["work"], "compensation");
    let outcome = flaky_saga(Arc::new(store.clone()), 0, calls)
        .resume("r-3")
        .await
        .unwrap();
    assert_eq!(outcome.status, SagaStatus::Compensated);
    assert_eq!(outcome.compensated, ["b", "a"]);
}

/// A store whose global positions are 3, 6, 9, … (a store may leave gaps; only their
/// order is promised).
struct GappedStore(InMemoryEventStore);

impl GappedStore {
    fn spread(mut events: Vec<StoredEvent>) -> Vec<StoredEvent> {
        for event in &mut events {
            event.position *= 3;
        }
        events
    }
}

#[async_trait]
impl EventStore for GappedStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        self.0.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
    ) -> FlextResult<Vec<StoredEvent>> {
        Ok(Self::spread(self.0.read_stream(stream, from, limit).await?))
    }
    async fn read_all(&self, from: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
        Ok(Self::spread(
            self.0.read_all(from.div_ceil(3), limit).await?,
        ))
    }
    async fn stream_version(&self, stream: &str) -> FlextResult<u64> {
        self.0.stream_version(stream).await
    }
    async fn head_position(&self) -> FlextResult<u64> {
        Ok(self.0.head_position().await? * 3)
    }
    async fn subscribe(&self, from: u64) -> FlextResult<EventStream> {
        self.0.subscribe(from.div_ceil(3)).await
    }
}

#[tokio::test]
async fn unfinished_finds_every_run_when_positions_have_gaps() {
    let store = InMemoryEventStore::new();
    let saga = order_saga(Arc::new(store.clone()), Arc::new(Ledger::default()));
    for i in 0..40 {
        saga.run(&format!("done-{i:02}"), 1).await.unwrap();
        if i % 13 == 0 {
            given(
                &store,
                &format!("Saga-order-open-{i:02}"),
                vec![SagaEvent::Started { data: 1 }],
            )
            .await;
        }
    }
    let gapped = order_saga(
        Arc::new(GappedStore(store.clone())),
        Arc::new(Ledger::default()),
    );
    assert_eq!(
        gapped.unfinished().await.unwrap(),
        ["open-00", "open-13", "open-26", "open-39"],
        "{} events, read in pages across the gaps",
        store.head_position().await.unwrap()
    );
}

/// Leases shared by the "processes" of a test: a name is held until released. Records the
/// names taken.
#[derive(Default)]
struct SharedLeases {
    held: Arc<Mutex<HashSet<String>>>,
    taken: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct TestLease {
    name: String,
    held: Arc<Mutex<HashSet<String>>>,
}

#[async_trait]
impl HeldLease for TestLease {
    fn name(&self) -> &str {
        &self.name
    }

    fn token(&self) -> u64 {
        1
    }

    fn is_held(&self) -> bool {
        self.held.lock().unwrap().contains(&self.name)
    }

    async fn release(self: Box<Self>) -> FlextResult<()> {
        self.held.lock().unwrap().remove(&self.name);
        Ok(())
    }
}

#[async_trait]
impl Leases for SharedLeases {
    async fn try_lease(&self, name: &str) -> FlextResult<Option<BoxLease>> {
        if !self.held.lock().unwrap().insert(name.to_owned()) {
            return Ok(None);
        }
        self.taken.lock().unwrap().push(name.to_owned());
        Ok(Some(Box::new(TestLease {
            name: name.to_owned(),
            held: self.held.clone(),
        })))
    }
}

/// The records of a `pay` run that failed at `c` and died before compensating.
fn crashed_before_compensating() -> Vec<SagaEvent<u32>> {
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
    ]
}

/// `resume_owned` leaves a run whose lease another process holds to it and reports only
/// the runs it owned, releasing each lease after (before, there were no owners: every
/// resumer drove every unfinished run).
#[tokio::test]
async fn resume_owned_skips_runs_owned_elsewhere_and_releases_what_it_resumed() {
    let store = InMemoryEventStore::new();
    given(&store, "Saga-pay-p-1", crashed_before_compensating()).await;
    given(&store, "Saga-pay-p-2", crashed_before_compensating()).await;
    let counts = Arc::new([const { AtomicU32::new(0) }; 4]);
    let saga = counting_saga(Arc::new(store.clone()), counts.clone());
    assert_eq!(saga.lease_name("p-1"), "saga/pay/p-1");
    let leases = SharedLeases::default();
    let elsewhere = leases.try_lease("saga/pay/p-1").await.unwrap().unwrap();

    let resumed = saga.resume_owned(&leases).await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].0, "p-2");
    assert_eq!(
        resumed[0].1.as_ref().unwrap().status,
        SagaStatus::Compensated
    );
    assert_eq!(
        counts[1].load(Ordering::SeqCst),
        1,
        "p-2's `a` compensated once"
    );
    assert!(elsewhere.is_held(), "p-1 stays with its owner");
    assert_eq!(
        *leases.held.lock().unwrap(),
        HashSet::from(["saga/pay/p-1".to_owned()]),
        "p-2's lease was released"
    );
    assert_eq!(saga.unfinished().await.unwrap(), ["p-1"]);

    elsewhere.release().await.unwrap();
    let resumed = saga.resume_owned(&leases).await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].0, "p-1");
    assert!(saga.unfinished().await.unwrap().is_empty());
}

/// Many processes resuming through one lease store at once: each crashed run is driven by
/// one of them, so each compensation runs once and nobody meets a conflict (without owners,
/// the losers of each race were turned away with a `CONCURRENCY_CONFLICT`, or ran work
/// again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_resuming_through_shared_leases_resume_each_run_once() {
    for round in 0..20 {
        let store = InMemoryEventStore::new();
        for run in 0..4 {
            given(
                &store,
                &format!("Saga-pay-r{run}"),
                crashed_before_compensating(),
            )
            .await;
        }
        let counts = Arc::new([const { AtomicU32::new(0) }; 4]);
        let leases = Arc::new(SharedLeases::default());
        let processes: Vec<_> = (0..4)
            .map(|_| {
                let saga = counting_saga(Arc::new(store.clone()), counts.clone());
                let leases = leases.clone();
                tokio::spawn(async move { saga.resume_owned(&*leases).await.unwrap() })
            })
            .collect();
        let mut compensated = 0;
        for process in processes {
            for (id, result) in process.await.unwrap() {
                let outcome = result.unwrap_or_else(|e| panic!("round {round}, run {id}: {e}"));
                assert_eq!(outcome.status, SagaStatus::Compensated);
                compensated += 1;
            }
        }
        assert!(compensated >= 4, "round {round}: every run reported");
        assert_eq!(
            counts[1].load(Ordering::SeqCst),
            4,
            "round {round}: each run's `a` compensated once"
        );
        assert_eq!(counts[2].load(Ordering::SeqCst), 4);
    }
}
