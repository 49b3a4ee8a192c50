//! Deadlines that hold: a result after the deadline is a timeout also when the handler never
//! yields before it, nested deadlines take the earliest, and a timeout is counted once.

use std::time::Duration;

use flext_constants::{ErrorCode, HandlerKind, HandlerState};
use flext_impl::{BasicHandler, Deadline, DeadlineSubject, HandlerCore, ManagedHandler};
use flext_protocols::Handler;
use flext_types::{FlextError, FlextResult};
use serde_json::json;

/// A handler with a 50 ms deadline whose step moves the paused clock by `ms` and returns
/// without having yielded to the deadline's timer before its result was ready.
fn clock_mover() -> BasicHandler<impl Handler<Request = u64, Response = u64>> {
    let handler = BasicHandler::from_fn("mover", |ms: u64| async move {
        tokio::time::advance(Duration::from_millis(ms)).await;
        Ok(ms)
    });
    handler.configure(json!({"timeout": 50})).unwrap();
    handler
}

fn counts(handler: &impl ManagedHandler) -> (u64, u64, u64) {
    let m = handler.metrics();
    (m.successful_requests, m.failed_requests, m.in_flight)
}

#[tokio::test(start_paused = true)]
async fn a_result_after_the_deadline_is_a_timeout_even_without_a_yield() {
    let handler = clock_mover();
    assert_eq!(handler.handle(49).await, Ok(49), "in time");
    let err = handler.handle(80).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(err.to_string(), "Handler 'mover' timed out after 50 ms");
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(counts(&handler), (1, 1, 0), "the timeout is counted once");
}

#[tokio::test(start_paused = true)]
async fn a_result_exactly_at_the_deadline_is_a_timeout() {
    let handler = clock_mover();
    let err = handler.handle(50).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(counts(&handler), (0, 1, 0));
}

