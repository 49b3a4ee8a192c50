//! Typed async handlers with metrics, validation and authorization, for enterprise request
//! processing: the facade of the flext-handlers workspace.
//!
//! Depend on this crate; it re-exports, by name, everything a user needs from the layered
//! crates below it, under two spellings:
//!
//! - Rust modules: [`constants`], [`types`], [`protocols`], [`store`], [`implementation`],
//!   [`cqrs`], [`patterns`], [`management`], and a [`prelude`] with the everyday items.
//! - The guide's namespaces: [`Constants`], [`Types`], [`Protocols`], [`Implementation`],
//!   [`CQRS`], [`Patterns`], [`Management`], so code ported from the guide reads the same
//!   (`flext_handlers::Implementation::BasicHandler`, `flext_handlers::CQRS::CommandBus`).
//!
//! One name has one meaning across the namespaces and the prelude. Where the guide gives
//! two things one name, the Rust name wins: the guide's `Patterns.Middleware` (a
//! middleware of hook closures) is [`HookMiddleware`](Patterns::HookMiddleware), since
//! [`Middleware`](Protocols::Middleware) is the contract every middleware implements. The
//! guide's method spellings (`get_metrics`, `get_chain_metrics`, `get_handler`,
//! `get_handler_health_report`) are documented aliases on the types the guide calls them
//! on; the Rust getters have no `get_` prefix.
//!
//! The main items: [`BasicHandler`](Implementation::BasicHandler) (metrics, state,
//! configuration per environment, deadline, panic capture),
//! [`ValidatingHandler`](Implementation::ValidatingHandler),
//! [`AuthorizingHandler`](Implementation::AuthorizingHandler), closures through
//! [`handler_fn`](Implementation::handler_fn), the [`Handler`](Protocols::Handler) contract
//! the error model [`FlextError`](Types::FlextError) / [`FlextResult`](Types::FlextResult),
//! and the buses [`CommandBus`](CQRS::CommandBus), [`QueryBus`](CQRS::QueryBus) and
//! [`EventBus`](CQRS::EventBus).
//!
//! ```
//! use flext_handlers::prelude::*;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> FlextResult<()> {
//! let handler = BasicHandler::new("user_service");
//! handler.configure(BasicHandler::create_environment_handler_config("production")?)?;
//!
//! let response = handler.handle(json!({"action": "create_user"})).await?;
//! assert_eq!(response["action"], "create_user");
//! assert_eq!(handler.get_metrics().success_rate(), 100.0);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! `default = []`: the in-memory stores only, no database driver in the build.
//!
//! - `sqlite`: `stores::SqliteEventStore`, the event, snapshot and checkpoint stores on
//!   embedded SQLite (bundled; no system library needed), and
//!   `stores::SqliteProjectionRunner` for exactly-once projections in its database.
//! - `postgres`: `stores::PostgresEventStore`, the same stores on PostgreSQL,
//!   `stores::PostgresProjectionRunner`, and leases (`stores::Lease`, `stores::Fence`)
//!   giving each projection one owner among replicas.
//! - `nats`: `nats::NatsRelay` (a store's log to NATS JetStream), `nats::NatsConsumer`
//!   (durable consumers applying each event once, in order per stream) and remote
//!   commands and queries (`nats::NatsTransport`, `nats::NatsWorker`).
//! - `admin`: `admin::Admin`, the admin HTTP surface on axum (health, Prometheus metrics,
//!   handlers, breakers, projections, and a live dashboard), to mount in an app or serve
//!   alone (`admin::Admin::serve`, on 127.0.0.1 unless told otherwise).
//! - `metrics`: `Management::MetricsBridge` records
//!   every handler, bus, breaker and projection metric through the `metrics` crate's
//!   facade, under the names of the Prometheus exposition, for the exporter the
//!   application installs.
//! - `tower`: flext handlers as tower services (`tower::HandlerService`, through
//!   `tower::HandlerExt::into_service`), tower services as flext handlers
//!   (`tower::ServiceHandler`), any tower layer around a flext handler
//!   (`tower::HandlerExt::layer`), tower's errors as `FlextError`s naming the layer, and
//!   the `tower` crate itself (`tower::tower`).
//! - `testing`: the test kit as `testing` (conformance suites, aggregate and saga
//!   fixtures), for a user's own tests.
//! - `axum`: [`FlextError`](Types::FlextError) implements axum's `IntoResponse`: the status
//!   of its code ([`http_status`](Types::http_status): `NOT_FOUND` 404, `VALIDATION_ERROR`
//!   422, `WIRING_ERROR` 500, …) and the JSON it serializes to; `axum::Flext` wraps any
//!   extractor so its rejection answers in the same JSON shape (`axum::FlextRejection`).
//! - `full`: every adapter, `metrics`, `tower`, `testing` and `axum`.
//!
//! Each store passes the same conformance suite as
//! [`InMemoryEventStore`](CQRS::InMemoryEventStore), so code written against the
//! [`EventStore`](Protocols::EventStore) contract moves between them unchanged.

