//! The future behind every [`Deadline`]: one call raced against the earliest deadline in
//! force, and the scope through which nested deadlines see each other.
//!
//! A deadline that runs inside another one (a handler core's inside the bus's timeout
//! middleware, or inside a `TimeoutHandler`) takes the earlier of the two, and the inner one
//! gives the verdict: it ends the call at the outer deadline when that one is earlier, and the
//! outer one adopts what the inner one decided instead of reading the clock again. So a call
//! is judged once, by the deadline nearest to it, and a handler core below records the same
//! outcome that the deadlines around it return.

use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use flext_types::{FlextError, FlextResult};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::guard::panic_error;
use crate::{Deadline, DeadlineSubject};

tokio::task_local! {
    /// The deadline in force while a raced call is polled, and what happened below it.
    static SCOPE: Cell<Scope>;
}

/// What a deadline shows the calls it polls, and what they report back, for one poll.
#[derive(Debug, Clone, Copy)]
struct Scope {
    /// When the deadline passes.
    at: Instant,
    /// Its limit, which a deadline inside that ends the call at `at` names in its error.
    limit: Duration,
    /// The deadline has passed: a deadline inside ends its call now.
    expired: bool,
    /// How a deadline or handler core inside ended during this poll, if one did.
    verdict: Verdict,
    /// A handler core inside has recorded a call's outcome.
    recorded: bool,
}

/// How the nearest deadline or handler core inside a scope ended its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Nothing inside ended during this poll.
    None,
    /// It decided the outcome: the result stands as it is.
    Judged,
    /// It ended the call because this scope's deadline passed.
    EndedByScope,
}

/// The output of a [`Race`]: the call's output or the deadline's error, and whether a
/// handler core inside recorded the call.
#[derive(Debug)]
pub(crate) struct Outcome<O> {
    /// The call's output, or the error that ended it.
    pub(crate) result: FlextResult<O>,
    /// A handler core inside the call recorded its outcome (so a wrapper must not).
    pub(crate) recorded_below: bool,
    /// When this deadline ended the call: how long after its start.
    pub(crate) ended_after: Option<Duration>,
}

pin_project! {
    /// Races a call against the earliest deadline in force; see the module header.
    pub(crate) struct Race<'a, F> {
        #[pin]
        call: F,
        #[pin]
        sleep: Option<Sleep>,
        subject: DeadlineSubject<'a>,
        state: State,
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Not polled yet, with this deadline's limit: it counts from the first poll.
    Unstarted(Duration),
    /// No deadline applies (no runtime, or a limit beyond the clock): the call just runs.
    Unbounded,
    /// The call runs until `at`.
    Running(Running),
    /// The output was returned.
    Ended,
}

#[derive(Debug, Clone, Copy)]
struct Running {
    at: Instant,
    /// The limit the error names: this deadline's, or the scope's it inherited.
    limit: Duration,
    /// `at` is the enclosing scope's deadline, whose timer wakes the task: this race has
    /// no timer of its own.
    inherited: bool,
    /// The deadline has passed (the timer fired, or the enclosing scope expired).
    expired: bool,
    /// A handler core inside has recorded a call's outcome.
    recorded: bool,
}

impl<'a, F: Future> Race<'a, F> {
    pub(crate) fn new(deadline: Deadline, subject: DeadlineSubject<'a>, call: F) -> Self {
        Self {
            call,
            sleep: None,
            subject,
            state: State::Unstarted(deadline.limit()),
        }
    }
}

impl<F: Future> Future for Race<'_, F> {
    type Output = Outcome<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let State::Unstarted(limit) = *this.state {
            match start(limit, this.sleep.as_mut()) {
                Ok(state) => *this.state = state,
                Err(error) => {
                    *this.state = State::Ended;
                    return Poll::Ready(Outcome {
                        result: Err(error),
                        recorded_below: false,
                        ended_after: None,
                    });
                }
            }
        }
        let mut run = match *this.state {
            State::Running(run) => run,
            State::Unbounded => {
                return this.call.poll(cx).map(|output| Outcome {
                    result: Ok(output),
                    recorded_below: false,
                    ended_after: None,
                });
            }
            State::Unstarted(_) | State::Ended => {
                return Poll::Ready(Outcome {
                    result: Err(FlextError::operation(
                        "a deadline's future was polled after it ended",
                    )),
                    recorded_below: false,
                    ended_after: None,
                });
            }
        };
        if run.inherited {
            match SCOPE.try_with(Cell::get) {
                Ok(outer) if outer.at == run.at => run.expired |= outer.expired,
                // Polled outside the scope it inherited from: it needs its own timer.
                _ => match own_timer(run.at, this.sleep.as_mut()) {
                    Ok(()) => run.inherited = false,
                    Err(error) => return end(this.state, Err(error), run, false),
                },
            }
        }
        let mut polled = poll_in_scope(this.call.as_mut(), cx, &mut run);
        if polled.0.is_pending() && !run.expired && !run.inherited {
            let fired = this
                .sleep
                .as_mut()
                .as_pin_mut()
                .is_some_and(|sleep| sleep.poll(cx).is_ready());
            if fired {
                // Polled once more with the scope expired, so that a deadline or handler
                // core inside ends the call itself and records it.
                run.expired = true;
                polled = poll_in_scope(this.call.as_mut(), cx, &mut run);
            }
        }
        match polled {
            (Poll::Ready(output), Verdict::Judged) => end(this.state, Ok(output), run, false),
            (Poll::Ready(_), Verdict::EndedByScope) => {
                let error = timed_out(run, *this.subject);
                end(this.state, Err(error), run, true)
            }
            (Poll::Ready(output), Verdict::None) => {
                if run.expired || Instant::now() >= run.at {
                    // A result after the deadline is a timeout, also when the call never
                    // yielded before it (so no timer could end it).
                    let error = timed_out(run, *this.subject);
                    end(this.state, Err(error), run, true)
                } else {
                    end(this.state, Ok(output), run, false)
                }
            }
            (Poll::Pending, _) if run.expired => {
                let error = timed_out(run, *this.subject);
                end(this.state, Err(error), run, true)
            }
            (Poll::Pending, _) => {
                *this.state = State::Running(run);
                Poll::Pending
            }
        }
    }
}

