//! The future behind every [`Deadline`]: one call raced against the earliest deadline in
//! force, and the scope through which nested deadlines see each other.
//!
//! A deadline that runs inside another one (a handler core's inside the bus's timeout
//! middleware, or inside a `TimeoutHandler`) takes the earlier of the two, and the inner one
//! gives the verdict: it ends the call at the outer deadline when that one is earlier, and the
//! outer one adopts what the inner one decided instead of reading the clock again, as long as
//! its own deadline had not passed when the inner one decided and has not passed since (work
//! after an inner verdict, such as a step that calls a handler and then blocks, is judged by
//! the outer deadline). So a call is judged by the deadline nearest to it, and a handler
//! core below records the same outcome that the deadlines around it return.

use std::cell::Cell;
use std::future::Future;
use std::num::NonZeroUsize;
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
    /// The handler core inside that last recorded a call's outcome (its address).
    recorded_by: Option<NonZeroUsize>,
}

/// How the nearest deadline or handler core inside a scope ended its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Nothing inside ended during this poll.
    None,
    /// It decided the outcome at this instant: the result stands as it is, unless this
    /// scope's deadline passed after it (then what ran since is late).
    Judged(Instant),
    /// It ended the call because this scope's deadline passed.
    EndedByScope,
}

/// The output of a [`Race`]: the call's output or the deadline's error, and which handler
/// core inside recorded the call.
#[derive(Debug)]
pub(crate) struct Outcome<O> {
    /// The call's output, or the error that ended it.
    pub(crate) result: FlextResult<O>,
    /// The handler core inside the call that last recorded its outcome (its address), so
    /// a wrapper of that handler does not record it again.
    pub(crate) recorded_by: Option<NonZeroUsize>,
    /// The output was judged by a deadline inside at or after this deadline: an error
    /// stands (it is that deadline's), a success is late and becomes this error, the
    /// deadline's own.
    pub(crate) late: Option<FlextError>,
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
    /// The handler core inside that last recorded a call's outcome (its address).
    recorded_by: Option<NonZeroUsize>,
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
                        recorded_by: None,
                        ended_after: None,
                        late: None,
                    });
                }
            }
        }
        let mut run = match *this.state {
            State::Running(run) => run,
            State::Unbounded => {
                return this.call.poll(cx).map(|output| Outcome {
                    result: Ok(output),
                    recorded_by: None,
                    ended_after: None,
                    late: None,
                });
            }
            State::Unstarted(_) | State::Ended => {
                return Poll::Ready(Outcome {
                    result: Err(FlextError::operation(
                        "a deadline's future was polled after it ended",
                    )),
                    recorded_by: None,
                    ended_after: None,
                    late: None,
                });
            }
        };
        if run.inherited {
            match SCOPE.try_with(Cell::get) {
                Ok(outer) if outer.at == run.at => run.expired |= outer.expired,
                // Polled outside the scope it inherited from: it needs its own timer.
                _ => match own_timer(run.at, this.sleep.as_mut()) {
                    Ok(()) => run.inherited = false,
                    Err(error) => {
                        return end(this.state, *this.subject, Err(error), run, Ended::Inside);
                    }
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
            (Poll::Ready(output), Verdict::Judged(when)) => {
                if when >= run.at {
                    // Judged at or after this deadline by one inside (its own timeout, or
                    // a result it let through late): its error stands, a success does not.
                    end(this.state, *this.subject, Ok(output), run, Ended::Late)
                } else if run.expired || Instant::now() >= run.at {
                    // Judged in time, but the call went on (blocking, or more work after
                    // it) past this deadline: late.
                    let error = timed_out(run, *this.subject);
                    end(this.state, *this.subject, Err(error), run, Ended::ByThis)
                } else {
                    end(this.state, *this.subject, Ok(output), run, Ended::Inside)
                }
            }
            (Poll::Ready(_), Verdict::EndedByScope) => {
                let error = timed_out(run, *this.subject);
                end(this.state, *this.subject, Err(error), run, Ended::ByThis)
            }
            (Poll::Ready(output), Verdict::None) => {
                if run.expired || Instant::now() >= run.at {
                    // A result after the deadline is a timeout, also when the call never
                    // yielded before it (so no timer could end it).
                    let error = timed_out(run, *this.subject);
                    end(this.state, *this.subject, Err(error), run, Ended::ByThis)
                } else {
                    end(this.state, *this.subject, Ok(output), run, Ended::Inside)
                }
            }
            (Poll::Pending, _) if run.expired => {
                let error = timed_out(run, *this.subject);
                end(this.state, *this.subject, Err(error), run, Ended::ByThis)
            }
            (Poll::Pending, _) => {
                *this.state = State::Running(run);
                Poll::Pending
            }
        }
    }
}

