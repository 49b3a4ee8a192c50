//! ValidatingHandler and AuthorizingHandler: rejections leave metrics and state untouched.

use flext_constants::{ErrorCode, HandlerKind, HandlerState};
use flext_impl::{
    AuthorizingHandler, BasicHandler, Identity, ManagedHandler, ValidatingHandler, handler_fn,
};
use flext_protocols::Handler;
use flext_types::{FlextError, FlextResult};
use serde_json::{Value, json};

fn email_validator(data: &Value) -> FlextResult<()> {
    let email = data.get("email").and_then(Value::as_str).unwrap_or("");
    if !email.contains('@') || !email.contains('.') {
        return Err(FlextError::validation("Invalid email format"));
    }
    Ok(())
}

#[tokio::test]
async fn validation_rejections_leave_metrics_and_state_untouched() {
    let handler = ValidatingHandler::new("user_validator", email_validator);
    assert_eq!(handler.kind(), HandlerKind::Validating);
    let err = handler
        .handle(json!({"email": "nobody"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(err.to_string(), "Invalid email format");
    assert_eq!(handler.state(), HandlerState::Idle);
    assert_eq!(handler.metrics().requests_processed, 0);
    assert_eq!(handler.rejections(), 1);

    let ok = handler
        .handle(json!({"email": "valid@example.com"}))
        .await
        .unwrap();
    assert_eq!(ok["email"], "valid@example.com");
    assert_eq!(handler.state(), HandlerState::Completed);
    let m = handler.metrics();
    assert_eq!((m.requests_processed, m.successful_requests), (1, 1));
}

#[tokio::test]
async fn validators_run_in_order_and_the_first_rejection_wins() {
    let handler = ValidatingHandler::new("layered", email_validator)
        .with_validator(|data: &Value| data.get("name").is_some())
        .with_validator(|_: &Value| -> FlextResult<()> { Err(FlextError::not_found("third")) });
    let err = handler.handle(json!({"email": "x"})).await.unwrap_err();
    assert_eq!(err.to_string(), "Invalid email format");
    let err = handler.handle(json!({"email": "a@b.c"})).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Validation failed",
        "a false from a bool validator"
    );
    let err = handler
        .handle(json!({"email": "a@b.c", "name": "A"}))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::ValidationError,
        "every rejection is a validation error"
    );
    assert_eq!(err.to_string(), "third");
    assert_eq!(handler.rejections(), 3);
    assert_eq!(handler.metrics().requests_processed, 0);
}

#[tokio::test]
async fn a_panicking_validator_rejects_instead_of_crashing() {
    let mut handler = ValidatingHandler::new("fragile_validator", |_: &Value| true);
    handler.add_validator(|data: &Value| -> bool { panic!("cannot read {data}") });
    let err = handler.handle(json!(1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(err.to_string(), "Validator panicked: cannot read 1");
    assert_eq!(handler.metrics().requests_processed, 0);
}

#[tokio::test]
async fn validating_a_custom_step_reaches_it_only_when_valid() {
    let step = handler_fn("double", |n: i64| async move { Ok(n * 2) });
    let handler = ValidatingHandler::wrap(step, |n: &i64| *n >= 0);
    assert_eq!(handler.handler_name(), "double");
    assert_eq!(handler.handle(21).await, Ok(42));
    assert!(handler.handle(-1).await.is_err());
    assert_eq!(handler.metrics().requests_processed, 1);
}

fn admin_authorizer(data: &Value) -> bool {
    data.get("user_role").and_then(Value::as_str) == Some("admin")
}

#[tokio::test]
async fn authorization_denials_leave_metrics_and_state_untouched() {
    let handler = AuthorizingHandler::new("admin_authorizer", admin_authorizer);
    assert_eq!(handler.kind(), HandlerKind::Authorizing);
    let err = handler
        .handle(json!({"user_role": "user"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(err.to_string(), "Authorization denied");
    assert_eq!(handler.state(), HandlerState::Idle);
    assert_eq!(handler.metrics().requests_processed, 0);
    assert_eq!(handler.denials(), 1);

    let ok = handler
        .handle(json!({"user_role": "admin", "operation": "delete_user"}))
        .await;
    assert_eq!(ok.unwrap()["operation"], "delete_user");
    assert_eq!(handler.metrics().successful_requests, 1);
}

#[tokio::test]
async fn a_check_that_errors_or_panics_denies() {
    let broken = AuthorizingHandler::new("directory", |_: &Value| -> FlextResult<()> {
        Err(FlextError::storage("directory unreachable"))
    });
    let err = broken.handle(json!({})).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(
        err.to_string(),
        "Authorization check of 'directory' failed: directory unreachable"
    );
    assert_eq!(
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .as_deref(),
        Some("directory unreachable")
    );

    let panicking =
        AuthorizingHandler::new("panicky", |_: &Value| -> bool { panic!("no session") });
    let err = panicking.handle(json!({})).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(
        err.to_string(),
        "Authorization check of 'panicky' panicked: no session"
    );
    assert_eq!(panicking.metrics().requests_processed, 0);
}

#[tokio::test]
async fn a_denial_with_a_reason_keeps_it() {
    let handler = AuthorizingHandler::wrap(
        BasicHandler::<Identity<String>>::new("resource"),
        |user: &String| -> FlextResult<()> {
            if user == "admin" {
                Ok(())
            } else {
                Err(FlextError::authorization_denied(format!(
                    "User {user} lacks permission 'delete'"
                )))
            }
        },
    );
    let err = handler.handle("user_003".into()).await.unwrap_err();
    assert_eq!(err.to_string(), "User user_003 lacks permission 'delete'");
}
