//! The facade: the guide's namespaces and the Rust modules name the same items; and
//! behaviour that needs several layers at once, one module per topic.

mod retries;

use std::time::Duration;

use flext_handlers::prelude::*;
use flext_handlers::{Constants, Implementation, Protocols, Types};
use serde_json::json;

#[test]
fn constants_read_like_the_guide() {
    assert_eq!(Constants::Handler::DEFAULT_TIMEOUT, Duration::from_secs(30));
    assert_eq!(Constants::Handler::MAX_CHAIN_HANDLERS, 50);
    assert_eq!(Constants::Handler::MAX_PIPELINE_STAGES, 20);
    assert_eq!(Constants::Handler::MAX_RETRIES, 3);
    assert_eq!(
        Constants::Handler::SLOW_HANDLER_THRESHOLD,
        Duration::from_secs(5)
    );
    assert_eq!(Constants::Handler::States::Idle.as_str(), "idle");
    assert_eq!(
        Constants::Handler::States::Processing.as_str(),
        "processing"
    );
    assert_eq!(Constants::ErrorCode::ValidationError.as_str(), "FLEXT_3001");
    assert_eq!(Constants::Config::LogLevel::Warning.as_str(), "WARNING");
}

#[tokio::test]
async fn namespaces_and_modules_are_the_same_items() {
    let handler: Implementation::BasicHandler =
        flext_handlers::implementation::BasicHandler::new("example_handler");
    let config: Types::HandlerConfig =
        Implementation::BasicHandler::create_environment_handler_config("development").unwrap();
    handler.configure(config).unwrap();
    let out = handler.handle(json!({"n": 1})).await.unwrap();
    assert_eq!(out["n"], 1);
    let metrics: flext_handlers::types::HandlerMetrics = handler.get_metrics();
    assert_eq!(metrics.requests_processed, 1);
}

struct Shout;

#[flext_handlers::async_trait]
impl Protocols::Handler for Shout {
    type Request = String;
    type Response = String;

    fn handler_name(&self) -> &str {
        "shout"
    }

    async fn handle(&self, request: String) -> Types::FlextResult<String> {
        Ok(request.to_uppercase())
    }
}

#[tokio::test]
async fn a_user_handler_written_against_the_facade_gets_metrics() {
    let handler = BasicHandler::wrap(Shout);
    assert_eq!(handler.handle("hi".into()).await, Ok("HI".to_owned()));
    assert_eq!(handler.state(), HandlerState::Completed);
    let boxed: BoxHandler<String, String> = std::sync::Arc::new(handler);
    assert_eq!(boxed.handler_name(), "shout");
}

struct Ping;

impl Protocols::Command for Ping {
    type Output = &'static str;
}

#[tokio::test]
async fn the_cqrs_namespace_reads_like_the_guide() {
    let mut command_bus = flext_handlers::CQRS::CommandBus::new();
    let query_bus: flext_handlers::CQRS::QueryBus = flext_handlers::cqrs::QueryBus::new();
    let event_bus = flext_handlers::CQRS::EventBus::new();
    command_bus
        .register_fn(|_: Ping| async { Ok("pong") })
        .unwrap();
    assert_eq!(command_bus.send(Ping).await.unwrap(), "pong");
    assert_eq!(query_bus.metrics().registered_handlers, 0);
    assert_eq!(event_bus.subscription_count(), 0);
}

/// Glob imports of the guide's namespaces and the prelude give each name one meaning:
/// `Middleware` is the contract, `HookMiddleware` the guide's middleware of hooks.
mod one_meaning_per_name {
    use flext_handlers::Patterns::*;
    use flext_handlers::Protocols::*;
    use flext_handlers::prelude::*;

    struct Upper;

    impl Middleware<String, String> for Upper {
        fn name(&self) -> &str {
            "upper"
        }

        fn after_response(&self, response: String) -> FlextResult<String> {
            Ok(response.to_uppercase())
        }
    }

    #[tokio::test]
    async fn middleware_is_the_contract_and_hook_middleware_the_guides_middleware() {
        let greet = handler_fn("greet", |name: String| async move {
            Ok(format!("hello {name}"))
        });
        let layered = Layered::new(greet)
            .with(
                HookMiddleware::new("request_middleware")
                    .before_request(|s: String| Ok(s.trim().to_owned())),
            )
            .with(Upper);
        assert_eq!(layered.handle("  ada ".into()).await.unwrap(), "HELLO ADA");
    }
}
