//! [`CircuitBreaker`]: resilience4j's circuit breaker, lock-free while closed.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_protocols::{MetricsSource, Middleware, Next};
use flext_types::{FlextError, FlextResult, MetricSet, MetricValue};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// The states of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BreakerState {
    /// Calls pass and are measured; too many failures or slow calls open the breaker.
    Closed,
    /// Calls are rejected until the wait in open state has passed.
    Open,
    /// A limited number of trial calls decide between closing and opening again.
    HalfOpen,
    /// Calls pass and nothing is measured.
    Disabled,
    /// Every call is rejected until the breaker is moved out by hand.
    ForcedOpen,
    /// Calls pass and are measured, but the breaker never changes state by itself.
    MetricsOnly,
}

impl BreakerState {
    const ALL: [BreakerState; 6] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::Disabled,
        Self::ForcedOpen,
        Self::MetricsOnly,
    ];

    /// The state's name, as resilience4j spells it (`CLOSED`, `HALF_OPEN`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "CLOSED",
            Self::Open => "OPEN",
            Self::HalfOpen => "HALF_OPEN",
            Self::Disabled => "DISABLED",
            Self::ForcedOpen => "FORCED_OPEN",
            Self::MetricsOnly => "METRICS_ONLY",
        }
    }

    /// Whether a breaker may move from `self` to `to`. Moving to the same state, and into
    /// `HALF_OPEN` from anything but `OPEN` or `FORCED_OPEN`, are illegal.
    pub fn can_move_to(self, to: BreakerState) -> bool {
        self != to && (to != Self::HalfOpen || matches!(self, Self::Open | Self::ForcedOpen))
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a [`CircuitBreaker`] measures its recent calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingWindow {
    /// The last N calls.
    CountBased(u32),
    /// The calls of the last N whole seconds (at least 1).
    TimeBased(Duration),
}

/// The settings of a [`CircuitBreaker`], with resilience4j's defaults except where noted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitBreakerConfig {
    /// Open when at least this percentage of measured calls failed (default 50).
    pub failure_rate_threshold: f64,
    /// Open when at least this percentage of measured calls were slow (default 100).
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long is slow. `None` (the default, unlike resilience4j's
    /// 60 s) does not time calls at all, which keeps the closed path free of clock reads.
    pub slow_call_duration: Option<Duration>,
    /// Which calls the rates are computed over (default the last 100).
    pub sliding_window: SlidingWindow,
    /// No rate is computed before this many calls are in the window (default 100).
    pub minimum_number_of_calls: u32,
    /// How long the breaker stays open before trial calls (default 60 s).
    pub wait_duration_in_open: Duration,
    /// Each time trial calls fail, the next wait is this many times longer (default 1).
    pub wait_duration_multiplier: f64,
    /// The longest a growing wait gets (default 60 s).
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
            SlidingWindow::CountBased(0) => {
                return Err(FlextError::invalid_argument(
                    "Invalid sliding_window: a count-based window needs at least 1 call",
                ));
            }
            SlidingWindow::TimeBased(span) if span < Duration::from_secs(1) => {
                return Err(FlextError::invalid_argument(
                    "Invalid sliding_window: a time-based window spans at least 1 second",
                ));
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
        if !(self.wait_duration_multiplier >= 1.0 && self.wait_duration_multiplier.is_finite()) {
            return Err(FlextError::invalid_argument(format!(
                "Invalid wait_duration_multiplier: {}. Expected a finite number of at least 1",
                self.wait_duration_multiplier
            )));
        }
        if self.max_wait_duration_in_open < self.wait_duration_in_open {
            return Err(FlextError::invalid_argument(
                "Invalid max_wait_duration_in_open: shorter than wait_duration_in_open",
            ));
        }
        Ok(())
    }
}

/// A change of state, as [`CircuitBreaker::subscribe`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTransition {
    /// The breaker's name.
    pub breaker: String,
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
}

/// A breaker's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitBreakerMetrics {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: BreakerState,
    /// Failed calls in the window, in percent; `None` below the minimum number of calls.
    pub failure_rate: Option<f64>,
    /// Slow calls in the window, in percent; `None` below the minimum number of calls.
    pub slow_call_rate: Option<f64>,
    /// Calls in the window.
    pub buffered_calls: u32,
    /// Calls that succeeded, since the breaker was created or reset.
    pub successful_calls: u64,
    /// Calls that failed.
    pub failed_calls: u64,
    /// Calls that were slow (successful or not).
    pub slow_calls: u64,
    /// Calls rejected without running.
    pub not_permitted_calls: u64,
    /// Calls whose errors were ignored (neither success nor failure).
    pub ignored_calls: u64,
}