pub use flext_constants as constants;
pub use flext_cqrs as cqrs;
pub use flext_impl as implementation;
pub use flext_management as management;
pub use flext_patterns as patterns;
pub use flext_protocols as protocols;
pub use flext_protocols::async_trait;
pub use flext_store as store;
pub use flext_types as types;

/// The test kit (feature `testing`): store conformance suites to run against a store of
/// one's own, and given/when/then fixtures for aggregates
/// ([`AggregateFixture`](flext_testing::AggregateFixture)) and sagas
/// ([`SagaFixture`](flext_testing::SagaFixture)). Turn it on for tests only:
/// `flext-handlers = { version = "…", features = ["testing"] }` under
/// `[dev-dependencies]`.
#[cfg(feature = "testing")]
pub use flext_testing as testing;

/// The guide's `FlextHandlers.Constants`: limits, defaults, states and configuration enums.
#[allow(non_snake_case, reason = "the guide's namespace spelling")]
pub mod Constants {
    #[doc(inline)]
    pub use flext_constants::UnknownVariant;
    #[doc(inline)]
    pub use flext_constants::{
        Environment, ErrorCode, HandlerKind, HandlerState, LogLevel, PerformanceLevel,
        ValidationLevel, WireEnum,
    };

    /// Handler limits and defaults (`Constants::Handler::DEFAULT_TIMEOUT`, …) and the
    /// handler states (`Constants::Handler::States::Idle`).
    pub mod Handler {
        #[doc(inline)]
        pub use flext_constants::HandlerState as States;
        #[doc(inline)]
        pub use flext_constants::handler::{
            DEFAULT_TIMEOUT, DEFAULT_TIMEOUT_MS, MAX_CHAIN_HANDLERS, MAX_PIPELINE_STAGES,
            MAX_RETRIES, SLOW_HANDLER_THRESHOLD,
        };
    }

    /// Configuration enums (`Constants::Config::Environment`, …).
    pub mod Config {
        #[doc(inline)]
        pub use flext_constants::{Environment, LogLevel, ValidationLevel};
    }
}

/// The guide's `FlextHandlers.Types`: errors, results, configuration, metrics, metadata.
#[allow(non_snake_case, reason = "the guide's namespace spelling")]
pub mod Types {
    #[doc(inline)]
    pub use flext_types::{
        AppendResult, ConfigSource, Cursor, DEFAULT_PAGE_LIMIT, DeadLetter, EventMetadata,
        ExpectedVersion, FlextError, FlextResult, HandlerConfig, HandlerMetrics, JsonPayload,
        LatencySummary, MAX_PAGE_LIMIT, MessageMetadata, MetricSample, MetricSet, MetricValue,
        NewEvent, Page, PageRequest, PerformanceProfile, ResultExt, SizeSummary, Snapshot,
        StoredEvent, combine, first_success, http_status, panic_message, short_type_name, traverse,
    };
}

/// The guide's `FlextHandlers.Protocols`: the contracts.
#[allow(non_snake_case, reason = "the guide's namespace spelling")]
pub mod Protocols {
    #[doc(inline)]
    pub use flext_protocols::{
        Aggregate, AsyncCheck, AsyncCheckWith, Authorizer, AuthorizerFn, AuthorizerWith,
        BoxHandler, BoxLease, CheckpointStore, Command, Event, EventStore, EventStream,
        HandleFuture, Handler, HeldLease, Leases, MetricsSource, Middleware, Next, Projection,
        Query, RemoteCall, RemoteDispatch, RemoteKind, RemoteTransport, ServicedAggregate,
        SharedMiddleware, SnapshotStore, Validator, Verdict, authorizer_fn, authorizer_with,
    };
}

/// The guide's `FlextHandlers.Implementation`: the concrete handlers.
#[allow(non_snake_case, reason = "the guide's namespace spelling")]
pub mod Implementation {
    #[doc(inline)]
    pub use flext_impl::{
        AbstractHandler, AuthorizingHandler, BasicHandler, EventHandler, FnHandler, HandlerCore,
        Identity, ManagedHandler, MetricsHandler, MetricsRecorder, MetricsReport, StateFnHandler,
        SyncFnHandler, ValidatingHandler, handler_fn, handler_with, sync_handler_fn,
    };
    #[doc(inline)]
    pub use flext_impl::{
        Backoff, Deadline, DeadlineSubject, InFlight, JsonHandler, LatencySnapshot, Timer,
        catch_panic, catch_panic_sync,
    };
}

