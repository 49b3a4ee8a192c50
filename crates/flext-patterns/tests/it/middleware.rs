//! HookMiddleware and Layered: order, transforms, rejections, error hooks, panics.

use std::sync::{Arc, Mutex};

use flext_constants::ErrorCode;
use flext_impl::handler_fn;
use flext_patterns::{HookMiddleware, Layered};
use flext_protocols::Handler;
use flext_types::FlextError;

type Log = Arc<Mutex<Vec<String>>>;

fn logging(name: &'static str, log: &Log) -> HookMiddleware<i64, i64> {
    let (before, after, error) = (log.clone(), log.clone(), log.clone());
    HookMiddleware::new(name)
        .before_request(move |x| {
            before.lock().unwrap().push(format!("{name} before {x}"));
            Ok(x)
        })
        .after_response(move |x| {
            after.lock().unwrap().push(format!("{name} after {x}"));
            Ok(x)
        })
        .handle_error(move |e| {
            error
                .lock()
                .unwrap()
                .push(format!("{name} error {}", e.code().name()));
            Err(e)
        })
}

fn checked_double(log: &Log) -> impl Handler<Request = i64, Response = i64> {
    let log = log.clone();
    handler_fn("double", move |x: i64| {
        log.lock().unwrap().push(format!("handler {x}"));
        async move {
            if x < 0 {
                Err(FlextError::validation("negative"))
            } else {
                Ok(x * 2)
            }
        }
    })
}

#[tokio::test]
async fn the_first_middleware_added_is_outermost() {
    let log: Log = Arc::default();
    let layered = Layered::new(checked_double(&log))
        .with(logging("a", &log))
        .with(logging("b", &log));
    assert_eq!(layered.middleware_names(), ["a", "b"]);
    assert_eq!(layered.handle(3).await, Ok(6));
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a before 3",
            "b before 3",
            "handler 3",
            "b after 6",
            "a after 6"
        ]
    );
    log.lock().unwrap().clear();
    assert!(layered.handle(-1).await.is_err());
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a before -1",
            "b before -1",
            "handler -1",
            "b error VALIDATION_ERROR",
            "a error VALIDATION_ERROR"
        ]
    );
}

#[tokio::test]
async fn hooks_transform_reject_and_recover() {
    let log: Log = Arc::default();
    let layered = Layered::new(checked_double(&log))
        .with(HookMiddleware::new("recover").handle_error(|e| {
            if e.is(ErrorCode::ValidationError) {
                Ok(0)
            } else {
                Err(e)
            }
        }))
        .with(
            HookMiddleware::new("plus_one")
                .before_request(|x: i64| Ok(x + 1))
                .after_response(|x: i64| Ok(x + 1000)),
        )
        .with(HookMiddleware::new("no_sevens").before_request(|x: i64| {
            if x == 7 {
                Err(FlextError::business_rule("no sevens"))
            } else {
                Ok(x)
            }
        }));
    assert_eq!(layered.handle(1).await, Ok(1004), "(1 + 1) * 2 + 1000");
    assert_eq!(
        layered.handle(-5).await,
        Ok(0),
        "the handler's validation error was recovered"
    );
    let err = layered.handle(6).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "no sevens",
        "a rejection in before_request stops the request"
    );
    assert!(
        !log.lock().unwrap().contains(&"handler 7".to_owned()),
        "the handler never saw it"
    );
}

#[tokio::test]
async fn a_panicking_hook_or_handler_is_an_operation_error() {
    let log: Log = Arc::default();
    let hook_panics = Layered::new(checked_double(&log)).with(
        HookMiddleware::new("fragile").after_response(|x: i64| {
            if x > 100 {
                panic!("too big: {x}")
            } else {
                Ok(x)
            }
        }),
    );
    assert_eq!(hook_panics.handle(10).await, Ok(20));
    let err = hook_panics.handle(60).await.unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            ErrorCode::OperationError,
            "Handler execution failed: too big: 120"
        )
    );

    let handler_panics = Layered::new(handler_fn("explode", |_: i64| async {
        if true {
            panic!("kaboom");
        }
        Ok(0i64)
    }))
    .with(HookMiddleware::new("passthrough"));
    assert_eq!(
        handler_panics.handle(1).await.unwrap_err().to_string(),
        "Handler execution failed: kaboom"
    );
}

