//! The settings of a [`CircuitBreaker`](super::CircuitBreaker) and their validation.

use std::time::Duration;

use flext_types::{FlextError, FlextResult};
use serde::{Deserialize, Serialize};

/// How a [`CircuitBreaker`](super::CircuitBreaker) measures its recent calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingWindow {
    /// The last N calls.
    CountBased(u32),
    /// The calls of the last N whole seconds (at least 1).
    TimeBased(Duration),
}

/// The settings of a [`CircuitBreaker`](super::CircuitBreaker), with resilience4j's defaults
/// except where noted.
///
/// Start from [`Default`] and change what you need with the `with_*` setters; the fields are
/// public to read, and the struct is `#[non_exhaustive]` so a later setting is not a breaking
/// change.
///
/// ```
/// use std::time::Duration;
/// use flext_patterns::{CircuitBreakerConfig, SlidingWindow};
///
/// let config = CircuitBreakerConfig::default()
///     .with_sliding_window(SlidingWindow::CountBased(20))
///     .with_minimum_number_of_calls(10)
///     .with_wait_duration_in_open(Duration::from_secs(5));
/// assert_eq!(config.minimum_number_of_calls, 10);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// Open when at least this percentage of measured calls failed (default 50).
    pub failure_rate_threshold: f64,
    /// Open when at least this percentage of measured calls were slow (default 100).
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long is slow. `None` (the default, unlike resilience4j's
    /// 60 s) does not time calls at all, which keeps the closed path free of clock reads.
    pub slow_call_duration: Option<Duration>,
    /// Which calls the rates are computed over (default the last 100; at most
    /// [`MAX_SLIDING_WINDOW_CALLS`](Self::MAX_SLIDING_WINDOW_CALLS) calls or
    /// [`MAX_SLIDING_WINDOW_SPAN`](Self::MAX_SLIDING_WINDOW_SPAN)).
    pub sliding_window: SlidingWindow,
    /// No rate is computed before this many calls are in the window (default 100). A
    /// count-based window smaller than this needs only its size, as in resilience4j.
    pub minimum_number_of_calls: u32,
    /// How long the breaker stays open before trial calls (default 60 s, at most
    /// [`MAX_WAIT_DURATION_IN_OPEN`](Self::MAX_WAIT_DURATION_IN_OPEN)).
    pub wait_duration_in_open: Duration,
    /// Each time trial calls fail, the next wait is this many times longer (default 1, at
    /// most [`MAX_WAIT_DURATION_MULTIPLIER`](Self::MAX_WAIT_DURATION_MULTIPLIER)).
    pub wait_duration_multiplier: f64,
    /// The longest a growing wait gets (default 60 s, at most
    /// [`MAX_WAIT_DURATION_IN_OPEN`](Self::MAX_WAIT_DURATION_IN_OPEN)).
    pub max_wait_duration_in_open: Duration,
    /// How many trial calls run in half-open state (default 10).
    pub permitted_calls_in_half_open: u32,
    /// Back to open if the trial calls have not all finished within this long (default
    /// none: wait for them).
    pub max_wait_in_half_open: Option<Duration>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: None,
            sliding_window: SlidingWindow::CountBased(100),
            minimum_number_of_calls: 100,
            wait_duration_in_open: Duration::from_secs(60),
            wait_duration_multiplier: 1.0,
            max_wait_duration_in_open: Duration::from_secs(60),
            permitted_calls_in_half_open: 10,
            max_wait_in_half_open: None,
        }
    }
}

impl CircuitBreakerConfig {
    /// The largest count-based window: a byte per call, so at most 1 MB.
    pub const MAX_SLIDING_WINDOW_CALLS: u32 = 1_000_000;
    /// The longest time-based window, one hour: a bucket per second, all summed after each
    /// call.
    pub const MAX_SLIDING_WINDOW_SPAN: Duration = Duration::from_secs(3_600);
    /// The longest wait in open state, one day (a longer outage is better handled by hand
    /// with `FORCED_OPEN`).
    pub const MAX_WAIT_DURATION_IN_OPEN: Duration = Duration::from_secs(86_400);
    /// The largest growth of the wait after failed trial calls.
    pub const MAX_WAIT_DURATION_MULTIPLIER: f64 = 100.0;

    /// The failure rate, in percent, at or above which the breaker opens.
    #[must_use]
    pub const fn with_failure_rate_threshold(mut self, value: f64) -> Self {
        self.failure_rate_threshold = value;
        self
    }

    /// The slow-call rate, in percent, at or above which the breaker opens.
    #[must_use]
    pub const fn with_slow_call_rate_threshold(mut self, value: f64) -> Self {
        self.slow_call_rate_threshold = value;
        self
    }