type ErrorFilter = Arc<dyn Fn(&FlextError) -> bool + Send + Sync>;

/// A circuit breaker after resilience4j: closed, open, half-open, plus disabled, forced-open
/// and metrics-only.
///
/// - Closed, it measures calls in a count- or time-based sliding window; once the window
///   holds the minimum number of calls, a failure rate or slow-call rate at or above its
///   threshold opens it.
/// - Open, it rejects calls at once with `CIRCUIT_OPEN` naming the breaker, until the wait
///   (optionally growing after each failed trial) has passed; then it lets the permitted
///   number of trial calls through (half-open) and closes or opens again on their rates.
/// - Which errors count: [`CircuitBreaker::record_errors_if`] chooses the failures (the
///   rest count as successes); [`CircuitBreaker::ignore_errors_if`] chooses errors that count
///   as nothing and give their permit back.
/// - A permit always ends recorded or released, also when the caller drops the call's future
///   half-way; a result from before a state change does not count in the new state.
///
/// While closed, taking a permit is one atomic load and recording a result is a few atomic
/// operations; only state changes take a lock. Clones share one breaker. It is a
/// [`Middleware`], so it goes on a bus or around a handler with `Layered`.
///
/// ```
/// use std::time::Duration;
/// use flext_patterns::{BreakerState, CircuitBreaker, CircuitBreakerConfig, SlidingWindow};
/// use flext_types::FlextError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let breaker = CircuitBreaker::new("inventory", CircuitBreakerConfig {
///     sliding_window: SlidingWindow::CountBased(4),
///     minimum_number_of_calls: 4,
///     ..CircuitBreakerConfig::default()
/// })?;
/// for _ in 0..4 {
///     let _ = breaker.call(async { Err::<(), _>(FlextError::timeout("no answer")) }).await;
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// let rejected = breaker.call(async { Ok(()) }).await.unwrap_err();
/// assert_eq!(rejected.to_string(), "Circuit breaker 'inventory' is OPEN and does not permit further calls");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    config: CircuitBreakerConfig,
    record_if: ErrorFilter,
    ignore_if: Option<ErrorFilter>,
    state: AtomicU8,
    generation: AtomicU64,
    window: Window,
    trial: Trial,
    /// Nanoseconds after `epoch` when the open state ends.
    open_until: AtomicU64,
    /// Nanoseconds after `epoch` when the half-open state gives up; 0 for never.
    half_open_until: AtomicU64,
    epoch: Instant,
    timing: Mutex<Duration>,
    counts: Counts,
    events: broadcast::Sender<StateTransition>,
}

#[derive(Default)]
struct Counts {
    successful: AtomicU64,
    failed: AtomicU64,
    slow: AtomicU64,
    not_permitted: AtomicU64,
    ignored: AtomicU64,
}

