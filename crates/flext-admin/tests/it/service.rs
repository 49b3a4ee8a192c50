//! A small service to look at: handlers with traffic, a breaker, projections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flext_admin::{Admin, ProjectionView, projection_probe};
use flext_handlers::CQRS::CommandBus;
use flext_handlers::Implementation::BasicHandler;
use flext_handlers::Management::{HandlerManager, HandlerRegistry};
use flext_handlers::Patterns::{CircuitBreaker, CircuitBreakerConfig};
use flext_handlers::Types::FlextError;
use serde_json::json;

pub(crate) struct Service {
    pub(crate) manager: Arc<HandlerManager>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) store_down: Arc<AtomicBool>,
    pub(crate) admin: Admin,
}

impl Service {
    pub(crate) fn new() -> Self {
        let registry = Arc::new(HandlerRegistry::new());
        registry
            .register(
                "create_user",
                BasicHandler::from_fn("create_user", |n: u64| async move { Ok(n + 1) }),
            )
            .expect("registered");
        registry
            .register(
                "charge_card",
                BasicHandler::from_fn("charge_card", |n: u64| async move {
                    if n.is_multiple_of(2) {
                        Ok(n)
                    } else {
                        Err(FlextError::operation("card declined"))
                    }
                }),
            )
            .expect("registered");
        let manager = Arc::new(HandlerManager::with_registry(registry));
        let breaker = Arc::new(
            CircuitBreaker::new("payments", CircuitBreakerConfig::default()).expect("a breaker"),
        );
        let store_down = Arc::new(AtomicBool::new(false));
        let down = store_down.clone();
        let admin = Admin::new()
            .with_manager(manager.clone())
            .with_source(Arc::new(CommandBus::new()))
            .with_breaker(breaker.clone())
            .with_projection(Arc::new(projection_probe("balances", || async {
                Ok(ProjectionView::new("balances", 40, 42).with_owner("replica-1"))
            })))
            .with_projection(Arc::new(projection_probe("audit", move || {
                let down = down.load(Ordering::SeqCst);
                async move {
                    if down {
                        Err(FlextError::unavailable(
                            "cannot reach postgres://app:hunter2@db:5432/audit",
                        ))
                    } else {
                        Ok(ProjectionView::new("audit", 7, 7))
                    }
                }
            })));
        Self {
            manager,
            breaker,
            store_down,
            admin,
        }
    }

    /// `n` calls of each handler (half of charge_card's fail).
    pub(crate) async fn traffic(&self, n: u64) {
        for i in 0..n {
            self.manager
                .execute("create_user", json!(i))
                .await
                .expect("create_user succeeds");
            let _ = self.manager.execute("charge_card", json!(i)).await;
        }
    }
}
