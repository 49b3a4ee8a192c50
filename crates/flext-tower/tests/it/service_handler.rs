//! `ServiceHandler`: a tower service as a flext handler.

use std::time::Duration;

use flext_constants::{ErrorCode, HandlerKind};
use flext_protocols::Handler;
use flext_tower::ServiceHandler;
use flext_types::FlextError;
use serde_json::json;
use tower::{BoxError, ServiceBuilder, service_fn};

#[tokio::test]
async fn a_service_fn_is_a_named_handler() {
    let handler = ServiceHandler::new(
        "double",
        service_fn(|x: u64| async move { Ok::<_, BoxError>(x * 2) }),
    );
    assert_eq!(handler.handler_name(), "double");
    assert_eq!(handler.handler_kind(), HandlerKind::Custom);
    assert!(handler.can_handle(&7));
    assert_eq!(handler.handle(21).await, Ok(42));
    assert_eq!(
        format!("{handler:?}"),
        r#"ServiceHandler { name: "double", kind: Custom, .. }"#
    );
}

#[tokio::test]
async fn the_kind_can_be_set_for_registries() {
    let handler = ServiceHandler::new(
        "double",
        service_fn(|x: u64| async move { Ok::<_, BoxError>(x * 2) }),
    )
    .with_kind(HandlerKind::Command);
    assert_eq!(handler.handler_kind(), HandlerKind::Command);
}

#[tokio::test]
async fn a_flext_error_from_the_service_is_returned_as_it_is() {
    let handler = ServiceHandler::new(
        "reject",
        service_fn(|x: u64| async move {
            Err::<u64, _>(FlextError::business_rule(format!("{x} is taken")))
        }),
    );
    let err = handler.handle(5).await.unwrap_err();
    assert_eq!(err, FlextError::business_rule("5 is taken"));
}

#[tokio::test]
async fn another_error_is_an_operation_error_naming_the_handler() {
    let handler = ServiceHandler::new(
        "fetch",
        service_fn(|_: u64| async move { Err::<u64, _>(std::io::Error::other("reset by peer")) }),
    );
    let err = handler.handle(5).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(err.message(), "service of 'fetch' failed: reset by peer");
    assert_eq!(
        err.data(),
        Some(&json!({"layer": "service", "handler": "fetch"}))
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_names_its_layer_and_handler() {
    let handler = ServiceHandler::new(
        "slow",
        ServiceBuilder::new()
            .timeout(Duration::from_secs(1))
            .service(service_fn(|secs: u64| async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                Ok::<_, BoxError>(secs)
            })),
    );
    let started = tokio::time::Instant::now();
    let err = handler.handle(60).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(err.message(), "timeout layer of 'slow': request timed out");
    assert_eq!(
        err.data(),
        Some(&json!({"layer": "timeout", "handler": "slow"}))
    );
}

#[tokio::test]
async fn the_service_comes_back_out() {
    let handler = ServiceHandler::new(
        "double",
        service_fn(|x: u64| async move { Ok::<_, BoxError>(x * 2) }),
    );
    assert_eq!(handler.handle(1).await, Ok(2));
    let mut service = handler.into_inner();
    assert_eq!(
        tower::ServiceExt::oneshot(&mut service, 4).await.ok(),
        Some(8)
    );
}
