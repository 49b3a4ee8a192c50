//! HandlerChain: limits, both modes, failures, panics, metrics.

use std::sync::Arc;

use flext_constants::ErrorCode;
use flext_impl::handler_fn;
use flext_patterns::{ChainMode, HandlerChain};
use flext_protocols::{Handler, async_trait};
use flext_types::{FlextError, FlextResult};

fn add(n: i64) -> impl Handler<Request = i64, Response = i64> {
    handler_fn(format!("add_{n}"), move |x: i64| async move { Ok(x + n) })
}

#[tokio::test]
async fn sequential_mode_feeds_each_output_to_the_next_handler() {
    let mut chain = HandlerChain::new("math");
    chain.add_handler(add(1)).unwrap();
    chain
        .add_fn("double", |x: i64| async move { Ok(x * 2) })
        .unwrap();
    chain.add_handler(add(10)).unwrap();
    assert_eq!(chain.handle(4).await, Ok(20));
    assert_eq!(chain.handler_names(), ["add_1", "double", "add_10"]);
    assert_eq!(chain.mode(), ChainMode::Sequential);
}

#[tokio::test]
async fn an_empty_sequential_chain_returns_its_input() {
    let chain: HandlerChain<i64> = HandlerChain::new("empty");
    assert_eq!(chain.handle(7).await, Ok(7));
}

#[tokio::test]
async fn the_51st_handler_is_a_business_rule_violation() {
    let mut chain = HandlerChain::new("long");
    for n in 0..50 {
        chain.add_handler(add(n)).unwrap();
    }
    let err = chain.add_handler(add(50)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BusinessRuleViolation);
    assert_eq!(err.to_string(), "Chain exceeds maximum handlers limit: 50");
    assert_eq!(chain.len(), 50);
    assert_eq!(chain.handle(0).await, Ok((0..50).sum()));
}

#[tokio::test]
async fn names_are_unique_and_handlers_can_be_removed() {
    let mut chain = HandlerChain::new("named");
    chain.add_handler(add(1)).unwrap();
    assert_eq!(
        chain.add_handler(add(1)).unwrap_err().code(),
        ErrorCode::Duplicate
    );
    chain.add_handler(add(2)).unwrap();
    chain.remove_handler("add_1").unwrap();
    assert_eq!(chain.handle(0).await, Ok(2));
    let err = chain.remove_handler("add_1").unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            ErrorCode::NotFound,
            "Chain 'named' has no handler named 'add_1'"
        )
    );
}

#[tokio::test]
async fn the_first_failure_stops_the_chain_and_names_the_handler() {
    let reached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = reached.clone();
    let mut chain = HandlerChain::new("guarded");
    chain.add_handler(add(1)).unwrap();
    chain
        .add_fn("limit", |x: i64| async move {
            if x > 5 {
                Err(FlextError::business_rule(format!("{x} is over the limit")))
            } else {
                Ok(x)
            }
        })
        .unwrap();
    chain
        .add_fn("after", move |x: i64| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            async move { Ok(x) }
        })
        .unwrap();
    let err = chain.handle(10).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BusinessRuleViolation);
    assert_eq!(
        err.to_string(),
        "Handler 'limit' failed: 11 is over the limit"
    );
    assert_eq!(err.data().unwrap()["position"], 2);
    assert_eq!(err.data().unwrap()["chain"], "guarded");
    assert!(
        !reached.load(std::sync::atomic::Ordering::SeqCst),
        "the rest of the chain did not run"
    );
}

#[tokio::test]
async fn a_panicking_handler_fails_the_chain_and_the_chain_lives_on() {
    let mut chain = HandlerChain::new("fragile");
    chain
        .add_fn("explode", |x: i64| async move {
            if x == 0 {
                panic!("zero is not allowed here");
            }
            Ok(x)
        })
        .unwrap();
    let err = chain.handle(0).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler 'explode' failed: Handler execution failed: zero is not allowed here"
    );
    assert_eq!(chain.handle(3).await, Ok(3));
    let m = chain.metrics();
    assert_eq!((m.total_requests, m.failed_requests), (2, 1));
    assert_eq!((m.handlers[0].executions, m.handlers[0].failures), (2, 1));
    assert_eq!(chain.get_chain_metrics(), m, "the guide's spelling");
}

/// Accepts only numbers in a range.
struct Range {
    name: &'static str,
    low: i64,
    high: i64,
}

#[async_trait]
impl Handler for Range {
    type Request = i64;
    type Response = i64;

    fn handler_name(&self) -> &str {
        self.name
    }

    fn can_handle(&self, request: &i64) -> bool {
        (self.low..=self.high).contains(request)
    }

    async fn handle(&self, request: i64) -> FlextResult<i64> {
        Ok(request * 100 + self.low)
    }
}

#[tokio::test]
async fn first_match_mode_uses_only_the_first_handler_that_accepts() {
    let mut chain = HandlerChain::first_match("router");
    chain
        .add_handler(Range {
            name: "small",
            low: 0,
            high: 9,
        })
        .unwrap();
    chain
        .add_handler(Range {
            name: "medium",
            low: 5,
            high: 99,
        })
        .unwrap();
    assert_eq!(
        chain.handle(7).await,
        Ok(700),
        "small accepts first; medium is skipped"
    );
    assert_eq!(chain.handle(50).await, Ok(5005));
    let err = chain.handle(500).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::WiringError);
    assert_eq!(
        err.to_string(),
        "No handler in chain could process the request"
    );
    let m = chain.metrics();
    assert_eq!((m.handlers[0].executions, m.handlers[1].executions), (1, 1));
    assert_eq!((m.successful_requests, m.failed_requests), (2, 1));
    assert!(chain.can_handle(&50) && !chain.can_handle(&500));
}

#[tokio::test]
async fn chains_are_handlers_and_nest() {
    let mut inner = HandlerChain::new("inner");
    inner.add_handler(add(1)).unwrap();
    inner.add_handler(add(2)).unwrap();
    let mut outer = HandlerChain::new("outer");
    outer.add_handler(inner).unwrap();
    outer.add_handler(add(3)).unwrap();
    assert_eq!(outer.handle(0).await, Ok(6));
    let m = outer.metrics();
    assert_eq!(m.handlers[0].name, "inner");
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["handlers"][1]["executions"], 1);
    assert!(json["handlers"][0]["average_time_ms"].is_number());
}
