//! The guide's "Complete CQRS Implementation": a user directory behind a command bus, a
//! query bus and an event bus.
//!
//! [`UserCqrs::new`] wires it the way an application would: the command handler creates
//! users, the query handler reads them (hiding the email unless details are asked for),
//! and a welcome notifier subscribes to `UserCreated`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flext_handlers::prelude::*;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Create a user; validates its own name and email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateUserCommand {
    /// The user's name, at least 2 characters.
    pub name: String,
    /// The user's email, with an `@`.
    pub email: String,
    /// The user's department.
    pub department: String,
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

/// Read one user; the email is included only with `include_details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetUserQuery {
    /// The user's id (`user_1`, …).
    pub user_id: String,
    /// Whether sensitive details (the email) are included.
    pub include_details: bool,
}

impl Query for GetUserQuery {
    type Output = UserView;
}

/// A user was created.
#[derive(Debug, Clone, PartialEq)]
pub struct UserCreatedEvent {
    /// The new user's id.
    pub user_id: String,
    /// The new user's name.
    pub user_name: String,
    /// When the user was created.
    pub created_at: OffsetDateTime,
}

impl Event for UserCreatedEvent {
    fn event_name(&self) -> &str {
        "UserCreated"
    }
}

/// A user as the query side shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    /// The user's id.
    pub id: String,
    /// The user's name.
    pub name: String,
    /// The email, present only when details were asked for.
    pub email: Option<String>,
    /// The user's department.
    pub department: String,
}

#[derive(Debug, Clone)]
struct UserRecord {
    name: String,
    email: String,
    department: String,
}

/// The store both sides share: the command side writes it, the query side reads it.
#[derive(Debug, Default)]
pub struct UserDirectory {
    users: Mutex<BTreeMap<String, UserRecord>>,
    next_id: AtomicU64,
}

impl UserDirectory {
    /// The guide's `handle_create_user`: stores the user and returns its new id.
    pub fn handle_create_user(&self, command: CreateUserCommand) -> FlextResult<String> {
        let user_id = format!("user_{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let record = UserRecord {
            name: command.name,
            email: command.email,
            department: command.department,
        };
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user_id.clone(), record);
        Ok(user_id)
    }

    /// The guide's `handle_get_user`: the user, without the email unless details are asked
    /// for; `NOT_FOUND` for an unknown id.
    pub fn handle_get_user(&self, query: GetUserQuery) -> FlextResult<UserView> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let record = users
            .get(&query.user_id)
            .ok_or_else(|| FlextError::not_found(format!("User {} not found", query.user_id)))?;
        Ok(UserView {
            id: query.user_id.clone(),
            name: record.name.clone(),
            email: query.include_details.then(|| record.email.clone()),
            department: record.department.clone(),
        })
    }
}

/// The guide's `UserEventHandler`: sends a welcome notification per new user.
#[derive(Debug, Default)]
pub struct WelcomeNotifier {
    welcomed: Mutex<Vec<String>>,
}

impl WelcomeNotifier {
    /// The guide's `handle_user_created`.
    pub fn handle_user_created(&self, event: &UserCreatedEvent) -> FlextResult<()> {
        println!("🔔 Welcome notification sent to {}", event.user_name);
        self.welcomed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.user_name.clone());
        Ok(())
    }

    /// Names welcomed so far, in order.
    pub fn welcomed(&self) -> Vec<String> {
        self.welcomed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many events this handler processed.
    pub fn events_processed(&self) -> usize {
        self.welcomed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// The three buses with the guide's handlers registered.
#[derive(Debug)]
pub struct UserCqrs {
    /// Carries `CreateUserCommand`.
    pub command_bus: CommandBus,
    /// Carries `GetUserQuery`.
    pub query_bus: QueryBus,
    /// Carries `UserCreated`.
    pub event_bus: EventBus,
    /// The store behind both sides.
    pub directory: Arc<UserDirectory>,
    /// The `UserCreated` subscriber.
    pub notifier: Arc<WelcomeNotifier>,
}

impl UserCqrs {
    /// Creates the buses and registers the command, query and event handlers.
    pub fn new() -> FlextResult<Self> {
        let directory = Arc::new(UserDirectory::default());
        let notifier = Arc::new(WelcomeNotifier::default());

        let mut command_bus = CommandBus::new();
        let writer = directory.clone();
        command_bus.register(sync_handler_fn("handle_create_user", move |cmd| {
            writer.handle_create_user(cmd)
        }))?;

        let mut query_bus = QueryBus::new();
        let reader = directory.clone();
        query_bus.register(sync_handler_fn("handle_get_user", move |query| {
            reader.handle_get_user(query)
        }))?;

        let event_bus = EventBus::new();
        let welcome = notifier.clone();
        event_bus.subscribe(
            "UserCreated",
            sync_handler_fn(
                "handle_user_created",
                move |event: Arc<UserCreatedEvent>| welcome.handle_user_created(&event),
            ),
        );

        Ok(Self {
            command_bus,
            query_bus,
            event_bus,
            directory,
            notifier,
        })
    }
}
