//! Given/when/then for sagas.

use std::fmt::Debug;
use std::sync::Arc;

use flext_constants::ErrorCode;
use flext_patterns::{Saga, SagaEvent, SagaOutcome, SagaStatus};
use flext_protocols::EventStore;
use flext_store::InMemoryEventStore;
use flext_types::{ExpectedVersion, FlextResult, JsonPayload, NewEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The saga id the fixture runs.
pub const FIXTURE_SAGA_ID: &str = "fixture";

/// Tests a saga against an in-memory store: given its recorded progress (none, or the
/// records a crashed run left), when it runs or resumes, then it completed, compensated,
/// is waiting for failed compensations to be retried, or failed, and recorded exactly these
/// events. A saga that fails to build (a bad name, a
/// repeated step) is a failed run or resume, for [`SagaFixtureOutcome::then_error`].
///
/// ```
/// use flext_constants::ErrorCode;
/// use flext_patterns::{Saga, SagaEvent};
/// use flext_testing::SagaFixture;
/// use flext_types::FlextError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let build = |store| {
///     Saga::<u32>::new("order", store)?
///         .step("reserve", |n, _| async move { Ok(n + 1) }, |_, _| async { Ok(()) })?
///         .step("charge", |_, _| async { Err(FlextError::business_rule("declined")) }, |_, _| async { Ok(()) })
/// };
/// SagaFixture::new(build).when_run(1).await.then_compensated("charge", &["reserve"]);
///
/// // A run that stopped after reserving resumes into the same compensation.
/// SagaFixture::new(build)
///     .given(vec![SagaEvent::Started { data: 1 }, SagaEvent::StepStarted { step: "reserve".into() }, SagaEvent::StepCompleted { step: "reserve".into(), data: 2 }])
///     .await
///     .when_resumed()
///     .await
///     .then_compensated("charge", &["reserve"]);
///
/// // Step names are unique.
/// SagaFixture::new(|store| Saga::<u32>::new("order", store)?
///         .step("reserve", |n, _| async move { Ok(n) }, |_, _| async { Ok(()) })?
///         .step("reserve", |n, _| async move { Ok(n) }, |_, _| async { Ok(()) }))
///     .when_run(1)
///     .await
///     .then_error(ErrorCode::Duplicate);
/// # }
/// ```
pub struct SagaFixture<D> {
    store: InMemoryEventStore,
    saga: FlextResult<Saga<D>>,
}

/// The result of [`SagaFixture::when_run`] or [`SagaFixture::when_resumed`], to assert on.
pub struct SagaFixtureOutcome<D> {
    store: InMemoryEventStore,
    stream: String,
    result: FlextResult<SagaOutcome<D>>,
}

impl<D> SagaFixture<D>
where
    D: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static,
{
    /// A fixture for the saga `build` makes on the fixture's store.
    pub fn new(build: impl FnOnce(Arc<dyn EventStore>) -> FlextResult<Saga<D>>) -> Self {
        let store = InMemoryEventStore::new();
        let saga = build(Arc::new(store.clone()));
        Self { store, saga }
    }

    /// Records `progress` for the fixture's saga, as an earlier run would have (nothing,
    /// when the saga failed to build).
    pub async fn given(self, progress: Vec<SagaEvent<D>>) -> Self {
        let Ok(saga) = &self.saga else {
            return self;
        };
        let stream = saga.stream_id(FIXTURE_SAGA_ID);
        for event in progress {
            let payload = JsonPayload::encode(&event).expect("a saga record serializes");
            self.store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![NewEvent::new(event.event_name(), payload)],
                )
                .await
                .expect("the fixture's store accepts the given records");
        }
        self
    }

    /// Runs the saga from the start with `data`.
    pub async fn when_run(self, data: D) -> SagaFixtureOutcome<D> {
        let result = match &self.saga {
            Ok(saga) => saga.run(FIXTURE_SAGA_ID, data).await,
            Err(error) => Err(error.clone()),
        };
        self.outcome(result)
    }

    /// Resumes the saga from its recorded progress.
    pub async fn when_resumed(self) -> SagaFixtureOutcome<D> {
        let result = match &self.saga {
            Ok(saga) => saga.resume(FIXTURE_SAGA_ID).await,
            Err(error) => Err(error.clone()),
        };
        self.outcome(result)
    }

    fn outcome(self, result: FlextResult<SagaOutcome<D>>) -> SagaFixtureOutcome<D> {
        SagaFixtureOutcome {
            stream: self
                .saga
                .as_ref()
                .map(|saga| saga.stream_id(FIXTURE_SAGA_ID))
                .unwrap_or_default(),
            store: self.store,
            result,
        }
    }
}

