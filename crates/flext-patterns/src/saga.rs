//! [`Saga`]: steps with compensations, progress recorded in an event store, resumable.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use flext_impl::catch_panic;
use flext_protocols::EventStore;
use flext_types::{ExpectedVersion, FlextError, FlextResult, JsonPayload, NewEvent, StoredEvent};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

type StepFuture<R> = Pin<Box<dyn Future<Output = FlextResult<R>> + Send>>;
type StepFn<D, R> = Arc<dyn Fn(D, StepContext) -> StepFuture<R> + Send + Sync>;

/// What a step or compensation knows about its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    /// The saga's id.
    pub saga_id: String,
    /// The step's name.
    pub step: String,
    /// The same for every run of this step of this saga (replays after a restart included),
    /// so the system the step changes can recognise a repeat and not apply it twice.
    pub idempotency_key: String,
}

/// One progress record of a saga, as stored in its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SagaEvent<D> {
    /// The saga started with this data.
    Started {
        /// The input.
        data: D,
    },
    /// A step began (it may or may not have finished before a crash).
    StepStarted {
        /// The step's name.
        step: String,
    },
    /// A step finished; its output is the data from here on.
    StepCompleted {
        /// The step's name.
        step: String,
        /// The data after the step.
        data: D,
    },
    /// A step failed; compensation begins.
    StepFailed {
        /// The step's name.
        step: String,
        /// Why.
        error: FlextError,
    },
    /// A completed step was compensated.
    StepCompensated {
        /// The step's name.
        step: String,
    },
    /// A compensation failed (the others still run).
    CompensationFailed {
        /// The step's name.
        step: String,
        /// Why.
        error: FlextError,
    },
    /// Every step completed.
    Completed,
    /// A step failed and the completed ones were compensated.
    Compensated,
}

impl<D> SagaEvent<D> {
    /// The record's event name (`SagaStarted`, `SagaStepCompleted`, …).
    pub fn event_name(&self) -> &'static str {
        match self {
            SagaEvent::Started { .. } => "SagaStarted",
            SagaEvent::StepStarted { .. } => "SagaStepStarted",
            SagaEvent::StepCompleted { .. } => "SagaStepCompleted",
            SagaEvent::StepFailed { .. } => "SagaStepFailed",
            SagaEvent::StepCompensated { .. } => "SagaStepCompensated",
            SagaEvent::CompensationFailed { .. } => "SagaCompensationFailed",
            SagaEvent::Completed => "SagaCompleted",
            SagaEvent::Compensated => "SagaCompensated",
        }
    }
}

/// How a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Every step completed.
    Completed,
    /// A step failed and the completed steps were compensated.
    Compensated,
}

/// What a saga did.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaOutcome<D> {
    /// The saga's id.
    pub saga_id: String,
    /// How it ended.
    pub status: SagaStatus,
    /// The data after the last completed step.
    pub data: D,
    /// The step that failed, if one did.
    pub failed_step: Option<String>,
    /// Its error.
    pub error: Option<FlextError>,
    /// The steps compensated, in the order they were compensated.
    pub compensated: Vec<String>,
    /// Compensations that failed, with their errors.
    pub compensation_failures: Vec<(String, FlextError)>,
}

struct Step<D> {
    name: String,
    action: StepFn<D, D>,
    compensation: Option<StepFn<D, ()>>,
}

/// An ordered list of steps, each an action and a compensation. When a step fails, the
/// completed steps are compensated in reverse order; the outcome says which step failed,
/// which compensations ran and which failed.
///
/// Progress is recorded in the event store as [`SagaEvent`]s in the stream
/// `Saga-{name}-{id}`, each appended at the exact version expected, so two processes cannot
/// drive one saga at once (the second gets a `CONCURRENCY_CONFLICT`). After a restart,
/// [`Saga::resume`] (or [`Saga::resume_all`]) finishes or compensates an unfinished saga from
/// its records; a step that had started but not completed runs again with the same
/// [`StepContext::idempotency_key`]. Steps run in a panic guard: a panicking step fails.
///
/// ```
/// use std::sync::Arc;
/// use flext_patterns::{Saga, SagaStatus};
/// use flext_cqrs::InMemoryEventStore;
/// use flext_types::FlextError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let saga = Saga::<u32>::new("order", Arc::new(InMemoryEventStore::new()))
///     .step("reserve", |n, _| async move { Ok(n + 1) }, |_, _| async { Ok(()) })
///     .step("charge", |_, _| async { Err(FlextError::business_rule("card declined")) }, |_, _| async { Ok(()) });
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

/// Where a saga stands, rebuilt from its records.
struct Progress<D> {
    version: u64,
    data: D,
    completed: Vec<usize>,
    /// The step that failed, its error, and the compensations done or failed so far.
    failed: Option<(usize, FlextError)>,
    compensated: Vec<usize>,
    compensation_failures: Vec<(usize, FlextError)>,
    finished: Option<SagaStatus>,
}

