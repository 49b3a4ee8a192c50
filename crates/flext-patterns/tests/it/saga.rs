//! Saga: forward runs, compensation in reverse, panics, and recovery after a crash.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::InMemoryEventStore;
use flext_patterns::{Saga, SagaStatus, StepContext};
use flext_protocols::{EventStore, EventStream};
use flext_types::{AppendResult, ExpectedVersion, FlextError, FlextResult, NewEvent, StoredEvent};

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
    let (l1, l2, l3, l4, l5) = (
        ledger.clone(),
        ledger.clone(),
        ledger.clone(),
        ledger.clone(),
        ledger,
    );
    Saga::new("order", store)
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
        )
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
        )
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
    let saga = order_saga(Arc::new(store.clone()), ledger.clone()).step(
        "notify",
        |d, _| async move { Ok(d) },
        |_, _| async { Ok(()) },
    );
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
        .step(
            "a",
            |d, _| async move { Ok(d) },
            move |_, _| {
                o1.lock().unwrap().push("undo a");
                async { Ok(()) }
            },
        )
        .step(
            "b",
            |d, _| async move { Ok(d) },
            move |_, _| {
                o2.lock().unwrap().push("undo b");
                async { Err(FlextError::storage("refund service down")) }
            },
        )
        .step(
            "c",
            |d, _| async move { Ok(d) },
            move |_, _| {
                o3.lock().unwrap().push("undo c");
                async { Ok(()) }
            },
        )
        .step(
            "d",
            |_, _| async { Err(FlextError::timeout("d timed out")) },
            |_, _| async { Ok(()) },
        );
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
        .step("ok", |d, _| async move { Ok(d) }, |_, _| async { Ok(()) })
        .step(
            "boom",
            |_, _| async {
                if true {
                    panic!("step exploded")
                }
                Ok(0)
            },
            |_, _| async { Ok(()) },
        );
    let outcome = saga.run("f", 1).await.unwrap();
    assert_eq!(outcome.status, SagaStatus::Compensated);
    assert_eq!(
        outcome.error.unwrap().to_string(),
        "Handler execution failed: step exploded"
    );
    assert_eq!(outcome.compensated, ["ok"]);
}

/// A store whose appends of one event type fail once, as if the process died right there.
struct CrashOnce {
    inner: InMemoryEventStore,
    event_type: &'static str,
    armed: Mutex<bool>,
}

#[async_trait]
impl EventStore for CrashOnce {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> FlextResult<AppendResult> {
        let crash = events.iter().any(|e| e.event_type == self.event_type)
            && std::mem::take(&mut *self.armed.lock().unwrap());
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
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(&self, from: u64, limit: usize) -> FlextResult<Vec<StoredEvent>> {
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

#[tokio::test]
async fn a_restarted_process_finishes_a_saga_without_applying_a_step_twice() {
    let store = InMemoryEventStore::new();
    let ledger = Arc::new(Ledger::default());
    let crashing = Arc::new(CrashOnce {
        inner: store.clone(),
        event_type: "SagaStepCompleted",
        armed: Mutex::new(true),
    });
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
    assert_eq!(
        (outcomes[0].status, outcomes[0].data),
        (SagaStatus::Completed, 1_050)
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
    let crashing = Arc::new(CrashOnce {
        inner: store.clone(),
        event_type: "SagaStepCompensated",
        armed: Mutex::new(true),
    });
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
    use flext_patterns::SagaEvent;
    use flext_testing::SagaFixture;
    let build = |store| order_saga(store, Arc::new(Ledger::default()));
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

    SagaFixture::new(build)
        .when_run(101)
        .await
        .then_compensated("charge", &["reserve"]);

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
