//! [`Permit`]: leave to run one call through a circuit breaker, and the breaker's side of it:
//! taking a permit, counting its result, giving it back.

use std::fmt;
use std::sync::atomic::Ordering::SeqCst;

use flext_types::FlextResult;
use tokio::time::Instant;

use super::{BreakerState, Inner};

/// Leave to run one call, from [`CircuitBreaker::acquire`](super::CircuitBreaker::acquire).
/// Record the call's result with [`Permit::record`]; a permit dropped without a result gives
/// itself back.
#[must_use = "a permit that is not recorded is released when dropped"]
pub struct Permit<'a> {
    breaker: &'a Inner,
    generation: u64,
    trial: bool,
    started: Option<Instant>,
    done: bool,
}

impl<'a> Permit<'a> {
    /// A permit of `breaker` taken at `generation`; `started` is set when calls are timed.
    pub(super) fn new(
        breaker: &'a Inner,
        generation: u64,
        trial: bool,
        started: Option<Instant>,
    ) -> Self {
        Self {
            breaker,
            generation,
            trial,
            started,
            done: false,
        }
    }

    /// Records the call's result: a failure, a success, or (for an ignored error) nothing.
    pub fn record<T>(mut self, result: &FlextResult<T>) {
        self.done = true;
        let inner = self.breaker;
        let failed = match result {
            Ok(_) => false,
            Err(error) if inner.ignore_if.as_ref().is_some_and(|ignore| ignore(error)) => {
                inner.counts.ignored.fetch_add(1, SeqCst);
                inner.release(self.generation, self.trial);
                return;
            }
            Err(error) => (inner.record_if)(error),
        };
        let slow = match (self.started, inner.config.slow_call_duration) {
            (Some(started), Some(threshold)) => started.elapsed() >= threshold,
            _ => false,
        };
        inner.on_result(self.generation, self.trial, failed, slow);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.release(self.generation, self.trial);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.name)
            .field("trial", &self.trial)
            .finish()
    }
}

/// Taking a permit and counting what becomes of it.
impl Inner {
    /// `(generation, trial)` of a new permit.
    pub(super) fn acquire(&self) -> FlextResult<(u64, bool)> {
        loop {
            let generation = self.generation.load(SeqCst);
            match self.state() {
                BreakerState::Closed | BreakerState::MetricsOnly | BreakerState::Disabled => {
                    return Ok((generation, false));
                }
                BreakerState::ForcedOpen => return Err(self.reject(BreakerState::ForcedOpen)),
                BreakerState::Open => {
                    if self.nanos_now() < self.open_until.load(SeqCst) {
                        return Err(self.reject(BreakerState::Open));
                    }
                    self.transition(generation, BreakerState::Open, BreakerState::HalfOpen);
                }
                BreakerState::HalfOpen => {
                    let deadline = self.half_open_until.load(SeqCst);
                    if deadline != 0 && self.nanos_now() >= deadline {
                        self.transition(generation, BreakerState::HalfOpen, BreakerState::Open);
                        continue;
                    }
                    let taken = self
                        .trial
                        .permits
                        .fetch_update(SeqCst, SeqCst, |left| left.checked_sub(1));
                    return match taken {
                        Ok(_) => Ok((generation, true)),
                        Err(_) => Err(self.reject(BreakerState::HalfOpen)),
                    };
                }
            }
        }
    }

    /// Counts a recorded result, into the window (closed, metrics-only) or the trial
    /// (half-open), and changes state when its rates say so.
    fn on_result(&self, generation: u64, trial: bool, failed: bool, slow: bool) {
        let count = if failed {
            &self.counts.failed
        } else {
            &self.counts.successful
        };
        count.fetch_add(1, SeqCst);
        if slow {
            self.counts.slow.fetch_add(1, SeqCst);
        }
        if generation != self.generation.load(SeqCst) {
            return; // A result from before a state change does not count in the new state.
        }
        match self.state() {
            BreakerState::Closed | BreakerState::MetricsOnly => {
                // Only a time-based window reads the clock.
                let (calls, failures, slows) =
                    self.window.record(failed, slow, || self.seconds_now());
                if self.state() == BreakerState::Closed && self.exceeded(calls, failures, slows) {
                    self.transition(generation, BreakerState::Closed, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen if trial => {
                if failed {
                    self.trial.failures.fetch_add(1, SeqCst);
                }
                if slow {
                    self.trial.slow.fetch_add(1, SeqCst);
                }
                let calls = self.trial.calls.fetch_add(1, SeqCst) + 1;
                if calls >= self.config.permitted_calls_in_half_open {
                    let failures = self.trial.failures.load(SeqCst);
                    let slows = self.trial.slow.load(SeqCst);
                    let to = if self.rates_exceeded(calls, failures, slows) {
                        BreakerState::Open
                    } else {
                        BreakerState::Closed
                    };
                    self.transition(generation, BreakerState::HalfOpen, to);
                }
            }
            _ => {}
        }
    }

    /// Gives a trial permit back, unless the state changed since it was taken.
    fn release(&self, generation: u64, trial: bool) {
        if trial && generation == self.generation.load(SeqCst) {
            self.trial.permits.fetch_add(1, SeqCst);
        }
    }
}