#[tokio::test]
async fn a_hook_panicking_mid_stack_is_an_error_the_hooks_outside_it_see() {
    let panics_on = |when: &'static str| {
        move |x: i64| {
            if x == 7 {
                panic!("{when} hook broke on {x}")
            }
            Ok(x)
        }
    };
    let log: Log = Arc::default();
    let stack = Layered::new(checked_double(&log))
        .with(logging("outer", &log))
        .with(HookMiddleware::new("before").before_request(panics_on("before")))
        .with(logging("inner", &log));
    let err = stack.handle(7).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler execution failed: before hook broke on 7"
    );
    assert_eq!(
        *log.lock().unwrap(),
        ["outer before 7", "outer error OPERATION_ERROR"],
        "the hooks inside the panicking one and the handler never ran"
    );

    let log: Log = Arc::default();
    let stack = Layered::new(checked_double(&log))
        .with(logging("outer", &log))
        .with(HookMiddleware::new("after").after_response(panics_on("after")))
        .with(logging("inner", &log))
        .with(HookMiddleware::new("shift").after_response(|x: i64| Ok(x - 1)));
    // 4 doubled is 8, shifted to 7 by the innermost hook: the "after" hook panics on it.
    let err = stack.handle(4).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Handler execution failed: after hook broke on 7"
    );
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer before 4",
            "inner before 4",
            "handler 4",
            "inner after 7",
            "outer error OPERATION_ERROR"
        ]
    );
    // The stack keeps working after a panic.
    assert_eq!(stack.handle(5).await, Ok(9));

    let recovers = Layered::new(checked_double(&log))
        .with(HookMiddleware::new("recover").handle_error(|_| Ok(-1)))
        .with(HookMiddleware::new("on error").handle_error(|e| panic!("{}", e.code().name())));
    assert_eq!(
        recovers.handle(-3).await,
        Ok(-1),
        "a panicking error hook's panic reaches the hook outside it"
    );
}

/// A middleware that is not a HookMiddleware, so the stack takes the generic path.
struct Passthrough;

impl flext_protocols::Middleware<i64, i64> for Passthrough {
    fn name(&self) -> &str {
        "passthrough"
    }
}

#[tokio::test]
async fn hook_stacks_and_generic_stacks_run_in_the_same_order_with_the_same_outcome() {
    fn stack(log: &Log, generic: bool) -> Layered<impl Handler<Request = i64, Response = i64>> {
        let mut layered = Layered::new(checked_double(log))
            .with(logging("a", log))
            .with(
                HookMiddleware::new("gate")
                    .before_request(|x: i64| {
                        if x == 13 {
                            Err(FlextError::business_rule("unlucky"))
                        } else {
                            Ok(x)
                        }
                    })
                    .handle_error(|e| {
                        if e.is(ErrorCode::ValidationError) && e.message() == "negative" {
                            Err(FlextError::validation("still negative"))
                        } else {
                            Err(e)
                        }
                    }),
            )
            .with(logging("b", log));
        if generic {
            layered.push(Passthrough);
        }
        layered
    }
    for input in [3i64, -1, 13] {
        let (fast_log, slow_log): (Log, Log) = (Arc::default(), Arc::default());
        let fast = stack(&fast_log, false).handle(input).await;
        let slow = stack(&slow_log, true).handle(input).await;
        assert_eq!(fast, slow, "same outcome for {input}");
        assert_eq!(
            *fast_log.lock().unwrap(),
            *slow_log.lock().unwrap(),
            "same order for {input}"
        );
    }
    let rejected_log: Log = Arc::default();
    let rejected = stack(&rejected_log, false).handle(13).await.unwrap_err();
    assert_eq!(rejected.to_string(), "unlucky");
    assert_eq!(
        *rejected_log.lock().unwrap(),
        ["a before 13", "a error BUSINESS_RULE_VIOLATION"],
        "a rejection unwinds only through the middleware outside it"
    );
}
