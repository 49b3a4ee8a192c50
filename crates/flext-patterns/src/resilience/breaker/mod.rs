//! [`CircuitBreaker`]: resilience4j's circuit breaker, lock-free while closed.
//!
//! This module holds the state machine; its settings live in `config`, the sliding window in
//! `window` and the permit of one call in `permit`.

mod config;
mod permit;
mod state;
mod window;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_impl::catch_panic;
use flext_protocols::{MetricsSource, Middleware, Next};
use flext_types::{FlextError, FlextResult, MetricSet, MetricValue};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

pub use config::{CircuitBreakerConfig, SlidingWindow};
pub use permit::Permit;
use state::Phase;
use window::Window;

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
///   holds the minimum number of calls (for a count window, at most its size), a failure
///   rate or slow-call rate at or above its threshold opens it.
/// - Open, it rejects calls at once with `CIRCUIT_OPEN` naming the breaker, until the wait
///   (optionally growing after each failed trial) has passed; then it lets the permitted
///   number of trial calls through (half-open) and closes or opens again on their rates.
/// - Which errors count: [`CircuitBreaker::record_errors_if`] chooses the failures (the
///   rest count as successes); [`CircuitBreaker::ignore_errors_if`] chooses errors that count
///   as nothing and give their permit back.
/// - A call that panics ([`CircuitBreaker::call`]) is a failure and returns an
///   `OPERATION_ERROR`; a filter that panics counts the error as a failure.
/// - A permit always ends recorded or released, also when the caller drops the call's future
///   half-way; a result from before a state change does not count in the new state, and a
///   caller never takes a trial permit of a later half-open phase than the one it saw.
/// - [`CircuitBreaker::metrics`]: open, it keeps the rates that tripped it; half-open, it
///   counts the trial calls; disabled, nothing is measured.
///
/// While closed, taking a permit is one atomic load and recording a result is a few atomic
/// operations; only state changes and half-open results take a lock. Clones share one breaker. It is a
/// [`Middleware`], so it goes on a bus or around a handler with `Layered`.
///
/// ```
/// use std::time::Duration;
/// use flext_patterns::{BreakerState, CircuitBreaker, CircuitBreakerConfig, SlidingWindow};
/// use flext_types::FlextError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let config = CircuitBreakerConfig::default()
///     .with_sliding_window(SlidingWindow::CountBased(4))
///     .with_minimum_number_of_calls(4);
/// let breaker = CircuitBreaker::new("inventory", config)?;
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
    /// The state and the generation it began, in one word: a caller reads both at once.
    phase: AtomicU64,
    /// `minimum_number_of_calls`, or a count window's size when that is smaller.
    minimum_calls: u32,
    window: Window,
    /// Trial permits left in half-open, tagged with the generation they were given for.
    permits: AtomicU64,
    /// Nanoseconds after `epoch` when the open state ends.
    open_until: AtomicU64,
    /// Nanoseconds after `epoch` when the half-open state gives up; 0 for never.
    half_open_until: AtomicU64,
    epoch: Instant,
    guarded: Mutex<Guarded>,
    counts: Counts,
    events: broadcast::Sender<StateTransition>,
}

/// What only state changes and trial results touch, behind the breaker's one lock.
struct Guarded {
    /// The next wait in open state.
    wait: Duration,
    /// The current (or, while open again, the last) half-open phase's results.
    trial: Trial,
    /// Whether the open state was entered from half-open, so its metrics are the trial's.
    open_after_trial: bool,
}

#[derive(Default)]
struct Counts {
    successful: AtomicU64,
    failed: AtomicU64,
    slow: AtomicU64,
    not_permitted: AtomicU64,
    ignored: AtomicU64,
}

