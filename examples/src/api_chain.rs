//! The guide's "Handler Chain Implementation": authentication, authorization, validation and
//! business logic as four handlers of JSON requests in one sequential chain.
//!
//! Each handler keeps the guide's own counters (attempts, failures, …) next to the metrics
//! the chain keeps for it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use flext_handlers::prelude::*;
use serde_json::{Value, json};

/// Counts of one handler, as the guide reports them.
#[derive(Debug, Default)]
pub struct Counters {
    seen: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn seen(&self) {
        self.seen.fetch_add(1, Ordering::Relaxed);
    }

    fn fail(&self, error: FlextError) -> FlextResult<Value> {
        self.failed.fetch_add(1, Ordering::Relaxed);
        Err(error)
    }

    /// Requests the handler saw.
    pub fn total(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Requests it failed.
    pub fn failures(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Checks the auth token and adds the user's context.
#[derive(Debug, Default)]
pub struct AuthenticationHandler {
    /// Attempts and failed authentications.
    pub counters: Counters,
}

#[async_trait]
impl Handler for AuthenticationHandler {
    type Request = Value;
    type Response = Value;

    fn handler_name(&self) -> &str {
        "authenticator"
    }

    async fn handle(&self, mut request: Value) -> FlextResult<Value> {
        self.counters.seen();
        let Some(token) = request.get("auth_token").and_then(Value::as_str) else {
            return self.counters.fail(FlextError::authorization_denied(
                "Authentication token required",
            ));
        };
        let user_context = match token {
            "admin_token_123" => {
                json!({"user_id": "admin_001", "role": "admin", "permissions": ["read", "write", "delete"]})
            }
            "manager_token_456" => {
                json!({"user_id": "mgr_002", "role": "manager", "permissions": ["read", "write"]})
            }
            "user_token_789" => {
                json!({"user_id": "user_003", "role": "user", "permissions": ["read"]})
            }
            _ => {
                return self.counters.fail(FlextError::authorization_denied(
                    "Invalid authentication token",
                ));
            }
        };
        println!(
            "🔑 User authenticated: {} ({})",
            user_context["user_id"].as_str().unwrap_or("?"),
            user_context["role"].as_str().unwrap_or("?")
        );
        request["user_context"] = user_context;
        request["authenticated"] = json!(true);
        Ok(request)
    }
}

/// Checks the user's permission for the requested operation.
#[derive(Debug, Default)]
pub struct AuthorizationHandler {
    /// Checks and denials.
    pub counters: Counters,
}

fn required_permission(operation: &str) -> &'static str {
    match operation.to_lowercase().as_str() {
        "create" | "update" | "patch" => "write",
        "delete" | "remove" => "delete",
        _ => "read",
    }
}

#[async_trait]
impl Handler for AuthorizationHandler {
    type Request = Value;
    type Response = Value;

    fn handler_name(&self) -> &str {
        "authorizer"
    }

    async fn handle(&self, request: Value) -> FlextResult<Value> {
        self.counters.seen();
        let Some(user) = request.get("user_context") else {
            return self.counters.fail(FlextError::authorization_denied(
                "No user context available - authentication required",
            ));
        };
        let operation = request
            .get("operation")
            .and_then(Value::as_str)
            .unwrap_or("read");
        let permission = required_permission(operation);
        let allowed = user["permissions"]
            .as_array()
            .is_some_and(|permissions| permissions.iter().any(|p| p == permission));
        if !allowed {
            return self.counters.fail(FlextError::authorization_denied(format!(
                "User {} lacks permission '{permission}' for operation '{operation}'",
                user["user_id"].as_str().unwrap_or("unknown")
            )));
        }
        println!("🛡️ Authorization granted for {operation} operation");
        Ok(request)
    }
}

/// The operations the validator accepts.
pub const VALID_OPERATIONS: [&str; 5] = ["read", "create", "update", "delete", "list"];

/// Checks required fields, the operation, the endpoint and the data.
#[derive(Debug, Default)]
pub struct ValidationHandler {
    /// Validations and failures.
    pub counters: Counters,
}

#[async_trait]
impl Handler for ValidationHandler {
    type Request = Value;
    type Response = Value;

    fn handler_name(&self) -> &str {
        "validator"
    }

    async fn handle(&self, request: Value) -> FlextResult<Value> {
        self.counters.seen();
        let missing: Vec<&str> = ["operation", "endpoint"]
            .into_iter()
            .filter(|field| request.get(field).is_none())
            .collect();
        if !missing.is_empty() {
            return self.counters.fail(FlextError::validation(format!(
                "Missing required fields: {}",
                missing.join(", ")
            )));
        }
        let operation = request["operation"].as_str().unwrap_or_default();
        if !VALID_OPERATIONS.contains(&operation) {
            return self.counters.fail(FlextError::validation(format!(
                "Invalid operation '{operation}'. Valid operations: {}",
                VALID_OPERATIONS.join(", ")
            )));
        }
        if !request["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("/api/"))
        {
            return self
                .counters
                .fail(FlextError::validation("Endpoint must start with '/api/'"));
        }
        if matches!(operation, "create" | "update")
            && !request.get("data").is_some_and(Value::is_object)
        {
            return self.counters.fail(FlextError::validation(format!(
                "Operation '{operation}' requires valid data object"
            )));
        }
        println!("✅ Input validation passed for {operation} operation");
        Ok(request)
    }
}

/// Carries out the operation.
#[derive(Debug, Default)]
pub struct BusinessLogicHandler {
    /// Requests processed and errors.
    pub counters: Counters,
}

#[async_trait]
impl Handler for BusinessLogicHandler {
    type Request = Value;
    type Response = Value;

    fn handler_name(&self) -> &str {
        "business_logic"
    }

    async fn handle(&self, request: Value) -> FlextResult<Value> {
        self.counters.seen();
        let operation = request["operation"].as_str().unwrap_or_default();
        let endpoint = request["endpoint"].as_str().unwrap_or_default();
        let resource_id = request
            .get("resource_id")
            .cloned()
            .unwrap_or(json!("unknown"));
        let mut result = match operation {
            "create" => {
                let mut hasher = DefaultHasher::new();
                request["data"].to_string().hash(&mut hasher);
                json!({"operation": "create", "resource_id": format!("res_{}", hasher.finish() % 10_000), "data": request["data"], "status": "created"})
            }
            "update" => {
                json!({"operation": "update", "resource_id": resource_id, "data": request["data"], "status": "updated"})
            }
            "delete" => {
                json!({"operation": "delete", "resource_id": resource_id, "status": "deleted"})
            }
            "read" | "get" | "list" => {
                json!({"operation": "read", "endpoint": endpoint, "data": {"message": format!("Data from {endpoint}")}, "status": "success"})
            }
            other => {
                return self.counters.fail(FlextError::business_rule(format!(
                    "Business logic error: Unsupported operation: {other}"
                )));
            }
        };
        result["processed_by"] = json!(self.handler_name());
        result["user_id"] = request["user_context"]["user_id"].clone();
        println!("🏁 Business logic processed: {operation} at {endpoint}");
        Ok(result)
    }
}

/// The guide's six test requests.
pub fn guide_requests() -> Vec<Value> {
    vec![
        json!({"auth_token": "admin_token_123", "operation": "delete", "endpoint": "/api/users/123", "resource_id": "user_123"}),
        json!({"auth_token": "manager_token_456", "operation": "create", "endpoint": "/api/products", "data": {"name": "New Product", "price": 99.99}}),
        json!({"auth_token": "user_token_789", "operation": "read", "endpoint": "/api/profile"}),
        json!({"auth_token": "user_token_789", "operation": "delete", "endpoint": "/api/users/456", "resource_id": "user_456"}),
        json!({"operation": "read", "endpoint": "/api/data"}),
        json!({"auth_token": "admin_token_123", "operation": "invalid_op", "endpoint": "/api/test"}),
    ]
}
