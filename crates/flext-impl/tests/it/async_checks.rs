//! Async fns and async closures as authorizers, through `authorizer_fn`.

use std::collections::HashSet;
use std::sync::Arc;

use flext_constants::ErrorCode;
use flext_impl::{AuthorizingHandler, BasicHandler, Identity, ManagedHandler};
use flext_protocols::{Handler, authorizer_fn, authorizer_with};
use flext_types::{FlextError, FlextResult};
use serde_json::{Value, json};

async fn is_admin(data: &Value) -> bool {
    tokio::task::yield_now().await;
    data["user_role"] == "admin"
}

#[tokio::test]
async fn an_async_fn_is_an_authorizer() {
    let handler = AuthorizingHandler::new("admin_only", authorizer_fn(is_admin));
    assert!(handler.handle(json!({"user_role": "admin"})).await.is_ok());
    let err = handler
        .handle(json!({"user_role": "guest"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(err.to_string(), "Authorization denied");
    assert_eq!(
        (handler.denials(), handler.metrics().requests_processed),
        (1, 1)
    );
}

#[tokio::test]
async fn an_async_closure_with_state_is_an_authorizer_and_keeps_its_reason() {
    let directory: Arc<HashSet<String>> = Arc::new(["alice".to_owned()].into());
    let check = authorizer_with(
        directory,
        async |directory: &Arc<HashSet<String>>, user: &String| -> FlextResult<()> {
            tokio::task::yield_now().await;
            if directory.contains(user) {
                Ok(())
            } else {
                Err(FlextError::authorization_denied(format!(
                    "{user} is not in the directory"
                )))
            }
        },
    );
    let handler = AuthorizingHandler::wrap(BasicHandler::<Identity<String>>::new("files"), check);
    assert_eq!(handler.handle("alice".into()).await, Ok("alice".to_owned()));
    let err = handler.handle("mallory".into()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(err.to_string(), "mallory is not in the directory");
}

#[tokio::test]
async fn an_async_check_that_errors_or_panics_denies() {
    let broken = AuthorizingHandler::new(
        "directory",
        authorizer_fn(async |_: &Value| -> FlextResult<()> {
            tokio::task::yield_now().await;
            Err(FlextError::storage("directory unreachable"))
        }),
    );
    let err = broken.handle(json!({})).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(
        err.to_string(),
        "Authorization check of 'directory' failed: directory unreachable"
    );

    let panicking = AuthorizingHandler::new(
        "panicky",
        authorizer_fn(async |_: &Value| -> bool {
            tokio::task::yield_now().await;
            panic!("no session")
        }),
    );
    let err = panicking.handle(json!({})).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Authorization check of 'panicky' panicked: no session"
    );
    assert_eq!(panicking.metrics().requests_processed, 0);
}
