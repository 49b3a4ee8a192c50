//! A lock-free latency histogram with log-linear buckets.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use flext_types::LatencySummary;

/// Sub-buckets per power of two, as a number of bits: 8 sub-buckets, so a bucket spans at
/// most 1/8 of its lower bound and the midpoint reported for a percentile is within about
/// 6% of any value in it.
const SUB_BITS: u32 = 3;
const SUB_COUNT: usize = 1 << SUB_BITS;
/// The highest power of two tracked: 2^42 ns is about 73 minutes; longer values share the
/// last bucket (the exact maximum is still kept).
const MAX_POWER: u32 = 42;
const BUCKETS: usize = SUB_COUNT + (MAX_POWER - SUB_BITS + 1) as usize * SUB_COUNT;

/// Records durations with relaxed atomics only (two read-modify-writes per value in the
/// steady state), so any number of tasks can record at once without a lock; snapshots read
/// the buckets without stopping recorders. The count is the sum of the buckets.
pub(crate) struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    min_nanos: AtomicU64,
    max_nanos: AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            min_nanos: AtomicU64::new(u64::MAX),
            max_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(nanos)].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
        // Most values move neither bound: a plain load avoids a read-modify-write.
        if nanos < self.min_nanos.load(Relaxed) {
            self.min_nanos.fetch_min(nanos, Relaxed);
        }
        if nanos > self.max_nanos.load(Relaxed) {
            self.max_nanos.fetch_max(nanos, Relaxed);
        }
    }

    pub(crate) fn total(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos.load(Relaxed))
    }

    pub(crate) fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Relaxed);
        }
        self.sum_nanos.store(0, Relaxed);
        self.min_nanos.store(u64::MAX, Relaxed);
        self.max_nanos.store(0, Relaxed);
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        // One load of the maximum: a reset between two loads made `min > max`, and `clamp`
        // below panics on that. The minimum is capped by it, so the bounds stay ordered
        // whatever a concurrent reset or record does.
        let max = self.max_nanos.load(Relaxed);
        let min = self.min_nanos.load(Relaxed).min(max);
        summarize(&counts, self.sum_nanos.load(Relaxed), min, max)
    }

    pub(crate) fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_nanos: self.sum_nanos.load(Relaxed),
        }
    }
}

/// The bucket counts of a latency histogram at one moment: subtract an earlier snapshot
/// ([`LatencySnapshot::since`]) for the distribution of the calls between the two, or add
/// others ([`LatencySnapshot::merge`]) for the distribution of several handlers.
///
/// ```
/// use std::time::Duration;
/// use flext_impl::MetricsRecorder;
///
/// let recorder = MetricsRecorder::new();
/// recorder.record(Duration::from_millis(1), true);
/// let before = recorder.latency_snapshot();
/// recorder.record(Duration::from_millis(40), true);
/// let interval = recorder.latency_snapshot().since(&before);
/// assert_eq!(interval.count, 1);
/// assert!(interval.p50 > Duration::from_millis(37) && interval.p50 < Duration::from_millis(43));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LatencySnapshot {
    counts: Box<[u64]>,
    sum_nanos: u64,
}

impl LatencySnapshot {
    /// A snapshot of no calls.
    pub fn empty() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            sum_nanos: 0,
        }
    }

    /// The calls it counts.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The distribution of the calls recorded after `earlier` and up to this snapshot. A
    /// bucket with fewer calls than in `earlier` (the recorder was reset in between)
    /// counts none. The minimum and maximum are those of the buckets the calls fell in,
    /// each within about 6% of the true value, like the percentiles.
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySummary {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .zip(earlier.counts.iter())
            .map(|(now, then)| now.saturating_sub(*then))
            .collect();
        let (Some(first), Some(last)) = (
            counts.iter().position(|c| *c > 0),
            counts.iter().rposition(|c| *c > 0),
        ) else {
            return LatencySummary::default();
        };
        let sum = self.sum_nanos.saturating_sub(earlier.sum_nanos);
        summarize(&counts, sum, midpoint_of(first), midpoint_of(last))
    }

    /// Adds the calls of `other` to this snapshot.
    pub fn merge(&mut self, other: &LatencySnapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
    }
}

