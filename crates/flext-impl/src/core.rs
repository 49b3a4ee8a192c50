//! The shared core of every concrete handler: name, kind, configuration, metrics, state, and
//! the guarded execution of one call.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock};

use flext_constants::{ErrorCode, HandlerKind, HandlerState, WireEnum};
use flext_types::{ConfigSource, FlextResult, HandlerConfig, HandlerMetrics};
use tracing::Instrument;

use crate::{Deadline, DeadlineSubject, MetricsRecorder, catch_panic};

/// Name, kind, configuration, metrics and state of one handler, and the guarded execution
/// of its calls ([`HandlerCore::run`]).
///
/// Every concrete handler of this crate owns one and exposes it through
/// [`ManagedHandler::core`]. The core is lock-free on the call path: the deadline is mirrored
/// in an atomic, metrics are atomics, and the state is derived from the number of calls in
/// flight and the last outcome. The configuration lock is taken only to read or replace the
/// whole configuration, never across an `.await`.
#[derive(Debug)]
pub struct HandlerCore {
    name: String,
    kind: HandlerKind,
    config: RwLock<HandlerConfig>,
    timeout_ms: AtomicU64,
    timing_enabled: AtomicBool,
    recorder: MetricsRecorder,
    last_outcome: AtomicU8,
}