/// Ends a race with `result` and reports the verdict to the enclosing scope.
fn end<O>(
    state: &mut State,
    result: FlextResult<O>,
    run: Running,
    by_this_deadline: bool,
) -> Poll<Outcome<O>> {
    *state = State::Ended;
    let verdict = if by_this_deadline && run.inherited {
        Verdict::EndedByScope
    } else {
        Verdict::Judged
    };
    report(verdict, run.recorded);
    // Since the start of the deadline that applied (the enclosing one's when inherited).
    let ended_after = by_this_deadline.then(|| {
        let started = run.at.checked_sub(run.limit).unwrap_or(run.at);
        Instant::now().saturating_duration_since(started)
    });
    Poll::Ready(Outcome {
        result,
        recorded_below: run.recorded,
        ended_after,
    })
}

/// Tells the enclosing scope, if any, that a handler core recorded its call's outcome,
/// which stands: a deadline around it returns the same outcome and a wrapper does not
/// record it again.
pub(crate) fn report_recorded() {
    report(Verdict::Judged, true);
}

fn report(verdict: Verdict, recorded: bool) {
    let _outside_any_scope = SCOPE.try_with(|scope| {
        let mut inner = scope.get();
        // A handler core reports after its own deadline: the deadline's verdict stays.
        if inner.verdict == Verdict::None || verdict == Verdict::EndedByScope {
            inner.verdict = verdict;
        }
        inner.recorded |= recorded;
        scope.set(inner);
    });
}

/// Starts the race at its first poll: the deadline is the earlier of this one and the
/// enclosing scope's.
fn start(limit: Duration, sleep: Pin<&mut Option<Sleep>>) -> FlextResult<State> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(State::Unbounded);
    }
    let own = Instant::now().checked_add(limit);
    let enclosing = SCOPE.try_with(Cell::get).ok();
    let running = |at, limit, inherited, expired| {
        State::Running(Running {
            at,
            limit,
            inherited,
            expired,
            recorded: false,
        })
    };
    match (own, enclosing) {
        (Some(at), outer) if outer.is_none_or(|outer| at < outer.at) => {
            own_timer(at, sleep)?;
            Ok(running(at, limit, false, false))
        }
        (_, Some(outer)) => Ok(running(outer.at, outer.limit, true, outer.expired)),
        (_, None) => Ok(State::Unbounded),
    }
}

/// Sets a timer at `at`. Tokio panics while creating it when the runtime has no timers;
/// the call has not been polled then, and the panic becomes an error.
fn own_timer(at: Instant, mut sleep: Pin<&mut Option<Sleep>>) -> FlextResult<()> {
    let timer = std::panic::catch_unwind(AssertUnwindSafe(|| tokio::time::sleep_until(at)))
        .map_err(|panic| panic_error(panic.as_ref()))?;
    sleep.set(Some(timer));
    Ok(())
}

/// Polls the call with this race's deadline as the scope, and returns what the deadlines
/// and cores inside reported.
fn poll_in_scope<F: Future>(
    call: Pin<&mut F>,
    cx: &mut Context<'_>,
    run: &mut Running,
) -> (Poll<F::Output>, Verdict) {
    let scope = Scope {
        at: run.at,
        limit: run.limit,
        expired: run.expired,
        verdict: Verdict::None,
        recorded: run.recorded,
    };
    let (polled, after) = SCOPE.sync_scope(Cell::new(scope), || {
        let polled = call.poll(cx);
        (polled, SCOPE.try_with(Cell::get).unwrap_or(scope))
    });
    run.recorded = after.recorded;
    (polled, after.verdict)
}

fn timed_out(run: Running, subject: DeadlineSubject<'_>) -> FlextError {
    Deadline::new(run.limit).timed_out(subject)
}
