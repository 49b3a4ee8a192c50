//! The CQRS message contracts: commands, queries and events.

use flext_types::{FlextResult, short_type_name};

/// A request to change state, handled by exactly one handler, returning `Output`.
///
/// A command can validate itself; buses call [`Command::validate`] before dispatch and never
/// reach the handler when it fails.
///
/// ```
/// use flext_protocols::Command;
/// use flext_types::{FlextError, FlextResult};
///
/// struct CreateUserCommand { name: String, email: String }
///
/// impl Command for CreateUserCommand {
///     type Output = String;
///
///     fn validate(&self) -> FlextResult<()> {
///         if self.name.chars().count() < 2 {
///             return Err(FlextError::validation("Name must be at least 2 characters"));
///         }
///         if !self.email.contains('@') {
///             return Err(FlextError::validation("Invalid email format"));
///         }
///         Ok(())
///     }
/// }
///
/// assert_eq!(CreateUserCommand::command_name(), "CreateUserCommand");
/// let bad = CreateUserCommand { name: "A".into(), email: "a@b.c".into() };
/// assert!(bad.validate().is_err());
/// ```
pub trait Command: Send + 'static {
    /// What handling the command returns (an id, `()`, …).
    type Output: Send + 'static;

    /// The command's name in messages and metrics; the type's name without its path unless
    /// overridden.
    fn command_name() -> String
    where
        Self: Sized,
    {
        short_type_name::<Self>()
    }

    /// Checks the command before dispatch; accepts everything unless overridden.
    fn validate(&self) -> FlextResult<()> {
        Ok(())
    }
}

/// A request to read state, returning `Output`; it changes nothing.
pub trait Query: Send + 'static {
    /// The query's result.
    type Output: Send + 'static;

    /// The query's name in messages and metrics; the type's name without its path unless
    /// overridden.
    fn query_name() -> String
    where
        Self: Sized,
    {
        short_type_name::<Self>()
    }

    /// Checks the query before dispatch; accepts everything unless overridden.
    fn validate(&self) -> FlextResult<()> {
        Ok(())
    }
}

/// Something that happened, delivered to every subscriber. An event knows its name
/// (for example `"UserCreated"`), which subscribers can subscribe to.
///
/// ```
/// use flext_protocols::Event;
///
/// struct UserCreated { user_id: String }
///
/// impl Event for UserCreated {
///     fn event_name(&self) -> &str {
///         "UserCreated"
///     }
/// }
/// # assert_eq!(UserCreated { user_id: "u1".into() }.event_name(), "UserCreated");
/// ```
pub trait Event: Send + Sync + 'static {
    /// The event's name; an enum of events may give each variant its own.
    fn event_name(&self) -> &str;

    /// The version of the event's stored shape; raise it when the shape changes and
    /// register an upcaster from the old version. 1 unless overridden.
    fn schema_version(&self) -> u32 {
        1
    }
}

/// A shared event is the event: subscribers that receive `Arc<E>` see its name.
impl<E: Event + ?Sized> Event for std::sync::Arc<E> {
    fn event_name(&self) -> &str {
        (**self).event_name()
    }

    fn schema_version(&self) -> u32 {
        (**self).schema_version()
    }
}
