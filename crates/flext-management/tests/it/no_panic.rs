//! Nothing panics across the API: a panicking user `ManagedHandler` behind the registry's
//! JSON path, and idle times too long for the calendar.

use std::time::Duration;

use flext_constants::{ErrorCode, HandlerKind};
use flext_impl::{HandlerCore, ManagedHandler};
use flext_management::{HandlerManager, HandlerRegistry, HandlerSpec, Health};
use flext_protocols::{Handler, async_trait};
use flext_types::FlextResult;
use serde_json::json;

/// A user's own managed handler, without `BasicHandler`'s guard: it panics on zero.
struct Volatile {
    core: HandlerCore,
}

impl Volatile {
    fn new() -> Self {
        Self {
            core: HandlerCore::new("volatile", HandlerKind::Custom),
        }
    }
}

#[async_trait]
impl Handler for Volatile {
    type Request = u32;
    type Response = u32;

    fn handler_name(&self) -> &str {
        "volatile"
    }

    async fn handle(&self, request: u32) -> FlextResult<u32> {
        assert!(request != 0, "zero reached the volatile handler");
        Ok(100 / request)
    }
}

impl ManagedHandler for Volatile {
    fn core(&self) -> &HandlerCore {
        &self.core
    }
}

#[tokio::test]
async fn a_panicking_managed_handler_executed_by_name_is_an_operation_error() {
    let registry = HandlerRegistry::new();
    registry.register("volatile", Volatile::new()).unwrap();
    let err = registry.execute("volatile", json!(0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Handler execution failed: zero reached the volatile handler"
    );
    assert_eq!(registry.execute("volatile", json!(4)).await, Ok(json!(25)));
    let erased = registry.handler("volatile").unwrap();
    let err = erased.execute(json!(0)).await.unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::OperationError,
        "also through the handle"
    );
}

#[tokio::test]
async fn the_manager_records_a_panicking_managed_handler_as_a_failure() {
    let manager = HandlerManager::new();
    manager
        .registry()
        .register("volatile", Volatile::new())
        .unwrap();
    let err = manager.execute("volatile", json!(0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    let report = manager.health_report();
    let health = &report.handlers["volatile"];
    assert_eq!(health.health, Health::Unhealthy);
    assert_eq!(health.last_error.as_deref(), Some(err.to_string().as_str()));
    assert_eq!(health.requests_processed, 1);
}

#[tokio::test]
async fn cleanup_with_an_idle_time_beyond_the_calendar_cleans_nothing_instead_of_panicking() {
    let manager = HandlerManager::new();
    manager
        .register_ecosystem(vec![HandlerSpec::basic("kept")])
        .unwrap();
    // 20 000 years: before the earliest date there is, so no handler has been idle that long.
    let ages = [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(20_000 * 366 * 86_400),
    ];
    for max_idle in ages {
        assert!(
            manager.cleanup_inactive(max_idle).is_empty(),
            "{max_idle:?}"
        );
    }
    assert!(manager.registry().contains("kept"));
    assert_eq!(manager.cleanup_inactive(Duration::ZERO), ["kept"]);
}
