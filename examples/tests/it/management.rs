//! The guide's management scenario, asserted on typed results.

use std::time::Duration;

use flext_examples::management::{guide_ecosystem, guide_requests};
use flext_examples::orders::{Order, OrderProcessingHandler, OrderStatus};
use flext_handlers::Management::Health;
use flext_handlers::prelude::*;

#[tokio::test]
async fn the_guides_ecosystem_registers_executes_reports_and_cleans_up() {
    let manager = HandlerManager::new();
    let registered = manager.register_ecosystem(guide_ecosystem()).unwrap();
    assert_eq!(registered.len(), 4);
    assert_eq!(registered["order_processor"], "custom");

    for (name, request) in guide_requests() {
        let response = manager.execute(name, request).await;
        assert!(response.is_ok(), "{name}: {response:?}");
        if name == "order_processor" {
            let order: Order = serde_json::from_value(response.unwrap()).unwrap();
            assert_eq!(
                (order.id.as_str(), order.total_amount, order.status),
                ("order_1", 200.0, OrderStatus::Pending)
            );
        }
    }

    let orders = manager.registry().handler("order_processor").unwrap();
    assert_eq!(orders.core().kind().as_str(), "custom");
    let typed = manager
        .registry()
        .typed::<BasicHandler<OrderProcessingHandler>>("order_processor")
        .unwrap();
    assert_eq!(typed.inner().get_order_statistics().total_orders, 1);

    let report = manager.health_report();
    assert_eq!(
        (
            report.total_registered_handlers,
            report.active_handlers,
            report.idle_handlers,
            report.unhealthy_handlers
        ),
        (4, 4, 0, 0)
    );
    assert_eq!(report.total_requests_processed, 4);
    assert!(
        report
            .handlers
            .values()
            .all(|h| h.health == Health::Healthy && h.last_used.is_some())
    );

    let mut cleaned = manager.cleanup_inactive(Duration::ZERO);
    cleaned.sort();
    assert_eq!(
        cleaned,
        [
            "admin_authorizer",
            "data_processor",
            "order_processor",
            "user_validator"
        ]
    );
    assert_eq!(manager.registry().metrics().total_handlers, 0);
}

#[tokio::test]
async fn the_guides_handlers_reject_what_they_should() {
    let manager = HandlerManager::new();
    manager.register_ecosystem(guide_ecosystem()).unwrap();
    let err = manager
        .execute("user_validator", serde_json::json!({"email": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (ErrorCode::ValidationError, "Invalid email format")
    );
    let err = manager
        .execute(
            "admin_authorizer",
            serde_json::json!({"user_role": "guest"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthorizationDenied);
    let err = manager
        .execute(
            "order_processor",
            serde_json::json!({"customer_id": "c", "items": []}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Order must contain items");
    let report = manager.health_report();
    assert_eq!(
        report.unhealthy_handlers, 3,
        "three handlers failed and never succeeded"
    );
    assert_eq!(report.idle_handlers, 1, "data_processor was never called");
}
