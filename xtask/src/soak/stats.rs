//! What the soak measures: operations per kind, their latencies in a fixed-size
//! histogram (so the measuring does not grow the memory it watches), and resident memory.

use std::time::Duration;

/// The kinds of operation the driver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// A deposit sent through the command bus.
    Deposit,
    /// A withdrawal sent through the command bus (some are refused: insufficient funds).
    Withdraw,
    /// A balance query through the query bus.
    Query,
    /// A heartbeat published on the event bus.
    Publish,
    /// A transfer saga run (debit, credit; refund when the credit is refused).
    Transfer,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [Self; 5] = [
        Self::Deposit,
        Self::Withdraw,
        Self::Query,
        Self::Publish,
        Self::Transfer,
    ];

    /// The kind's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Deposit => "deposit (command)",
            Self::Withdraw => "withdraw (command)",
            Self::Query => "balance (query)",
            Self::Publish => "heartbeat (publish)",
            Self::Transfer => "transfer (saga)",
        }
    }

    /// The kind's index in [`OpKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Sub-buckets per power of two: each bucket spans at most 1/16 of its value (6%).
const SUB_BUCKETS: u64 = 16;
/// Powers of two of nanoseconds covered: up to 2^40 ns (about 18 minutes).
const POWERS: u64 = 40;

/// A latency histogram of fixed size: log-linear buckets of nanoseconds, each at most
/// 6% wide, so a percentile read from it is within 6% of the exact one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; (POWERS * SUB_BUCKETS) as usize],
            count: 0,
            max_ns: 0,
        }
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency (longer ones than the histogram covers count in its last
    /// bucket).
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let index = Self::bucket(ns).min(self.buckets.len() - 1);
        self.buckets[index] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Adds `other`'s samples.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The longest latency recorded.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The latency below which `quantile` (0 to 1) of the samples fall: the upper bound of
    /// its bucket, never above the maximum recorded; zero for an empty histogram.
    pub fn percentile(&self, quantile: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper = Self::upper_bound(index as u64);
                return Duration::from_nanos(upper.min(self.max_ns));
            }
        }
        self.max()
    }

    /// The bucket of `ns`: exact below 16 ns, then 16 per power of two.
    fn bucket(ns: u64) -> usize {
        if ns < SUB_BUCKETS {
            return ns as usize;
        }
        let power = u64::from(63 - ns.leading_zeros()); // at least 4
        let shift = power - 4;
        let sub = (ns >> shift) - SUB_BUCKETS; // 0..16
        ((power - 3) * SUB_BUCKETS + sub) as usize
    }

    /// The largest value of bucket `index`.
    fn upper_bound(index: u64) -> u64 {
        if index < SUB_BUCKETS {
            return index;
        }
        let power = index / SUB_BUCKETS + 3;
        let sub = index % SUB_BUCKETS;
        let shift = power - 4;
        ((SUB_BUCKETS + sub + 1) << shift) - 1
    }
}

/// The process's resident memory in bytes, from `/proc/self/statm` (its second field,
/// in pages of 4 KiB, the page size of the Linux machines this runs on); `None` where it
/// cannot be read.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The machine's one-minute load average, from `/proc/loadavg`; `None` where it cannot be
/// read.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Judges resident memory: `end` may exceed `start` (both after warm-up) by at most 10%
/// of `start` plus 32 MiB. Returns the allowance.
///
/// Why this much: after warm-up what may still grow without a leak is the allocator's
/// fragmentation and caches that fill up to a bound (SQLite's page cache, 2 MiB per pooled
/// connection; the repository's aggregate cache, one entry per account). A leak of 100
/// bytes per operation at a thousand operations a second is 54 MiB in nine minutes: caught.
pub fn rss_allowance(start: u64) -> u64 {
    start / 10 + 32 * 1024 * 1024
}
