//! What a saga records and reports: [`SagaEvent`], [`SagaStatus`], [`SagaOutcome`], and the
//! [`StepContext`] each step and compensation is given.

use flext_types::FlextError;
use serde::{Deserialize, Serialize};

/// What a step or compensation knows about its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    /// The saga's id.
    pub saga_id: String,
    /// The step's name.
    pub step: String,
    /// The same for every run of this action (or compensation) of this step of this saga
    /// run (replays after a restart and retries included), so the system the work changes
    /// can recognise a repeat and not apply it twice: `{saga}/{step}/action/{id}` for an
    /// action, `{saga}/{step}/compensation/{id}` for a compensation. Saga and step names
    /// cannot contain `/`, so the first three `/` split a key back into saga, step, kind
    /// and id: distinct work always has distinct keys, whatever its run's id holds.
    pub idempotency_key: String,
}

/// One progress record of a saga, as stored in its stream.
///
/// The records of work that has side effects come in pairs: a `…Started` record appended
/// (at the stream's exact version) before the work runs, then the record of how it ended.
/// A started record with no end is work a process was doing when it stopped.
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
    /// A compensation began (it may or may not have finished before a crash).
    CompensationStarted {
        /// The step being compensated.
        step: String,
    },
    /// A completed step was compensated.
    StepCompensated {
        /// The step's name.
        step: String,
    },
    /// A compensation failed. The others still run, but the run does not end: a resume
    /// runs this compensation again.
    CompensationFailed {
        /// The step's name.
        step: String,
        /// Why.
        error: FlextError,
    },
    /// Every step completed.
    Completed,
    /// A step failed and every completed one was compensated (runs recorded before failed
    /// compensations were retried may have this record after a `CompensationFailed`).
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
            SagaEvent::CompensationStarted { .. } => "SagaCompensationStarted",
            SagaEvent::StepCompensated { .. } => "SagaStepCompensated",
            SagaEvent::CompensationFailed { .. } => "SagaCompensationFailed",
            SagaEvent::Completed => "SagaCompleted",
            SagaEvent::Compensated => "SagaCompensated",
        }
    }
}

/// Whether a record of this event name ends a run.
pub(super) fn is_terminal(event_name: &str) -> bool {
    matches!(event_name, "SagaCompleted" | "SagaCompensated")
}

/// How a saga run ended, or that it is waiting for failed compensations to be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Every step completed.
    Completed,
    /// A step failed and the completed steps were compensated.
    Compensated,
    /// A step failed and at least one compensation failed (its last attempt): the run is
    /// not finished. [`Saga::unfinished`](super::Saga::unfinished) lists it, and each
    /// [`Saga::resume`](super::Saga::resume) retries the compensations that have not
    /// succeeded, under their idempotency keys, until all have and the run is
    /// `Compensated`. [`SagaOutcome::compensation_failures`] says which still fail.
    CompensationFailed,
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
    /// The steps compensated, in the order they were compensated (across resumes).
    pub compensated: Vec<String>,
    /// Compensations that are still failing, with the error of their last attempt; empty
    /// unless the status is [`SagaStatus::CompensationFailed`] (or the run was recorded
    /// before failed compensations were retried).
    pub compensation_failures: Vec<(String, FlextError)>,
}
