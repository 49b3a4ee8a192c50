//! [`Saga`]: steps with compensations, progress recorded in an event store, resumable.
//!
//! `records.rs` holds what a run records and reports, `progress.rs` rebuilds a run from its
//! records; this file builds sagas and drives their runs.

mod progress;
mod records;

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use flext_constants::ErrorCode;
use flext_impl::catch_panic;
use flext_protocols::{EventStore, Leases};
use flext_types::{ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;

use progress::Progress;
pub use records::{SagaEvent, SagaOutcome, SagaStatus, StepContext};

type StepFuture<R> = Pin<Box<dyn Future<Output = FlextResult<R>> + Send>>;
type StepFn<D, R> = Arc<dyn Fn(D, StepContext) -> StepFuture<R> + Send + Sync>;

/// What ends a saga's name in its stream ids (`Saga-{name}-{id}`); a name cannot contain it,
/// so the prefix `Saga-{name}-` belongs to one saga only.
const NAME_END: char = '-';

/// What separates the parts of an idempotency key (`{saga}/{step}/{kind}/{id}`); saga and
/// step names cannot contain it, so a key splits back into its parts at its first three.
const KEY_SEPARATOR: char = '/';

/// The kind part of an action's idempotency key.
const ACTION: &str = "action";

/// The kind part of a compensation's idempotency key.
const COMPENSATION: &str = "compensation";

/// The data field of an error that carries the failure of a step or compensation whose
/// record could not be appended (see [`Saga::resume`]).
const UNRECORDED_ERROR: &str = "unrecorded_error";

/// Events per page when [`Saga::unfinished`] scans the log.
const SCAN_PAGE: usize = 256;

/// An ordered list of steps, each an action and a compensation. When a step fails, the
/// completed steps are compensated in reverse order; the outcome says which step failed,
/// which compensations ran and which failed.
///
/// Building checks the saga: a name must be non-empty without a `-` (it ends the name in the
/// stream ids) or a `/` (it separates the parts of idempotency keys), a step name non-empty,
/// without a `/`, and unique (a run's records name its steps); a bad one is an
/// `INVALID_ARGUMENT`, a repeated step name a `DUPLICATE`.
///
/// Progress is recorded in the event store as [`SagaEvent`]s in the stream
/// `Saga-{name}-{id}`, each appended at the exact version its writer last saw. Every action
/// and every compensation is announced by a `…Started` record before it runs. After a
/// restart, [`Saga::resume`] (or [`Saga::resume_all`]) finishes or compensates an unfinished
/// run from its records; work that had started but has no recorded end runs again with the
/// same [`StepContext::idempotency_key`]: actions and compensations run **at least once**,
/// and the key lets the systems they change apply each once. A compensation that fails is
/// recorded and the others still run, but the run is not finished
/// ([`SagaStatus::CompensationFailed`]): each resume retries the compensations that have not
/// succeeded, until all have. Steps run in a panic guard: a panicking step fails.
///
/// What two processes driving one run are guaranteed without owners (resume through
/// [`Saga::resume_owned`] and a shared lease store to give each run one):
///
/// - Two that load the same records: exactly one records the next start and runs that
///   work; the other's append is a `CONCURRENCY_CONFLICT` before it has run anything.
/// - One that loads after another recorded a start, while the other is still inside that
///   action or compensation, cannot tell it from a dead process: it runs the same work
///   again, under the same idempotency key, possibly at the same time. The first one's next
///   append then conflicts and it stops. So resume a run from one process at a time (for
///   example at startup), and make every action and compensation safe to repeat by its key
///   (a crash alone already makes work run again), even when the repeats overlap.
///
/// ```
/// use std::sync::Arc;
/// use flext_patterns::{Saga, SagaStatus};
/// use flext_cqrs::InMemoryEventStore;
/// use flext_types::FlextError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let saga = Saga::<u32>::new("order", Arc::new(InMemoryEventStore::new()))?
///     .step("reserve", |n, _| async move { Ok(n + 1) }, |_, _| async { Ok(()) })?
///     .step("charge", |_, _| async { Err(FlextError::business_rule("card declined")) }, |_, _| async { Ok(()) })?;
/// let outcome = saga.run("order-1", 0).await?;
/// assert_eq!(outcome.status, SagaStatus::Compensated);
/// assert_eq!(outcome.failed_step.as_deref(), Some("charge"));
/// assert_eq!(outcome.compensated, ["reserve"]);
/// # Ok(())
/// # }
/// ```
pub struct Saga<D> {
    name: String,
    store: Arc<dyn EventStore>,
    steps: Vec<Step<D>>,
}

struct Step<D> {
    name: String,
    action: StepFn<D, D>,
    compensation: Option<StepFn<D, ()>>,
}

impl<D> Saga<D>
where
    D: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A saga named `name` recording its progress in `store`. The name is part of the
    /// saga's stream ids (`Saga-{name}-{id}`) and idempotency keys: an empty one, or one
    /// with a `-` or a `/`, is an `INVALID_ARGUMENT`.
    pub fn new(name: impl Into<String>, store: Arc<dyn EventStore>) -> FlextResult<Self> {
        let name = name.into();
        if name.trim().is_empty() {
            return Err(FlextError::invalid_argument("Saga name cannot be empty"));
        }
        if name.contains(NAME_END) {
            return Err(FlextError::invalid_argument(format!(
                "Saga name '{name}' cannot contain '{NAME_END}': the name ends at the first \
                 '{NAME_END}' of its stream ids (Saga-{{name}}-{{id}}), so another saga could \
                 take its runs for its own"
            )));
        }
        if name.contains(KEY_SEPARATOR) {
            return Err(FlextError::invalid_argument(format!(
                "Saga name '{name}' cannot contain '{KEY_SEPARATOR}': it separates the parts \
                 of idempotency keys ({{saga}}/{{step}}/{{action|compensation}}/{{id}})"
            )));
        }
        Ok(Self {
            name,
            store,
            steps: Vec::new(),
        })
    }

    /// Adds a step: an async `action` that takes the data and returns it (possibly changed),
    /// and an async `compensation` that undoes it. A name the saga already has is a
    /// `DUPLICATE`; an empty one, or one with a `/`, an `INVALID_ARGUMENT`.
    pub fn step<A, AF, C, CF>(
        self,
        name: impl Into<String>,
        action: A,
        compensation: C,
    ) -> FlextResult<Self>
    where
        A: Fn(D, StepContext) -> AF + Send + Sync + 'static,
        AF: Future<Output = FlextResult<D>> + Send + 'static,
        C: Fn(D, StepContext) -> CF + Send + Sync + 'static,
        CF: Future<Output = FlextResult<()>> + Send + 'static,
    {
        self.push(Step {
            name: name.into(),
            action: Arc::new(move |data, ctx| Box::pin(action(data, ctx))),
            compensation: Some(Arc::new(move |data, ctx| Box::pin(compensation(data, ctx)))),
        })
    }

    /// Adds a step with nothing to undo (for example the last, irreversible one); names are
    /// checked as by [`Saga::step`].
    pub fn step_without_compensation<A, AF>(
        self,
        name: impl Into<String>,
        action: A,
    ) -> FlextResult<Self>
    where
        A: Fn(D, StepContext) -> AF + Send + Sync + 'static,
        AF: Future<Output = FlextResult<D>> + Send + 'static,
    {
        self.push(Step {
            name: name.into(),
            action: Arc::new(move |data, ctx| Box::pin(action(data, ctx))),
            compensation: None,
        })
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream of the saga `saga_id`.
    pub fn stream_id(&self, saga_id: &str) -> String {
        format!("Saga-{}{NAME_END}{saga_id}", self.name)
    }

    /// Starts the saga `saga_id` with `data` and runs it: to its end, or, when a
    /// compensation fails, to [`SagaStatus::CompensationFailed`] (resume it later to retry).
    /// A saga id already used is a `CONCURRENCY_CONFLICT` (resume it instead); an empty one
    /// an `INVALID_ARGUMENT`. Once the run has started, its errors are those of
    /// [`Saga::resume`].
    pub async fn run(&self, saga_id: &str, data: D) -> FlextResult<SagaOutcome<D>> {
        if saga_id.trim().is_empty() {
            return Err(FlextError::invalid_argument("Saga id cannot be empty"));
        }
        let stream = self.stream_id(saga_id);
        let started = SagaEvent::Started { data: data.clone() };
        self.append(&stream, ExpectedVersion::NoStream, &started)
            .await
            .map_err(|e| self.conflict_context(e, saga_id, "already exists (resume it)"))?;
        self.drive(saga_id, Progress::started(data)).await
    }

    /// Finishes the saga `saga_id` from its records: forward if no step failed, otherwise
    /// compensating every completed step whose compensation has not succeeded (those that
    /// failed or never ended, in reverse order, under their keys); a finished saga returns
    /// its outcome as recorded and runs nothing.
    ///
    /// Errors: `NOT_FOUND` for a saga never started; `INVALID_ARGUMENT` when the records
    /// name a step this saga does not have; `CONCURRENCY_CONFLICT` when another caller
    /// appended to the run after this one loaded or last recorded it. On a conflict this
    /// call stops and runs nothing more; the work it was inside (if the conflict came while
    /// recording its end) may have taken effect, and runs again, under the same key, in
    /// whichever caller finishes the run. A conflict does not prove that another process is
    /// still driving the run (it may have stopped since): resume again later to be sure.
    ///
    /// When a step or compensation fails and recording that fails, the error is the store's
    /// (its code, and its data kept), with the work's error in its message, as its
    /// [`source`](std::error::Error::source), and in its data: `unrecorded_error` holds the
    /// work's error as JSON (`serde_json::from_value::<FlextError>` gives it back), beside
    /// `saga`, `saga_id`, `step` and `work` (`action` or `compensation`). The run stays
    /// unfinished, and the work runs again on the next resume.
    pub async fn resume(&self, saga_id: &str) -> FlextResult<SagaOutcome<D>> {
        let stream = self.stream_id(saga_id);
        let records = self.store.read_stream(&stream, 1, usize::MAX).await?;
        let progress = Progress::rebuild(&stream, &records, |step| self.index_of(step, &stream))?;
        self.drive(saga_id, progress).await
    }

    /// The ids of this saga's runs that have not finished, in id order: runs whose process
    /// stopped before their end, and runs whose compensations have not all succeeded
    /// ([`SagaStatus::CompensationFailed`]).
    ///
    /// The store's contract has no query by stream name, so this reads the log up to its
    /// current head in pages of 256 events, keeping only the ids of the runs still open: its
    /// memory is one page and the open runs, its time grows with the log.
    pub async fn unfinished(&self) -> FlextResult<Vec<String>> {
        let prefix = self.stream_id("");
        let head = self.store.head_position().await?;
        let mut open = BTreeSet::new();
        let mut from = 1;
        while from <= head {
            let page = self.store.read_all(from, SCAN_PAGE).await?;
            // Positions may have gaps, but a page holds the events at `from` and after: the
            // event at `head` was committed before the head was read, so a page is empty
            // only past it (or on a store that breaks its contract).
            let Some(last) = page.last() else {
                break;
            };
            from = last.position + 1;
            for event in page.iter().take_while(|e| e.position <= head) {
                let Some(id) = event.stream_id.strip_prefix(&prefix) else {
                    continue;
                };
                if records::is_terminal(&event.event_type) {
                    open.remove(id);
                } else if !open.contains(id) {
                    open.insert(id.to_owned());
                }
            }
        }
        Ok(open.into_iter().collect())
    }

    /// Resumes every unfinished run ([`Saga::unfinished`]), in id order, and reports each as
    /// its id with its outcome or the error that stopped it: a run that fails to resume (its
    /// records name a step this saga lacks, another caller appended to it meanwhile, the
    /// store failed while recording it) does not stop the others. A run whose compensations
    /// still fail is reported with [`SagaStatus::CompensationFailed`] and stays unfinished.
    /// Each run is resumed as by [`Saga::resume`], with the same guarantees: a run another
    /// process is inside of has its current work run again. The outer error is the scan's.
    pub async fn resume_all(&self) -> FlextResult<Vec<(String, FlextResult<SagaOutcome<D>>)>> {
        let mut results = Vec::new();
        for id in self.unfinished().await? {
            let result = self.resume(&id).await;
            if let Err(error) = &result {
                tracing::warn!(saga = %self.name, saga_id = %id, %error, "saga run not resumed");
            }
            results.push((id, result));
        }
        Ok(results)
    }

    /// Resumes, as [`Saga::resume_all`] does, each unfinished run whose lease this process
    /// takes from `leases` (named [`Saga::lease_name`]); runs another process holds are
    /// left to it and not reported. Each lease is released once its run is resumed. When
    /// every process resumes through one shared `leases` (the PostgreSQL store's, say),
    /// each unfinished run is resumed by one process at a time: no run has its work started
    /// twice by two live processes. (An owner paused past its lease may still be inside
    /// its work when another takes over; its next record then conflicts and it stops.)
    /// A lease that cannot be taken (the store failed) is reported as that run's error.
    pub async fn resume_owned(
        &self,
        leases: &dyn Leases,
    ) -> FlextResult<Vec<(String, FlextResult<SagaOutcome<D>>)>> {
        let mut results = Vec::new();
        for id in self.unfinished().await? {
            let lease = match leases.try_lease(&self.lease_name(&id)).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    tracing::debug!(saga = %self.name, saga_id = %id, "saga run owned elsewhere");
                    continue;
                }
                Err(error) => {
                    results.push((id, Err(error)));
                    continue;
                }
            };
            let result = self.resume(&id).await;
            if let Err(error) = &result {
                tracing::warn!(saga = %self.name, saga_id = %id, %error, "saga run not resumed");
            }
            if let Err(error) = lease.release().await {
                tracing::warn!(saga = %self.name, saga_id = %id, %error, "a saga run's lease was not released; it expires");
            }
            results.push((id, result));
        }
        Ok(results)
    }

    /// The name of the lease of run `saga_id` ([`Saga::resume_owned`]):
    /// `saga/{name}/{saga_id}`.
    pub fn lease_name(&self, saga_id: &str) -> String {
        format!("saga{KEY_SEPARATOR}{}{KEY_SEPARATOR}{saga_id}", self.name)
    }

    fn push(mut self, step: Step<D>) -> FlextResult<Self> {
        if step.name.trim().is_empty() {
            return Err(FlextError::invalid_argument(format!(
                "Saga '{}': a step name cannot be empty",
                self.name
            )));
        }
        if step.name.contains(KEY_SEPARATOR) {
            return Err(FlextError::invalid_argument(format!(
                "Saga '{}': step name '{}' cannot contain '{KEY_SEPARATOR}': it separates the \
                 parts of idempotency keys ({{saga}}/{{step}}/{{action|compensation}}/{{id}})",
                self.name, step.name
            )));
        }
        if self.steps.iter().any(|s| s.name == step.name) {
            return Err(FlextError::duplicate(format!(
                "Saga '{}' already has a step named '{}': a run's records name its steps, so \
                 each name must be unique",
                self.name, step.name
            )));
        }
        self.steps.push(step);
        Ok(self)
    }

    fn index_of(&self, step: &str, stream: &str) -> FlextResult<usize> {
        self.steps
            .iter()
            .position(|s| s.name == step)
            .ok_or_else(|| {
                FlextError::invalid_argument(format!(
                    "Saga stream {stream} names a step '{step}' that saga '{}' does not have",
                    self.name
                ))
            })
    }

    async fn drive(&self, saga_id: &str, mut p: Progress<D>) -> FlextResult<SagaOutcome<D>> {
        let stream = self.stream_id(saga_id);
        if p.finished.is_none() && p.failed.is_none() {
            self.forward(saga_id, &stream, &mut p).await?;
        }
        if p.finished.is_none() {
            self.compensate(saga_id, &stream, &mut p).await?;
        }
        Ok(self.outcome(saga_id, p))
    }

    /// Runs the steps after the last completed one, each announced before it runs, until
    /// one fails or all complete.
    async fn forward(&self, saga_id: &str, stream: &str, p: &mut Progress<D>) -> FlextResult<()> {
        let next = p.completed.last().map_or(0, |last| last + 1);
        for (index, step) in self.steps.iter().enumerate().skip(next) {
            let name = step.name.clone();
            self.record(
                saga_id,
                stream,
                p,
                SagaEvent::StepStarted { step: name.clone() },
            )
            .await?;
            let (data, ctx) = (p.data.clone(), self.context(saga_id, &name, ACTION));
            // The closure is called inside the guard too: it may panic before its future.
            match catch_panic(async { (step.action)(data, ctx).await }).await {
                Ok(data) => {
                    let completed = SagaEvent::StepCompleted {
                        step: name,
                        data: data.clone(),
                    };
                    self.record(saga_id, stream, p, completed).await?;
                    p.data = data;
                    p.completed.push(index);
                }
                Err(error) => {
                    tracing::info!(saga = %self.name, saga_id, step = %name, %error, "saga step failed; compensating");
                    let failed = SagaEvent::StepFailed {
                        step: name.clone(),
                        error: error.clone(),
                    };
                    self.record(saga_id, stream, p, failed)
                        .await
                        .map_err(|e| self.unrecorded(e, saga_id, &name, ACTION, &error))?;
                    p.failed = Some((index, error));
                    return Ok(());
                }
            }
        }
        self.record(saga_id, stream, p, SagaEvent::Completed)
            .await?;
        p.finished = Some(SagaStatus::Completed);
        Ok(())
    }

    /// Compensates the completed steps in reverse, skipping those already compensated (a
    /// compensation that failed or never ended runs again); each compensation is announced
    /// before it runs. The run ends `Compensated` only once every compensation succeeded;
    /// otherwise it stays open, for a later resume to retry the failed ones.
    async fn compensate(
        &self,
        saga_id: &str,
        stream: &str,
        p: &mut Progress<D>,
    ) -> FlextResult<()> {
        for index in p.completed.clone().into_iter().rev() {
            let step = &self.steps[index];
            let Some(compensation) = &step.compensation else {
                continue;
            };
            if p.compensated.contains(&index) {
                continue;
            }
            let name = step.name.clone();
            let started = SagaEvent::CompensationStarted { step: name.clone() };
            self.record(saga_id, stream, p, started).await?;
            let (data, ctx) = (p.data.clone(), self.context(saga_id, &name, COMPENSATION));
            match catch_panic(async { compensation(data, ctx).await }).await {
                Ok(()) => {
                    let compensated = SagaEvent::StepCompensated { step: name };
                    self.record(saga_id, stream, p, compensated).await?;
                    p.compensation_succeeded(index);
                }
                Err(error) => {
                    tracing::warn!(saga = %self.name, saga_id, step = %name, %error, "saga compensation failed; a resume retries it");
                    let failed = SagaEvent::CompensationFailed {
                        step: name.clone(),
                        error: error.clone(),
                    };
                    self.record(saga_id, stream, p, failed)
                        .await
                        .map_err(|e| self.unrecorded(e, saga_id, &name, COMPENSATION, &error))?;
                    p.compensation_failed(index, error);
                }
            }
        }
        if p.compensation_failures.is_empty() {
            self.record(saga_id, stream, p, SagaEvent::Compensated)
                .await?;
            p.finished = Some(SagaStatus::Compensated);
        }
        Ok(())
    }

    /// What a driven run reports: how it ended, or, when it has not, that compensations
    /// failed (the only way a driven run stays open).
    fn outcome(&self, saga_id: &str, p: Progress<D>) -> SagaOutcome<D> {
        let name = |i: usize| self.steps[i].name.clone();
        SagaOutcome {
            saga_id: saga_id.to_owned(),
            status: p.finished.unwrap_or(SagaStatus::CompensationFailed),
            data: p.data,
            failed_step: p.failed.as_ref().map(|(i, _)| name(*i)),
            error: p.failed.map(|(_, e)| e),
            compensated: p.compensated.into_iter().map(name).collect(),
            compensation_failures: p
                .compensation_failures
                .into_iter()
                .map(|(i, e)| (name(i), e))
                .collect(),
        }
    }

    /// The context of `kind` ([`ACTION`] or [`COMPENSATION`]) of `step` in run `saga_id`.
    /// Its key is `{saga}/{step}/{kind}/{id}`: the saga and step names and the kind hold no
    /// `/`, so the first three split a key back into its four parts, and two keys are equal
    /// only when saga, step, kind and id all are (whatever the id holds).
    fn context(&self, saga_id: &str, step: &str, kind: &str) -> StepContext {
        let sep = KEY_SEPARATOR;
        StepContext {
            saga_id: saga_id.to_owned(),
            step: step.to_owned(),
            idempotency_key: format!("{}{sep}{step}{sep}{kind}{sep}{saga_id}", self.name),
        }
    }

    /// Appends `event` at exactly the version `p` was rebuilt or last recorded at: if any
    /// other record came in between, nothing is stored and the run stops here with a
    /// `CONCURRENCY_CONFLICT`.
    async fn record(
        &self,
        saga_id: &str,
        stream: &str,
        p: &mut Progress<D>,
        event: SagaEvent<D>,
    ) -> FlextResult<()> {
        p.version = self
            .append(stream, ExpectedVersion::Exact(p.version), &event)
            .await
            .map_err(|e| self.conflict_context(e, saga_id, "is being driven elsewhere"))?;
        Ok(())
    }

    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        event: &SagaEvent<D>,
    ) -> FlextResult<u64> {
        let record = NewEvent::new(event.event_name(), JsonPayload::encode(event)?);
        Ok(self
            .store
            .append(stream, expected, vec![record])
            .await?
            .last_version)
    }

    /// The error of the `kind` of `step` that failed with `error` when appending its failure
    /// record failed with `store`: the store's code (what the caller must act on: the run
    /// is unrecorded past the work's start, so resume it again), the work's error in the
    /// message, as the source, and typed in the data (see [`Saga::resume`]), so it is not
    /// lost. The store error's own data is kept beside it.
    fn unrecorded(
        &self,
        store: FlextError,
        saga_id: &str,
        step: &str,
        kind: &str,
        error: &FlextError,
    ) -> FlextError {
        let work = if kind == ACTION {
            format!("step '{step}'")
        } else {
            format!("compensation of step '{step}'")
        };
        let mut data = match store.data() {
            Some(serde_json::Value::Object(data)) => data.clone(),
            Some(other) => serde_json::Map::from_iter([("store".to_owned(), other.clone())]),
            None => serde_json::Map::new(),
        };
        data.insert("saga".to_owned(), self.name.clone().into());
        data.insert("saga_id".to_owned(), saga_id.into());
        data.insert("step".to_owned(), step.into());
        data.insert("work".to_owned(), kind.into());
        data.insert(
            UNRECORDED_ERROR.to_owned(),
            serde_json::to_value(error).unwrap_or_else(|_| error.to_string().into()),
        );
        store
            .with_context(format!(
                "Saga '{}' run '{saga_id}': {work} failed ({error}) and its failure was not \
                 recorded",
                self.name
            ))
            .with_data(serde_json::Value::Object(data))
            .with_source(error.clone())
    }

    /// Says which run a `CONCURRENCY_CONFLICT` is about; other errors pass unchanged.
    fn conflict_context(&self, error: FlextError, saga_id: &str, what: &str) -> FlextError {
        if error.is(ErrorCode::ConcurrencyConflict) {
            error.with_context(format!("Saga '{}' run '{saga_id}' {what}", self.name))
        } else {
            error
        }
    }
}

impl<D> fmt::Debug for Saga<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saga")
            .field("name", &self.name)
            .field(
                "steps",
                &self
                    .steps
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}