/// Who ended a race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The call itself, or a deadline inside it, in time.
    Inside,
    /// A deadline inside, at or after this one (see [`Outcome::late`]).
    Late,
    /// This deadline.
    ByThis,
}

/// Ends a race with `result` and reports the verdict to the enclosing scope.
fn end<O>(
    state: &mut State,
    subject: DeadlineSubject<'_>,
    result: FlextResult<O>,
    run: Running,
    ended: Ended,
) -> Poll<Outcome<O>> {
    *state = State::Ended;
    let by_this_deadline = ended != Ended::Inside;
    let ended_by_scope = by_this_deadline && run.inherited;
    report(
        || {
            if ended_by_scope {
                Verdict::EndedByScope
            } else {
                Verdict::Judged(Instant::now())
            }
        },
        run.recorded_by,
    );
    // Since the start of the deadline that applied (the enclosing one's when inherited).
    let ended_after = by_this_deadline.then(|| {
        let started = run.at.checked_sub(run.limit).unwrap_or(run.at);
        Instant::now().saturating_duration_since(started)
    });
    Poll::Ready(Outcome {
        result,
        recorded_by: run.recorded_by,
        ended_after,
        late: (ended == Ended::Late).then(|| timed_out(run, subject)),
    })
}

/// When the nearest deadline around the call being polled passes, if one is in force.
pub(crate) fn current() -> Option<Instant> {
    SCOPE.try_with(|scope| scope.get().at).ok()
}

/// Tells the enclosing scope, if any, that the handler core `core` (its address) recorded
/// its call's outcome, which stands: a deadline around it returns the same outcome unless
/// it passes after this, and a wrapper of that handler does not record it again.
pub(crate) fn report_recorded(core: NonZeroUsize) {
    report(|| Verdict::Judged(Instant::now()), Some(core));
}

/// Reports to the enclosing scope, if any; `verdict` (which may read the clock) runs only
/// inside one, so a call outside every deadline scope pays nothing for it.
fn report(verdict: impl FnOnce() -> Verdict, recorded_by: Option<NonZeroUsize>) {
    let _outside_any_scope = SCOPE.try_with(|scope| {
        let verdict = verdict();
        let mut inner = scope.get();
        // The latest judgment counts (a handler core reports just after its own deadline,
        // a call may run several in turn), but a deadline ended by this scope stays so.
        if inner.verdict != Verdict::EndedByScope {
            inner.verdict = verdict;
        }
        inner.recorded_by = recorded_by.or(inner.recorded_by);
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
            recorded_by: None,
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
        recorded_by: run.recorded_by,
    };
    let (polled, after) = SCOPE.sync_scope(Cell::new(scope), || {
        let polled = call.poll(cx);
        (polled, SCOPE.try_with(Cell::get).unwrap_or(scope))
    });
    run.recorded_by = after.recorded_by;
    (polled, after.verdict)
}

fn timed_out(run: Running, subject: DeadlineSubject<'_>) -> FlextError {
    Deadline::new(run.limit).timed_out(subject)
}