/// The guide's `FlextHandlers.CQRS`: the command, query and event buses, and event
/// sourcing (repository, in-memory store, projections, relay).
#[allow(non_snake_case, reason = "the guide's namespace spelling")]
pub mod CQRS {
    #[doc(inline)]
    pub use flext_cqrs::Instrumentation;
    #[doc(inline)]
    pub use flext_cqrs::{
        AuthorizationMiddleware, Backoff, BusMiddleware, CommandBus, CommandBusMetrics,
        DeadLetterPolicy, DeadLetterRetry, Delivery, DeliveryFailure, Dispatch, DispatchContext,
        DispatchOutput, Envelope, ErrorClass, EventBus, EventBusMetrics, EventMetrics, EventRelay,
        Executed, InMemoryEventStore, Loaded, MessageKind, MessageTypeMetrics, ProjectionConfig,
        ProjectionHandle, ProjectionProgress, ProjectionRunner, ProjectionStatus, PublishReport,
        QueryBus, QueryBusMetrics, RemoteHandlers, Repository, RepositoryConfig, RunHandle,
        Runnable, Shutdown, SubscriberInfo, SubscriptionId, TRANSIENT_BY_DEFAULT,
        TimeoutMiddleware, Upcasters, ValidationMiddleware, current_metadata,
        with_current_metadata,
    };
}

/// The durable stores, each behind its feature (`sqlite`, `postgres`, or `full`); the
/// in-memory store is always here.
///
/// The PostgreSQL store's view of a projection (checkpoint, head, events behind, lease
/// owner) is `PostgresProjectionStatus` here, so that it and a runner's own
/// [`ProjectionStatus`](CQRS::ProjectionStatus) keep one name each under glob imports.
pub mod stores {
    #[doc(inline)]
    pub use flext_store::{InMemoryEventStore, RunHandle, StoreLimits, TransactionalProgress};
    #[cfg(feature = "postgres")]
    #[doc(inline)]
    pub use flext_store_postgres::ProjectionStatus as PostgresProjectionStatus;
    #[cfg(feature = "postgres")]
    #[doc(no_inline)]
    pub use flext_store_postgres::sqlx;
    // The same crate through either adapter; named once whichever features are on.
    #[cfg(feature = "postgres")]
    #[doc(inline)]
    pub use flext_store_postgres::{
        Fence, FencedCheckpoints, Lease, LeaseConfig, PostgresEventStore, PostgresLeases,
        PostgresProjection, PostgresProjectionHandle, PostgresProjectionRunner,
        PostgresStoreOptions, redact,
    };
    #[cfg(all(feature = "sqlite", not(feature = "postgres")))]
    #[doc(no_inline)]
    pub use flext_store_sqlite::sqlx;
    #[cfg(feature = "sqlite")]
    #[doc(inline)]
    pub use flext_store_sqlite::{
        SqliteEventStore, SqliteProjection, SqliteProjectionHandle, SqliteProjectionRunner,
        SqliteStoreOptions,
    };
}

/// The buses on NATS JetStream (feature `nats`): the relay of a store's log to a
/// JetStream stream, durable consumers that apply each event once in per-stream order,
/// and remote commands and queries over request/reply with queue groups.
#[cfg(feature = "nats")]
pub mod nats {
    #[doc(no_inline)]
    pub use flext_bus_nats::async_nats;
    #[doc(inline)]
    pub use flext_bus_nats::{
        ConsumerConfig, DeliveryPolicy, EventSink, EventStreams, NatsConsumer, NatsRelay,
        NatsTransport, NatsWorker, VersionedSink, codec, remote,
    };
}

/// The admin HTTP surface (feature `admin`): an axum router with the health report,
/// Prometheus metrics, handlers, breakers, projections and a live dashboard.
#[cfg(feature = "admin")]
pub mod admin {
    #[doc(no_inline)]
    pub use flext_admin::axum;
    #[doc(inline)]
    pub use flext_admin::{
        Admin, AdminServer, DEFAULT_HISTORY, DEFAULT_PORT, DEFAULT_PROBE_TIMEOUT,
        DEFAULT_SAMPLE_INTERVAL, FnProbe, PROMETHEUS_CONTENT_TYPE, ProjectionProbe, ProjectionView,
        ServeConfig, projection_probe, redact,
    };
}

