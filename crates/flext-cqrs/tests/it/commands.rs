//! CommandBus: registration, dispatch, validation, not found, panics, metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use flext_constants::ErrorCode;
use flext_cqrs::{CommandBus, MessageTypeMetrics};
use flext_impl::{BasicHandler, ManagedHandler, handler_fn, sync_handler_fn};
use flext_types::FlextResult;

use crate::{CreateUserCommand, Divide};

fn counting_bus() -> (CommandBus, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let mut bus = CommandBus::new();
    let seen = calls.clone();
    bus.register_fn(move |cmd: CreateUserCommand| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(format!("user_{n} ({})", cmd.name)) }
    })
    .unwrap();
    (bus, calls)
}

#[tokio::test]
async fn send_returns_the_typed_output() {
    let (bus, calls) = counting_bus();
    let id = bus
        .send(CreateUserCommand::new("Alice Johnson", "alice@company.com"))
        .await;
    assert_eq!(id.unwrap(), "user_1 (Alice Johnson)");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(bus.has_handler::<CreateUserCommand>());
    assert!(!bus.has_handler::<Divide>());
}

#[tokio::test]
async fn a_second_handler_for_a_type_is_a_duplicate_and_the_first_stays() {
    let (mut bus, _) = counting_bus();
    let err = bus
        .register(handler_fn("impostor", |_: CreateUserCommand| async {
            Ok("impostor".to_owned())
        }))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Duplicate);
    assert_eq!(
        err.to_string(),
        "A handler is already registered for command: CreateUserCommand (handler 'CreateUserCommand')"
    );
    let out = bus
        .send(CreateUserCommand::new("Bob", "bob@company.com"))
        .await
        .unwrap();
    assert_eq!(out, "user_1 (Bob)", "the first handler still answers");
}

#[tokio::test]
async fn no_handler_is_a_wiring_error_naming_the_command() {
    let bus = CommandBus::new();
    let err = bus
        .send(CreateUserCommand::new("Alice", "a@b.c"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::WiringError);
    assert_eq!(
        err.to_string(),
        "No handler registered for command: CreateUserCommand"
    );
    let m = bus.metrics();
    assert_eq!((m.commands_processed, m.failed_commands), (1, 1));
}

#[tokio::test]
async fn an_invalid_command_never_reaches_its_handler() {
    let (bus, calls) = counting_bus();
    let err = bus
        .send(CreateUserCommand::new("A", "a@b.c"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(err.to_string(), "Name must be at least 2 characters");
    let err = bus
        .send(CreateUserCommand::new("Alice", "alice.company.com"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(err.to_string(), "Invalid email format");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler was never called"
    );
    let per_type = &bus.metrics().commands["CreateUserCommand"];
    assert_eq!(
        (per_type.processed, per_type.failed, per_type.latency.count),
        (2, 2, 0)
    );
}

#[tokio::test]
async fn a_panicking_handler_is_an_operation_error_and_the_bus_keeps_working() {
    let mut bus = CommandBus::new();
    bus.register(sync_handler_fn(
        "divider",
        |Divide(n): Divide| -> FlextResult<u32> {
            if n == 0 {
                panic!("attempt to divide by zero");
            }
            Ok(100 / n)
        },
    ))
    .unwrap();
    let err = bus.send(Divide(0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler execution failed: attempt to divide by zero"
    );
    assert_eq!(bus.send(Divide(4)).await, Ok(25));
    let m = bus.metrics();
    assert_eq!((m.successful_commands, m.failed_commands), (1, 1));
    assert_eq!(m.commands["Divide"].handler, "divider");
}

#[tokio::test]
async fn unregister_removes_the_handler_and_says_when_there_is_none() {
    let (mut bus, _) = counting_bus();
    bus.unregister::<CreateUserCommand>().unwrap();
    assert_eq!(bus.metrics().registered_handlers, 0);
    let err = bus
        .send(CreateUserCommand::new("Alice", "a@b.c"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::WiringError);
    let err = bus.unregister::<CreateUserCommand>().unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::NotFound,
        "a lookup of a registration"
    );
    assert_eq!(
        err.to_string(),
        "No handler registered for command: CreateUserCommand"
    );
    bus.register_fn(|_: CreateUserCommand| async { Ok("again".to_owned()) })
        .unwrap();
    assert_eq!(
        bus.send(CreateUserCommand::new("Al", "a@b")).await.unwrap(),
        "again"
    );
}

#[tokio::test]
async fn a_managed_handler_keeps_its_own_metrics_on_the_bus() {
    let handler = Arc::new(BasicHandler::from_fn(
        "divider",
        |Divide(n): Divide| async move { Ok(n * 2) },
    ));
    let mut bus = CommandBus::new();
    bus.register(handler.clone()).unwrap();
    let every = MessageTypeMetrics::LATENCY_SAMPLE_EVERY;
    for n in 0..=every * 2 {
        bus.send(Divide(n as u32)).await.unwrap();
    }
    assert_eq!(handler.metrics().requests_processed, every * 2 + 1);
    let m = bus.metrics();
    assert_eq!(m.commands["Divide"].processed, every * 2 + 1);
    // The bus times the first send and one in `every` after it: sends 0, 16 and 32.
    assert_eq!(m.commands["Divide"].latency.count, 3);
    assert_eq!(m.registered_handlers, 1);
}

#[tokio::test]
async fn the_bus_totals_keep_the_sends_of_an_unregistered_handler() {
    let mut bus = CommandBus::new();
    bus.register_fn(|Divide(n): Divide| async move { Ok(n) })
        .unwrap();
    bus.send(Divide(1)).await.unwrap();
    bus.send(Divide(2)).await.unwrap();
    bus.unregister::<Divide>().unwrap();
    assert!(bus.send(Divide(3)).await.is_err(), "no handler any more");
    bus.register_fn(|Divide(n): Divide| async move {
        Err::<u32, _>(flext_types::FlextError::business_rule(format!("no {n}")))
    })
    .unwrap();
    assert!(bus.send(Divide(4)).await.is_err());
    let m = bus.metrics();
    assert_eq!(
        (
            m.commands_processed,
            m.successful_commands,
            m.failed_commands
        ),
        (4, 2, 2)
    );
    assert_eq!(
        (m.commands["Divide"].processed, m.commands["Divide"].failed),
        (1, 1),
        "the new handler's own counts start at zero"
    );
}

/// A hand-written handler that panics before it returns its future.
struct PanicsEagerly;

impl flext_protocols::Handler for PanicsEagerly {
    type Request = Divide;
    type Response = u32;

    fn handler_name(&self) -> &str {
        "eager"
    }

    fn handle<'life0, 'async_trait>(
        &'life0 self,
        Divide(n): Divide,
    ) -> flext_protocols::HandleFuture<'async_trait, u32>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        if n == 0 {
            panic!("no future for zero");
        }
        Box::pin(async move { Ok(n) })
    }
}

#[tokio::test]
async fn a_handler_that_panics_before_its_future_is_an_operation_error() {
    let mut bus = CommandBus::new();
    bus.register(PanicsEagerly).unwrap();
    let err = bus.send(Divide(0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler execution failed: no future for zero"
    );
    assert_eq!(bus.send(Divide(3)).await, Ok(3));
    let m = bus.metrics();
    assert_eq!((m.successful_commands, m.failed_commands), (1, 1));
}