impl<D: Debug + PartialEq> SagaFixtureOutcome<D> {
    /// Asserts that every step completed, leaving `data`.
    #[track_caller]
    pub fn then_completed(&self, data: &D) {
        let outcome = self.outcome();
        assert_eq!(
            outcome.status,
            SagaStatus::Completed,
            "the saga did not complete: {outcome:?}"
        );
        assert_eq!(&outcome.data, data, "the saga completed with other data");
    }

    /// Asserts that `failed_step` failed and exactly `compensated` were compensated, in
    /// that order, with no compensation failing.
    #[track_caller]
    pub fn then_compensated(&self, failed_step: &str, compensated: &[&str]) {
        let outcome = self.outcome();
        assert_eq!(
            outcome.status,
            SagaStatus::Compensated,
            "the saga was not compensated: {outcome:?}"
        );
        assert_eq!(
            outcome.failed_step.as_deref(),
            Some(failed_step),
            "another step failed"
        );
        assert_eq!(
            outcome.compensated, compensated,
            "other steps were compensated"
        );
        assert!(
            outcome.compensation_failures.is_empty(),
            "compensations failed: {:?}",
            outcome.compensation_failures
        );
    }

    /// Asserts that `failed_step` failed, exactly `compensated` were compensated, in that
    /// order, and the compensations of exactly `still_failing` failed, so the run waits for
    /// a resume to retry them ([`SagaStatus::CompensationFailed`]).
    #[track_caller]
    pub fn then_compensation_failed(
        &self,
        failed_step: &str,
        compensated: &[&str],
        still_failing: &[&str],
    ) {
        let outcome = self.outcome();
        assert_eq!(
            outcome.status,
            SagaStatus::CompensationFailed,
            "no compensation is failing: {outcome:?}"
        );
        assert_eq!(
            outcome.failed_step.as_deref(),
            Some(failed_step),
            "another step failed"
        );
        assert_eq!(
            outcome.compensated, compensated,
            "other steps were compensated"
        );
        let failing: Vec<&str> = outcome
            .compensation_failures
            .iter()
            .map(|(step, _)| step.as_str())
            .collect();
        assert_eq!(failing, still_failing, "other compensations are failing");
    }

    /// Asserts that building, running or resuming the saga failed with `code`.
    #[track_caller]
    pub fn then_error(&self, code: ErrorCode) {
        match &self.result {
            Ok(outcome) => panic!(
                "expected a {} error, the saga ended: {outcome:?}",
                code.name()
            ),
            Err(error) => assert_eq!(error.code(), code, "failed with another code: {error:?}"),
        }
    }

    /// Asserts that the saga's stream holds exactly these records, by event name.
    pub async fn then_recorded(&self, event_names: &[&str]) {
        let recorded: Vec<String> = self
            .store
            .read_stream(&self.stream, 1, usize::MAX)
            .await
            .expect("the fixture's store reads")
            .iter()
            .map(|e| e.event_type.to_string())
            .collect();
        assert_eq!(recorded, event_names, "the saga recorded other events");
    }

    /// The outcome; fails the test if running or resuming failed.
    #[track_caller]
    pub fn outcome(&self) -> &SagaOutcome<D> {
        match &self.result {
            Ok(outcome) => outcome,
            Err(error) => panic!("the saga failed to run: {error:?}"),
        }
    }
}

impl<D> std::fmt::Debug for SagaFixture<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaFixture")
            .field("saga", &self.saga)
            .finish()
    }
}

impl<D: Debug> std::fmt::Debug for SagaFixtureOutcome<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaFixtureOutcome")
            .field("stream", &self.stream)
            .field("result", &self.result)
            .finish()
    }
}