impl Default for LatencySnapshot {
    fn default() -> Self {
        Self::empty()
    }
}

impl std::fmt::Debug for LatencySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencySnapshot")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

/// The summary of bucket `counts` whose values add up to `sum_nanos`, lie within
/// `min..=max`.
fn summarize(counts: &[u64], sum_nanos: u64, min: u64, max: u64) -> LatencySummary {
    let count: u64 = counts.iter().sum();
    if count == 0 {
        return LatencySummary::default();
    }
    let percentile = |q: f64| {
        // The rank of the q-th percentile, 1-based: the smallest value with at least
        // q * count values at or below it.
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(midpoint_of(i).clamp(min, max));
            }
        }
        Duration::from_nanos(max)
    };
    LatencySummary {
        count,
        mean: Duration::from_nanos(sum_nanos / count),
        min: Duration::from_nanos(min),
        p50: percentile(0.50),
        p95: percentile(0.95),
        p99: percentile(0.99),
        max: Duration::from_nanos(max),
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count: u64 = self.buckets.iter().map(|b| b.load(Relaxed)).sum();
        f.debug_struct("LatencyHistogram")
            .field("count", &count)
            .finish_non_exhaustive()
    }
}

fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB_COUNT as u64 {
        return nanos as usize;
    }
    let power = 63 - nanos.leading_zeros();
    if power > MAX_POWER {
        return BUCKETS - 1;
    }
    let shift = power - SUB_BITS;
    let sub = ((nanos >> shift) as usize) - SUB_COUNT;
    SUB_COUNT + shift as usize * SUB_COUNT + sub
}

