//! The order-processing scenario, asserted on typed results.

use flext_examples::orders::{
    OrderProcessingHandler, OrderRequest, OrderStatus, guide_test_orders,
};
use flext_handlers::prelude::*;
use serde_json::json;

#[tokio::test]
async fn the_four_guide_orders_have_the_guides_outcomes() {
    let handler = BasicHandler::wrap(OrderProcessingHandler::new());
    let mut results = Vec::new();
    for request in guide_test_orders() {
        results.push(handler.handle(request).await);
    }

    let first = results[0].as_ref().unwrap();
    assert_eq!(first.id, "order_1");
    assert_eq!(first.status, OrderStatus::Pending);
    assert_eq!(first.total_amount, 850.0);
    assert!(first.processing_notes.is_empty());

    let second = results[1].as_ref().unwrap();
    assert_eq!(second.status, OrderStatus::RequiresApproval);
    assert_eq!(second.total_amount, 1500.0);
    assert_eq!(
        second.processing_notes,
        ["High-value order requires manager approval"]
    );

    let third = results[2].as_ref().unwrap();
    assert_eq!(third.status, OrderStatus::Pending);
    assert_eq!(third.bulk_discount, Some(0.05));
    assert!(
        (third.total_amount - 356.25).abs() < 1e-9,
        "375 less 5% is 356.25"
    );
    assert_eq!(third.processing_notes, ["Bulk discount applied (5%)"]);

    let fourth = results[3].as_ref().unwrap_err();
    assert_eq!(fourth.to_string(), "Order must contain items");
    assert_eq!(fourth.code(), ErrorCode::ValidationError);

    let stats = handler.inner().get_order_statistics();
    assert_eq!(stats.total_orders, 3);
    assert!((stats.total_revenue - 2706.25).abs() < 1e-9);
    assert!((stats.average_order_value - 2706.25 / 3.0).abs() < 1e-9);
    assert_eq!(stats.orders_requiring_approval, 1);

    let metrics = handler.get_metrics();
    assert_eq!(
        (
            metrics.requests_processed,
            metrics.successful_requests,
            metrics.failed_requests
        ),
        (4, 3, 1)
    );
    assert_eq!(
        handler.state(),
        HandlerState::Failed,
        "the last order failed"
    );
}

#[tokio::test]
async fn the_other_business_rules_reject_with_their_messages() {
    let handler = BasicHandler::wrap(OrderProcessingHandler::new());
    let cases = [
        (
            json!({"items": [{"name": "A", "price": 1.0, "quantity": 1}]}),
            "Customer ID is required",
        ),
        (
            json!({"customer_id": "c", "items": (0..11).map(|_| json!({"name": "A", "price": 1.0, "quantity": 1})).collect::<Vec<_>>()}),
            "Maximum 10 items per order",
        ),
        (
            json!({"customer_id": "c", "items": [{"name": "Free", "price": 0.0, "quantity": 3}]}),
            "Order total must be positive",
        ),
    ];
    for (raw, message) in cases {
        let request: OrderRequest = serde_json::from_value(raw).unwrap();
        let err = handler.handle(request).await.unwrap_err();
        assert_eq!(err.to_string(), message);
    }
    assert_eq!(
        handler.inner().get_order_statistics().total_orders,
        0,
        "nothing is stored"
    );
}
