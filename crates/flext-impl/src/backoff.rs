//! [`Backoff`]: the waits between tries of a failing call or event.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The waits between tries of one event: exponential, capped, with jitter.
///
/// The one computation of a wait between tries: `flext_patterns::Retry` (with
/// `RetryConfig`'s initial backoff, multiplier, max backoff and jitter) and the
/// event-sourcing side (projection runners and relays) both use it. Values out of range are read
/// as the nearest valid one: a multiplier below 1 (or not finite) as 1, a jitter outside
/// 0..=1 as the nearest bound, a max backoff below the initial one as the initial one.
/// A wait is never longer than the max backoff, jitter included, and a zero initial
/// backoff stays zero however many failures there were.
///
/// ```
/// use std::time::Duration;
/// use flext_impl::Backoff;
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

#[cfg(test)]
mod tests {
    use super::*;

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
