//! [`Permit`]: leave to run one call through a circuit breaker, and the breaker's side of it:
//! taking a permit, counting its result, giving it back.

use std::fmt;
use std::sync::atomic::Ordering::SeqCst;

use flext_impl::catch_panic_sync;
use flext_types::{FlextError, FlextResult};
use tokio::time::Instant;

use super::{BreakerState, Inner, Phase};

/// Leave to run one call, from [`CircuitBreaker::acquire`](super::CircuitBreaker::acquire).
/// Record the call's result with [`Permit::record`]; a permit dropped without a result gives
/// itself back.
#[must_use = "a permit that is not recorded is released when dropped"]
pub struct Permit<'a> {
    breaker: &'a Inner,
    phase: Phase,
    started: Option<Instant>,
    done: bool,
}

impl<'a> Permit<'a> {
    /// A permit of `breaker` taken in `phase`; `started` is set when calls are timed.
    pub(super) fn new(breaker: &'a Inner, phase: Phase, started: Option<Instant>) -> Self {
        Self {
            breaker,
            phase,
            started,
            done: false,
        }
    }

    /// Records the call's result: a failure, a success, or (for an ignored error) nothing.
    /// A `record_errors_if` or `ignore_errors_if` filter that panics counts the error as a
    /// failure.
    pub fn record<T>(mut self, result: &FlextResult<T>) {
        self.done = true;
        let inner = self.breaker;
        let measured = self.phase.state() != BreakerState::Disabled;
        let failed = match result {
            Ok(_) => false,
            Err(error) if inner.ignores(error) => {
                if measured {
                    inner.counts.ignored.fetch_add(1, SeqCst);
                }
                inner.release(self.phase);
                return;
            }
            Err(error) => inner.records(error),
        };
        if !measured {
            return; // Disabled measures nothing.
        }
        let slow = match (self.started, inner.config.slow_call_duration) {
            (Some(started), Some(threshold)) => started.elapsed() >= threshold,
            _ => false,
        };
        inner.on_result(self.phase, failed, slow);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.release(self.phase);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.name)
            .field("state", &self.phase.state())
            .finish()
    }
}

const COUNT: u64 = u32::MAX as u64;

/// The word of `count` trial permits of half-open `phase`: the generation's low 32 bits, then
/// the count. A caller takes or gives back a permit only while the tag is its own phase's, so
/// it never takes one of a later half-open phase under an earlier generation.
pub(super) fn tagged(phase: Phase, count: u32) -> u64 {
    (phase.generation() & COUNT) << 32 | u64::from(count)
}

/// What taking a trial permit found.
#[derive(Debug, PartialEq, Eq)]
enum TakeTrial {
    Taken,
    /// The phase's permits are all taken.
    NoneLeft,
    /// The permits are a later phase's.
    OtherPhase,
}

/// Taking a permit and counting what becomes of it.
impl Inner {
    /// The phase a new permit is taken in.
    pub(super) fn acquire(&self) -> FlextResult<Phase> {
        loop {
            let phase = self.phase();
            match phase.state() {
                BreakerState::Closed | BreakerState::MetricsOnly | BreakerState::Disabled => {
                    return Ok(phase);
                }
                BreakerState::ForcedOpen => return Err(self.reject(BreakerState::ForcedOpen)),
                BreakerState::Open => {
                    if self.nanos_now() < self.open_until.load(SeqCst) {
                        return Err(self.reject(BreakerState::Open));
                    }
                    self.transition(phase, BreakerState::HalfOpen);
                }
                BreakerState::HalfOpen => {
                    if self.half_open_expired() {
                        self.transition(phase, BreakerState::Open);
                        continue;
                    }
                    match self.take_trial(phase) {
                        TakeTrial::Taken => return Ok(phase),
                        TakeTrial::NoneLeft => return Err(self.reject(BreakerState::HalfOpen)),
                        // The state moved on since `phase` was read: look again.
                        TakeTrial::OtherPhase => {}
                    }
                }
            }
        }
    }

    /// Takes a trial permit of half-open `phase`, if that phase is still the permits'.
    fn take_trial(&self, phase: Phase) -> TakeTrial {
        let tag = tagged(phase, 0);
        let taken = self.permits.fetch_update(SeqCst, SeqCst, |word| {
            (word & !COUNT == tag && word & COUNT > 0).then(|| word - 1)
        });
        match taken {
            Ok(_) => TakeTrial::Taken,
            Err(word) if word & !COUNT == tag => TakeTrial::NoneLeft,
            Err(_) => TakeTrial::OtherPhase,
        }
    }

