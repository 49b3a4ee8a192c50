//! LifecycleManager: pause, resume, stop, start; rejections while not running.

use std::sync::Arc;

use flext_constants::{ErrorCode, HandlerState};
use flext_management::{HandlerManager, HandlerSpec, Lifecycle, LifecycleManager};
use serde_json::json;

#[tokio::test]
async fn paused_and_stopped_handlers_reject_calls_and_show_it() {
    let manager = HandlerManager::new();
    manager
        .register_ecosystem(vec![HandlerSpec::basic("worker")])
        .unwrap();
    let lifecycle = LifecycleManager::new(Arc::clone(manager.registry()));

    lifecycle.pause("worker").unwrap();
    let err = manager.execute("worker", json!(1)).await.unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            ErrorCode::OperationError,
            "Handler 'worker' is paused and does not accept calls"
        )
    );
    let report = manager.health_report();
    assert_eq!(report.handlers["worker"].lifecycle, Lifecycle::Paused);
    assert_eq!(report.handlers["worker"].state, HandlerState::Paused);

    lifecycle.resume("worker").unwrap();
    manager.execute("worker", json!(2)).await.unwrap();
    lifecycle.stop("worker").unwrap();
    let err = manager.execute("worker", json!(3)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Handler 'worker' is stopped and does not accept calls"
    );

    let err = lifecycle.resume("worker").unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            ErrorCode::BusinessRuleViolation,
            "Cannot resume handler 'worker': it is stopped"
        )
    );
    lifecycle.start("worker").unwrap();
    assert_eq!(lifecycle.lifecycle("worker").unwrap(), Lifecycle::Running);
    assert_eq!(
        lifecycle.pause("nobody").unwrap_err().code(),
        ErrorCode::NotFound
    );
}
