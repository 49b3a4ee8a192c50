//! Bus middleware: order, timeout, validation, authorization, mutation, metadata, panics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_constants::ErrorCode;
use flext_cqrs::{
    AuthorizationMiddleware, CommandBus, Dispatch, DispatchContext, DispatchOutput, EventBus,
    MessageKind, QueryBus, TimeoutMiddleware, ValidationMiddleware,
};
use flext_protocols::{Middleware, Next, async_trait};
use flext_types::{FlextError, FlextResult, MessageMetadata};

use crate::{CreateUserCommand, Divide, GetUserQuery, UserCreated};

type Log = Arc<Mutex<Vec<String>>>;

struct Recording {
    name: &'static str,
    log: Log,
}

impl Middleware<Dispatch, DispatchOutput> for Recording {
    fn name(&self) -> &str {
        self.name
    }

    fn before_request(&self, dispatch: Dispatch) -> FlextResult<Dispatch> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} before {}", self.name, dispatch.message_type()));
        Ok(dispatch)
    }

    fn after_response(&self, response: DispatchOutput) -> FlextResult<DispatchOutput> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} after", self.name));
        Ok(response)
    }

    fn handle_error(&self, error: FlextError) -> FlextResult<DispatchOutput> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} error {}", self.name, error.code().name()));
        Err(error)
    }
}

fn divide_bus(log: &Log) -> CommandBus {
    let mut bus = CommandBus::new();
    let handler_log = log.clone();
    bus.register_fn(move |Divide(n): Divide| {
        handler_log.lock().unwrap().push(format!("handler {n}"));
        async move {
            if n == 0 {
                Err(FlextError::business_rule("zero"))
            } else {
                Ok(n)
            }
        }
    })
    .unwrap();
    bus
}