#[derive(Default)]
struct Trial {
    permits: AtomicU32,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CircuitBreaker {
    /// A closed breaker named `name`; a bad setting is an `INVALID_ARGUMENT` error naming it.
    pub fn new(name: impl Into<String>, config: CircuitBreakerConfig) -> FlextResult<Self> {
        config.validate()?;
        let window = Window::new(config.sliding_window);
        let (events, _) = broadcast::channel(64);
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.into(),
                timing: Mutex::new(config.wait_duration_in_open),
                config,
                record_if: Arc::new(|_| true),
                ignore_if: None,
                state: AtomicU8::new(BreakerState::Closed as u8),
                generation: AtomicU64::new(0),
                window,
                trial: Trial::default(),
                open_until: AtomicU64::new(0),
                half_open_until: AtomicU64::new(0),
                epoch: Instant::now(),
                counts: Counts::default(),
                events,
            }),
        })
    }

    /// Counts only the errors `record` accepts as failures; the others count as successes.
    /// Set it before sharing the breaker.
    #[must_use]
    pub fn record_errors_if(
        self,
        record: impl Fn(&FlextError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.rebuild(|inner| inner.record_if = Arc::new(record))
    }

    /// Ignores the errors `ignore` accepts: they count as nothing and give their permit
    /// back. Set it before sharing the breaker.
    #[must_use]
    pub fn ignore_errors_if(
        self,
        ignore: impl Fn(&FlextError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.rebuild(|inner| inner.ignore_if = Some(Arc::new(ignore)))
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                change(&mut inner);
                Self {
                    inner: Arc::new(inner),
                }
            }
            // Already shared: the filters stay as they are rather than diverge between clones.
            Err(inner) => Self { inner },
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The breaker's settings.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.inner.config
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.inner.state()
    }

    /// State changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateTransition> {
        self.inner.events.subscribe()
    }

    /// Takes a permit for one call, or rejects with `CIRCUIT_OPEN`.
    pub fn acquire(&self) -> FlextResult<Permit<'_>> {
        self.inner.acquire().map(|(generation, trial)| Permit {
            breaker: &self.inner,
            generation,
            trial,
            started: self.inner.config.slow_call_duration.map(|_| Instant::now()),
            done: false,
        })
    }

    /// Runs `call` under a permit and records its result.
    pub async fn call<T>(&self, call: impl Future<Output = FlextResult<T>>) -> FlextResult<T> {
        let permit = self.acquire()?;
        let result = call.await;
        permit.record(&result);
        result
    }

    /// Moves to `OPEN` by hand (a wait in open state starts).
    pub fn transition_to_open(&self) -> FlextResult<()> {
        self.inner.move_by_hand(BreakerState::Open)
    }

    /// Moves to `CLOSED` by hand, with an empty window.
    pub fn transition_to_closed(&self) -> FlextResult<()> {
        self.inner.move_by_hand(BreakerState::Closed)
    }

    /// Moves to `HALF_OPEN` by hand; legal only from `OPEN` and `FORCED_OPEN`.
    pub fn transition_to_half_open(&self) -> FlextResult<()> {
        self.inner.move_by_hand(BreakerState::HalfOpen)
    }

    /// Moves to `DISABLED` by hand.
    pub fn transition_to_disabled(&self) -> FlextResult<()> {
        self.inner.move_by_hand(BreakerState::Disabled)
    }

    /// Moves to `FORCED_OPEN` by hand.
    pub fn transition_to_forced_open(&self) -> FlextResult<()> {
        self.inner.move_by_hand(BreakerState::ForcedOpen)
    }

    /// Moves to `METRICS_ONLY` by hand.
    pub fn transition_to_metrics_only(&self) -> FlextResult<()> {
        self.inner.move_by_hand(BreakerState::MetricsOnly)
    }

    /// Back to `CLOSED` with an empty window, the base wait and zeroed counts.
    pub fn reset(&self) {
        let inner = &self.inner;
        inner.reset();
        for count in [
            &inner.counts.successful,
            &inner.counts.failed,
            &inner.counts.slow,
            &inner.counts.not_permitted,
            &inner.counts.ignored,
        ] {
            count.store(0, SeqCst);
        }
    }

    /// The breaker's metrics.
    pub fn metrics(&self) -> CircuitBreakerMetrics {
        let inner = &self.inner;
        let (calls, failures, slow) = inner.window.totals(inner.seconds_now());
        let rated = calls >= inner.config.minimum_number_of_calls && calls > 0;
        let rate = |n: u32| rated.then(|| f64::from(n) * 100.0 / f64::from(calls));
        CircuitBreakerMetrics {
            name: inner.name.clone(),
            state: inner.state(),
            failure_rate: rate(failures),
            slow_call_rate: rate(slow),
            buffered_calls: calls,
            successful_calls: inner.counts.successful.load(SeqCst),
            failed_calls: inner.counts.failed.load(SeqCst),
            slow_calls: inner.counts.slow.load(SeqCst),
            not_permitted_calls: inner.counts.not_permitted.load(SeqCst),
            ignored_calls: inner.counts.ignored.load(SeqCst),
        }
    }
}

impl Inner {
    fn state(&self) -> BreakerState {
        BreakerState::ALL[usize::from(self.state.load(SeqCst))]
    }

