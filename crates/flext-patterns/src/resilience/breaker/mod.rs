//! [`CircuitBreaker`]: resilience4j's circuit breaker, lock-free while closed.
//!
//! This module holds the state machine; its settings live in `config`, the sliding window in
//! `window` and the permit of one call in `permit`.

mod config;
mod permit;
mod window;

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

pub use config::{CircuitBreakerConfig, SlidingWindow};
pub use permit::Permit;
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
        self.inner.acquire().map(|(generation, trial)| {
            let started = self.inner.config.slow_call_duration.map(|_| Instant::now());
            Permit::new(&self.inner, generation, trial, started)
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
