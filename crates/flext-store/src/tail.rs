//! The one tail every store's live subscriptions run on: [`tail_events`] reads on from a
//! position and waits on a [`HeadSignal`]; [`follow`] joins the two for a store whose reads
//! go through its [`EventStore`] contract.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use flext_protocols::{EventStore, EventStream};
use flext_types::{FlextResult, StoredEvent};

/// How many events a subscription reads at a time while catching up.
pub const SUBSCRIPTION_BATCH: usize = 512;

/// A live feed of every event from `from` (inclusive): it reads batches of `batch` events
/// with `read(position, limit)` until it has caught up, then awaits `wake(next)` (`next` is
/// the position it waits for) and reads again.
///
/// Each event is delivered once and in position order, because the feed always reads on
/// from the position after the last event it delivered. `wake` should resolve when new
/// events may have been committed — a notification, a timer, or both; a wake-up with nothing
/// new costs one empty read. A read error ends the feed with that error.
///
/// Every store's subscriptions run on it: the in-memory store wakes on its [`HeadSignal`]
/// alone, the SQL stores (through [`follow`]) on theirs plus polling as a fallback.
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

/// The position of a store's last committed event, shared by the code that commits (which
/// [`advance`](HeadSignal::advance)s it) and its live subscriptions (which
/// [`wait_for`](HeadSignal::wait_for) it). Clones share one signal.
///
/// Commits may report in any order; the head only moves forward, so a late report of an
/// earlier commit never makes a subscriber wait again for what it already has.
///
/// A store that learns its head by reading it (PostgreSQL's head keeper) need only read
/// while someone waits: [`is_watched`](HeadSignal::is_watched) says whether a subscriber
/// is waiting, and [`wanted`](HeadSignal::wanted) resolves when one starts waiting for a
/// head the signal has not reached.
#[derive(Debug, Clone)]
pub struct HeadSignal {
    head: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    wanted: std::sync::Arc<tokio::sync::Notify>,
}

impl HeadSignal {
    /// A signal at `head`.
    pub fn new(head: u64) -> Self {
        Self {
            head: std::sync::Arc::new(tokio::sync::watch::Sender::new(head)),
            wanted: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Whether a subscriber is waiting on the signal now.
    pub fn is_watched(&self) -> bool {
        self.head.receiver_count() > 0
    }

    /// Resolves once a subscriber has started waiting for a head beyond the signal's (at
    /// once if one did since the last call).
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    /// The head as last advanced.
    pub fn get(&self) -> u64 {
        *self.head.borrow()
    }

    /// Moves the head to `position` if that is further; waiting subscribers wake.
    pub fn advance(&self, position: u64) {
        self.head.send_if_modified(|head| {
            let moved = position > *head;
            *head = (*head).max(position);
            moved
        });
    }

    /// Resolves once the head reaches `position`, or after `poll` at the latest (so commits
    /// this signal does not hear of, such as another process's, are found by polling);
    /// `Duration::MAX` never polls, for a store that hears of every commit. Made for
    /// [`tail_events`]' `wake`.
    pub fn wait_for(
        &self,
        position: u64,
        poll: Duration,
    ) -> impl Future<Output = ()> + Send + use<> {
        let mut head = self.head.subscribe();
        if *head.borrow() < position {
            self.wanted.notify_one();
        }
        async move {
            let reached = head.wait_for(|head| *head >= position);
            // The sender lives in this signal's clones; a wait can only end by the head.
            if poll == Duration::MAX {
                let _ = reached.await;
            } else {
                let _ = tokio::time::timeout(poll, reached).await;
            }
        }
    }
}

/// A live subscription to `store` from `from` (inclusive): [`tail_events`] over the store's
/// own `read_all`, woken by `head` and polling every `poll` for commits it does not hear
/// of. The SQL stores' `subscribe` is this call.
pub fn follow<S>(store: S, from: u64, head: &HeadSignal, poll: Duration) -> EventStream
where
    S: EventStore + Clone + 'static,
{
    let head = head.clone();
    tail_events(
        from,
        SUBSCRIPTION_BATCH,
        move |from, limit| {
            let store = store.clone();
            async move { store.read_all(from, limit).await }
        },
        move |next| head.wait_for(next, poll),
    )
}

#[cfg(test)]
mod tests {
    use super::HeadSignal;

    #[test]
    fn only_a_head_that_moves_forward_wakes_subscribers() {
        let signal = HeadSignal::new(5);
        let mut subscriber = signal.head.subscribe();
        signal.advance(5);
        signal.advance(3);
        assert!(
            !subscriber.has_changed().unwrap(),
            "the same or an earlier position wakes nobody"
        );
        assert_eq!(signal.get(), 5);
        signal.advance(6);
        assert!(subscriber.has_changed().unwrap());
        subscriber.mark_unchanged();
        assert_eq!(signal.get(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_waiting_beyond_the_head_is_watched_and_wanted() {
        use std::time::Duration;

        let signal = HeadSignal::new(5);
        assert!(!signal.is_watched());
        // Waiting for what the head already reached wants nothing read.
        signal.wait_for(5, Duration::MAX).await;
        let wanted = tokio::time::timeout(Duration::from_secs(1), signal.wanted()).await;
        assert!(wanted.is_err(), "no one waits beyond the head");

        let waiting = tokio::spawn(signal.wait_for(7, Duration::MAX));
        tokio::time::timeout(Duration::from_secs(1), signal.wanted())
            .await
            .expect("a wait beyond the head wants the head read");
        assert!(signal.is_watched());
        signal.advance(7);
        waiting.await.unwrap();
        assert!(!signal.is_watched(), "the wait ended with the head");
    }
}
