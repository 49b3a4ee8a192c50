//! The guide's "Complete Enterprise CQRS System with Event Sourcing": a `User` aggregate
//! behind a command bus, a read-model projection fed from the event store, and named
//! queries on the projection.
//!
//! [`EnterpriseUserSystem::new`] wires it: an in-memory event store, a repository of users,
//! the command handlers on a [`CommandBus`], the [`UserProjections`] read model run by a
//! [`ProjectionRunner`], and the `GetUserProjection` / `GetDepartmentStats` queries on a
//! [`QueryBus`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use flext_handlers::CQRS::Upcasters;
use flext_handlers::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

pub use crate::users::CreateUserCommand;

/// The user's domain events, named as the guide's `EventType` enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// A user was created.
    Created {
        /// The user's name.
        name: String,
        /// The user's email.
        email: String,
        /// The user's department.
        department: String,
        /// Always `active` at creation.
        status: String,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
    },
    /// Some of the user's fields changed; fields the user does not have are ignored.
    Updated {
        /// The changed fields and their new values.
        updates: BTreeMap<String, Value>,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        updated_at: OffsetDateTime,
    },
    /// The user was deleted.
    Deleted {
        /// The status before deletion.
        previous_status: String,
    },
}

impl Event for UserEvent {
    fn event_name(&self) -> &str {
        match self {
            UserEvent::Created { .. } => "UserCreated",
            UserEvent::Updated { .. } => "UserUpdated",
            UserEvent::Deleted { .. } => "UserDeleted",
        }
    }
}

/// What the `User` aggregate decides on.
#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// Create the user.
    Create {
        /// Name.
        name: String,
        /// Email.
        email: String,
        /// Department.
        department: String,
    },
    /// Change some fields.
    Update(BTreeMap<String, Value>),
    /// Delete the user.
    Delete,
}

/// The event-sourced user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Department.
    pub department: String,
    /// `active` or `deleted`.
    pub status: String,
    /// When it was created; `None` before.
    pub created_at: Option<String>,
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;

    fn handle(&self, command: UserCommand) -> FlextResult<Vec<UserEvent>> {
        let exists = self.created_at.is_some();
        match command {
            UserCommand::Create { .. } if exists => Err(FlextError::business_rule(format!(
                "User {} already exists",
                self.name
            ))),
            UserCommand::Create {
                name,
                email,
                department,
            } => Ok(vec![UserEvent::Created {
                name,
                email,
                department,
                status: "active".into(),
                created_at: OffsetDateTime::now_utc(),
            }]),
            _ if !exists => Err(FlextError::not_found("User does not exist")),
            UserCommand::Update(updates) => Ok(vec![UserEvent::Updated {
                updates,
                updated_at: OffsetDateTime::now_utc(),
            }]),
            UserCommand::Delete => Ok(vec![UserEvent::Deleted {
                previous_status: self.status.clone(),
            }]),
        }
    }

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::Created {
                name,
                email,
                department,
                status,
                created_at,
            } => {
                self.name = name.clone();
                self.email = email.clone();
                self.department = department.clone();
                self.status = status.clone();
                self.created_at = Some(created_at.to_string());
            }
            UserEvent::Updated { updates, .. } => {
                for (field, value) in updates {
                    let Some(value) = value.as_str() else {
                        continue;
                    };
                    match field.as_str() {
                        "name" => self.name = value.to_owned(),
                        "email" => self.email = value.to_owned(),
                        "department" => self.department = value.to_owned(),
                        "status" => self.status = value.to_owned(),
                        _ => {}
                    }
                }
            }
            UserEvent::Deleted { .. } => self.status = "deleted".into(),
        }
    }
}

/// Update a user (the guide's `UpdateUserCommand`).
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateUserCommand {
    /// The user's id.
    pub user_id: String,
    /// The fields to change.
    pub updates: BTreeMap<String, Value>,
}

impl Command for UpdateUserCommand {
    type Output = bool;

    fn validate(&self) -> FlextResult<()> {
        if self.updates.is_empty() {
            return Err(FlextError::validation("An update needs at least one field"));
        }
        Ok(())
    }
}

