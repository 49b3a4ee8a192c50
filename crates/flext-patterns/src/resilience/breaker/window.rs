//! The sliding window of a circuit breaker: the last N outcomes in a ring of atomic slots,
//! or the last N seconds in a ring of atomic buckets, each with running totals.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};

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
    failures: AtomicU32,
    slow: AtomicU32,
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
                failures: AtomicU32::new(0),
                slow: AtomicU32::new(0),
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
                let old = window.slots[index as usize].swap(outcome, SeqCst);
                adjust(&window.failures, old & FAILED != 0, failed);
                adjust(&window.slow, old & SLOW != 0, slow);
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
                (
                    calls,
                    window.failures.load(SeqCst),
                    window.slow.load(SeqCst),
                )
            }
            Window::Time(window) => {
                let span = window.buckets.len() as u64;
                window
                    .buckets
                    .iter()
                    .filter(|b| {
                        let stamp = b.second.load(SeqCst);
                        stamp != 0 && stamp + span > second + 1
                    })
                    .fold((0, 0, 0), |(c, f, s), b| {
                        (
                            c + b.calls.load(SeqCst),
                            f + b.failures.load(SeqCst),
                            s + b.slow.load(SeqCst),
                        )
                    })
            }
        }
    }

    pub(super) fn reset(&self) {
        match self {
            Window::Count(window) => {
                window.next.store(0, SeqCst);
                for slot in window.slots.iter() {
                    slot.store(0, SeqCst);
                }
                window.failures.store(0, SeqCst);
                window.slow.store(0, SeqCst);
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

/// Moves a running total by the difference between the outcome replaced and the new one.
fn adjust(total: &AtomicU32, was: bool, is: bool) {
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
