//! QueryBus: typed and named queries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use flext_constants::ErrorCode;
use flext_cqrs::QueryBus;
use flext_impl::handler_fn;
use flext_types::FlextError;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::GetUserQuery;

#[tokio::test]
async fn typed_queries_return_their_typed_result() {
    let mut bus = QueryBus::new();
    bus.register_fn(|q: GetUserQuery| async move {
        if q.user_id == "user_1" {
            Ok("Alice Johnson".to_owned())
        } else {
            Err(FlextError::not_found(format!(
                "User {} not found",
                q.user_id
            )))
        }
    })
    .unwrap();
    let name = bus
        .execute(GetUserQuery {
            user_id: "user_1".into(),
        })
        .await
        .unwrap();
    assert_eq!(name, "Alice Johnson");
    let err = bus
        .execute(GetUserQuery {
            user_id: "user_9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "User user_9 not found");
    let m = bus.metrics();
    assert_eq!(
        (m.queries_processed, m.successful_queries, m.failed_queries),
        (2, 1, 1)
    );
    assert_eq!(m.queries["GetUserQuery"].processed, 2);
}

#[tokio::test]
async fn missing_typed_and_named_queries_are_wiring_errors() {
    let bus = QueryBus::new();
    let err = bus
        .execute(GetUserQuery {
            user_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::WiringError);
    assert_eq!(
        err.to_string(),
        "No handler registered for query: GetUserQuery"
    );
    let err = bus
        .execute_named("GetUserProjection", "user_1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::WiringError);
    assert_eq!(
        err.to_string(),
        "No handler registered for query: GetUserProjection"
    );
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Projection {
    user_id: String,
    name: String,
}

#[tokio::test]
async fn named_queries_take_and_return_serde_values() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let mut bus = QueryBus::new();
    bus.register_named(
        "GetUserProjection",
        handler_fn("projections", move |user_id: String| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok(Projection {
                    name: "Alice Johnson".into(),
                    user_id,
                })
            }
        }),
    )
    .unwrap();
    assert!(bus.has_named("GetUserProjection"));

    let value = bus
        .execute_named("GetUserProjection", "user_1")
        .await
        .unwrap();
    assert_eq!(value, json!({"user_id": "user_1", "name": "Alice Johnson"}));
    let typed: Projection = bus
        .execute_named_as("GetUserProjection", "user_2")
        .await
        .unwrap();
    assert_eq!(typed.user_id, "user_2");

    let err = bus
        .execute_named("GetUserProjection", json!({"id": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SerializationError);
    assert!(
        err.message()
            .starts_with("Invalid request for 'projections' (expected String)"),
        "{err}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a bad argument never reaches the handler"
    );

    let err = bus
        .execute_named_as::<u64>("GetUserProjection", "user_3")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SerializationError);
    assert!(
        err.message()
            .starts_with("The result of query 'GetUserProjection' does not decode")
    );

    let m = bus.metrics();
    assert_eq!(m.queries["GetUserProjection"].processed, 4);
    assert_eq!(m.queries["GetUserProjection"].failed, 1);
}

#[tokio::test]
async fn named_registration_rejects_empty_and_taken_names() {
    let mut bus = QueryBus::new();
    let stats = || handler_fn("stats", |_: serde_json::Value| async { Ok(json!({})) });
    let err = bus.register_named("  ", stats()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    bus.register_named("GetDepartmentStats", stats()).unwrap();
    let err = bus
        .register_named("GetDepartmentStats", stats())
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Duplicate);
    bus.unregister_named("GetDepartmentStats").unwrap();
    assert_eq!(
        bus.unregister_named("GetDepartmentStats")
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn a_panicking_query_handler_is_an_operation_error() {
    let mut bus = QueryBus::new();
    bus.register_named(
        "Explode",
        handler_fn("explode", |_: ()| async {
            if true {
                panic!("projection corrupted");
            }
            Ok(())
        }),
    )
    .unwrap();
    let err = bus.execute_named("Explode", ()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler execution failed: projection corrupted"
    );
    assert_eq!(bus.metrics().failed_queries, 1);
}