/// A user as the read side shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserProjection {
    /// The user's id.
    pub user_id: String,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Department.
    pub department: String,
    /// Status.
    pub status: String,
    /// The version of the last event applied.
    pub event_version: u64,
}

/// Users per department.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepartmentStats {
    /// Users in the department.
    pub user_count: u64,
    /// Active users in the department.
    pub active_users: u64,
}

/// The guide's `UserProjectionHandler`: user projections and department statistics,
/// fed from the event store.
#[derive(Debug, Default)]
pub struct UserProjections {
    users: Mutex<BTreeMap<String, UserProjection>>,
    departments: Mutex<BTreeMap<String, DepartmentStats>>,
    /// The last version applied of each stream, so an event delivered again is not applied
    /// twice. Per stream, not one global position: a dead letter retried later arrives
    /// after newer events of other streams and must still apply.
    applied_versions: Mutex<HashMap<String, u64>>,
}

impl UserProjections {
    /// The projection of `user_id`, or `NOT_FOUND`.
    pub fn get_user_projection(&self, user_id: &str) -> FlextResult<UserProjection> {
        lock(&self.users).get(user_id).cloned().ok_or_else(|| {
            FlextError::not_found(format!("User {user_id} not found in projections"))
        })
    }

    /// Users per department.
    pub fn get_department_statistics(&self) -> BTreeMap<String, DepartmentStats> {
        lock(&self.departments).clone()
    }

    fn apply_event(&self, user_id: &str, version: u64, event: UserEvent) -> FlextResult<()> {
        let mut users = lock(&self.users);
        let mut departments = lock(&self.departments);
        match event {
            UserEvent::Created {
                name,
                email,
                department,
                status,
                ..
            } => {
                println!("📊 User projection created: {name} in {department}");
                let stats = departments.entry(department.clone()).or_default();
                stats.user_count += 1;
                stats.active_users += 1;
                users.insert(
                    user_id.to_owned(),
                    UserProjection {
                        user_id: user_id.to_owned(),
                        name,
                        email,
                        department,
                        status,
                        event_version: version,
                    },
                );
            }
            UserEvent::Updated { updates, .. } => {
                let projection = users.get_mut(user_id).ok_or_else(|| {
                    FlextError::not_found(format!("User projection {user_id} not found"))
                })?;
                for (field, value) in updates {
                    let Some(value) = value.as_str().map(str::to_owned) else {
                        continue;
                    };
                    match field.as_str() {
                        "name" => projection.name = value,
                        "email" => projection.email = value,
                        "status" => projection.status = value,
                        "department" => {
                            if let Some(old) = departments.get_mut(&projection.department) {
                                old.user_count -= 1;
                                old.active_users -= 1;
                            }
                            let new = departments.entry(value.clone()).or_default();
                            new.user_count += 1;
                            new.active_users += 1;
                            projection.department = value;
                        }
                        _ => {}
                    }
                }
                projection.event_version = version;
                println!("📊 User projection updated: {}", projection.name);
            }
            UserEvent::Deleted { .. } => {
                if let Some(projection) = users.get_mut(user_id) {
                    projection.status = "deleted".into();
                    projection.event_version = version;
                    if let Some(stats) = departments.get_mut(&projection.department) {
                        stats.active_users -= 1;
                    }
                }
            }
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Projection for UserProjections {
    fn name(&self) -> &str {
        "user_projections"
    }

    async fn apply(&self, stored: &StoredEvent) -> FlextResult<()> {
        let mut applied = lock(&self.applied_versions);
        if applied
            .get(&*stored.stream_id)
            .is_some_and(|last| stored.version <= *last)
        {
            return Ok(());
        }
        if let Some(user_id) = stored.stream_id.strip_prefix("User-") {
            let envelope = Envelope::<UserEvent>::decode(stored, &Upcasters::new())?;
            self.apply_event(user_id, envelope.version, envelope.payload)?;
        }
        applied.insert(stored.stream_id.to_string(), stored.version);
        Ok(())
    }

    async fn reset(&self) -> FlextResult<()> {
        lock(&self.applied_versions).clear();
        lock(&self.users).clear();
        lock(&self.departments).clear();
        Ok(())
    }
}

/// The whole system: store, repository, buses and the projection runner.
pub struct EnterpriseUserSystem {
    /// The event store: in memory by default, or a durable one given to
    /// [`EnterpriseUserSystem::with_event_store`].
    pub event_store: Arc<dyn EventStore>,
    /// Users, loaded from their streams.
    pub users: Arc<Repository<User>>,
    /// Carries `CreateUserCommand` and `UpdateUserCommand`.
    pub command_bus: CommandBus,
    /// Answers `GetUserProjection` and `GetDepartmentStats`.
    pub query_bus: QueryBus,
    /// The read model.
    pub projections: Arc<UserProjections>,
    /// Feeds the read model from the store.
    pub projection_runner: ProjectionRunner,
}

impl std::fmt::Debug for EnterpriseUserSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnterpriseUserSystem")
            .field("users", &self.users)
            .field("command_bus", &self.command_bus)
            .field("query_bus", &self.query_bus)
            .field("projections", &self.projections)
            .field("projection_runner", &self.projection_runner)
            .finish_non_exhaustive()
    }
}

impl EnterpriseUserSystem {
    /// Wires the system on an in-memory event store.
    pub fn new() -> FlextResult<Self> {
        Self::with_event_store(Arc::new(InMemoryEventStore::new()))
    }

