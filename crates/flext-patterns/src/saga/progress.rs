//! Where a saga run stands, rebuilt from its records.

use flext_types::{FlextError, FlextResult, StoredEvent};
use serde::de::DeserializeOwned;

use super::records::{SagaEvent, SagaStatus};

/// Where a run stands: what its records say, and the version to append the next one at.
pub(super) struct Progress<D> {
    /// The stream's version: the next record is appended at exactly this version.
    pub(super) version: u64,
    /// The data after the last completed step.
    pub(super) data: D,
    /// The steps completed, by index, in order.
    pub(super) completed: Vec<usize>,
    /// The step that failed and its error.
    pub(super) failed: Option<(usize, FlextError)>,
    /// The steps compensated, in the order they were.
    pub(super) compensated: Vec<usize>,
    /// The compensations whose last attempt failed, with that attempt's error, in the order
    /// they first failed; a compensation that succeeds later leaves the list.
    pub(super) compensation_failures: Vec<(usize, FlextError)>,
    /// How the run ended, once it has.
    pub(super) finished: Option<SagaStatus>,
}

impl<D> Progress<D> {
    /// A run just started with `data` (its `Started` record at version 1).
    pub(super) fn started(data: D) -> Self {
        Self {
            version: 1,
            data,
            completed: Vec::new(),
            failed: None,
            compensated: Vec::new(),
            compensation_failures: Vec::new(),
            finished: None,
        }
    }

    /// The compensation of step `index` succeeded: it is no longer failing.
    pub(super) fn compensation_succeeded(&mut self, index: usize) {
        self.compensation_failures.retain(|(i, _)| *i != index);
        self.compensated.push(index);
    }

    /// The compensation of step `index` failed with `error` (again, or for the first time).
    pub(super) fn compensation_failed(&mut self, index: usize, error: FlextError) {
        match self
            .compensation_failures
            .iter_mut()
            .find(|(i, _)| *i == index)
        {
            Some((_, last)) => *last = error,
            None => self.compensation_failures.push((index, error)),
        }
    }
}

impl<D: DeserializeOwned> Progress<D> {
    /// Replays the `records` of `stream`; `index_of` finds a step by name, or says the saga
    /// has no such step. A `…Started` record changes nothing: work started and not ended is
    /// work to do again. A compensation's last end decides whether it is still failing. `NOT_FOUND` when there are no records; `SERIALIZATION_ERROR` when
    /// a record does not decode or the stream does not begin with `SagaStarted`.
    pub(super) fn rebuild(
        stream: &str,
        records: &[StoredEvent],
        index_of: impl Fn(&str) -> FlextResult<usize>,
    ) -> FlextResult<Self> {
        let mut progress: Option<Self> = None;
        for record in records {
            let event: SagaEvent<D> = record.payload.decode().map_err(|e| {
                e.with_context(format!(
                    "Saga record {} of {stream} at version {}",
                    record.event_type, record.version
                ))
            })?;
            if let SagaEvent::Started { data } = event {
                progress = Some(Self {
                    version: record.version,
                    ..Self::started(data)
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
                SagaEvent::Started { .. } => {}
                SagaEvent::StepStarted { step } | SagaEvent::CompensationStarted { step } => {
                    index_of(&step)?;
                }
                SagaEvent::StepCompleted { step, data } => {
                    p.completed.push(index_of(&step)?);
                    p.data = data;
                }
                SagaEvent::StepFailed { step, error } => p.failed = Some((index_of(&step)?, error)),
                SagaEvent::StepCompensated { step } => p.compensation_succeeded(index_of(&step)?),
                SagaEvent::CompensationFailed { step, error } => {
                    p.compensation_failed(index_of(&step)?, error);
                }
                SagaEvent::Completed => p.finished = Some(SagaStatus::Completed),
                SagaEvent::Compensated => p.finished = Some(SagaStatus::Compensated),
            }
        }
        progress
            .ok_or_else(|| FlextError::not_found(format!("No saga recorded in stream {stream}")))
    }
}
