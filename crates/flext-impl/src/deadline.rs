//! [`Deadline`]: the one implementation of "this call must end within a duration", used by
//! handler cores, the `Timeout` pattern and the buses' timeout middleware.

mod race;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_types::{FlextError, FlextResult};
use futures_util::future::FutureExt;
use serde_json::json;

use crate::HandlerCore;
use race::Race;
pub(crate) use race::report_recorded;

/// A limit on how long a call may run. Past it, the call's future is dropped and the call
/// ends with a `TIMEOUT` error that names what timed out ([`DeadlineSubject`]) and the limit.
///
/// Every deadline of the workspace goes through this type —
/// [`HandlerCore::run`](crate::HandlerCore::run), `flext_patterns::Timeout` and its
/// `TimeoutHandler`, and `flext_cqrs::TimeoutMiddleware` — so its semantics live in one
/// place.
///
/// The error reads "{subject} timed out after {limit} ms" (a message dispatch adds
/// "(handler '…')"), and its data is `{"timed_out": …, "limit_ms": …}` plus `handler` and
/// `message_type` when the subject has them.
///
/// A result that arrives at or after the deadline is a `TIMEOUT` too: a call is judged when
/// it ends, not only by a timer, so one that blocks or never yields before its deadline
/// does not slip through as a success.
///
/// Deadlines nest: a deadline inside another (a handler core's under the bus's timeout
/// middleware or a `TimeoutHandler`) takes the earlier of the two, and the nearest one to
/// the call gives the verdict, which the ones around it adopt — unless their own deadline
/// passes after that verdict (the call went on working: then it is their `TIMEOUT`). A
/// handler core under a wrapper's deadline therefore records the timeout itself, counted
/// once, and its record agrees with what the wrapper returns; the wrapper's own error (its
/// subject and limit) is what the caller sees. A call with no core inside is ended by the
/// wrapper as before.
///
/// A deadline needs tokio's timer. Outside a tokio runtime the call runs without a deadline
/// (there is no clock to race); inside a runtime whose timers are disabled the call does not
/// run and the result is an `OPERATION_ERROR` saying so.
///
/// ```
/// use std::time::Duration;
/// use flext_constants::ErrorCode;
/// use flext_impl::{Deadline, DeadlineSubject};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let deadline = Deadline::new(Duration::from_millis(50));
/// let slow = async {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     Ok::<_, flext_types::FlextError>(())
/// };
/// let err = deadline.run(DeadlineSubject::Handler("report"), slow).await.unwrap_err();
/// assert_eq!(err.code(), ErrorCode::Timeout);
/// assert_eq!(err.to_string(), "Handler 'report' timed out after 50 ms");
/// assert_eq!(err.data().unwrap()["limit_ms"], 50);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Deadline {
    limit: Duration,
}

/// What a [`Deadline`] guards, as its `TIMEOUT` error names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineSubject<'a> {
    /// Any call: "Call timed out after 50 ms".
    Call,
    /// A handler's call: "Handler 'report' timed out after 50 ms".
    Handler(&'a str),
    /// A message dispatched to a handler: "Command Divide timed out after 100 ms (handler
    /// 'Divide')".
    Message {
        /// The message's kind as its wire string (`command`, `query`, `event`).
        kind: &'a str,
        /// The message's type name.
        message_type: &'a str,
        /// The handler it was dispatched to.
        handler: &'a str,
    },
}

impl Deadline {
    /// A deadline of `limit`.
    pub const fn new(limit: Duration) -> Self {
        Self { limit }
    }

    /// A deadline of `millis` milliseconds (the unit of `HandlerConfig::timeout_ms`).
    pub const fn from_millis(millis: u64) -> Self {
        Self::new(Duration::from_millis(millis))
    }

    /// The limit.
    pub const fn limit(&self) -> Duration {
        self.limit
    }

