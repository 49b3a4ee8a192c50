//! The sliding window of a circuit breaker: the last N outcomes in a ring of atomic slots,
//! or the last N seconds in a ring of atomic buckets, each with running totals.
//!
//! A count window's slot swap and the running total's adjustment are two steps, so a total
//! can read one too low or too high for a moment (a result that swapped a failure out
//! adjusts before the one that swapped it in). The totals are therefore signed, every change
//! of a slot (a result or a reset) adjusts them by exactly what it replaced, so they are
//! exact once no result is in flight, and reads clamp them to `0..=calls`: a rate is never
//! below 0 % or above 100 %.

use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};

use super::SlidingWindow;

/// The calls a breaker measures.
pub(super) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

const RECORDED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// The last N outcomes in a ring of atomic slots, with running totals.
pub(super) struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    failures: AtomicI32,
    slow: AtomicI32,
}

/// Outcomes per second in a ring of atomic buckets.
pub(super) struct TimeWindow {
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
    pub(super) fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::CountBased(size) => Window::Count(CountWindow {
                slots: (0..size.max(1)).map(|_| AtomicU8::new(0)).collect(),
                next: AtomicU64::new(0),
                failures: AtomicI32::new(0),
                slow: AtomicI32::new(0),
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
    pub(super) fn record(
        &self,
        failed: bool,
        slow: bool,
        now: impl FnOnce() -> u64,
    ) -> (u32, u32, u32) {
        // A count-based window's totals do not depend on the second.
        let second = match self {
            Window::Count(window) => {
                let index = window.next.fetch_add(1, SeqCst) % window.slots.len() as u64;
                let outcome =
                    RECORDED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
                window.replace(index as usize, outcome);
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

    pub(super) fn totals(&self, second: u64) -> (u32, u32, u32) {
        match self {
            Window::Count(window) => {
                let calls = window.next.load(SeqCst).min(window.slots.len() as u64) as u32;
                let within = |total: &AtomicI32| {
                    u32::try_from(total.load(SeqCst)).map_or(0, |n| n.min(calls))
                };
                (calls, within(&window.failures), within(&window.slow))
            }
            Window::Time(window) => {
                let span = window.buckets.len() as u64;
                let (calls, failures, slow) = window
                    .buckets
                    .iter()
                    .filter(|b| {
                        let stamp = b.second.load(SeqCst);
                        stamp != 0 && stamp + span > second + 1
                    })
                    .fold((0u32, 0u32, 0u32), |(c, f, s), b| {
                        (
                            c.saturating_add(b.calls.load(SeqCst)),
                            f.saturating_add(b.failures.load(SeqCst)),
                            s.saturating_add(b.slow.load(SeqCst)),
                        )
                    });
                // A bucket zeroed while a result was counting into it may hold a failure
                // without its call.
                (calls, failures.min(calls), slow.min(calls))
            }
        }
    }

    pub(super) fn reset(&self) {
        match self {
            Window::Count(window) => {
                window.next.store(0, SeqCst);
                // Through the slots, not by zeroing the totals: a result in flight that swapped
                // a slot before this then adjusts a total that still holds what it swapped.
                for index in 0..window.slots.len() {
                    window.replace(index, 0);
                }
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

impl CountWindow {
    /// Puts `outcome` in slot `index` and moves the totals by what it replaced.
    fn replace(&self, index: usize, outcome: u8) {
        let old = self.slots[index].swap(outcome, SeqCst);
        adjust(&self.failures, old & FAILED != 0, outcome & FAILED != 0);
        adjust(&self.slow, old & SLOW != 0, outcome & SLOW != 0);
    }
}

/// Moves a running total by the difference between the outcome replaced and the new one.
fn adjust(total: &AtomicI32, was: bool, is: bool) {
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

#[cfg(test)]
mod tests {
    //! Interleavings of two callers, replayed step by step.

    use super::*;

    fn count(window: &Window) -> &CountWindow {
        match window {
            Window::Count(count) => count,
            Window::Time(_) => unreachable!("a count window"),
        }
    }

    #[test]
    fn a_failure_taken_off_before_it_was_counted_never_reads_below_zero() {
        let window = Window::new(SlidingWindow::CountBased(1));
        let slots = count(&window);
        // Caller A puts its failure in the slot and is pre-empted before counting it...
        slots.next.fetch_add(1, SeqCst);
        let a_replaced = slots.slots[0].swap(RECORDED | FAILED, SeqCst);
        // ...while caller B's success replaces it and takes it off the total.
        slots.next.fetch_add(1, SeqCst);
        let b_replaced = slots.slots[0].swap(RECORDED, SeqCst);
        adjust(&slots.failures, b_replaced & FAILED != 0, false);
        assert_eq!(window.totals(0), (1, 0, 0), "not u32::MAX failures");
        adjust(&slots.failures, a_replaced & FAILED != 0, true);
        assert_eq!(window.totals(0), (1, 0, 0));
    }

    #[test]
    fn a_reset_while_a_result_is_in_flight_leaves_exact_totals() {
        let window = Window::new(SlidingWindow::CountBased(1));
        assert_eq!(window.record(true, false, || 0), (1, 1, 0));
        let slots = count(&window);
        // A success swaps the failure out; the window is reset before it adjusts the total.
        slots.next.fetch_add(1, SeqCst);
        let replaced = slots.slots[0].swap(RECORDED, SeqCst);
        window.reset();
        adjust(&slots.failures, replaced & FAILED != 0, false);
        assert_eq!(window.record(false, false, || 0), (1, 0, 0));
        assert_eq!(window.record(true, true, || 0), (1, 1, 1));
        window.reset();
        assert_eq!(window.totals(0), (0, 0, 0));
    }

    #[test]
    fn a_time_window_never_reads_more_failures_than_calls() {
        let window = Window::new(SlidingWindow::TimeBased(std::time::Duration::from_secs(2)));
        assert_eq!(window.record(true, true, || 5), (1, 1, 1));
        let Window::Time(buckets) = &window else {
            unreachable!("a time window")
        };
        // A result counted its failure after another zeroed the bucket's calls.
        buckets.buckets[1].failures.fetch_add(1, SeqCst);
        assert_eq!(window.totals(5), (1, 1, 1));
        assert_eq!(window.totals(7), (0, 0, 0), "the second left the window");
    }
}
