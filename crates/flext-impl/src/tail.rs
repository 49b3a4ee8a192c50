//! [`tail_events`]: a live subscription built from any store's reads and a wake-up signal.

use std::collections::VecDeque;
use std::future::Future;

use flext_protocols::EventStream;
use flext_types::{FlextResult, StoredEvent};

/// A live feed of every event from `from` (inclusive): it reads batches of `batch` events
/// with `read(position, limit)` until it has caught up, then awaits `wake(next)` (`next` is
/// the position it waits for) and reads again.
///
/// Each event is delivered once and in position order, because the feed always reads on
/// from the position after the last event it delivered. `wake` should resolve when new
/// events may have been committed — a notification, a timer, or both; a wake-up with nothing
/// new costs one empty read. A read error ends the feed with that error.
///
/// Stores built on SQL use it with their notifications plus polling as a fallback.
pub fn tail_events<R, RF, W, WF>(from: u64, batch: usize, read: R, wake: W) -> EventStream
where
    R: Fn(u64, usize) -> RF + Send + 'static,
    RF: Future<Output = FlextResult<Vec<StoredEvent>>> + Send + 'static,
    W: FnMut(u64) -> WF + Send + 'static,
    WF: Future<Output = ()> + Send + 'static,
{
    struct Tail<R, W> {
        next: u64,
        batch: usize,
        buffer: VecDeque<StoredEvent>,
        read: R,
        wake: W,
        failed: bool,
    }
    let state = Tail {
        next: from.max(1),
        batch: batch.max(1),
        buffer: VecDeque::new(),
        read,
        wake,
        failed: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut tail| async move {
        if tail.failed {
            return None;
        }
        loop {
            if let Some(event) = tail.buffer.pop_front() {
                tail.next = event.position + 1;
                return Some((Ok(event), tail));
            }
            match (tail.read)(tail.next, tail.batch).await {
                Ok(events) if events.is_empty() => (tail.wake)(tail.next).await,
                Ok(events) => tail.buffer.extend(events),
                Err(error) => {
                    tail.failed = true;
                    return Some((Err(error), tail));
                }
            }
        }
    }))
}