/// flext handlers and tower, both ways (feature `tower`): a handler as a tower service, a
/// tower service as a handler, tower's layers (rate and concurrency limits, load shedding,
/// buffers, timeouts) around a handler or a bus route, their errors as `FlextError`s
/// naming the layer; and the `tower` crate itself.
#[cfg(feature = "tower")]
pub mod tower {
    #[doc(no_inline)]
    pub use flext_tower::tower;
    #[doc(inline)]
    pub use flext_tower::{
        HandlerExt, HandlerService, HandlerServiceRef, ServiceHandler, TowerLayered, layer,
        tower_error,
    };
}

/// Errors a web layer answers with (feature `axum`): [`FlextError`](Types::FlextError)
/// implements axum's `IntoResponse` (the status of [`http_status`](Types::http_status) and
/// the error's JSON), and [`Flext`](axum::Flext) answers any extractor's rejection in the
/// same shape.
#[cfg(feature = "axum")]
pub mod axum {
    #[doc(inline)]
    pub use flext_types::axum::{Flext, FlextRejection};
}

/// The guide's `FlextHandlers.Patterns`: chains, pipelines, middleware, resilience and
/// sagas.
///
/// The guide's `Patterns.Middleware("request_middleware")`, a middleware of hook closures,
/// is [`HookMiddleware::new("request_middleware")`](Patterns::HookMiddleware::new) here:
/// `Middleware` is the contract ([`Protocols::Middleware`]), so that glob imports of both
/// namespaces and of the [`prelude`] give each name one meaning.
#[allow(non_snake_case, reason = "the guide's namespace spelling")]
pub mod Patterns {
    #[doc(inline)]
    pub use flext_patterns::{
        BreakerState, Bulkhead, BulkheadMetrics, ChainMetrics, ChainMode, CircuitBreaker,
        CircuitBreakerConfig, CircuitBreakerMetrics, HandlerChain, HookMiddleware, Layered,
        LinkMetrics, Permit, Pipeline, PipelineMetrics, RETRYABLE_BY_DEFAULT, RateLimiter, Retry,
        RetryConfig, Saga, SagaEvent, SagaOutcome, SagaStatus, SlidingWindow, StageMetrics,
        StateTransition, StepContext, Timeout, TimeoutHandler,
    };
}

/// The guide's `FlextHandlers.Management`: registry, manager, lifecycle, exposition.
#[allow(non_snake_case, reason = "the guide's namespace spelling")]
pub mod Management {
    #[doc(inline)]
    pub use flext_management::{
        HandlerHealth, HandlerInfo, HandlerManager, HandlerRegistry, HandlerSpec, Health,
        HealthReport, Lifecycle, LifecycleManager, RegisteredHandler, RegistryMetrics, collect,
        to_json, to_prometheus,
    };
    #[cfg(feature = "metrics")]
    #[doc(inline)]
    pub use flext_management::{MetricsBridge, MetricsBridgeTask};
}

/// The everyday items: `use flext_handlers::prelude::*;`.
pub mod prelude {
    #[doc(inline)]
    pub use flext_constants::{Environment, ErrorCode, HandlerState, LogLevel, ValidationLevel};
    #[doc(inline)]
    pub use flext_cqrs::{
        CommandBus, Envelope, EventBus, InMemoryEventStore, ProjectionHandle, ProjectionRunner,
        PublishReport, QueryBus, Repository,
    };
    #[doc(inline)]
    pub use flext_impl::{
        AuthorizingHandler, BasicHandler, EventHandler, ManagedHandler, MetricsHandler,
        ValidatingHandler, handler_fn, sync_handler_fn,
    };
    #[doc(inline)]
    pub use flext_management::{HandlerManager, HandlerRegistry, HandlerSpec};
    #[doc(inline)]
    pub use flext_patterns::{
        CircuitBreaker, HandlerChain, HookMiddleware, Layered, Pipeline, Retry, Saga, Timeout,
    };
    #[doc(inline)]
    pub use flext_protocols::{
        Aggregate, BoxHandler, Command, Event, EventStore, Handler, MetricsSource, Middleware,
        Projection, Query, ServicedAggregate, async_trait, authorizer_fn,
    };
    #[doc(inline)]
    pub use flext_types::{
        ExpectedVersion, FlextError, FlextResult, HandlerConfig, MessageMetadata, Page,
        PageRequest, ResultExt, StoredEvent,
    };
}

/// The README's example, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExample;