    fn nanos_now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.epoch)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    fn seconds_now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_secs()
    }

    fn reject(&self, state: BreakerState) -> FlextError {
        self.counts.not_permitted.fetch_add(1, SeqCst);
        FlextError::new(
            ErrorCode::CircuitOpen,
            format!(
                "Circuit breaker '{}' is {state} and does not permit further calls",
                self.name
            ),
        )
        .with_data(serde_json::json!({"breaker": self.name, "state": state}))
    }

    /// `(generation, trial)` of a new permit.
    fn acquire(&self) -> FlextResult<(u64, bool)> {
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

    fn release(&self, generation: u64, trial: bool) {
        if trial && generation == self.generation.load(SeqCst) {
            self.trial.permits.fetch_add(1, SeqCst);
        }
    }

    fn exceeded(&self, calls: u32, failures: u32, slows: u32) -> bool {
        // A window of successes, the steady state, trips nothing: skip the arithmetic.
        (failures > 0 || slows > 0)
            && calls >= self.config.minimum_number_of_calls
            && self.rates_exceeded(calls, failures, slows)
    }

    fn rates_exceeded(&self, calls: u32, failures: u32, slows: u32) -> bool {
        let rate = |n: u32| f64::from(n) * 100.0 / f64::from(calls.max(1));
        rate(failures) >= self.config.failure_rate_threshold
            || (self.config.slow_call_duration.is_some()
                && rate(slows) >= self.config.slow_call_rate_threshold)
    }

    /// Moves from `from` to `to` if the breaker is still in `from` at `generation`.
    fn transition(&self, generation: u64, from: BreakerState, to: BreakerState) {
        let mut wait = self.timing.lock().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(SeqCst) == generation && self.state() == from {
            self.enter(&mut wait, from, to);
        }
    }

    fn move_by_hand(&self, to: BreakerState) -> FlextResult<()> {
        let mut wait = self.timing.lock().unwrap_or_else(PoisonError::into_inner);
        let from = self.state();
        if !from.can_move_to(to) {
            return Err(FlextError::invalid_argument(format!(
                "Circuit breaker '{}' cannot move from {from} to {to}",
                self.name
            )));
        }
        self.enter(&mut wait, from, to);
        Ok(())
    }

    fn reset(&self) {
        let mut wait = self.timing.lock().unwrap_or_else(PoisonError::into_inner);
        let from = self.state();
        self.enter(&mut wait, from, BreakerState::Closed);
    }

    /// Enters `to` (the caller holds the timing lock): a new generation, a fresh window or
    /// trial, the open deadline.
    fn enter(&self, wait: &mut Duration, from: BreakerState, to: BreakerState) {
        match to {
            BreakerState::Open => {
                if from == BreakerState::HalfOpen {
                    let grown = wait.mul_f64(self.config.wait_duration_multiplier);
                    *wait = grown.min(self.config.max_wait_duration_in_open);
                }
                let until = self
                    .nanos_now()
                    .saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
                self.open_until.store(until, SeqCst);
            }
            BreakerState::HalfOpen => {
                self.trial.calls.store(0, SeqCst);
                self.trial.failures.store(0, SeqCst);
                self.trial.slow.store(0, SeqCst);
                self.trial
                    .permits
                    .store(self.config.permitted_calls_in_half_open, SeqCst);
                let until = self.config.max_wait_in_half_open.map_or(0, |max| {
                    self.nanos_now()
                        .saturating_add(u64::try_from(max.as_nanos()).unwrap_or(u64::MAX))
                        .max(1)
                });
                self.half_open_until.store(until, SeqCst);
            }
            _ => *wait = self.config.wait_duration_in_open,
        }
        self.window.reset();
        self.generation.fetch_add(1, SeqCst);
        self.state.store(to as u8, SeqCst);
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

/// Leave to run one call, from [`CircuitBreaker::acquire`]. Record the call's result with
/// [`Permit::record`]; a permit dropped without a result gives itself back.
#[must_use = "a permit that is not recorded is released when dropped"]
pub struct Permit<'a> {
    breaker: &'a Inner,
    generation: u64,
    trial: bool,
    started: Option<Instant>,
    done: bool,
}

impl Permit<'_> {
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

/// The calls a breaker measures.
enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

const RECORDED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// The last N outcomes in a ring of atomic slots, with running totals.
struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    failures: AtomicU32,
    slow: AtomicU32,
}

/// Outcomes per second in a ring of atomic buckets.
struct TimeWindow {
    buckets: Box<[Bucket]>,
}