    /// Calls taking at least `duration` are slow (turns slow-call tracking on).
    #[must_use]
    pub const fn with_slow_call_duration(mut self, duration: Duration) -> Self {
        self.slow_call_duration = Some(duration);
        self
    }

    /// Which calls the rates are computed over.
    #[must_use]
    pub const fn with_sliding_window(mut self, value: SlidingWindow) -> Self {
        self.sliding_window = value;
        self
    }

    /// The number of calls in the window before any rate is computed.
    #[must_use]
    pub const fn with_minimum_number_of_calls(mut self, value: u32) -> Self {
        self.minimum_number_of_calls = value;
        self
    }

    /// How long the breaker stays open before trial calls.
    #[must_use]
    pub const fn with_wait_duration_in_open(mut self, value: Duration) -> Self {
        self.wait_duration_in_open = value;
        self
    }

    /// How much longer each wait after failed trial calls gets.
    #[must_use]
    pub const fn with_wait_duration_multiplier(mut self, value: f64) -> Self {
        self.wait_duration_multiplier = value;
        self
    }

    /// The longest a growing wait gets.
    #[must_use]
    pub const fn with_max_wait_duration_in_open(mut self, value: Duration) -> Self {
        self.max_wait_duration_in_open = value;
        self
    }

    /// How many trial calls run in half-open state.
    #[must_use]
    pub const fn with_permitted_calls_in_half_open(mut self, value: u32) -> Self {
        self.permitted_calls_in_half_open = value;
        self
    }

    /// Back to open if the trial calls have not all finished within `duration`.
    #[must_use]
    pub const fn with_max_wait_in_half_open(mut self, duration: Duration) -> Self {
        self.max_wait_in_half_open = Some(duration);
        self
    }

    /// Checks every value; the first bad one is an `INVALID_ARGUMENT` error naming it.
    pub fn validate(&self) -> FlextResult<()> {
        let percent = |name: &str, value: f64| {
            if value > 0.0 && value <= 100.0 {
                Ok(())
            } else {
                Err(FlextError::invalid_argument(format!(
                    "Invalid {name}: {value}. Expected a percentage above 0 and at most 100"
                )))
            }
        };
        percent("failure_rate_threshold", self.failure_rate_threshold)?;
        percent("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        match self.sliding_window {
            SlidingWindow::CountBased(size)
                if !(1..=Self::MAX_SLIDING_WINDOW_CALLS).contains(&size) =>
            {
                return Err(FlextError::invalid_argument(format!(
                    "Invalid sliding_window: a count-based window of {size} calls. Expected 1 to {}",
                    Self::MAX_SLIDING_WINDOW_CALLS
                )));
            }
            SlidingWindow::TimeBased(span)
                if span < Duration::from_secs(1) || span > Self::MAX_SLIDING_WINDOW_SPAN =>
            {
                return Err(FlextError::invalid_argument(format!(
                    "Invalid sliding_window: a time-based window of {span:?}. Expected 1 s to {:?}",
                    Self::MAX_SLIDING_WINDOW_SPAN
                )));
            }
            _ => {}
        }
        let positive = |name: &str, value: u32| {
            if value > 0 {
                Ok(())
            } else {
                Err(FlextError::invalid_argument(format!(
                    "Invalid {name}: 0. Expected at least 1"
                )))
            }
        };
        positive("minimum_number_of_calls", self.minimum_number_of_calls)?;
        positive(
            "permitted_calls_in_half_open",
            self.permitted_calls_in_half_open,
        )?;
        if !(1.0..=Self::MAX_WAIT_DURATION_MULTIPLIER).contains(&self.wait_duration_multiplier) {
            return Err(FlextError::invalid_argument(format!(
                "Invalid wait_duration_multiplier: {}. Expected 1 to {}",
                self.wait_duration_multiplier,
                Self::MAX_WAIT_DURATION_MULTIPLIER
            )));
        }
        let wait = |name: &str, value: Duration| {
            if value <= Self::MAX_WAIT_DURATION_IN_OPEN {
                Ok(())
            } else {
                Err(FlextError::invalid_argument(format!(
                    "Invalid {name}: {value:?}. Expected at most {:?}",
                    Self::MAX_WAIT_DURATION_IN_OPEN
                )))
            }
        };
        wait("wait_duration_in_open", self.wait_duration_in_open)?;
        wait("max_wait_duration_in_open", self.max_wait_duration_in_open)?;
        if self.max_wait_duration_in_open < self.wait_duration_in_open {
            return Err(FlextError::invalid_argument(
                "Invalid max_wait_duration_in_open: shorter than wait_duration_in_open",
            ));
        }
        Ok(())
    }
}
