//! `Handler::handler_kind`: concrete handlers report their core's kind, wrappers pass the
//! kind of what they wrap through.

use std::sync::Arc;

use flext_constants::HandlerKind;
use flext_impl::{
    AuthorizingHandler, BasicHandler, Identity, JsonHandler, ManagedHandler, MetricsHandler,
    ValidatingHandler, handler_fn,
};
use flext_protocols::{BoxHandler, Handler, async_trait};
use flext_types::FlextResult;
use serde_json::Value;

struct GetUser;

#[async_trait]
impl Handler for GetUser {
    type Request = u32;
    type Response = u32;

    fn handler_name(&self) -> &str {
        "get_user"
    }

    fn handler_kind(&self) -> HandlerKind {
        HandlerKind::Query
    }

    async fn handle(&self, id: u32) -> FlextResult<u32> {
        Ok(id)
    }
}

#[test]
fn concrete_handlers_report_their_kind_and_wrappers_pass_it_through() {
    let plain = handler_fn("plain", |n: u32| async move { Ok(n) });
    assert_eq!(plain.handler_kind(), HandlerKind::Custom, "the default");
    assert_eq!(GetUser.handler_kind(), HandlerKind::Query);

    let basic = BasicHandler::<Identity<Value>>::new("basic");
    assert_eq!(basic.handler_kind(), HandlerKind::Basic);
    let validating = ValidatingHandler::new("checked", |_: &Value| true);
    assert_eq!(validating.handler_kind(), HandlerKind::Validating);
    let authorizing = AuthorizingHandler::new("guarded", |_: &Value| true);
    assert_eq!(authorizing.handler_kind(), HandlerKind::Authorizing);
    let measured = MetricsHandler::<Identity<Value>>::new("measured");
    assert_eq!(measured.handler_kind(), HandlerKind::Metrics);

    let wrapped = BasicHandler::wrap(GetUser);
    assert_eq!(
        (wrapped.handler_kind(), wrapped.kind()),
        (HandlerKind::Query, HandlerKind::Query)
    );
    assert_eq!(BasicHandler::wrap(plain).kind(), HandlerKind::Custom);
    assert_eq!(
        JsonHandler::new(BasicHandler::wrap(GetUser)).handler_kind(),
        HandlerKind::Query
    );
    let shared: BoxHandler<u32, u32> = Arc::new(GetUser);
    assert_eq!(shared.handler_kind(), HandlerKind::Query);
    assert_eq!(Box::new(GetUser).handler_kind(), HandlerKind::Query);
    assert_eq!(
        ValidatingHandler::wrap(GetUser, |_: &u32| true).handler_kind(),
        HandlerKind::Validating,
        "a check wrapper is of its own kind"
    );
}
