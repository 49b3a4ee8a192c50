//! `tower_error`: each of tower's errors as the `FlextError` naming its layer.

use std::error::Error as _;
use std::task::{Context, Poll};

use flext_constants::ErrorCode;
use flext_tower::{ServiceHandler, tower_error};
use flext_types::FlextError;
use serde_json::json;
use tower::buffer::Buffer;
use tower::load_shed::error::Overloaded;
use tower::{BoxError, Service};

#[test]
fn a_flext_error_comes_back_as_itself() {
    let original = FlextError::validation("email is empty").with_data(json!({"field": "email"}));
    let mapped = tower_error(Box::new(original.clone()), "create_user");
    assert_eq!(mapped, original);
}

#[test]
fn an_overloaded_service_is_rate_limited_and_names_load_shed() {
    let err = tower_error(Box::new(Overloaded::new()), "create_user");
    assert_eq!(err.code(), ErrorCode::RateLimited);
    assert_eq!(
        err.message(),
        "load_shed layer of 'create_user': service overloaded, request shed"
    );
    assert_eq!(
        err.data(),
        Some(&json!({"layer": "load_shed", "handler": "create_user"}))
    );
}

#[test]
fn any_other_error_is_an_operation_error_with_its_text_and_source() {
    let io = std::io::Error::other("connection reset");
    let err = tower_error(Box::new(io), "create_user");
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.message(),
        "service of 'create_user' failed: connection reset"
    );
    assert_eq!(
        err.data(),
        Some(&json!({"layer": "service", "handler": "create_user"}))
    );
    let source = err.source().expect("the tower error is the source");
    assert_eq!(source.to_string(), "connection reset");
    assert!(format!("{source:?}").contains("connection reset"));
}

#[test]
fn an_unknown_error_keeps_its_own_source_chain() {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let err = tower_error(
        Box::new(Outer(std::io::Error::other("inner cause"))),
        "create_user",
    );
    let cause = err.source().and_then(|s| s.source()).expect("the chain");
    assert_eq!(cause.to_string(), "inner cause");
}

/// A service that is never ready: its readiness fails with the error it is given.
#[derive(Debug)]
struct Broken(Option<BoxError>);

impl Service<u64> for Broken {
    type Response = u64;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Err(self.0.take().unwrap_or_else(|| "broken again".into())))
    }

    fn call(&mut self, x: u64) -> Self::Future {
        std::future::ready(Ok(x))
    }
}

#[tokio::test]
async fn a_buffered_service_that_fails_with_a_flext_error_returns_that_error() {
    use flext_protocols::Handler;
    let down = FlextError::unavailable("the directory is down");
    let handler = ServiceHandler::new(
        "create_user",
        Buffer::new(Broken(Some(Box::new(down.clone()))), 4),
    );
    assert_eq!(handler.handle(1).await, Err(down.clone()));
    // The worker keeps the failure: later calls get the same error.
    assert_eq!(handler.handle(2).await, Err(down));
}

#[tokio::test]
async fn a_buffered_service_that_fails_otherwise_names_the_buffer() {
    use flext_protocols::Handler;
    let handler = ServiceHandler::new(
        "create_user",
        Buffer::new(
            Broken(Some(Box::new(std::io::Error::other("disk full")))),
            4,
        ),
    );
    let err = handler.handle(1).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.message(),
        "buffer layer of 'create_user': the buffered service failed: disk full"
    );
    assert_eq!(
        err.data(),
        Some(&json!({"layer": "buffer", "handler": "create_user"}))
    );
}