/// The value in the middle of bucket `index`.
fn midpoint_of(index: usize) -> u64 {
    if index < SUB_COUNT {
        return index as u64;
    }
    let shift = ((index - SUB_COUNT) / SUB_COUNT) as u32;
    let sub = ((index - SUB_COUNT) % SUB_COUNT) as u64;
    let lower = (SUB_COUNT as u64 + sub) << shift;
    lower + (1u64 << shift) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for nanos in (0..200_000u64).chain([1 << 30, (1 << 42) - 1, 1 << 42, u64::MAX]) {
            let b = bucket_of(nanos);
            assert!(b >= last, "bucket order broke at {nanos}");
            assert!(b < BUCKETS);
            last = b;
        }
        for nanos in [9u64, 17, 1000, 123_456, 98_765_432] {
            let mid = midpoint_of(bucket_of(nanos));
            let error = (mid as f64 - nanos as f64).abs() / nanos as f64;
            assert!(error <= 0.0625 + 1e-9, "{nanos} reported as {mid}");
        }
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let h = LatencyHistogram::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_micros(ms * 100));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, Duration::from_micros(100));
        assert_eq!(s.max, Duration::from_micros(100_000));
        let close = |actual: Duration, expected_us: f64| {
            let us = actual.as_secs_f64() * 1e6;
            assert!(
                (us - expected_us).abs() / expected_us < 0.07,
                "{us} vs {expected_us}"
            );
        };
        close(s.p50, 50_000.0);
        close(s.p95, 95_000.0);
        close(s.p99, 99_000.0);
        close(s.mean, 50_050.0);
    }

    #[test]
    fn single_value_reports_itself_and_reset_clears() {
        let h = LatencyHistogram::new();
        h.record(Duration::from_millis(3));
        let s = h.summary();
        assert_eq!(
            (s.p50, s.p99, s.min, s.max),
            (
                Duration::from_millis(3),
                Duration::from_millis(3),
                Duration::from_millis(3),
                Duration::from_millis(3)
            )
        );
        h.reset();
        assert_eq!(h.summary(), LatencySummary::default());
        assert_eq!(h.total(), Duration::ZERO);
    }

    #[test]
    fn a_snapshot_difference_is_the_distribution_of_the_calls_between() {
        let h = LatencyHistogram::new();
        for _ in 0..100 {
            h.record(Duration::from_millis(1));
        }
        let before = h.snapshot();
        assert_eq!(before.count(), 100);
        for _ in 0..98 {
            h.record(Duration::from_millis(10));
        }
        h.record(Duration::from_millis(200));
        h.record(Duration::from_millis(200));
        let interval = h.snapshot().since(&before);
        assert_eq!(interval.count, 100);
        let near = |d: Duration, ms: f64| (d.as_secs_f64() * 1e3 - ms).abs() / ms < 0.07;
        assert!(near(interval.p50, 10.0), "{:?}", interval.p50);
        assert!(near(interval.p95, 10.0), "{:?}", interval.p95);
        assert!(near(interval.p99, 200.0), "{:?}", interval.p99);
        assert!(near(interval.min, 10.0) && near(interval.max, 200.0));
        assert!(
            near(interval.mean, (98.0 * 10.0 + 400.0) / 100.0),
            "{:?}",
            interval.mean
        );
        // Nothing recorded since: an empty summary; a reset in between counts nothing.
        let now = h.snapshot();
        assert_eq!(now.since(&now), LatencySummary::default());
        h.reset();
        assert_eq!(h.snapshot().since(&now), LatencySummary::default());
    }

    #[test]
    fn merged_snapshots_add_their_calls() {
        let (a, b) = (LatencyHistogram::new(), LatencyHistogram::new());
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(100));
        b.record(Duration::from_millis(100));
        let mut all = LatencySnapshot::empty();
        all.merge(&a.snapshot());
        all.merge(&b.snapshot());
        let summary = all.since(&LatencySnapshot::default());
        assert_eq!(summary.count, 3);
        assert!(summary.p50 > Duration::from_millis(93), "{:?}", summary.p50);
        assert!(summary.min < Duration::from_millis(2));
        assert_eq!(summary.mean, Duration::from_nanos(201_000_000 / 3));
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let h = std::sync::Arc::new(LatencyHistogram::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(Duration::from_nanos(t * 1000 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.summary().count, 40_000);
    }

    /// Scrapes racing the maximum going down, as a reset stores it. When the summary loaded
    /// the maximum twice, `clamp` panicked after 8,627 to 26,080 scrapes (four runs, debug
    /// build, two busy cores).
    const RACE_SCRAPES: u32 = 100_000;

    #[test]
    fn a_summary_during_a_reset_never_panics() {
        use std::sync::atomic::AtomicBool;

        let h = LatencyHistogram::new();
        let value = Duration::from_millis(5);
        h.record(value);
        let stop = AtomicBool::new(false);
        let (scrapes, first_bad) = std::thread::scope(|scope| {
            // What a reset and the next record do to the maximum, as fast as they can; the
            // buckets keep a count, so every summary computes its percentiles.
            scope.spawn(|| {
                while !stop.load(Relaxed) {
                    h.max_nanos.store(0, Relaxed);
                    h.max_nanos.fetch_max(value.as_nanos() as u64, Relaxed);
                }
            });
            let scraper = scope.spawn(|| {
                let mut first_bad = None;
                for scrape in 0..RACE_SCRAPES {
                    let s = h.summary();
                    if first_bad.is_none() && !(s.min <= s.p50 && s.p50 <= s.max) {
                        first_bad = Some(scrape);
                    }
                }
                (RACE_SCRAPES, first_bad)
            });
            let outcome = scraper.join();
            stop.store(true, Relaxed);
            outcome.expect("no summary panics")
        });
        assert_eq!(
            first_bad, None,
            "bounds out of order after {scrapes} scrapes"
        );
    }
}
