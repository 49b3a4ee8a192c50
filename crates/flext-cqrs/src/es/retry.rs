//! How projections and relays retry a failing event: [`Backoff`] between tries,
//! [`ErrorClass`] to tell passing failures from the others, and [`DeadLetterPolicy`] for
//! what a dead letter does to its stream.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_types::FlextError;

/// The waits between tries of one event: exponential, capped, with jitter.
///
/// The vocabulary is `flext_patterns::RetryConfig`'s (initial backoff, multiplier, max
/// backoff, jitter); `flext-patterns` sits above this crate, so the event-sourcing side
/// keeps its own copy of the few lines that compute a wait. Values out of range are read
/// as the nearest valid one: a multiplier below 1 (or not finite) as 1, a jitter outside
/// 0..=1 as the nearest bound, a max backoff below the initial one as the initial one.
/// A wait is never longer than the max backoff, jitter included, and a zero initial
/// backoff stays zero however many failures there were.
///
/// ```
/// use std::time::Duration;
/// use flext_cqrs::Backoff;
///
/// let backoff = Backoff::exponential(Duration::from_millis(100)).with_jitter(0.0);
/// assert_eq!(backoff.delay(1), Duration::from_millis(100));
/// assert_eq!(backoff.delay(3), Duration::from_millis(400));
/// assert_eq!(Backoff::fixed(Duration::from_secs(1)).delay(9), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The wait after the first failure (default 100 ms).
    pub initial_backoff: Duration,
    /// Each later wait is this many times the one before (default 2).
    pub multiplier: f64,
    /// The longest wait, jitter included (default 10 s).
    pub max_backoff: Duration,
    /// Each wait varies at random by up to this fraction either way (default 0.2), and is
    /// then cut to `max_backoff`: a wait at the cap only gets shorter.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::exponential(Duration::from_millis(100))
    }
}

impl Backoff {
    /// Waits starting at `initial`, doubling up to 10 s, with ±20% jitter (never past 10 s).
    pub const fn exponential(initial: Duration) -> Self {
        Self {
            initial_backoff: initial,
            multiplier: 2.0,
            max_backoff: Duration::from_secs(10),
            jitter: 0.2,
        }
    }

    /// The same wait `delay` every time, without jitter.
    pub const fn fixed(delay: Duration) -> Self {
        Self {
            initial_backoff: delay,
            multiplier: 1.0,
            max_backoff: delay,
            jitter: 0.0,
        }
    }

    /// No wait at all between tries.
    pub const fn none() -> Self {
        Self::fixed(Duration::ZERO)
    }

    /// The wait after the first failure.
    #[must_use]
    pub const fn with_initial_backoff(mut self, value: Duration) -> Self {
        self.initial_backoff = value;
        self
    }

    /// Each later wait is this many times the one before.
    #[must_use]
    pub const fn with_multiplier(mut self, value: f64) -> Self {
        self.multiplier = value;
        self
    }

    /// The longest wait, jitter included.
    #[must_use]
    pub const fn with_max_backoff(mut self, value: Duration) -> Self {
        self.max_backoff = value;
        self
    }

    /// Each wait varies at random by up to this fraction either way.
    #[must_use]
    pub const fn with_jitter(mut self, value: f64) -> Self {
        self.jitter = value;
        self
    }

    /// The wait after failure number `failure` (counting from 1), jitter included, at most
    /// `max_backoff`.
    pub fn delay(&self, failure: u32) -> Duration {
        let multiplier = if self.multiplier.is_finite() {
            self.multiplier.max(1.0)
        } else {
            1.0
        };
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        let max_backoff = self.max_backoff.max(self.initial_backoff);
        let max = max_backoff.as_secs_f64();
        let initial = self.initial_backoff.as_secs_f64();
        let exponent = i32::try_from(failure.saturating_sub(1)).unwrap_or(i32::MAX);
        let growth = multiplier.powi(exponent);
        // Saturating, and never `0 × ∞` (NaN): zero stays zero, an overflow is the cap.
        let base = if initial == 0.0 {
            0.0
        } else if growth.is_finite() {
            (initial * growth).min(max)
        } else {
            max
        };
        let spread = if jitter == 0.0 {
            1.0
        } else {
            1.0 + jitter * (unit_random() * 2.0 - 1.0)
        };
        let wait = (base * spread).max(0.0);
        if wait >= max {
            return max_backoff;
        }
        Duration::try_from_secs_f64(wait).unwrap_or(max_backoff)
    }
}

/// A number in `0.0..1.0`, different on every call: enough for jitter, from the standard
/// library's randomly keyed hasher (this layer has no random-number crate).
fn unit_random() -> f64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Relaxed));
    // The top 53 bits make an exact f64 fraction.
    (hasher.finish() >> 11) as f64 / (1_u64 << 53) as f64
}

/// How a failure of one event is retried (see [`ProjectionConfig`](crate::ProjectionConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// A passing failure of the world around the projection (a database down, a timeout,
    /// a rate limit): retried with backoff without using up an attempt, until
    /// `give_up_after` has passed since the event first failed.
    Transient,
    /// Retried with backoff, each try using up one of `max_attempts`.
    Counted,
    /// Not worth another try: dead-lettered at once.
    Permanent,
    /// Not the event's fault but the setup's (an [`EventRelay`](crate::EventRelay) whose
    /// subscribers of one event share a name, say): the runner stops with the error. The
    /// event is neither retried nor dead-lettered and the checkpoint stays before it, so
    /// the next run, once the setup is fixed, tries it again. A retry of a dead letter that
    /// meets such an error stops with it and leaves the letter as it was.
    Stop,
}