impl<D> Saga<D>
where
    D: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A saga named `name` (its streams' prefix) recording its progress in `store`.
    pub fn new(name: impl Into<String>, store: Arc<dyn EventStore>) -> Self {
        Self {
            name: name.into(),
            store,
            steps: Vec::new(),
        }
    }

    /// Adds a step: an async `action` that takes the data and returns it (possibly changed),
    /// and an async `compensation` that undoes it.
    #[must_use]
    pub fn step<A, AF, C, CF>(mut self, name: impl Into<String>, action: A, compensation: C) -> Self
    where
        A: Fn(D, StepContext) -> AF + Send + Sync + 'static,
        AF: Future<Output = FlextResult<D>> + Send + 'static,
        C: Fn(D, StepContext) -> CF + Send + Sync + 'static,
        CF: Future<Output = FlextResult<()>> + Send + 'static,
    {
        self.steps.push(Step {
            name: name.into(),
            action: Arc::new(move |data, ctx| Box::pin(action(data, ctx))),
            compensation: Some(Arc::new(move |data, ctx| Box::pin(compensation(data, ctx)))),
        });
        self
    }

    /// Adds a step with nothing to undo (for example the last, irreversible one).
    #[must_use]
    pub fn step_without_compensation<A, AF>(mut self, name: impl Into<String>, action: A) -> Self
    where
        A: Fn(D, StepContext) -> AF + Send + Sync + 'static,
        AF: Future<Output = FlextResult<D>> + Send + 'static,
    {
        self.steps.push(Step {
            name: name.into(),
            action: Arc::new(move |data, ctx| Box::pin(action(data, ctx))),
            compensation: None,
        });
        self
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream of the saga `saga_id`.
    pub fn stream_id(&self, saga_id: &str) -> String {
        format!("Saga-{}-{saga_id}", self.name)
    }

    /// Starts the saga `saga_id` with `data` and runs it to its end. A saga id already
    /// used is a `CONCURRENCY_CONFLICT` (resume it instead); an empty one an
    /// `INVALID_ARGUMENT`.
    pub async fn run(&self, saga_id: &str, data: D) -> FlextResult<SagaOutcome<D>> {
        if saga_id.trim().is_empty() {
            return Err(FlextError::invalid_argument("Saga id cannot be empty"));
        }
        let stream = self.stream_id(saga_id);
        self.append(
            &stream,
            ExpectedVersion::NoStream,
            &SagaEvent::Started { data: data.clone() },
        )
        .await?;
        let progress = Progress {
            version: 1,
            data,
            completed: Vec::new(),
            failed: None,
            compensated: Vec::new(),
            compensation_failures: Vec::new(),
            finished: None,
        };
        self.drive(saga_id, progress).await
    }

    /// Finishes the saga `saga_id` from its records: forward if no step failed, otherwise
    /// compensating; a finished saga returns its outcome as recorded. `NOT_FOUND` for a saga
    /// never started.
    pub async fn resume(&self, saga_id: &str) -> FlextResult<SagaOutcome<D>> {
        let stream = self.stream_id(saga_id);
        let records = self.store.read_stream(&stream, 1, usize::MAX).await?;
        let progress = self.rebuild(&stream, &records)?;
        self.drive(saga_id, progress).await
    }

    /// The ids of this saga's runs that have not finished (for example after a crash).
    pub async fn unfinished(&self) -> FlextResult<Vec<String>> {
        let prefix = format!("Saga-{}-", self.name);
        let mut finished: BTreeMap<String, bool> = BTreeMap::new();
        for event in self.store.read_all(1, usize::MAX).await? {
            if let Some(id) = event.stream_id.strip_prefix(&prefix) {
                let done = matches!(&*event.event_type, "SagaCompleted" | "SagaCompensated");
                *finished.entry(id.to_owned()).or_default() |= done;
            }
        }
        Ok(finished
            .into_iter()
            .filter(|(_, done)| !done)
            .map(|(id, _)| id)
            .collect())
    }

    /// Resumes every unfinished run; the outcomes are in id order.
    pub async fn resume_all(&self) -> FlextResult<Vec<SagaOutcome<D>>> {
        let mut outcomes = Vec::new();
        for id in self.unfinished().await? {
            outcomes.push(self.resume(&id).await?);
        }
        Ok(outcomes)
    }

    fn rebuild(&self, stream: &str, records: &[StoredEvent]) -> FlextResult<Progress<D>> {
        let mut progress: Option<Progress<D>> = None;
        for record in records {
            let event: SagaEvent<D> = record.payload.decode().map_err(|e| {
                e.with_context(format!(
                    "Saga record {} of {stream} at version {}",
                    record.event_type, record.version
                ))
            })?;
            if let SagaEvent::Started { data } = event {
                progress = Some(Progress {
                    version: record.version,
                    data,
                    completed: Vec::new(),
                    failed: None,
                    compensated: Vec::new(),
                    compensation_failures: Vec::new(),
                    finished: None,
                });
                continue;
            }
            let Some(p) = progress.as_mut() else {
                return Err(FlextError::serialization(format!(
                    "Saga stream {stream} does not begin with SagaStarted"
                )));
            };
            p.version = record.version;
            match event {
                SagaEvent::Started { .. } | SagaEvent::StepStarted { .. } => {}
                SagaEvent::StepCompleted { step, data } => {
                    p.completed.push(self.index_of(&step, stream)?);
                    p.data = data;
                }
                SagaEvent::StepFailed { step, error } => {
                    p.failed = Some((self.index_of(&step, stream)?, error))
                }
                SagaEvent::StepCompensated { step } => {
                    p.compensated.push(self.index_of(&step, stream)?)
                }
                SagaEvent::CompensationFailed { step, error } => {
                    p.compensation_failures
                        .push((self.index_of(&step, stream)?, error));
                }
                SagaEvent::Completed => p.finished = Some(SagaStatus::Completed),
                SagaEvent::Compensated => p.finished = Some(SagaStatus::Compensated),
            }
        }
        progress
            .ok_or_else(|| FlextError::not_found(format!("No saga recorded in stream {stream}")))
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
            let next = p.completed.last().map_or(0, |last| last + 1);
            for index in next..self.steps.len() {
                let step = &self.steps[index];
                self.record(
                    &stream,
                    &mut p,
                    SagaEvent::StepStarted {
                        step: step.name.clone(),
                    },
                )
                .await?;
                let ctx = self.context(saga_id, &step.name, "");
                match catch_panic((step.action)(p.data.clone(), ctx)).await {
                    Ok(data) => {
                        self.record(
                            &stream,
                            &mut p,
                            SagaEvent::StepCompleted {
                                step: step.name.clone(),
                                data: data.clone(),
                            },
                        )
                        .await?;
                        p.data = data;
                        p.completed.push(index);
                    }
                    Err(error) => {
                        tracing::info!(saga = %self.name, saga_id, step = %step.name, %error, "saga step failed; compensating");
                        self.record(
                            &stream,
                            &mut p,
                            SagaEvent::StepFailed {
                                step: step.name.clone(),
                                error: error.clone(),
                            },
                        )
                        .await?;
                        p.failed = Some((index, error));
                        break;
                    }
                }
            }
            if p.failed.is_none() {
                self.record(&stream, &mut p, SagaEvent::Completed).await?;
                p.finished = Some(SagaStatus::Completed);
            }
        }
        if p.finished.is_none() {
            let done: Vec<usize> = p
                .compensated
                .iter()
                .chain(p.compensation_failures.iter().map(|(i, _)| i))
                .copied()
                .collect();
            for index in p.completed.clone().into_iter().rev() {
                if done.contains(&index) {
                    continue;
                }
                let step = &self.steps[index];
                let Some(compensation) = &step.compensation else {
                    continue;
                };
                let ctx = self.context(saga_id, &step.name, "/compensate");
                match catch_panic(compensation(p.data.clone(), ctx)).await {
                    Ok(()) => {
                        self.record(
                            &stream,
                            &mut p,
                            SagaEvent::StepCompensated {
                                step: step.name.clone(),
                            },
                        )
                        .await?;
                        p.compensated.push(index);
                    }
                    Err(error) => {
                        tracing::warn!(saga = %self.name, saga_id, step = %step.name, %error, "saga compensation failed");
                        self.record(
                            &stream,
                            &mut p,
                            SagaEvent::CompensationFailed {
                                step: step.name.clone(),
                                error: error.clone(),
                            },
                        )
                        .await?;
                        p.compensation_failures.push((index, error));
                    }
                }
            }
            self.record(&stream, &mut p, SagaEvent::Compensated).await?;
            p.finished = Some(SagaStatus::Compensated);
        }
        let name = |i: usize| self.steps[i].name.clone();
        Ok(SagaOutcome {
            saga_id: saga_id.to_owned(),
            status: p.finished.unwrap_or(SagaStatus::Completed),
            data: p.data,
            failed_step: p.failed.as_ref().map(|(i, _)| name(*i)),
            error: p.failed.map(|(_, e)| e),
            compensated: p.compensated.into_iter().map(name).collect(),
            compensation_failures: p
                .compensation_failures
                .into_iter()
                .map(|(i, e)| (name(i), e))
                .collect(),
        })
    }

    fn context(&self, saga_id: &str, step: &str, suffix: &str) -> StepContext {
        StepContext {
            saga_id: saga_id.to_owned(),
            step: step.to_owned(),
            idempotency_key: format!("{}/{saga_id}/{step}{suffix}", self.name),
        }
    }

    async fn record(
        &self,
        stream: &str,
        p: &mut Progress<D>,
        event: SagaEvent<D>,
    ) -> FlextResult<()> {
        p.version = self
            .append(stream, ExpectedVersion::Exact(p.version), &event)
            .await?;
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