#[derive(Default)]
struct Bucket {
    /// The second this bucket counts, plus one (0: never used).
    second: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl Window {
    fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::CountBased(size) => Window::Count(CountWindow {
                slots: (0..size.max(1)).map(|_| AtomicU8::new(0)).collect(),
                next: AtomicU64::new(0),
                failures: AtomicU32::new(0),
                slow: AtomicU32::new(0),
            }),
            SlidingWindow::TimeBased(span) => Window::Time(TimeWindow {
                buckets: (0..span.as_secs().max(1))
                    .map(|_| Bucket::default())
                    .collect(),
            }),
        }
    }

    /// Records one outcome and returns the window's `(calls, failures, slow)`; `now` gives
    /// the current second, read only by a time-based window.
    fn record(&self, failed: bool, slow: bool, now: impl FnOnce() -> u64) -> (u32, u32, u32) {
        // A count-based window's totals do not depend on the second.
        let second = match self {
            Window::Count(window) => {
                let index = window.next.fetch_add(1, SeqCst) % window.slots.len() as u64;
                let outcome =
                    RECORDED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
                let old = window.slots[index as usize].swap(outcome, SeqCst);
                adjust(&window.failures, old & FAILED != 0, failed);
                adjust(&window.slow, old & SLOW != 0, slow);
                0
            }
            Window::Time(window) => {
                let second = now();
                let bucket = &window.buckets[(second % window.buckets.len() as u64) as usize];
                let stamp = bucket.second.load(SeqCst);
                if stamp != second + 1
                    && bucket
                        .second
                        .compare_exchange(stamp, second + 1, SeqCst, SeqCst)
                        .is_ok()
                {
                    bucket.calls.store(0, SeqCst);
                    bucket.failures.store(0, SeqCst);
                    bucket.slow.store(0, SeqCst);
                }
                bucket.calls.fetch_add(1, SeqCst);
                if failed {
                    bucket.failures.fetch_add(1, SeqCst);
                }
                if slow {
                    bucket.slow.fetch_add(1, SeqCst);
                }
                second
            }
        };
        self.totals(second)
    }

    fn totals(&self, second: u64) -> (u32, u32, u32) {
        match self {
            Window::Count(window) => {
                let calls = window.next.load(SeqCst).min(window.slots.len() as u64) as u32;
                (
                    calls,
                    window.failures.load(SeqCst),
                    window.slow.load(SeqCst),
                )
            }
            Window::Time(window) => {
                let span = window.buckets.len() as u64;
                window
                    .buckets
                    .iter()
                    .filter(|b| {
                        let stamp = b.second.load(SeqCst);
                        stamp != 0 && stamp + span > second + 1
                    })
                    .fold((0, 0, 0), |(c, f, s), b| {
                        (
                            c + b.calls.load(SeqCst),
                            f + b.failures.load(SeqCst),
                            s + b.slow.load(SeqCst),
                        )
                    })
            }
        }
    }

    fn reset(&self) {
        match self {
            Window::Count(window) => {
                window.next.store(0, SeqCst);
                for slot in window.slots.iter() {
                    slot.store(0, SeqCst);
                }
                window.failures.store(0, SeqCst);
                window.slow.store(0, SeqCst);
            }
            Window::Time(window) => {
                for bucket in window.buckets.iter() {
                    bucket.second.store(0, SeqCst);
                    bucket.calls.store(0, SeqCst);
                    bucket.failures.store(0, SeqCst);
                    bucket.slow.store(0, SeqCst);
                }
            }
        }
    }
}

/// Moves a running total by the difference between the outcome replaced and the new one.
fn adjust(total: &AtomicU32, was: bool, is: bool) {
    match (was, is) {
        (false, true) => {
            total.fetch_add(1, SeqCst);
        }
        (true, false) => {
            total.fetch_sub(1, SeqCst);
        }
        _ => {}
    }
}

#[async_trait]
impl<Req, Res> Middleware<Req, Res> for CircuitBreaker
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn call(&self, request: Req, next: Next<'_, Req, Res>) -> FlextResult<Res> {
        CircuitBreaker::call(self, next.run(request)).await
    }
}

impl MetricsSource for CircuitBreaker {
    fn metric_set(&self) -> MetricSet {
        let m = self.metrics();
        let mut set = MetricSet::new(m.name.clone());
        set.push_labelled(
            "state",
            "1 for the breaker's current state.",
            vec![("state".to_owned(), m.state.as_str().to_owned())],
            MetricValue::Gauge(1.0),
        );
        set.push(
            "successful_calls",
            "Calls that succeeded.",
            MetricValue::Counter(m.successful_calls),
        );
        set.push(
            "failed_calls",
            "Calls that failed.",
            MetricValue::Counter(m.failed_calls),
        );
        set.push(
            "slow_calls",
            "Calls that were slow.",
            MetricValue::Counter(m.slow_calls),
        );
        set.push(
            "not_permitted_calls",
            "Calls rejected without running.",
            MetricValue::Counter(m.not_permitted_calls),
        );
        set.push(
            "buffered_calls",
            "Calls in the sliding window.",
            MetricValue::Gauge(f64::from(m.buffered_calls)),
        );
        set
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.inner.state())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