    /// Runs `call`; past the limit, drops it and fails with the `TIMEOUT` error naming
    /// `subject`. A call's own error (also its own `TIMEOUT`) passes through unchanged.
    ///
    /// The limit counts from the first poll of the returned future. A result that arrives
    /// at or after the deadline is the `TIMEOUT` error too, also from a call that blocks
    /// or never yields before it (so no timer could end it first). Inside another deadline
    /// (see [`Deadline`]) the earlier of the two applies.
    pub fn run<'a, T, F>(
        &self,
        subject: DeadlineSubject<'a>,
        call: F,
    ) -> impl Future<Output = FlextResult<T>> + use<'a, T, F>
    where
        F: Future<Output = FlextResult<T>>,
    {
        Race::new(*self, subject, call).map(|raced| match (raced.result, raced.late) {
            // A success judged in time by a deadline inside, returned after this one passed.
            (Ok(Ok(_)), Some(late)) => Err(late),
            (result, _) => result.and_then(|result| result),
        })
    }

    /// Runs `call` and returns its output as it is, or an error when the deadline ended it:
    /// the `TIMEOUT` naming `subject` (or the `OPERATION_ERROR` of a runtime without
    /// timers). Unlike [`Deadline::run`] the caller can tell the deadline's error from the
    /// call's.
    ///
    /// The limit counts from the first poll of the returned future; a result at or after
    /// the deadline is the deadline's error, as with [`Deadline::run`].
    pub fn race<'a, O, F>(
        &self,
        subject: DeadlineSubject<'a>,
        call: F,
    ) -> impl Future<Output = FlextResult<O>> + use<'a, O, F>
    where
        F: Future<Output = O>,
    {
        Race::new(*self, subject, call).map(|raced| match (raced.result, raced.late) {
            // Judged by a deadline inside at or after this one: this deadline's error, since
            // the output cannot tell a success from an error.
            (Ok(_), Some(late)) => Err(late),
            (result, _) => result,
        })
    }

    /// Runs a call of the handler whose core is `core`, as [`Deadline::run`] with the
    /// subject "Handler '{name}'"; when this deadline ends the call and no handler core
    /// inside it recorded the call (a handler that does not run through
    /// [`HandlerCore::run`]), records the timeout on `core`: a failure, state `timeout`.
    /// So a handler under a wrapper's deadline is counted once, whoever ended the call.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flext_constants::HandlerState;
    /// use flext_impl::{BasicHandler, Deadline, ManagedHandler};
    /// use flext_protocols::Handler;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let slow = BasicHandler::from_fn("report", |()| async {
    ///     tokio::time::sleep(Duration::from_secs(1)).await;
    ///     Ok(())
    /// });
    /// let deadline = Deadline::from_millis(50);
    /// let err = deadline.run_on(slow.core(), slow.handle(())).await.unwrap_err();
    /// assert_eq!(err.to_string(), "Handler 'report' timed out after 50 ms");
    /// assert_eq!(slow.state(), HandlerState::Timeout);
    /// assert_eq!(slow.metrics().failed_requests, 1, "counted once");
    /// # }
    /// ```
    pub fn run_on<'a, T, F>(
        &self,
        core: &'a HandlerCore,
        call: F,
    ) -> impl Future<Output = FlextResult<T>> + use<'a, T, F>
    where
        F: Future<Output = FlextResult<T>>,
    {
        Race::new(*self, DeadlineSubject::Handler(core.name()), call).map(move |raced| {
            let result = match (raced.result, raced.late) {
                (Ok(Ok(_)), Some(late)) => Err(late),
                (result, _) => result.and_then(|result| result),
            };
            if let Some(elapsed) = raced.ended_after
                && raced.recorded_by != Some(core.identity())
                && result
                    .as_ref()
                    .is_err_and(|error| error.is(ErrorCode::Timeout))
            {
                core.record_timeout(elapsed);
            }
            result
        })
    }

    /// When the deadline in force around the call being polled passes — the earliest of
    /// those it runs under ([`Deadline::run`], a handler core's timeout, the buses' timeout
    /// middleware) — or `None` outside every deadline. A call that hands work to another
    /// process (a remote command) sends it along, so the work stops when the caller does.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flext_impl::{Deadline, DeadlineSubject};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// assert!(Deadline::current().is_none());
    /// let start = tokio::time::Instant::now();
    /// let seen = Deadline::new(Duration::from_millis(50))
    ///     .run(DeadlineSubject::Call, async { Ok(Deadline::current()) })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(seen, Some(start + Duration::from_millis(50)));
    /// # }
    /// ```
    pub fn current() -> Option<tokio::time::Instant> {
        race::current()
    }

    /// The `TIMEOUT` error of this deadline passing on `subject`.
    pub fn timed_out(&self, subject: DeadlineSubject<'_>) -> FlextError {
        let limit_ms = u64::try_from(self.limit.as_millis()).unwrap_or(u64::MAX);
        let mut data = json!({"timed_out": subject.what(), "limit_ms": limit_ms});
        let message = match subject {
            DeadlineSubject::Call => format!("{subject} timed out after {limit_ms} ms"),
            DeadlineSubject::Handler(handler) => {
                data["handler"] = handler.into();
                format!("{subject} timed out after {limit_ms} ms")
            }
            DeadlineSubject::Message {
                message_type,
                handler,
                ..
            } => {
                data["message_type"] = message_type.into();
                data["handler"] = handler.into();
                format!("{subject} timed out after {limit_ms} ms (handler '{handler}')")
            }
        };
        FlextError::timeout(message).with_data(data)
    }
}