#[tokio::test]
async fn a_handler_that_blocks_past_its_deadline_times_out() {
    // The paused clock cannot see a thread sleep: a short real deadline instead.
    let handler = BasicHandler::from_fn("blocker", |ms: u64| async move {
        std::thread::sleep(Duration::from_millis(ms));
        Ok(ms)
    });
    handler.configure(json!({"timeout": 5})).unwrap();
    let err = handler.handle(40).await.unwrap_err();
    assert_eq!(err.to_string(), "Handler 'blocker' timed out after 5 ms");
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(counts(&handler), (0, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_never_answers_times_out_once() {
    let handler = BasicHandler::from_fn("silent", |()| std::future::pending::<FlextResult<()>>());
    handler.configure(json!({"timeout": 50})).unwrap();
    let started = tokio::time::Instant::now();
    let err = handler.handle(()).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(counts(&handler), (0, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn deadlines_nest_and_the_earliest_wins() {
    let long = Deadline::from_millis(100);
    let short = Deadline::from_millis(30);
    let sleeper = |ms| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, FlextError>(ms)
    };
    // The inner deadline is earlier: its own error passes through the outer one.
    let started = tokio::time::Instant::now();
    let inner_first = long
        .run(
            DeadlineSubject::Call,
            short.run(DeadlineSubject::Handler("inner"), sleeper(1_000)),
        )
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(30));
    assert_eq!(
        inner_first.to_string(),
        "Handler 'inner' timed out after 30 ms"
    );
    // The outer deadline is earlier: the inner one ends the call at it, and the caller sees
    // the outer one's error.
    let started = tokio::time::Instant::now();
    let outer_first = short
        .run(
            DeadlineSubject::Call,
            long.run(DeadlineSubject::Handler("inner"), sleeper(1_000)),
        )
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(30));
    assert_eq!(outer_first.to_string(), "Call timed out after 30 ms");
    // Equal deadlines: the outer one's applies, and its error is what the caller sees.
    let equal = short
        .run(
            DeadlineSubject::Call,
            Deadline::from_millis(30).run(DeadlineSubject::Handler("inner"), sleeper(1_000)),
        )
        .await
        .unwrap_err();
    assert_eq!(equal.to_string(), "Call timed out after 30 ms");
    // In time under both.
    let both = short.run(
        DeadlineSubject::Call,
        long.run(DeadlineSubject::Call, sleeper(29)),
    );
    assert_eq!(both.await, Ok(29));
}

#[tokio::test(start_paused = true)]
async fn a_core_under_an_earlier_outer_deadline_records_the_timeout_itself() {
    let handler = BasicHandler::from_fn("inner", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    });
    let outer = Deadline::from_millis(40);
    let err = outer
        .run(DeadlineSubject::Call, handler.handle(1_000))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Call timed out after 40 ms");
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(counts(&handler), (0, 1, 0));
    assert_eq!(handler.metrics().latency.max, Duration::from_millis(40));
    let in_time = outer.run(DeadlineSubject::Call, handler.handle(10));
    assert_eq!(in_time.await, Ok(10));
    assert_eq!(counts(&handler), (1, 1, 0));
    // A late result under the outer deadline: the core judges it, the outer one agrees.
    let mover = clock_mover();
    let late = Deadline::from_millis(5)
        .run(DeadlineSubject::Call, mover.handle(20))
        .await
        .unwrap_err();
    assert_eq!(late.to_string(), "Call timed out after 5 ms");
    assert_eq!(mover.state(), HandlerState::Timeout);
    assert_eq!(counts(&mover), (0, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn work_past_the_outer_deadline_after_the_cores_verdict_is_the_outer_deadlines_timeout() {
    let handler = BasicHandler::from_fn("quick", |()| async { Ok(()) });
    let result = Deadline::from_millis(20)
        .run(DeadlineSubject::Call, async {
            let answer = handler.handle(()).await;
            // Time passes between the core's verdict and the end of the call around it:
            // the handler's call ended in time, the outer one did not.
            tokio::time::resume();
            std::thread::sleep(Duration::from_millis(30));
            answer
        })
        .await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "Call timed out after 20 ms"
    );
    assert_eq!(handler.state(), HandlerState::Completed);
    assert_eq!(counts(&handler), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn run_on_records_a_timeout_on_a_handler_without_a_core_run() {
    let core = HandlerCore::new("bare", HandlerKind::Custom);
    let deadline = Deadline::from_millis(20);
    let err = deadline
        .run_on(&core, async {
            tokio::time::advance(Duration::from_millis(25)).await;
            Ok::<_, FlextError>(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Handler 'bare' timed out after 20 ms");
    assert_eq!(core.state(), HandlerState::Timeout);
    let m = core.metrics();
    assert_eq!((m.successful_requests, m.failed_requests), (0, 1));
    assert_eq!(m.latency.max, Duration::from_millis(25));
    // In time, or the call's own error: nothing recorded by the deadline.
    assert_eq!(deadline.run_on(&core, async { Ok(1) }).await, Ok(1));
    let own = deadline
        .run_on(&core, async {
            Err::<(), _>(FlextError::timeout("upstream"))
        })
        .await;
    assert_eq!(own, Err(FlextError::timeout("upstream")));
    assert_eq!(core.metrics().failed_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn run_on_a_core_based_handler_counts_the_timeout_once() {
    let handler = BasicHandler::from_fn("wrapped", |()| std::future::pending::<FlextResult<()>>());
    let err = Deadline::from_millis(10)
        .run_on(handler.core(), handler.handle(()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Handler 'wrapped' timed out after 10 ms");
    assert_eq!(handler.state(), HandlerState::Timeout);
    assert_eq!(counts(&handler), (0, 1, 0));
}

#[test]
fn a_core_runs_its_call_in_a_future_of_bounded_size() {
    // A handler call is one future per request: it is moved and boxed on every call, so
    // it is kept small. It was 296 bytes before a deadline judged late results and nested
    // (the task-local scope's deadline, limit and flags, and which core recorded, add the
    // rest: 328 bytes).
    let core = HandlerCore::new("sized", HandlerKind::Basic);
    let call = core.run(async { Ok::<_, FlextError>(()) });
    let size = std::mem::size_of_val(&call);
    assert!(size <= 336, "HandlerCore::run's future is {size} bytes");
}

/// Before, a deadline inside that judged its call in time stood for the whole call around
/// it: work after it in the same poll (here blocking) could run past the outer deadline
/// and still return a success. The outer deadline judges what runs after the inner one.
#[tokio::test]
async fn work_after_an_inner_deadline_judged_its_call_is_late_for_the_outer_one() {
    // The paused clock cannot see a thread sleep: short real deadlines instead.
    let late = Deadline::from_millis(20)
        .run(DeadlineSubject::Call, async {
            Deadline::from_millis(10_000)
                .run(DeadlineSubject::Call, async { Ok::<_, FlextError>(()) })
                .await?;
            std::thread::sleep(Duration::from_millis(60));
            Ok(1)
        })
        .await;
    assert_eq!(late.unwrap_err().to_string(), "Call timed out after 20 ms");
    // And a caller that catches an inner timeout and answers anyway, past its own limit.
    let fallback = Deadline::from_millis(20)
        .race(DeadlineSubject::Call, async {
            let inner = Deadline::from_millis(10)
                .run(DeadlineSubject::Call, async {
                    std::thread::sleep(Duration::from_millis(60));
                    Ok::<_, FlextError>(())
                })
                .await;
            assert!(inner.unwrap_err().is(ErrorCode::Timeout));
            "fallback"
        })
        .await;
    assert_eq!(
        fallback.unwrap_err().to_string(),
        "Call timed out after 20 ms"
    );
}

/// The same through handlers: a handler whose step calls another handler and then blocks
/// past its own deadline times out, and each handler records its own outcome once.
#[tokio::test]
async fn a_handler_that_blocks_after_calling_another_handler_times_out() {
    let inner = std::sync::Arc::new(BasicHandler::from_fn("inner", |()| async { Ok(()) }));
    let callee = inner.clone();
    let outer = BasicHandler::from_fn("outer", move |ms: u64| {
        let callee = callee.clone();
        async move {
            callee.handle(()).await?;
            std::thread::sleep(Duration::from_millis(ms));
            Ok(ms)
        }
    });
    outer.configure(json!({"timeout": 20})).unwrap();
    let err = outer.handle(60).await.unwrap_err();
    assert_eq!(err.to_string(), "Handler 'outer' timed out after 20 ms");
    assert_eq!(outer.state(), HandlerState::Timeout);
    assert_eq!(counts(&outer), (0, 1, 0));
    assert_eq!(inner.state(), HandlerState::Completed);
    assert_eq!(counts(&*inner), (1, 0, 0));
}

/// Before, `run_on` took any handler core that recorded a call inside for the wrapped
/// handler's own: a handler that bypasses its core and calls another handler first was
/// never charged with its timeout.
#[tokio::test(start_paused = true)]
async fn run_on_records_the_timeout_when_only_another_handlers_core_recorded() {
    let callee = BasicHandler::from_fn("callee", |()| async { Ok(()) });
    let core = HandlerCore::new("caller", HandlerKind::Custom);
    let err = Deadline::from_millis(50)
        .run_on(&core, async {
            callee.handle(()).await?;
            tokio::time::sleep(Duration::from_millis(80)).await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Handler 'caller' timed out after 50 ms");
    assert_eq!(core.state(), HandlerState::Timeout);
    let m = core.metrics();
    assert_eq!((m.successful_requests, m.failed_requests), (0, 1));
    assert_eq!(counts(&callee), (1, 0, 0));
}

/// A handler's own earlier deadline that ends its call after the outer deadline passed too
/// is the handler's `TIMEOUT`: the call's own error passes through the outer deadline.
#[tokio::test(start_paused = true)]
async fn a_handlers_own_timeout_judged_past_the_outer_deadline_passes_through() {
    let mover = clock_mover();
    let err = Deadline::from_millis(100)
        .run(DeadlineSubject::Call, mover.handle(150))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Handler 'mover' timed out after 50 ms");
    assert_eq!(counts(&mover), (0, 1, 0));
}

/// A deadline that inherited an enclosing one's end and is then polled under another
/// deadline sets a timer of its own for the end it inherited, instead of waiting for the
/// other deadline's timer.
#[tokio::test(start_paused = true)]
async fn a_deadline_polled_under_another_scope_keeps_its_own_end() {
    let started = tokio::time::Instant::now();
    let mut inner = Box::pin(
        Deadline::from_millis(10_000).run(DeadlineSubject::Call, async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<_, FlextError>(())
        }),
    );
    // Polled once inside a 100 ms deadline: it inherits that end.
    let first = Deadline::from_millis(100)
        .race(
            DeadlineSubject::Call,
            std::future::poll_fn(|cx| std::task::Poll::Ready(inner.as_mut().poll(cx).is_ready())),
        )
        .await;
    assert_eq!(first, Ok(false));
    // Then awaited under a far deadline: it still ends at 100 ms.
    let err = Deadline::from_millis(60_000)
        .run(DeadlineSubject::Call, inner)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Call timed out after 100 ms");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}
