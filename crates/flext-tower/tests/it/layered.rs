//! `TowerLayered`: tower layers on a flext handler, a flext handler again.

use std::time::Duration;

use flext_constants::{ErrorCode, HandlerKind};
use flext_impl::handler_fn;
use flext_protocols::Handler;
use flext_tower::{HandlerExt, layer};
use flext_types::{FlextError, FlextResult};
use tower::ServiceBuilder;
use tower::layer::util::Identity;

/// A handler that accepts even numbers only, of kind `Query`.
#[derive(Debug)]
struct Evens;

#[flext_protocols::async_trait]
impl Handler for Evens {
    type Request = u64;
    type Response = u64;

    fn handler_name(&self) -> &str {
        "evens"
    }

    fn can_handle(&self, request: &u64) -> bool {
        request.is_multiple_of(2)
    }

    fn handler_kind(&self) -> HandlerKind {
        HandlerKind::Query
    }

    async fn handle(&self, x: u64) -> FlextResult<u64> {
        if x.is_multiple_of(2) {
            Ok(x / 2)
        } else {
            Err(FlextError::invalid_argument(format!("{x} is odd")))
        }
    }
}

#[tokio::test]
async fn name_kind_and_can_handle_pass_through() {
    let layered = Evens.layer(Identity::new());
    assert_eq!(layered.handler_name(), "evens");
    assert_eq!(layered.handler_kind(), HandlerKind::Query);
    assert!(layered.can_handle(&4));
    assert!(!layered.can_handle(&3));
    assert_eq!(layered.handle(8).await, Ok(4));
    assert_eq!(layered.handler().handler_name(), "evens");
    assert_eq!(
        format!("{layered:?}"),
        r#"TowerLayered { handler: "evens", .. }"#
    );
}

#[tokio::test]
async fn the_free_function_and_the_method_build_the_same_stack() {
    let stack = || {
        ServiceBuilder::new()
            .map_request(|x: u64| x + 1)
            .map_response(|x: u64| x * 3)
    };
    let by_method = handler_fn("add", |x: u64| async move { Ok(x + 1) }).layer(stack());
    let by_function = layer(
        handler_fn("add", |x: u64| async move { Ok(x + 1) }),
        stack(),
    );
    assert_eq!(by_method.handle(1).await, Ok(9));
    assert_eq!(by_function.handle(1).await, Ok(9));
}

#[tokio::test(start_paused = true)]
async fn the_handlers_error_crosses_every_layer_unchanged() {
    // Each of these layers boxes the inner error; it comes back out as the handler's.
    let layered = Evens.layer(
        ServiceBuilder::new()
            .buffer(4)
            .load_shed()
            .concurrency_limit(2)
            .rate_limit(10, Duration::from_secs(1))
            .timeout(Duration::from_secs(1)),
    );
    assert_eq!(
        layered.handle(3).await,
        Err(FlextError::invalid_argument("3 is odd"))
    );
    assert_eq!(layered.handle(6).await, Ok(3));
}

#[tokio::test(start_paused = true)]
async fn an_inner_timeout_is_named_after_the_wrapped_handler() {
    let slow = handler_fn("report", |secs: u64| async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        Ok(secs)
    })
    .layer(ServiceBuilder::new().timeout(Duration::from_millis(250)));
    let err = slow.handle(3).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(
        err.message(),
        "timeout layer of 'report': request timed out"
    );
}