#[tokio::test]
async fn middleware_run_in_the_order_added_first_outermost() {
    let log: Log = Arc::default();
    let mut bus = divide_bus(&log);
    for name in ["a", "b", "c"] {
        bus.add_middleware(Recording {
            name,
            log: log.clone(),
        });
    }
    assert_eq!(bus.send(Divide(2)).await, Ok(2));
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a before Divide",
            "b before Divide",
            "c before Divide",
            "handler 2",
            "c after",
            "b after",
            "a after"
        ]
    );
    log.lock().unwrap().clear();
    assert!(bus.send(Divide(0)).await.is_err());
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a before Divide",
            "b before Divide",
            "c before Divide",
            "handler 0",
            "c error BUSINESS_RULE_VIOLATION",
            "b error BUSINESS_RULE_VIOLATION",
            "a error BUSINESS_RULE_VIOLATION"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_timeout_middleware_ends_slow_dispatches() {
    let mut bus = CommandBus::new();
    bus.register_fn(|Divide(ms): Divide| async move {
        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
        Ok(ms)
    })
    .unwrap();
    bus.add_middleware(TimeoutMiddleware::new(Duration::from_millis(100)));
    assert_eq!(bus.send(Divide(99)).await, Ok(99));
    let started = tokio::time::Instant::now();
    let err = bus.send(Divide(5_000)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(
        err.to_string(),
        "Command Divide timed out after 100 ms (handler 'Divide')"
    );
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(bus.metrics().failed_commands, 1);
}

#[tokio::test(start_paused = true)]
async fn the_timeout_middleware_takes_the_handler_configs_deadline() {
    let config = flext_types::HandlerConfig::for_environment(flext_constants::Environment::Test);
    let middleware = TimeoutMiddleware::from_config(&config);
    assert_eq!(middleware.deadline(), Duration::from_millis(5_000));
    let mut bus = QueryBus::new();
    bus.register_fn(|_: GetUserQuery| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok("late".to_owned())
    })
    .unwrap();
    bus.add_middleware(middleware);
    let err = bus
        .execute(GetUserQuery {
            user_id: "u".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Query GetUserQuery timed out after 5000 ms (handler 'GetUserQuery')"
    );
}

#[tokio::test]
async fn typed_validation_middleware_checks_only_its_type() {
    let log: Log = Arc::default();
    let mut bus = divide_bus(&log);
    bus.register_fn(|cmd: CreateUserCommand| async move { Ok(cmd.name) })
        .unwrap();
    bus.add_middleware(ValidationMiddleware::for_message(
        "below_100",
        |Divide(n): &Divide| *n < 100,
    ));
    let err = bus.send(Divide(500)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert!(log.lock().unwrap().is_empty(), "the handler was not called");
    assert_eq!(bus.send(Divide(5)).await, Ok(5));
    assert_eq!(
        bus.send(CreateUserCommand::new("Ann", "a@b"))
            .await
            .unwrap(),
        "Ann"
    );
}

#[tokio::test]
async fn validation_middleware_sees_the_context() {
    let log: Log = Arc::default();
    let mut bus = divide_bus(&log);
    bus.add_middleware(ValidationMiddleware::new(
        "needs_tenant",
        |d: &Dispatch| -> FlextResult<()> {
            if d.metadata().headers.contains_key("tenant") {
                Ok(())
            } else {
                Err(FlextError::invalid_argument(format!(
                    "{} {} needs a tenant header",
                    d.kind(),
                    d.message_type()
                )))
            }
        },
    ));
    let err = bus.send(Divide(1)).await.unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::ValidationError,
        "any rejection is a validation error"
    );
    assert_eq!(err.to_string(), "command Divide needs a tenant header");
    let ok = bus
        .send_with(
            Divide(1),
            MessageMetadata::new().with_header("tenant", "acme"),
        )
        .await;
    assert_eq!(ok, Ok(1));
}

#[tokio::test]
async fn authorization_middleware_denies_by_context_and_when_the_check_fails() {
    let log: Log = Arc::default();
    let mut bus = divide_bus(&log);
    bus.add_middleware(AuthorizationMiddleware::new(
        "admins",
        |ctx: &DispatchContext| -> FlextResult<()> {
            match ctx.metadata().headers.get("role").map(String::as_str) {
                Some("admin") => Ok(()),
                Some(role) => Err(FlextError::authorization_denied(format!(
                    "Role {role} may not send {}",
                    ctx.message_type()
                ))),
                None => Err(FlextError::storage("session store unreachable")),
            }
        },
    ));
    let as_role = |role: &str| MessageMetadata::new().with_header("role", role);
    assert_eq!(bus.send_with(Divide(3), as_role("admin")).await, Ok(3));
    let err = bus
        .send_with(Divide(3), as_role("guest"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(err.to_string(), "Role guest may not send Divide");
    let err = bus.send(Divide(3)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(
        err.to_string(),
        "Authorization check 'admins' failed for command Divide: session store unreachable"
    );
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "only the admin's command reached the handler"
    );
}

struct Doubler;

impl Middleware<Dispatch, DispatchOutput> for Doubler {
    fn name(&self) -> &str {
        "doubler"
    }

    fn before_request(&self, mut dispatch: Dispatch) -> FlextResult<Dispatch> {
        if let Some(Divide(n)) = dispatch.message_mut::<Divide>() {
            *n *= 2;
        }
        Ok(dispatch)
    }
}

#[tokio::test]
async fn middleware_may_change_the_message_and_see_the_correlation_id() {
    let log: Log = Arc::default();
    let mut bus = divide_bus(&log);
    bus.add_middleware(Doubler);
    let seen = Arc::new(Mutex::new(None));
    struct Spy(Arc<Mutex<Option<(MessageKind, String)>>>);
    impl Middleware<Dispatch, DispatchOutput> for Spy {
        fn name(&self) -> &str {
            "spy"
        }
        fn before_request(&self, d: Dispatch) -> FlextResult<Dispatch> {
            *self.0.lock().unwrap() = Some((d.kind(), d.metadata().correlation_id.to_string()));
            Ok(d)
        }
    }
    bus.add_middleware(Spy(seen.clone()));
    let metadata = MessageMetadata::new();
    let correlation = metadata.correlation_id.to_string();
    assert_eq!(bus.send_with(Divide(21), metadata).await, Ok(42));
    assert_eq!(
        *seen.lock().unwrap(),
        Some((MessageKind::Command, correlation))
    );
}

struct Exploding;

#[async_trait]
impl Middleware<Dispatch, DispatchOutput> for Exploding {
    fn name(&self) -> &str {
        "exploding"
    }

    async fn call(
        &self,
        dispatch: Dispatch,
        next: Next<'_, Dispatch, DispatchOutput>,
    ) -> FlextResult<DispatchOutput> {
        if dispatch
            .message::<Divide>()
            .is_some_and(|Divide(n)| *n == 13)
        {
            panic!("unlucky number");
        }
        next.run(dispatch).await
    }
}

#[tokio::test]
async fn a_panicking_middleware_is_contained() {
    let log: Log = Arc::default();
    let mut bus = divide_bus(&log);
    bus.add_middleware(Exploding);
    let err = bus.send(Divide(13)).await.unwrap_err();
    assert_eq!(err.to_string(), "Handler execution failed: unlucky number");
    assert_eq!(bus.send(Divide(12)).await, Ok(12));
}

#[tokio::test]
async fn event_bus_middleware_runs_around_each_delivery() {
    let log: Log = Arc::default();
    let mut bus = EventBus::new();
    bus.add_middleware(Recording {
        name: "m",
        log: log.clone(),
    });
    for _ in 0..2 {
        bus.subscribe_fn("UserCreated", |_: Arc<UserCreated>| async { Ok(()) });
    }
    let report = bus
        .publish(UserCreated {
            user_id: "u".into(),
        })
        .await;
    assert_eq!(report.delivered, 2);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "m before UserCreated",
            "m after",
            "m before UserCreated",
            "m after"
        ]
    );
}

/// Answers every dispatch with a `&str`, whatever the message's output type.
struct WrongAnswer;

impl Middleware<Dispatch, DispatchOutput> for WrongAnswer {
    fn name(&self) -> &str {
        "wrong_answer"
    }

    fn after_response(&self, _: DispatchOutput) -> FlextResult<DispatchOutput> {
        Ok(Box::new("not a number"))
    }
}

#[tokio::test]
async fn a_middleware_answering_another_type_is_a_wiring_error() {
    let log: Log = Arc::default();
    let mut bus = divide_bus(&log);
    bus.add_middleware(WrongAnswer);
    let err = bus.send(Divide(3)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::WiringError, "{err}");
    assert_eq!(
        err.to_string(),
        "A middleware answered command Divide with a response of another type"
    );
}

#[tokio::test]
async fn bus_middleware_runs_around_a_synchronous_subscriber() {
    let log: Log = Arc::default();
    let mut bus = EventBus::new();
    bus.add_middleware(Recording {
        name: "outer",
        log: log.clone(),
    });
    let sink = log.clone();
    bus.subscribe_sync_fn("UserCreated", move |event: &Arc<UserCreated>| {
        sink.lock()
            .unwrap()
            .push(format!("subscriber {}", event.user_id));
        Ok(())
    });
    let report = bus
        .publish(UserCreated {
            user_id: "u1".into(),
        })
        .await;
    assert_eq!(report.delivered, 1);
    assert_eq!(
        *log.lock().unwrap(),
        ["outer before UserCreated", "subscriber u1", "outer after"]
    );
}
