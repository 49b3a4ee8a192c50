//! HandlerManager: ecosystems all or nothing, usage, health, cleanup.

use std::time::Duration;

use flext_constants::{ErrorCode, HandlerKind, LogLevel};
use flext_management::{HandlerManager, HandlerSpec, Health};
use flext_types::{FlextError, FlextResult};
use serde_json::{Value, json};

fn email_validator(data: &Value) -> FlextResult<()> {
    let email = data.get("email").and_then(Value::as_str).unwrap_or("");
    if email.contains('@') && email.contains('.') {
        Ok(())
    } else {
        Err(FlextError::validation("Invalid email format"))
    }
}

#[tokio::test]
async fn a_bad_entry_is_named_and_nothing_of_the_ecosystem_is_registered() {
    let manager = HandlerManager::new();
    let cases = [
        (
            HandlerSpec::new("v", HandlerKind::Validating),
            ErrorCode::InvalidArgument,
            "Validator function required for v",
        ),
        (
            HandlerSpec::new("a", HandlerKind::Authorizing),
            ErrorCode::InvalidArgument,
            "Auth function required for a",
        ),
        (
            HandlerSpec::new("c", HandlerKind::Custom),
            ErrorCode::InvalidArgument,
            "Handler required for c",
        ),
        (
            HandlerSpec::new("m", HandlerKind::Metrics),
            ErrorCode::InvalidArgument,
            "Unknown handler type: metrics for m. Valid types: basic, validating, authorizing, custom, command, query, chain, pipeline",
        ),
        (
            HandlerSpec::basic("b").with_config(json!({"log_level": "LOUD"})),
            ErrorCode::InvalidArgument,
            "Failed to configure b: Invalid log_level: LOUD. Valid values: DEBUG, INFO, WARNING, ERROR, CRITICAL, TRACE",
        ),
        (
            HandlerSpec::basic(" "),
            ErrorCode::InvalidArgument,
            "Handler name cannot be empty",
        ),
    ];
    for (bad, code, message) in cases {
        let err = manager
            .register_ecosystem(vec![
                HandlerSpec::basic("first"),
                bad,
                HandlerSpec::basic("last"),
            ])
            .unwrap_err();
        assert_eq!((err.code(), err.to_string().as_str()), (code, message));
        assert_eq!(
            manager.registry().metrics().total_handlers,
            0,
            "no half-done registration"
        );
    }
    manager
        .register_ecosystem(vec![HandlerSpec::basic("taken")])
        .unwrap();
    let err = manager
        .register_ecosystem(vec![HandlerSpec::basic("new"), HandlerSpec::basic("taken")])
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Duplicate);
    assert!(!manager.registry().contains("new"));
}

#[tokio::test]
async fn configuration_is_applied_and_usage_feeds_the_health_report() {
    let manager = HandlerManager::new();
    let registered = manager
        .register_ecosystem(vec![
            HandlerSpec::validating("user_validator", email_validator)
                .with_config(json!({"validation_level": "strict", "log_level": "DEBUG"})),
            HandlerSpec::authorizing("admin_authorizer", |d: &Value| d["user_role"] == "admin")
                .with_config(json!({"environment": "production", "timeout": 5000})),
            HandlerSpec::basic("idle_one"),
        ])
        .unwrap();
    assert_eq!(registered["user_validator"], "validating");
    let validator = manager.registry().handler("user_validator").unwrap();
    assert_eq!(validator.core().config().log_level, LogLevel::Debug);
    assert_eq!(
        manager
            .registry()
            .handler("admin_authorizer")
            .unwrap()
            .core()
            .config()
            .timeout_ms,
        5000
    );

    manager
        .execute("user_validator", json!({"email": "ok@example.com"}))
        .await
        .unwrap();
    manager
        .execute("user_validator", json!({"email": "nope"}))
        .await
        .unwrap_err();
    manager
        .execute("admin_authorizer", json!({"user_role": "guest"}))
        .await
        .unwrap_err();
    assert!(manager.execute("ghost", json!({})).await.is_err());

    let report = manager.health_report();
    let guide = manager.get_handler_health_report();
    assert_eq!(
        (guide.handlers, guide.total_requests_processed),
        (report.handlers.clone(), report.total_requests_processed),
        "the guide's spelling"
    );
    assert_eq!(
        (
            report.total_registered_handlers,
            report.active_handlers,
            report.idle_handlers,
            report.unhealthy_handlers
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(report.total_requests_processed, 3);
    let validator = &report.handlers["user_validator"];
    assert_eq!(
        (validator.health, validator.requests_processed),
        (Health::Healthy, 2)
    );
    assert!(validator.last_success.is_some() && validator.last_failure.is_some());
    assert_eq!(
        validator.last_error.as_deref(),
        Some("Invalid email format")
    );
    let authorizer = &report.handlers["admin_authorizer"];
    assert_eq!(authorizer.health, Health::Unhealthy);
    assert_eq!(
        authorizer.last_error.as_deref(),
        Some("Authorization denied")
    );
    assert!(report.average_response_time_ms > 0.0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["handlers"]["idle_one"]["health"], "idle");
    assert_eq!(json["handlers"]["user_validator"]["kind"], "validating");
    assert!(json["generated_at"].as_str().unwrap().contains('T'));
}

#[tokio::test]
async fn cleanup_retires_handlers_idle_for_at_least_the_limit() {
    let manager = HandlerManager::new();
    manager
        .register_ecosystem(vec![
            HandlerSpec::basic("used"),
            HandlerSpec::basic("unused"),
        ])
        .unwrap();
    manager.execute("used", json!(1)).await.unwrap();
    assert!(
        manager
            .cleanup_inactive(Duration::from_secs(3600))
            .is_empty(),
        "nothing is an hour idle"
    );
    let mut cleaned = manager.cleanup_inactive(Duration::ZERO);
    cleaned.sort();
    assert_eq!(cleaned, ["unused", "used"]);
    assert_eq!(manager.health_report().total_registered_handlers, 0);
}

/// Fails on 0, answers anything else.
struct Direct;

#[flext_protocols::async_trait]
impl flext_protocols::Handler for Direct {
    type Request = u32;
    type Response = u32;

    fn handler_name(&self) -> &str {
        "direct"
    }

    async fn handle(&self, n: u32) -> FlextResult<u32> {
        if n == 0 {
            Err(FlextError::operation("zero"))
        } else {
            Ok(n)
        }
    }
}

#[tokio::test]
async fn a_handler_called_directly_counts_in_the_health_report() {
    use flext_impl::BasicHandler;
    use flext_protocols::Handler as _;

    let manager = HandlerManager::new();
    manager
        .registry()
        .register("direct", BasicHandler::wrap(Direct))
        .unwrap();
    assert_eq!(
        manager.health_report().handlers["direct"].health,
        Health::Idle
    );
    // Called the way a bus calls it, not through the manager.
    let handler = manager
        .registry()
        .typed::<BasicHandler<Direct>>("direct")
        .unwrap();
    assert!(handler.handle(0).await.is_err());
    let report = manager.health_report();
    assert_eq!(report.handlers["direct"].health, Health::Unhealthy);
    assert_eq!(
        (
            report.unhealthy_handlers,
            report.handlers["direct"].requests_processed
        ),
        (1, 0)
    );
    handler.handle(3).await.unwrap();
    assert_eq!(
        manager.health_report().handlers["direct"].health,
        Health::Healthy
    );
}