/// The error codes [`ErrorClass::of`] calls transient: `STORAGE_ERROR`, `TIMEOUT` and
/// `RATE_LIMITED`.
pub const TRANSIENT_BY_DEFAULT: [ErrorCode; 3] = [
    ErrorCode::StorageError,
    ErrorCode::Timeout,
    ErrorCode::RateLimited,
];

impl ErrorClass {
    /// The default classification: [`TRANSIENT_BY_DEFAULT`] codes are
    /// [`Transient`](ErrorClass::Transient), every other error (a panic included) is
    /// [`Counted`](ErrorClass::Counted), except the errors a runner or relay of this crate
    /// raises to stop (a relay's subscribers sharing a name), which are
    /// [`Stop`](ErrorClass::Stop) whatever the classifier says.
    ///
    /// ```
    /// use flext_cqrs::ErrorClass;
    /// use flext_types::FlextError;
    ///
    /// assert_eq!(ErrorClass::of(&FlextError::storage("db down")), ErrorClass::Transient);
    /// assert_eq!(ErrorClass::of(&FlextError::validation("bad")), ErrorClass::Counted);
    /// ```
    pub fn of(error: &FlextError) -> Self {
        if stops_runner(error) {
            Self::Stop
        } else if TRANSIENT_BY_DEFAULT.contains(&error.code()) {
            Self::Transient
        } else {
            Self::Counted
        }
    }
}

/// What a dead letter does to the later events of its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterPolicy {
    /// Events of one stream are applied in order or not at all (Axon's sequenced dead-letter
    /// queue, the default): once an event of a stream is dead-lettered, each later event of
    /// that stream is recorded as a dead letter parked behind it, untried, until the
    /// sequence is retried or discarded. Other streams go on.
    #[default]
    Sequenced,
    /// A dead letter stands alone: later events of its stream are applied as usual.
    Skip,
}

/// The mark of an error that stops a runner ([`ErrorClass::Stop`]): the error's source,
/// holding the error as it was raised, so that the mark survives being passed on (a relay's
/// error reaches its runner through `Projection::apply`).
#[derive(Debug)]
struct StopsRunner(FlextError);

impl std::fmt::Display for StopsRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stops the runner: {}", self.0)
    }
}

impl std::error::Error for StopsRunner {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// `error`, marked to stop the runner that meets it, whatever its classifier says.
pub(crate) fn stopping(error: FlextError) -> FlextError {
    if stops_runner(&error) {
        return error;
    }
    let mut marked = FlextError::new(error.code(), error.message().to_owned());
    if let Some(data) = error.data() {
        marked = marked.with_data(data.clone());
    }
    marked.with_source(StopsRunner(error))
}

/// Whether `error` was marked by [`stopping`].
pub(crate) fn stops_runner(error: &FlextError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    // `FlextError` keeps its source in an `Arc`, which may be what `source` hands out.
    std::error::Error::source(error).is_some_and(|source| {
        source.is::<StopsRunner>()
            || source
                .downcast_ref::<Shared>()
                .is_some_and(|shared| shared.is::<StopsRunner>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_error_keeps_its_code_message_and_data_and_is_known_as_such() {
        let plain = FlextError::invalid_argument("two subscribers named 'a'")
            .with_data(serde_json::json!({ "subscriber": "a" }));
        assert!(!stops_runner(&plain));
        assert_eq!(ErrorClass::of(&plain), ErrorClass::Counted);
        let marked = stopping(plain.clone());
        assert!(stops_runner(&marked));
        assert!(stops_runner(&marked.clone()), "through a clone");
        assert!(stops_runner(&stopping(marked.clone())), "marked once");
        assert_eq!(ErrorClass::of(&marked), ErrorClass::Stop);
        assert_eq!(marked, plain, "same code, message and data");
        let mark = std::error::Error::source(&marked).expect("the mark is the source");
        assert_eq!(
            mark.to_string(),
            "stops the runner: two subscribers named 'a'"
        );
        assert_eq!(
            mark.source().map(ToString::to_string).as_deref(),
            Some("two subscribers named 'a'"),
            "the error as raised is under the mark"
        );
    }

    #[test]
    fn jitter_spreads_waits_on_both_sides_of_the_nominal_wait_within_its_bounds() {
        let backoff = Backoff::default();
        let nominal = backoff.initial_backoff.as_secs_f64();
        let waits: Vec<f64> = (0..2000)
            .map(|_| backoff.delay(1).as_secs_f64() / nominal)
            .collect();
        let (low, high) = waits
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), w| (lo.min(*w), hi.max(*w)));
        assert!(low >= 0.8 - 1e-9 && high <= 1.2 + 1e-9, "{low}..{high}");
        assert!(
            low < 0.85 && high > 1.15,
            "both sides, to the edges: {low}..{high}"
        );
        let distinct: std::collections::BTreeSet<u64> =
            waits.iter().map(|w| (w * 1e6) as u64).collect();
        assert!(distinct.len() > 1000, "{} distinct waits", distinct.len());
    }
}
