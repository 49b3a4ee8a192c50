//! The lock-free metrics recorder behind every concrete handler.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use flext_types::LatencySummary;

use crate::histogram::{LatencyHistogram, LatencySnapshot};

/// Counts outcomes and records latencies of calls, lock-free.
///
/// Every counter is an atomic; recording a call is a handful of relaxed atomic adds, so any
/// number of tasks can record at once. [`MetricsRecorder::start`] returns a guard that keeps
/// the call counted as in flight until it is dropped, also when the caller drops the call's
/// future half-way.
///
/// ```
/// use std::time::Duration;
/// use flext_impl::MetricsRecorder;
///
/// let recorder = MetricsRecorder::new();
/// {
///     let _call = recorder.start();
///     assert_eq!(recorder.in_flight(), 1);
///     recorder.record(Duration::from_millis(2), true);
/// }
/// assert_eq!(recorder.in_flight(), 0);
/// assert_eq!((recorder.successes(), recorder.failures()), (1, 0));
/// assert_eq!(recorder.latency().count, 1);
/// ```
#[derive(Debug)]
pub struct MetricsRecorder {
    successes: AtomicU64,
    failures: AtomicU64,
    in_flight: AtomicU64,
    latency: LatencyHistogram,
}

/// Keeps a call counted as in flight until dropped; see [`MetricsRecorder::start`].
#[derive(Debug)]
#[must_use = "the call is in flight only while the guard lives"]
pub struct InFlight<'a> {
    recorder: &'a MetricsRecorder,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.recorder.in_flight.fetch_sub(1, Relaxed);
    }
}

impl MetricsRecorder {
    /// A recorder with every count at zero.
    pub fn new() -> Self {
        Self {
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
        }
    }

    /// Counts a call as in flight until the returned guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight { recorder: self }
    }

    /// Records a finished call: its outcome and its duration.
    #[inline]
    pub fn record(&self, elapsed: Duration, success: bool) {
        self.latency.record(elapsed);
        self.record_outcome(success);
    }

    /// Records a finished call's outcome without timing it.
    #[inline]
    pub fn record_outcome(&self, success: bool) {
        if success {
            self.successes.fetch_add(1, Relaxed);
        } else {
            self.failures.fetch_add(1, Relaxed);
        }
    }

    /// Calls that succeeded.
    #[inline]
    pub fn successes(&self) -> u64 {
        self.successes.load(Relaxed)
    }

    /// Calls that failed.
    #[inline]
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// Calls running now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// The time spent in timed calls.
    pub fn total_time(&self) -> Duration {
        self.latency.total()
    }

    /// The latency distribution of timed calls.
    pub fn latency(&self) -> LatencySummary {
        self.latency.summary()
    }

    /// The latency histogram's bucket counts now, to compare with a later snapshot.
    pub fn latency_snapshot(&self) -> LatencySnapshot {
        self.latency.snapshot()
    }

    /// Sets every count back to zero, except calls in flight, which are still running.
    pub fn reset(&self) {
        self.successes.store(0, Relaxed);
        self.failures.store(0, Relaxed);
        self.latency.reset();
    }
}

/// A started measurement of one call, read from the CPU's time-stamp counter where it is
/// reliable (through `quanta`), which costs a fraction of a system clock read.
///
/// ```
/// use flext_impl::{MetricsRecorder, Timer};
///
/// let recorder = MetricsRecorder::new();
/// let timer = Timer::start();
/// recorder.record(timer.elapsed(), true);
/// assert_eq!(recorder.latency().count, 1);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Timer {
    started: quanta::Instant,
}

impl Timer {
    /// Starts measuring now.
    #[inline]
    pub fn start() -> Self {
        Self {
            started: quanta::Instant::now(),
        }
    }

    /// Time since [`Timer::start`].
    #[inline]
    pub fn elapsed(&self) -> Duration {
        quanta::Instant::now().saturating_duration_since(self.started)
    }
}

impl Default for MetricsRecorder {
    fn default() -> Self {
        Self::new()
    }
}
