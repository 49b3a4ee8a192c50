//! The stop signal of a runner: it ends the waits between tries of its work.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use tokio::sync::Notify;

tokio::task_local! {
    /// The stop signal of the runner this task works for, set by
    /// [`ProjectionRunner::run_until`](crate::ProjectionRunner::run_until) around its work.
    /// Task-local because a relay's deliveries run inside the runner's call of
    /// `Projection::apply`, which has no way to pass it: so one signal ends the runner's
    /// own waits and those of every subscriber of a relay it runs.
    static STOP: Arc<Stop>;
}

/// Asks the waits between tries of one runner's work to end (see [`STOP`]).
#[derive(Debug, Default)]
pub(crate) struct Stop {
    stopped: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// Asks the work to stop: each wait ends, and no new event is started.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(SeqCst)
    }

    /// Resolves once [`stop`](Self::stop) is called.
    pub(crate) async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a stop between the two is not missed.
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `work` with this signal as its task's.
    pub(crate) fn scope<F: Future>(self: &Arc<Self>, work: F) -> impl Future<Output = F::Output> {
        STOP.scope(self.clone(), work)
    }
}

/// Whether the runner this task works for was asked to stop.
pub(crate) fn stop_requested() -> bool {
    STOP.try_with(|stop| stop.is_stopped()).unwrap_or(false)
}

/// Waits `wait` between two tries of one event: `false` when the runner was asked to stop
/// instead. A zero wait still yields to the other tasks, so that retries without backoff
/// do not hold the thread.
pub(super) async fn pause(wait: Duration) -> bool {
    let stop = STOP.try_with(Arc::clone).ok();
    if wait.is_zero() {
        tokio::task::yield_now().await;
    } else if let Some(stop) = &stop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.stopped() => {}
        }
    } else {
        tokio::time::sleep(wait).await;
    }
    !stop.is_some_and(|stop| stop.is_stopped())
}
