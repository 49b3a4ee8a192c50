//! Integration tests of the buses, one module per topic.

mod account;
mod commands;
mod concurrency;
mod deadlines;
mod dispatch_spans;
mod es_checkpoints;
mod es_dead_letters;
mod es_decode_once;
mod es_extremes;
mod es_handle;
mod es_projection;
mod es_relay;
mod es_repository;
mod es_sqlite;
mod es_status;
mod es_upcasters;
mod event_metrics;
mod events;
mod instrumentation;
mod metadata;
mod middleware;
mod pages;
mod queries;
mod remote;
mod serviced;
mod subscriptions;

use flext_protocols::{Command, Event, Query};
use flext_types::{FlextError, FlextResult};

/// The guide's command, validating itself.
#[derive(Debug, Clone)]
pub(crate) struct CreateUserCommand {
    pub(crate) name: String,
    pub(crate) email: String,
}

impl CreateUserCommand {
    pub(crate) fn new(name: &str, email: &str) -> Self {
        Self {
            name: name.to_owned(),
            email: email.to_owned(),
        }
    }
}

impl Command for CreateUserCommand {
    type Output = String;

    fn validate(&self) -> FlextResult<()> {
        if self.name.chars().count() < 2 {
            return Err(FlextError::validation("Name must be at least 2 characters"));
        }
        if !self.email.contains('@') {
            return Err(FlextError::validation("Invalid email format"));
        }
        Ok(())
    }
}

/// A command whose handler panics on demand.
#[derive(Debug)]
pub(crate) struct Divide(pub(crate) u32);

impl Command for Divide {
    type Output = u32;
}

/// A query by type.
#[derive(Debug)]
pub(crate) struct GetUserQuery {
    pub(crate) user_id: String,
}

impl Query for GetUserQuery {
    type Output = String;
}

/// The guide's event.
#[derive(Debug)]
pub(crate) struct UserCreated {
    pub(crate) user_id: String,
}

impl Event for UserCreated {
    fn event_name(&self) -> &str {
        "UserCreated"
    }
}
