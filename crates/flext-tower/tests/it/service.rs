//! `HandlerService`: a flext handler as a tower service.

use std::sync::Arc;
use std::task::{Context, Poll};

use flext_constants::ErrorCode;
use flext_impl::handler_fn;
use flext_protocols::{BoxHandler, Handler};
use flext_tower::{HandlerExt, HandlerService, HandlerServiceRef};
use flext_types::FlextError;
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::test]
async fn a_handler_answers_as_a_service_under_tower_layers() {
    let add_one = handler_fn("add_one", |x: u64| async move { Ok(x + 1) });
    let mut service = ServiceBuilder::new()
        .map_request(|x: u64| x * 10)
        .map_response(|x: u64| x * 2)
        .service(add_one.into_service());
    let ready = service.ready().await.expect("always ready");
    assert_eq!(ready.call(4).await, Ok(82));
}

#[test]
fn the_service_is_always_ready() {
    let mut service = HandlerService::new(handler_fn("noop", |x: u8| async move { Ok(x) }));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert_eq!(service.poll_ready(&mut cx), Poll::Ready(Ok(())));
}

#[tokio::test]
async fn the_handlers_error_comes_back_unchanged() {
    let reject = handler_fn("reject", |x: u64| async move {
        Err::<u64, _>(FlextError::validation(format!("{x} is odd")))
    });
    let err = reject.into_service().oneshot(3).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(err.message(), "3 is odd");
}

#[tokio::test]
async fn clones_share_the_handler() {
    let service = HandlerService::new(handler_fn("add_one", |x: u64| async move { Ok(x + 1) }));
    let clone = service.clone();
    assert!(Arc::ptr_eq(service.handler(), clone.handler()));
    assert_eq!(clone.oneshot(1).await, Ok(2));
    assert_eq!(service.oneshot(2).await, Ok(3));
}

#[tokio::test]
async fn a_shared_erased_handler_is_served_too() {
    let boxed: BoxHandler<u64, u64> =
        Arc::new(handler_fn("add_one", |x: u64| async move { Ok(x + 1) }));
    let service = HandlerService::from_arc(Arc::clone(&boxed));
    assert_eq!(
        format!("{service:?}"),
        r#"HandlerService { handler: "add_one" }"#
    );
    assert_eq!(service.handler().handler_name(), "add_one");
    assert_eq!(service.oneshot(41).await, Ok(42));
}

#[tokio::test]
async fn a_borrowed_handler_serves_many_calls_through_a_stack() {
    let reject_odd = handler_fn("halve", |x: u64| async move {
        if x.is_multiple_of(2) {
            Ok(x / 2)
        } else {
            Err(FlextError::invalid_argument(format!("{x} is odd")))
        }
    });
    let mut service = ServiceBuilder::new()
        .map_request(|x: u64| x * 2)
        .service(reject_odd.as_service());
    for x in 0..4 {
        let ready = service.ready().await.expect("always ready");
        assert_eq!(ready.call(x).await, Ok(x));
    }
    let copy = reject_odd.as_service();
    let err = copy.oneshot(3).await.unwrap_err();
    assert_eq!(err, FlextError::invalid_argument("3 is odd"));
}

#[test]
fn a_borrowed_service_is_always_ready_and_shows_its_handler() {
    let boxed: BoxHandler<u64, u64> =
        Arc::new(handler_fn("add_one", |x: u64| async move { Ok(x + 1) }));
    let mut service = HandlerServiceRef::new(&*boxed);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert_eq!(service.poll_ready(&mut cx), Poll::Ready(Ok(())));
    assert_eq!(service.handler().handler_name(), "add_one");
    let clone = service;
    assert_eq!(
        format!("{clone:?}"),
        r#"HandlerServiceRef { handler: "add_one" }"#
    );
}
