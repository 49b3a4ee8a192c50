//! MetricsHandler and EventHandler: sizes, errors by code, events by name.

use flext_impl::{EventHandler, ManagedHandler, MetricsHandler, handler_fn};
use flext_protocols::{Event, Handler, MetricsSource};
use flext_types::{FlextError, MetricValue};
use serde_json::json;

#[tokio::test]
async fn metrics_handler_measures_json_sizes_and_counts_errors_by_code() {
    let step = handler_fn("lookup", |id: u32| async move {
        match id {
            0 => Err(FlextError::validation("id 0 is reserved")),
            1..=9 => Ok(format!("user_{id}")),
            _ => Err(FlextError::not_found(format!("User {id} not found"))),
        }
    });
    let handler = MetricsHandler::wrap(step);
    for id in [1, 2, 0, 42, 43] {
        let _ = handler.handle(id).await;
    }
    let report = handler.report();
    assert_eq!(report.request_size.count, 5);
    assert_eq!(report.request_size.total_bytes, 1 + 1 + 1 + 2 + 2);
    assert_eq!(
        (report.request_size.min_bytes, report.request_size.max_bytes),
        (1, 2)
    );
    assert_eq!(report.response_size.count, 2);
    assert_eq!(
        report.response_size.total_bytes,
        8 + 8,
        "\"user_1\" is 8 bytes of JSON"
    );
    assert_eq!(report.errors_by_code.get("VALIDATION_ERROR"), Some(&1));
    assert_eq!(report.errors_by_code.get("NOT_FOUND"), Some(&2));
    assert_eq!(report.errors_by_code.len(), 2);
    assert_eq!(report.handler.failed_requests, 3);

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["requests_processed"], 5,
        "base metrics are flattened in"
    );

    let set = handler.metric_set();
    let not_found = set
        .samples
        .iter()
        .find(|s| {
            s.name == "errors_total" && s.labels == [("code".to_owned(), "NOT_FOUND".to_owned())]
        })
        .unwrap();
    assert_eq!(not_found.value, MetricValue::Counter(2));
}

#[tokio::test]
async fn metrics_handler_identity_measures_both_ways() {
    let handler = MetricsHandler::new("echo");
    handler.handle(json!({"k": "v"})).await.unwrap();
    let report = handler.report();
    assert_eq!(report.request_size.total_bytes, 9);
    assert_eq!(report.response_size.total_bytes, 9);
    assert_eq!(handler.metrics().successful_requests, 1);
}

enum UserEvent {
    Created(String),
    Deleted(String),
}

impl Event for UserEvent {
    fn event_name(&self) -> &str {
        match self {
            UserEvent::Created(_) => "UserCreated",
            UserEvent::Deleted(_) => "UserDeleted",
        }
    }
}

#[tokio::test]
async fn event_handler_counts_events_by_name() {
    let handler = EventHandler::from_fn("audit", |event: UserEvent| async move {
        match event {
            UserEvent::Created(id) if id.is_empty() => Err(FlextError::validation("empty id")),
            UserEvent::Created(_) => Ok(()),
            UserEvent::Deleted(id) => Err(FlextError::business_rule(format!("{id} is protected"))),
        }
    });
    handler
        .handle(UserEvent::Created("u1".into()))
        .await
        .unwrap();
    handler
        .handle(UserEvent::Created("u2".into()))
        .await
        .unwrap();
    assert!(
        handler
            .handle(UserEvent::Deleted("root".into()))
            .await
            .is_err()
    );
    assert_eq!(handler.events_processed(), 2);
    let by_name = handler.events_by_name();
    assert_eq!(by_name["UserCreated"], 2);
    assert_eq!(by_name["UserDeleted"], 1);
    assert_eq!(handler.metrics().failed_requests, 1);
    let labelled = handler
        .metric_set()
        .samples
        .into_iter()
        .filter(|s| s.name == "events_received")
        .count();
    assert_eq!(labelled, 2);
}

#[tokio::test]
async fn json_handler_decodes_requests_and_names_bad_ones() {
    use flext_impl::JsonHandler;
    use std::collections::HashMap;

    #[derive(serde::Deserialize)]
    struct Lookup {
        id: u32,
    }
    let lookup = JsonHandler::new(handler_fn("GetUserProjection", |q: Lookup| async move {
        Ok(json!({"user_id": q.id}))
    }));
    assert_eq!(lookup.handler_name(), "GetUserProjection");
    assert_eq!(
        lookup.handle(json!({"id": 3})).await.unwrap(),
        json!({"user_id": 3})
    );
    let err = lookup.handle(json!({"id": "three"})).await.unwrap_err();
    assert_eq!(err.code(), flext_constants::ErrorCode::SerializationError);
    assert!(
        err.message()
            .starts_with("Invalid request for 'GetUserProjection' (expected Lookup): invalid type"),
        "{err}"
    );

    // A map with tuple keys has no JSON form.
    let unencodable = JsonHandler::new(handler_fn("tuples", |()| async {
        Ok(HashMap::from([((1u8, 2u8), 3u8)]))
    }));
    let err = unencodable.handle(json!(null)).await.unwrap_err();
    assert_eq!(err.code(), flext_constants::ErrorCode::SerializationError);
    assert!(
        err.message()
            .starts_with("Response of 'tuples' does not serialize"),
        "{err}"
    );
}
