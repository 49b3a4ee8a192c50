//! CQRS buses — commands to one handler, queries by type or by name, events to many
//! subscribers, with middleware, tracing and metrics — and event sourcing.
//!
//! This is layer 50 of flext-handlers; it builds on the handler contracts of
//! `flext-protocols` and the panic guard and metrics recorder of `flext-impl`.
//!
//! | bus | dispatch | handlers |
//! |---|---|---|
//! | [`CommandBus`] | [`send`](CommandBus::send) → the command's output | exactly one per command type |
//! | [`QueryBus`] | [`execute`](QueryBus::execute) by type, [`execute_named`](QueryBus::execute_named) by name (JSON) | one per type or name |
//! | [`EventBus`] | [`publish`](EventBus::publish) → a [`PublishReport`] | many per event name or type |
//!
//! Every dispatch opens a `flext.dispatch` tracing span (`kind`, `message_type`, `handler`,
//! `message_id`, `correlation_id`, `causation_id`: the ids the handler sees, so a
//! dispatch from inside a handler is a child span continuing its trace, and
//! `tracing-opentelemetry` connects them), is timed and counted, and runs inside a panic
//! guard. Commands and
//! queries [validate themselves](flext_protocols::Command::validate) first. Bus
//! [middleware](BusMiddleware) sees each message as a [`Dispatch`]; the built-in ones are
//! [`TimeoutMiddleware`], [`ValidationMiddleware`] and [`AuthorizationMiddleware`].
//!
//! # The message being handled
//!
//! Every handler and subscriber runs with its message's
//! [`MessageMetadata`](flext_types::MessageMetadata) (ids, correlation, causation, headers)
//! as the task's current one: [`current_metadata`] reads it without the caller threading it
//! by hand; a dispatch from inside a handler continues its conversation, and
//! [`Repository::execute`] inside a handler gives its events the message's lineage and ids
//! derived from the message id (and, in an event subscriber, the subscriber's name).
//! [`with_current_metadata`] sets it outside the buses.
//!
//! # Event sourcing
//!
//! [`Repository`] loads [aggregates](flext_protocols::Aggregate) from their streams (latest
//! snapshot plus later events, or a cached state plus later events) and runs their commands
//! with optimistic concurrency, retrying on conflicts. Within one message, an execute on
//! one aggregate is one unit of work: executed again (a retry after a lost reply or a
//! timeout, a redelivery) it appends nothing and returns its original result, so a second
//! change to the same aggregate needs a message of its own, and a message id must name one
//! message only (see [`Repository::execute_with`]). [`InMemoryEventStore`] is the embedded
//! store. [`Upcasters`] bring old payloads to the current shape. A
//! [`ProjectionRunner`] feeds a read model from the log with checkpoints, retries with
//! [`Backoff`] (transient failures, by [`ErrorClass`], until a give-up time) and dead
//! letters sequenced per stream ([`DeadLetterPolicy`]) that can be listed, retried and
//! discarded; an [`EventRelay`] is the projection that delivers stored events to every
//! subscriber of an [`EventBus`], each with its own progress and dead letters, so the log
//! is the outbox. Each runs on a task of its own with
//! [`spawn`](ProjectionRunner::spawn), returning a [`ProjectionHandle`] to shut it down,
//! join it, and wait until it has finished a position (read-your-writes) or caught up.
//!
//! # Order of a dispatch
//!
//! Outermost first: the message's own validation → metrics timer (one dispatch in
//! [`MessageTypeMetrics::LATENCY_SAMPLE_EVERY`] of each type is timed; counts are exact) →
//! tracing span → the middleware in the order added (the first added is outermost: it sees
//! the request first and the response last) → the handler. A panic anywhere in it becomes
//! an `OPERATION_ERROR`.
//!
//! ```
//! use std::sync::Arc;
//! use flext_cqrs::{CommandBus, EventBus, QueryBus};
//! use flext_protocols::{Command, Event, Query};
//!
//! struct Register { name: String }
//! impl Command for Register { type Output = u32; }
//!
//! struct CountUsers;
//! impl Query for CountUsers { type Output = u32; }
//!
//! struct Registered;
//! impl Event for Registered { fn event_name(&self) -> &str { "Registered" } }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> flext_types::FlextResult<()> {
//! let mut commands = CommandBus::new();
//! commands.register_fn(|cmd: Register| async move { Ok(cmd.name.len() as u32) })?;
//! let mut queries = QueryBus::new();
//! queries.register_fn(|_: CountUsers| async { Ok(1) })?;
//! let events = EventBus::new();
//! events.subscribe_fn("Registered", |_: Arc<Registered>| async { Ok(()) });
//!
//! assert_eq!(commands.send(Register { name: "Ada".into() }).await?, 3);
//! assert_eq!(events.publish(Registered).await.delivered, 1);
//! assert_eq!(queries.execute(CountUsers).await?, 1);
//! # Ok(())
//! # }
//! ```

mod command;
mod current;
mod dispatch;
mod es;
mod event;
mod metrics;
mod middleware;
mod query;
mod remote;
mod routes;

pub use command::CommandBus;
pub use current::{current_metadata, with_current_metadata};
pub use dispatch::{
    BusMiddleware, Dispatch, DispatchContext, DispatchOutput, Instrumentation, MessageKind,
};
pub use es::{
    Backoff, DeadLetterPolicy, DeadLetterRetry, Envelope, ErrorClass, EventRelay, Executed,
    InMemoryEventStore, Loaded, ProjectionConfig, ProjectionHandle, ProjectionProgress,
    ProjectionRunner, ProjectionStatus, Repository, RepositoryConfig, RunHandle, Runnable,
    Shutdown, TRANSIENT_BY_DEFAULT, Upcasters,
};
pub use event::{
    Delivery, DeliveryFailure, EventBus, PublishReport, SubscriberInfo, SubscriptionId,
};
pub use metrics::{
    CommandBusMetrics, EventBusMetrics, EventMetrics, MessageTypeMetrics, QueryBusMetrics,
};
pub use middleware::{AuthorizationMiddleware, TimeoutMiddleware, ValidationMiddleware};
pub use query::QueryBus;
pub use remote::RemoteHandlers;