impl DeadlineSubject<'_> {
    /// What timed out, as the `timed_out` data of the error: `call`, `handler` or the
    /// message's kind.
    fn what(&self) -> &str {
        match self {
            Self::Call => "call",
            Self::Handler(_) => "handler",
            Self::Message { kind, .. } => kind,
        }
    }
}

impl fmt::Display for DeadlineSubject<'_> {
    /// The subject as the error's message begins: `Call`, `Handler 'x'`, `Command Divide`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Call => f.write_str("Call"),
            Self::Handler(name) => write!(f, "Handler '{name}'"),
            Self::Message {
                kind, message_type, ..
            } => {
                let mut chars = kind.chars();
                if let Some(first) = chars.next() {
                    write!(f, "{}", first.to_uppercase())?;
                }
                write!(f, "{} {message_type}", chars.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_constants::ErrorCode;

    async fn sleeper(ms: u64) -> FlextResult<u64> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_time_keeps_its_result() {
        let deadline = Deadline::from_millis(100);
        assert_eq!(
            deadline.run(DeadlineSubject::Call, sleeper(99)).await,
            Ok(99)
        );
        let own = deadline
            .run(DeadlineSubject::Call, async {
                Err::<(), _>(FlextError::timeout("upstream"))
            })
            .await
            .unwrap_err();
        assert_eq!(own, FlextError::timeout("upstream"), "the call's own error");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_the_limit_is_a_timeout_naming_subject_and_limit() {
        let deadline = Deadline::new(Duration::from_millis(250));
        let started = tokio::time::Instant::now();
        let err = deadline
            .run(DeadlineSubject::Handler("report"), sleeper(10_000))
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert_eq!(err.code(), ErrorCode::Timeout);
        assert_eq!(err.to_string(), "Handler 'report' timed out after 250 ms");
        assert_eq!(
            err.data(),
            Some(&json!({"timed_out": "handler", "handler": "report", "limit_ms": 250}))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_subject_has_its_message_and_data() {
        let deadline = Deadline::from_millis(100);
        let call = deadline
            .run(DeadlineSubject::Call, sleeper(200))
            .await
            .unwrap_err();
        assert_eq!(call.to_string(), "Call timed out after 100 ms");
        assert_eq!(
            call.data(),
            Some(&json!({"timed_out": "call", "limit_ms": 100}))
        );
        let subject = DeadlineSubject::Message {
            kind: "command",
            message_type: "Divide",
            handler: "divider",
        };
        let message = deadline.run(subject, sleeper(200)).await.unwrap_err();
        assert_eq!(
            message.to_string(),
            "Command Divide timed out after 100 ms (handler 'divider')"
        );
        assert_eq!(
            message.data(),
            Some(&json!({
                "timed_out": "command",
                "message_type": "Divide",
                "handler": "divider",
                "limit_ms": 100
            }))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn race_tells_the_deadline_from_the_call() {
        let deadline = Deadline::from_millis(100);
        let own = deadline
            .race(DeadlineSubject::Call, async {
                Err::<(), _>(FlextError::timeout("own"))
            })
            .await;
        assert_eq!(own, Ok(Err(FlextError::timeout("own"))));
        let ended = deadline.race(DeadlineSubject::Call, sleeper(101)).await;
        assert_eq!(
            ended.unwrap_err().to_string(),
            "Call timed out after 100 ms"
        );
        assert_eq!(deadline.limit(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_too_large_for_the_clock_never_fires() {
        let deadline = Deadline::new(Duration::MAX);
        assert_eq!(deadline.run(DeadlineSubject::Call, sleeper(5)).await, Ok(5));
        let err = deadline.timed_out(DeadlineSubject::Call);
        assert_eq!(err.data().unwrap()["limit_ms"], u64::MAX);
    }

    #[test]
    fn outside_a_runtime_the_call_runs_without_a_deadline() {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let deadline = Deadline::from_millis(1);
        let mut call = Box::pin(deadline.run(DeadlineSubject::Call, async { Ok(7) }));
        assert_eq!(call.as_mut().poll(&mut cx), std::task::Poll::Ready(Ok(7)));
    }

    #[test]
    fn a_runtime_without_timers_is_an_error_and_the_call_never_runs() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime without drivers builds");
        let ran = std::sync::atomic::AtomicBool::new(false);
        let result =
            runtime.block_on(Deadline::from_millis(10).run(DeadlineSubject::Call, async {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }));
        let err = result.unwrap_err();
        assert_eq!(err.code(), ErrorCode::OperationError);
        assert!(err.to_string().contains("timers are disabled"), "{err}");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
