//! The recent past of every handler, sampled at a fixed interval, for the dashboard's
//! charts: requests, failures and latency percentiles of each interval.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use flext_impl::LatencySnapshot;
use flext_types::LatencySummary;
use serde::Serialize;

/// One interval of one handler (or of all of them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Point {
    /// The end of the interval, in milliseconds since the Unix epoch.
    pub(crate) t: i64,
    /// Its length in milliseconds (0 for the first sample, which has no interval).
    pub(crate) span_ms: i64,
    /// Calls finished in the interval.
    pub(crate) requests: u64,
    /// Calls that failed in the interval.
    pub(crate) failures: u64,
    /// Percentiles of the interval's timed calls, in milliseconds (0 without calls).
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
    pub(crate) p99_ms: f64,
}

/// Totals of one handler at one sample.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) latency: LatencySnapshot,
}

impl Totals {
    fn merge(&mut self, other: &Totals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.failures = self.failures.saturating_add(other.failures);
        self.latency.merge(&other.latency);
    }
}

/// The series of the last `keep` intervals.
#[derive(Debug)]
pub(crate) struct History {
    keep: usize,
    last: BTreeMap<String, Totals>,
    last_t: Option<i64>,
    handlers: BTreeMap<String, VecDeque<Point>>,
    all: VecDeque<Point>,
}

pub(crate) const ALL: &str = "*";

impl History {
    pub(crate) fn new(window: Duration, every: Duration) -> Self {
        let keep = (window.as_millis() / every.as_millis().max(1)).clamp(1, 100_000) as usize;
        Self {
            keep,
            last: BTreeMap::new(),
            last_t: None,
            handlers: BTreeMap::new(),
            all: VecDeque::new(),
        }
    }

    /// Records the interval ending at `t` from the handlers' totals now. A handler seen
    /// for the first time starts its series here (its earlier calls belong to no
    /// interval); one that is gone loses its series.
    pub(crate) fn record(&mut self, t: i64, now: BTreeMap<String, Totals>) {
        let span = self.last_t.map_or(0, |last| (t - last).max(0));
        self.last_t = Some(t);
        let mut all_now = Totals::default();
        let mut all_then = Totals::default();
        for (name, totals) in &now {
            let then = self.last.get(name);
            let series = self.handlers.entry(name.clone()).or_default();
            if let Some(then) = then {
                push(series, self.keep, point(t, span, totals, then));
                all_then.merge(then);
            } else {
                all_then.merge(totals);
            }
            all_now.merge(totals);
        }
        self.handlers.retain(|name, _| now.contains_key(name));
        push(
            &mut self.all,
            self.keep,
            point(t, span, &all_now, &all_then),
        );
        self.last = now;
    }

    /// Points after `since` (milliseconds since the epoch): of all handlers together and
    /// of each handler.
    pub(crate) fn since(&self, since: i64) -> (Vec<Point>, BTreeMap<String, Vec<Point>>) {
        let after = |series: &VecDeque<Point>| -> Vec<Point> {
            series.iter().filter(|p| p.t > since).copied().collect()
        };
        let handlers = self
            .handlers
            .iter()
            .map(|(name, series)| (name.clone(), after(series)))
            .collect();
        (after(&self.all), handlers)
    }
}

fn push(series: &mut VecDeque<Point>, keep: usize, point: Point) {
    if series.len() == keep {
        series.pop_front();
    }
    series.push_back(point);
}

fn point(t: i64, span_ms: i64, now: &Totals, then: &Totals) -> Point {
    let latency: LatencySummary = now.latency.since(&then.latency);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Point {
        t,
        span_ms,
        requests: now.requests.saturating_sub(then.requests),
        failures: now.failures.saturating_sub(then.failures),
        p50_ms: ms(latency.p50),
        p95_ms: ms(latency.p95),
        p99_ms: ms(latency.p99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_impl::MetricsRecorder;

    fn totals(recorder: &MetricsRecorder) -> Totals {
        Totals {
            requests: recorder.successes() + recorder.failures(),
            failures: recorder.failures(),
            latency: recorder.latency_snapshot(),
        }
    }

    #[test]
    fn each_point_holds_its_interval_only() {
        let mut history = History::new(Duration::from_secs(3), Duration::from_secs(1));
        let (a, b) = (MetricsRecorder::new(), MetricsRecorder::new());
        a.record(Duration::from_millis(1), true);
        let sample = |history: &mut History, t| {
            let now = BTreeMap::from([("a".to_owned(), totals(&a)), ("b".to_owned(), totals(&b))]);
            history.record(t, now);
        };
        sample(&mut history, 1_000);
        for _ in 0..3 {
            a.record(Duration::from_millis(20), false);
        }
        b.record(Duration::from_millis(100), true);
        sample(&mut history, 2_000);
        let (all, handlers) = history.since(0);
        assert_eq!(all.iter().map(|p| p.requests).collect::<Vec<_>>(), [0, 4]);
        assert_eq!(
            all.iter().map(|p| p.span_ms).collect::<Vec<_>>(),
            [0, 1_000]
        );
        assert_eq!(all[1].failures, 3);
        let a_points = &handlers["a"];
        assert_eq!(
            (a_points.len(), a_points[0].requests, a_points[0].failures),
            (1, 3, 3)
        );
        assert!((a_points[0].p50_ms - 20.0).abs() < 1.5, "{:?}", a_points[0]);
        assert!((all[1].p99_ms - 100.0).abs() < 7.0, "{:?}", all[1]);
        // Only the last three intervals are kept; `since` filters by time.
        for t in [3_000, 4_000, 5_000] {
            sample(&mut history, t);
        }
        let (all, _) = history.since(0);
        assert_eq!(
            all.iter().map(|p| p.t).collect::<Vec<_>>(),
            [3_000, 4_000, 5_000]
        );
        assert_eq!(history.since(4_000).0.len(), 1);
    }

    #[test]
    fn a_new_handler_starts_its_series_and_a_gone_one_loses_it() {
        let mut history = History::new(Duration::from_secs(60), Duration::from_secs(1));
        let a = MetricsRecorder::new();
        for _ in 0..5 {
            a.record(Duration::from_millis(1), true);
        }
        history.record(1, BTreeMap::from([("a".to_owned(), totals(&a))]));
        a.record(Duration::from_millis(1), true);
        let late = MetricsRecorder::new();
        late.record(Duration::from_millis(1), true);
        history.record(
            2,
            BTreeMap::from([
                ("a".to_owned(), totals(&a)),
                ("late".to_owned(), totals(&late)),
            ]),
        );
        let (all, handlers) = history.since(0);
        // The late handler's earlier call belongs to no interval.
        assert_eq!(all.last().map(|p| p.requests), Some(1));
        assert!(handlers["late"].is_empty());
        history.record(3, BTreeMap::new());
        assert!(history.since(0).1.is_empty());
    }
}
