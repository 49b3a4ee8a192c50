//! [`LifecycleManager`]: start, stop, pause and resume registered handlers.

use std::sync::Arc;

use flext_types::{FlextError, FlextResult};

use crate::registry::{HandlerRegistry, Lifecycle};

/// Starts, stops, pauses and resumes handlers of a registry. A paused or stopped handler
/// rejects calls through the registry with an error saying so; the health report shows its
/// lifecycle.
///
/// Moves: `pause` running → paused; `resume` paused → running; `stop` running or paused →
/// stopped; `start` stopped → running. Any other move is a `BUSINESS_RULE_VIOLATION` naming
/// the handler and both states; an unknown handler is `NOT_FOUND`.
#[derive(Debug, Clone)]
pub struct LifecycleManager {
    registry: Arc<HandlerRegistry>,
}

impl LifecycleManager {
    /// The lifecycle of `registry`'s handlers.
    pub fn new(registry: Arc<HandlerRegistry>) -> Self {
        Self { registry }
    }

    /// Where the handler `name` is in its life.
    pub fn lifecycle(&self, name: &str) -> FlextResult<Lifecycle> {
        Ok(self.registry.entry(name)?.lifecycle())
    }

    /// Running → paused.
    pub fn pause(&self, name: &str) -> FlextResult<()> {
        self.apply(name, "pause", &[Lifecycle::Running], Lifecycle::Paused)
    }

    /// Paused → running.
    pub fn resume(&self, name: &str) -> FlextResult<()> {
        self.apply(name, "resume", &[Lifecycle::Paused], Lifecycle::Running)
    }

    /// Running or paused → stopped.
    pub fn stop(&self, name: &str) -> FlextResult<()> {
        self.apply(
            name,
            "stop",
            &[Lifecycle::Running, Lifecycle::Paused],
            Lifecycle::Stopped,
        )
    }

    /// Stopped → running.
    pub fn start(&self, name: &str) -> FlextResult<()> {
        self.apply(name, "start", &[Lifecycle::Stopped], Lifecycle::Running)
    }

    fn apply(&self, name: &str, verb: &str, from: &[Lifecycle], to: Lifecycle) -> FlextResult<()> {
        let entry = self.registry.entry(name)?;
        let current = entry.lifecycle();
        if !from.contains(&current) {
            return Err(FlextError::business_rule(format!(
                "Cannot {verb} handler '{name}': it is {current}"
            )));
        }
        entry.set_lifecycle(to);
        tracing::info!(handler = name, from = %current, %to, "handler lifecycle changed");
        Ok(())
    }
}