#[derive(Default, Clone, Copy)]
struct Trial {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl CircuitBreaker {
    /// A closed breaker named `name`; a bad setting is an `INVALID_ARGUMENT` error naming it.
    pub fn new(name: impl Into<String>, config: CircuitBreakerConfig) -> FlextResult<Self> {
        config.validate()?;
        let window = Window::new(config.sliding_window);
        let minimum_calls = match config.sliding_window {
            // As resilience4j: a window smaller than the minimum trips once it is full.
            SlidingWindow::CountBased(size) => config.minimum_number_of_calls.min(size),
            SlidingWindow::TimeBased(_) => config.minimum_number_of_calls,
        };
        let (events, _) = broadcast::channel(64);
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.into(),
                guarded: Mutex::new(Guarded {
                    wait: config.wait_duration_in_open,
                    trial: Trial::default(),
                    open_after_trial: false,
                }),
                config,
                record_if: Arc::new(|_| true),
                ignore_if: None,
                phase: AtomicU64::new(Phase::new(0, BreakerState::Closed).0),
                minimum_calls,
                window,
                permits: AtomicU64::new(0),
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

    /// The current state. A half-open breaker whose maximum wait has passed reads (and
    /// moves to) `OPEN`.
    pub fn state(&self) -> BreakerState {
        self.inner.current_state()
    }

    /// State changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateTransition> {
        self.inner.events.subscribe()
    }

    /// Takes a permit for one call, or rejects with `CIRCUIT_OPEN`.
    pub fn acquire(&self) -> FlextResult<Permit<'_>> {
        self.inner.acquire().map(|phase| {
            let started = self.inner.config.slow_call_duration.map(|_| Instant::now());
            Permit::new(&self.inner, phase, started)
        })
    }

    /// Runs `call` under a permit and records its result. A call that panics is a failure:
    /// it returns the `OPERATION_ERROR` of [`flext_impl::catch_panic`] and counts as one.
    pub async fn call<T>(&self, call: impl Future<Output = FlextResult<T>>) -> FlextResult<T> {
        let permit = self.acquire()?;
        let result = catch_panic(call).await;
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

    /// The breaker's metrics. The rates and buffered calls are those of the window while
    /// closed or metrics-only, of the trial calls while half-open, and, while open, of
    /// whichever tripped it (the window, or the last trial calls); disabled, nothing is
    /// measured.
    pub fn metrics(&self) -> CircuitBreakerMetrics {
        let inner = &self.inner;
        let state = inner.current_state();
        let (calls, failures, slow, minimum) = inner.measured(state);
        let rated = calls >= minimum && calls > 0;
        let rate = |n: u32| rated.then(|| f64::from(n) * 100.0 / f64::from(calls));
        CircuitBreakerMetrics {
            name: inner.name.clone(),
            state,
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
    fn phase(&self) -> Phase {
        Phase(self.phase.load(SeqCst))
    }

    fn state(&self) -> BreakerState {
        self.phase().state()
    }

    /// The state, after giving up a half-open phase whose maximum wait has passed.
    fn current_state(&self) -> BreakerState {
        let phase = self.phase();
        if phase.state() == BreakerState::HalfOpen && self.half_open_expired() {
            self.transition(phase, BreakerState::Open);
            return self.state();
        }
        phase.state()
    }

    fn half_open_expired(&self) -> bool {
        let deadline = self.half_open_until.load(SeqCst);
        deadline != 0 && self.nanos_now() >= deadline
    }

    fn lock(&self) -> MutexGuard<'_, Guarded> {
        self.guarded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `(calls, failures, slow, minimum calls for a rate)` of what `state` shows.
    fn measured(&self, state: BreakerState) -> (u32, u32, u32, u32) {
        if matches!(state, BreakerState::Open | BreakerState::HalfOpen) {
            let guarded = self.lock();
            let trial = match self.state() {
                BreakerState::HalfOpen => true,
                BreakerState::Open => guarded.open_after_trial,
                _ => false,
            };
            if trial {
                let t = guarded.trial;
                let permitted = self.config.permitted_calls_in_half_open;
                return (t.calls, t.failures, t.slow, permitted);
            }
        }
        let (calls, failures, slow) = self.window.totals(self.seconds_now());
        (calls, failures, slow, self.minimum_calls)
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

    fn exceeded(&self, calls: u32, failures: u32, slows: u32) -> bool {
        // A window of successes, the steady state, trips nothing: skip the arithmetic.
        (failures > 0 || slows > 0)
            && calls >= self.minimum_calls
            && self.rates_exceeded(calls, failures, slows)
    }

    fn rates_exceeded(&self, calls: u32, failures: u32, slows: u32) -> bool {
        let rate = |n: u32| f64::from(n) * 100.0 / f64::from(calls.max(1));
        rate(failures) >= self.config.failure_rate_threshold
            || (self.config.slow_call_duration.is_some()
                && rate(slows) >= self.config.slow_call_rate_threshold)
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
