//! The guide's "Handler Registry and Management" ecosystem: the four handler specs and the
//! four test requests.

use flext_handlers::prelude::*;
use serde_json::{Value, json};

use crate::orders::OrderProcessingHandler;

/// The guide's `email_validator`.
pub fn email_validator(data: &Value) -> FlextResult<()> {
    let email = data.get("email").and_then(Value::as_str).unwrap_or("");
    if !email.contains('@') || !email.contains('.') {
        return Err(FlextError::validation("Invalid email format"));
    }
    Ok(())
}

/// The guide's `admin_authorizer`.
pub fn admin_authorizer(data: &Value) -> bool {
    data.get("user_role").and_then(Value::as_str) == Some("admin")
}

/// The guide's four handlers with their configurations.
pub fn guide_ecosystem() -> Vec<HandlerSpec> {
    vec![
        HandlerSpec::validating("user_validator", email_validator)
            .with_config(json!({"validation_level": "strict", "log_level": "DEBUG"})),
        HandlerSpec::authorizing("admin_authorizer", admin_authorizer)
            .with_config(json!({"environment": "production", "timeout": 5000})),
        HandlerSpec::basic("data_processor")
            .with_config(json!({"environment": "production", "max_retries": 2})),
        HandlerSpec::custom("order_processor", OrderProcessingHandler::new())
            .with_config(json!({"log_level": "INFO"})),
    ]
}

/// The guide's four test requests, by handler name.
pub fn guide_requests() -> Vec<(&'static str, Value)> {
    vec![
        (
            "user_validator",
            json!({"email": "valid@example.com", "name": "John Doe"}),
        ),
        (
            "admin_authorizer",
            json!({"user_role": "admin", "operation": "delete_user"}),
        ),
        (
            "data_processor",
            json!({"type": "batch_process", "records": [1, 2, 3]}),
        ),
        (
            "order_processor",
            json!({"customer_id": "cust_001", "items": [{"name": "Product A", "price": 100, "quantity": 2}]}),
        ),
    ]
}