    /// Whether `error` is ignored; a panicking filter ignores nothing.
    fn ignores(&self, error: &FlextError) -> bool {
        self.ignore_if
            .as_ref()
            .is_some_and(|ignore| catch_panic_sync(|| Ok(ignore(error))).unwrap_or(false))
    }

    /// Whether `error` counts as a failure; a panicking filter counts it as one.
    fn records(&self, error: &FlextError) -> bool {
        catch_panic_sync(|| Ok((self.record_if)(error))).unwrap_or(true)
    }

    /// Counts a recorded result, into the window (closed, metrics-only) or the trial
    /// (half-open), and changes state when its rates say so.
    fn on_result(&self, phase: Phase, failed: bool, slow: bool) {
        let count = if failed {
            &self.counts.failed
        } else {
            &self.counts.successful
        };
        count.fetch_add(1, SeqCst);
        if slow {
            self.counts.slow.fetch_add(1, SeqCst);
        }
        if phase != self.phase() {
            return; // A result from before a state change does not count in the new state.
        }
        match phase.state() {
            BreakerState::Closed | BreakerState::MetricsOnly => {
                // Only a time-based window reads the clock.
                let (calls, failures, slows) =
                    self.window.record(failed, slow, || self.seconds_now());
                if phase.state() == BreakerState::Closed && self.exceeded(calls, failures, slows) {
                    self.transition(phase, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen => {
                // At most the permitted number of results per phase: the lock costs little.
                let mut guarded = self.lock();
                if phase != self.phase() {
                    return;
                }
                let trial = &mut guarded.trial;
                trial.calls = trial.calls.saturating_add(1);
                trial.failures = trial.failures.saturating_add(u32::from(failed));
                trial.slow = trial.slow.saturating_add(u32::from(slow));
                let (calls, failures, slows) = (trial.calls, trial.failures, trial.slow);
                if calls >= self.config.permitted_calls_in_half_open {
                    let to = if self.rates_exceeded(calls, failures, slows) {
                        BreakerState::Open
                    } else {
                        BreakerState::Closed
                    };
                    self.enter(&mut guarded, phase, to);
                }
            }
            _ => {}
        }
    }

    /// Gives a trial permit back, unless the state changed since it was taken.
    fn release(&self, phase: Phase) {
        if phase.state() == BreakerState::HalfOpen {
            let tag = tagged(phase, 0);
            let _ = self.permits.fetch_update(SeqCst, SeqCst, |word| {
                (word & !COUNT == tag).then(|| word + 1)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CircuitBreaker, CircuitBreakerConfig};
    use super::*;

    #[test]
    fn a_caller_that_saw_an_earlier_half_open_phase_takes_none_of_a_later_ones_permits() {
        let config = CircuitBreakerConfig::default().with_permitted_calls_in_half_open(1);
        let breaker = CircuitBreaker::new("tags", config).unwrap();
        breaker.transition_to_open().unwrap();
        breaker.transition_to_half_open().unwrap();
        let inner = &breaker.inner;
        let seen = inner.phase();
        breaker.transition_to_open().unwrap();
        breaker.transition_to_half_open().unwrap();
        let now = inner.phase();
        assert_eq!(inner.take_trial(seen), TakeTrial::OtherPhase);
        assert_eq!(inner.take_trial(now), TakeTrial::Taken);
        assert_eq!(inner.take_trial(now), TakeTrial::NoneLeft);
        inner.release(seen);
        assert_eq!(
            inner.take_trial(now),
            TakeTrial::NoneLeft,
            "an earlier phase's permit is not given to this one"
        );
        inner.release(now);
        assert_eq!(inner.take_trial(now), TakeTrial::Taken);
    }

    /// Before, leaving half-open kept the trial's unused permits under its tag: a caller
    /// that had read the half-open phase could still take one and run its call while the
    /// breaker was open, forced open or closed.
    #[test]
    fn a_caller_that_saw_half_open_takes_no_permit_once_the_breaker_left_it() {
        let config = CircuitBreakerConfig::default().with_permitted_calls_in_half_open(2);
        let breaker = CircuitBreaker::new("left", config).unwrap();
        let inner = &breaker.inner;
        let moves: [fn(&CircuitBreaker) -> FlextResult<()>; 4] = [
            CircuitBreaker::transition_to_open,
            CircuitBreaker::transition_to_forced_open,
            CircuitBreaker::transition_to_closed,
            |breaker| {
                breaker.reset();
                Ok(())
            },
        ];
        for leave in moves {
            breaker.reset();
            breaker.transition_to_open().unwrap();
            breaker.transition_to_half_open().unwrap();
            let seen = inner.phase();
            assert_eq!(inner.take_trial(seen), TakeTrial::Taken);
            leave(&breaker).unwrap();
            assert_eq!(inner.take_trial(seen), TakeTrial::OtherPhase);
        }
    }
}