impl HandlerCore {
    /// A core with the default configuration, idle, with zeroed metrics.
    pub fn new(name: impl Into<String>, kind: HandlerKind) -> Self {
        let config = HandlerConfig::default();
        Self {
            name: name.into(),
            kind,
            timeout_ms: AtomicU64::new(config.timeout_ms),
            timing_enabled: AtomicBool::new(config.enable_performance_metrics),
            config: RwLock::new(config),
            recorder: MetricsRecorder::new(),
            last_outcome: AtomicU8::new(state_index(HandlerState::Idle)),
        }
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handler's kind.
    pub fn kind(&self) -> HandlerKind {
        self.kind
    }

    /// `Processing` while any call runs; otherwise the outcome of the last call (`Completed`,
    /// `Failed` or `Timeout`), or `Idle` before the first call and after a reset.
    pub fn state(&self) -> HandlerState {
        if self.recorder.in_flight() > 0 {
            HandlerState::Processing
        } else {
            HandlerState::ALL[usize::from(self.last_outcome.load(Relaxed))]
        }
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> HandlerConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies a whole configuration or a partial JSON object. A bad value is an
    /// `INVALID_ARGUMENT` error naming it, and leaves the configuration unchanged.
    pub fn configure(&self, source: impl ConfigSource) -> FlextResult<()> {
        let mut config = self.config.write().unwrap_or_else(PoisonError::into_inner);
        let next = source.apply_to(&config)?;
        self.timeout_ms.store(next.timeout_ms, Relaxed);
        self.timing_enabled
            .store(next.enable_performance_metrics, Relaxed);
        *config = next;
        Ok(())
    }

    /// The recorder behind [`HandlerCore::metrics`].
    pub fn recorder(&self) -> &MetricsRecorder {
        &self.recorder
    }

    /// A snapshot of the handler's metrics.
    pub fn metrics(&self) -> HandlerMetrics {
        let successful_requests = self.recorder.successes();
        let failed_requests = self.recorder.failures();
        let requests_processed = successful_requests + failed_requests;
        let total_processing_time = self.recorder.total_time();
        let latency = self.recorder.latency();
        HandlerMetrics {
            handler_name: self.name.clone(),
            state: self.state(),
            requests_processed,
            successful_requests,
            failed_requests,
            error_count: failed_requests,
            in_flight: self.recorder.in_flight(),
            total_processing_time,
            average_processing_time: latency.mean,
            latency,
        }
    }

    /// This core's identity while it is borrowed (its address), which deadlines use to
    /// tell whether this core or another one inside a call recorded it.
    pub(crate) fn identity(&self) -> std::num::NonZeroUsize {
        let address = std::ptr::from_ref(self).addr();
        std::num::NonZeroUsize::new(address).unwrap_or(std::num::NonZeroUsize::MIN)
    }

    /// Records a call that a deadline outside the handler cut short: a failure of
    /// `elapsed`, state `Timeout`. [`Deadline::run_on`] calls it for a handler whose calls
    /// do not run through [`HandlerCore::run`] (which records its calls itself).
    pub fn record_timeout(&self, elapsed: std::time::Duration) {
        self.recorder.record(elapsed, false);
        self.last_outcome
            .store(state_index(HandlerState::Timeout), Relaxed);
    }

    /// Zeroes the metrics; calls in flight still finish and are counted.
    pub fn reset_metrics(&self) {
        self.recorder.reset();
    }

    /// Zeroes the metrics and returns the state to `Idle`.
    pub fn reset(&self) {
        self.recorder.reset();
        self.last_outcome
            .store(state_index(HandlerState::Idle), Relaxed);
    }

    /// Runs one call of this handler, guarded:
    ///
    /// - it counts as in flight (state `Processing`) until it ends or its future is dropped;
    /// - it runs inside a `flext.handle` tracing span naming the handler;
    /// - past the configured deadline (a [`Deadline`]) it ends with a `TIMEOUT` error, also
    ///   when its result arrives after the deadline without the step having yielded before;
    ///   under a deadline of its caller (the bus's `TimeoutMiddleware`, a `TimeoutHandler`)
    ///   the earlier of the two applies, and the call is recorded here once, with the outcome
    ///   the caller's deadline returns; a call that ends with any `TIMEOUT` error (also one
    ///   from a service it called) leaves state `Timeout`;
    /// - a panic ends it with an `OPERATION_ERROR` "Handler execution failed: …" (see
    ///   [`catch_panic`]) and state `Failed`; the process and the handler live on;
    /// - its outcome and duration are recorded (durations only while
    ///   `enable_performance_metrics` is on).
    ///
    /// The deadline needs a tokio runtime with time enabled (`#[tokio::main]` and
    /// `enable_all()` enable it). Outside a tokio runtime the call runs without a deadline;
    /// inside one whose timers are disabled, every call fails with an `OPERATION_ERROR`
    /// saying so, before the handler runs.
    pub async fn run<T, F>(&self, call: F) -> FlextResult<T>
    where
        F: Future<Output = FlextResult<T>> + Send,
    {
        let _in_flight = self.recorder.start();
        let started = tokio::time::Instant::now();
        let timeout_ms = self.timeout_ms.load(Relaxed);
        // Only a span a subscriber wants: with `tracing`'s `log` feature on (sqlx turns it
        // on) even a disabled span formats its fields for the `log` crate.
        let span = if tracing::span_enabled!(tracing::Level::DEBUG) {
            tracing::debug_span!("flext.handle", handler = %self.name, kind = self.kind.as_str())
        } else {
            tracing::Span::none()
        };
        // The deadline sits inside the panic guard, so a panic in the step and a runtime
        // without timers both end as errors.
        let deadline = Deadline::from_millis(timeout_ms);
        let guarded = catch_panic(deadline.run(DeadlineSubject::Handler(&self.name), call));
        let result = guarded.instrument(span).await;
        let state = match &result {
            Ok(_) => HandlerState::Completed,
            Err(error) if error.is(ErrorCode::Timeout) => HandlerState::Timeout,
            Err(_) => HandlerState::Failed,
        };
        let success = result.is_ok();
        if self.timing_enabled.load(Relaxed) {
            self.recorder.record(started.elapsed(), success);
        } else {
            self.recorder.record_outcome(success);
        }
        self.last_outcome.store(state_index(state), Relaxed);
        crate::deadline::report_recorded(self.identity());
        if let Err(error) = &result {
            tracing::debug!(handler = %self.name, code = error.code().as_str(), %error, "handler call failed");
        }
        result
    }
}

fn state_index(state: HandlerState) -> u8 {
    state as u8
}

/// A concrete handler with a [`HandlerCore`]: its configuration, metrics and state can be
/// read and changed through this trait, also when the handler is stored as a trait object.
pub trait ManagedHandler: Send + Sync {
    /// The handler's core.
    fn core(&self) -> &HandlerCore;

    /// The handler's kind.
    fn kind(&self) -> HandlerKind {
        self.core().kind()
    }

    /// A snapshot of the handler's metrics.
    fn metrics(&self) -> HandlerMetrics {
        self.core().metrics()
    }

    /// The handler's state.
    fn state(&self) -> HandlerState {
        self.core().state()
    }

    /// A copy of the handler's configuration.
    fn handler_config(&self) -> HandlerConfig {
        self.core().config()
    }

    /// Applies a whole [`HandlerConfig`] or a partial JSON object; see
    /// [`HandlerCore::configure`].
    fn configure(&self, source: impl ConfigSource) -> FlextResult<()>
    where
        Self: Sized,
    {
        self.core().configure(source)
    }

    /// Zeroes the metrics and returns the state to `Idle`.
    fn reset(&self) {
        self.core().reset();
    }

    /// Zeroes the metrics.
    fn reset_metrics(&self) {
        self.core().reset_metrics();
    }
}