    /// Wires the system on `event_store` (in memory, SQLite, PostgreSQL: any
    /// [`EventStore`]).
    ///
    /// The read model lives in memory, so its checkpoint does too: a fresh system replays
    /// the whole durable history into the read model on its first catch-up.
    pub fn with_event_store(event_store: Arc<dyn EventStore>) -> FlextResult<Self> {
        let users = Arc::new(Repository::<User>::new(event_store.clone()));

        let mut command_bus = CommandBus::new();
        let repository = users.clone();
        command_bus.register(handler_fn(
            "handle_create_user_command",
            move |command: CreateUserCommand| {
                let repository = repository.clone();
                async move {
                    let user_id =
                        format!("user_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
                    let CreateUserCommand {
                        name,
                        email,
                        department,
                    } = command;
                    repository
                        .execute(
                            &user_id,
                            UserCommand::Create {
                                name,
                                email,
                                department,
                            },
                        )
                        .await?;
                    Ok(user_id)
                }
            },
        ))?;
        let repository = users.clone();
        command_bus.register(handler_fn(
            "handle_update_user_command",
            move |command: UpdateUserCommand| {
                let repository = repository.clone();
                async move {
                    repository
                        .execute(&command.user_id, UserCommand::Update(command.updates))
                        .await
                        .map_err(|e| {
                            if e.is(ErrorCode::NotFound) {
                                FlextError::not_found(format!("User {} not found", command.user_id))
                            } else {
                                e
                            }
                        })?;
                    Ok(true)
                }
            },
        ))?;

        let projections = Arc::new(UserProjections::default());
        let mut query_bus = QueryBus::new();
        let read = projections.clone();
        query_bus.register_named(
            "GetUserProjection",
            sync_handler_fn("get_user_projection", move |user_id: String| {
                read.get_user_projection(&user_id)
            }),
        )?;
        let read = projections.clone();
        query_bus.register_named(
            "GetDepartmentStats",
            sync_handler_fn("get_department_statistics", move |_: Value| {
                Ok(read.get_department_statistics())
            }),
        )?;

        let read_model_checkpoints = Arc::new(InMemoryEventStore::new());
        let projection_runner = ProjectionRunner::new(
            event_store.clone(),
            read_model_checkpoints,
            projections.clone(),
        );
        Ok(Self {
            event_store,
            users,
            command_bus,
            query_bus,
            projections,
            projection_runner,
        })
    }
}

/// The guide's four users.
pub fn guide_users() -> Vec<CreateUserCommand> {
    [
        ("Alice Johnson", "alice@company.com", "Engineering"),
        ("Bob Smith", "bob@company.com", "Sales"),
        ("Carol Davis", "carol@company.com", "Engineering"),
        ("David Wilson", "david@company.com", "Marketing"),
    ]
    .into_iter()
    .map(|(name, email, department)| CreateUserCommand {
        name: name.into(),
        email: email.into(),
        department: department.into(),
    })
    .collect()
}
