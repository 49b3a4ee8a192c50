//! The breaker's changes of state: [`Phase`] (a state and its generation in one word) and
//! entering a state, automatically or by hand, under the breaker's lock.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use flext_types::{FlextError, FlextResult};

use super::{BreakerState, Guarded, Inner, StateTransition, Trial, permit};

/// A state and the generation it began: `generation << 3 | state`. Each change of state
/// starts a new generation, so a permit knows whether its state has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Phase(pub(super) u64);

impl Phase {
    pub(super) const fn new(generation: u64, state: BreakerState) -> Self {
        Self(generation << 3 | state as u64)
    }

    pub(super) fn generation(self) -> u64 {
        self.0 >> 3
    }

    pub(super) fn state(self) -> BreakerState {
        match self.0 & 7 {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            3 => BreakerState::Disabled,
            4 => BreakerState::ForcedOpen,
            _ => BreakerState::MetricsOnly,
        }
    }
}

/// Changes of state.
impl Inner {
    /// Moves from `from` to `to` if the breaker is still in `from`'s phase.
    pub(super) fn transition(&self, from: Phase, to: BreakerState) {
        let mut guarded = self.lock();
        if self.phase() == from {
            self.enter(&mut guarded, from, to);
        }
    }

    pub(super) fn move_by_hand(&self, to: BreakerState) -> FlextResult<()> {
        let mut guarded = self.lock();
        let from = self.phase();
        if !from.state().can_move_to(to) {
            return Err(FlextError::invalid_argument(format!(
                "Circuit breaker '{}' cannot move from {} to {to}",
                self.name,
                from.state()
            )));
        }
        self.enter(&mut guarded, from, to);
        Ok(())
    }

    pub(super) fn reset(&self) {
        let mut guarded = self.lock();
        let from = self.phase();
        self.enter(&mut guarded, from, BreakerState::Closed);
    }

    /// Enters `to` from `from` (the caller holds the lock): the open deadline or the trial's
    /// permits first, then the new phase, then (except into open and half-open, whose
    /// metrics are the window that tripped it or the trial's) an empty window. The window is
    /// emptied after the phase changed, so a result of the old phase that still lands in it
    /// adjusts totals that hold what it replaced.
    pub(super) fn enter(&self, guarded: &mut Guarded, from: Phase, to: BreakerState) {
        let next = Phase::new(from.generation().wrapping_add(1), to);
        match to {
            BreakerState::Open => {
                let after_trial = from.state() == BreakerState::HalfOpen;
                if after_trial {
                    // Both bounded by validation; `try_from` keeps it from panicking anyway.
                    let grown = guarded.wait.as_secs_f64() * self.config.wait_duration_multiplier;
                    guarded.wait = Duration::try_from_secs_f64(grown)
                        .unwrap_or(Duration::MAX)
                        .min(self.config.max_wait_duration_in_open);
                }
                guarded.open_after_trial = after_trial;
                let until = self
                    .nanos_now()
                    .saturating_add(u64::try_from(guarded.wait.as_nanos()).unwrap_or(u64::MAX));
                self.open_until.store(until, SeqCst);
            }
            BreakerState::HalfOpen => {
                guarded.trial = Trial::default();
                self.permits.store(
                    permit::tagged(next, self.config.permitted_calls_in_half_open),
                    SeqCst,
                );
                let until = self.config.max_wait_in_half_open.map_or(0, |max| {
                    self.nanos_now()
                        .saturating_add(u64::try_from(max.as_nanos()).unwrap_or(u64::MAX))
                        .max(1)
                });
                self.half_open_until.store(until, SeqCst);
            }
            _ => guarded.wait = self.config.wait_duration_in_open,
        }
        if to != BreakerState::HalfOpen {
            // The trial's unused permits go with its phase: a caller that read the half-open
            // phase before this move takes none of them in the new state.
            self.permits.store(permit::tagged(next, 0), SeqCst);
        }
        self.phase.store(next.0, SeqCst);
        if !matches!(to, BreakerState::Open | BreakerState::HalfOpen) {
            self.window.reset();
        }
        let from = from.state();
        if from != to {
            tracing::info!(breaker = %self.name, %from, %to, "circuit breaker changed state");
            let _ = self.events.send(StateTransition {
                breaker: self.name.clone(),
                from,
                to,
            });
        }
    }
}
