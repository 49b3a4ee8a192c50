//! Commands and queries handled in another process: the caller's bus registers a remote
//! route ([`CommandBus::register_remote`], [`QueryBus::register_remote`]) over a
//! [`RemoteTransport`]; the worker serves its bus's routes through [`RemoteHandlers`], the
//! [`RemoteDispatch`] a transport adapter hands each call to.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use flext_impl::{Deadline, DeadlineSubject};
use flext_protocols::{Command, Query, RemoteCall, RemoteDispatch, RemoteKind, RemoteTransport};
use flext_types::{FlextError, FlextResult, MessageMetadata};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::current::current_metadata;
use crate::{CommandBus, QueryBus};

/// Sends `message` through `transport` as the current message's call (its metadata, the
/// deadline in force) and decodes the output.
pub(crate) async fn call_remote<M: Serialize, O: DeserializeOwned>(
    transport: &dyn RemoteTransport,
    kind: RemoteKind,
    name: String,
    message: &M,
) -> FlextResult<O> {
    let payload = serde_json::to_vec(message).map_err(|e| {
        FlextError::serialization(format!(
            "{} {name} does not serialize to JSON: {e}",
            kind.title()
        ))
        .with_source(e)
    })?;
    let deadline = Deadline::current()
        .map(|at| SystemTime::now() + at.saturating_duration_since(tokio::time::Instant::now()));
    let call = RemoteCall {
        kind,
        metadata: current_metadata().unwrap_or_default(),
        payload,
        deadline,
        name,
    };
    let name = call.name.clone();
    let output = transport.call(call).await?;
    serde_json::from_slice(&output).map_err(|e| {
        FlextError::serialization(format!(
            "The output of {kind} {name} from the remote handler does not decode: {e}"
        ))
        .with_source(e)
    })
}

type RouteFuture = Pin<Box<dyn Future<Output = FlextResult<Vec<u8>>> + Send>>;
type Route = Arc<dyn Fn(RemoteCall) -> RouteFuture + Send + Sync>;

/// The commands and queries a worker process serves to remote callers: each call is
/// decoded and sent through the worker's own [`CommandBus`] or [`QueryBus`] with the
/// caller's metadata, so the worker's validation, middleware and authorization run as for
/// a local message and its handler sees the caller's correlation id (and message id: a
/// retried command keeps its id, so a [`Repository`](crate::Repository) command stays one
/// effect).
///
/// A call whose deadline has passed when it arrives is a `TIMEOUT` and does not run; one
/// that runs past it is ended by a [`Deadline`] at that instant (its error names the
/// message). A payload that does not decode is a `SERIALIZATION_ERROR` naming the message,
/// a message not served a `WIRING_ERROR` (the caller's bus routes it to a worker that
/// does not serve it).
///
/// ```
/// use std::sync::Arc;
/// use flext_cqrs::{CommandBus, RemoteHandlers};
/// use flext_protocols::{Command, RemoteDispatch, RemoteKind};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Deposit { account: String, amount: u64 }
/// impl Command for Deposit { type Output = u64; }
///
/// let mut bus = CommandBus::new();
/// bus.register_fn(|d: Deposit| async move { Ok(d.amount) })?;
/// let served = RemoteHandlers::new().command::<Deposit>(Arc::new(bus))?;
/// assert_eq!(served.routes(), vec![(RemoteKind::Command, "Deposit".to_string())]);
/// # Ok::<(), flext_types::FlextError>(())
/// ```
#[derive(Default, Clone)]
pub struct RemoteHandlers {
    routes: HashMap<(RemoteKind, String), Route>,
}

impl RemoteHandlers {
    /// Serves nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves command `C` through `bus` (which must have its handler); `DUPLICATE` when `C`
    /// is served already.
    pub fn command<C>(self, bus: Arc<CommandBus>) -> FlextResult<Self>
    where
        C: Command + DeserializeOwned,
        C::Output: Serialize,
    {
        self.route(
            RemoteKind::Command,
            C::command_name(),
            move |command: C, metadata| {
                let bus = Arc::clone(&bus);
                async move { bus.send_with(command, metadata).await }
            },
        )
    }

    /// Serves query `Q` through `bus` (which must have its handler); `DUPLICATE` when `Q` is
    /// served already.
    pub fn query<Q>(self, bus: Arc<QueryBus>) -> FlextResult<Self>
    where
        Q: Query + DeserializeOwned,
        Q::Output: Serialize,
    {
        self.route(
            RemoteKind::Query,
            Q::query_name(),
            move |query: Q, metadata| {
                let bus = Arc::clone(&bus);
                async move { bus.execute_with(query, metadata).await }
            },
        )
    }

    fn route<M, O, F, Fut>(mut self, kind: RemoteKind, name: String, send: F) -> FlextResult<Self>
    where
        M: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(M, MessageMetadata) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FlextResult<O>> + Send + 'static,
    {
        let key = (kind, name.clone());
        if self.routes.contains_key(&key) {
            return Err(FlextError::duplicate(format!(
                "{} {name} is served already",
                kind.title()
            )));
        }
        let name: Arc<str> = name.into();
        let send = Arc::new(send);
        let route: Route = Arc::new(move |call: RemoteCall| {
            let name = Arc::clone(&name);
            let send = Arc::clone(&send);
            Box::pin(async move {
                let remaining = match call.deadline {
                    None => None,
                    Some(at) => match at.duration_since(SystemTime::now()) {
                        Ok(left) if !left.is_zero() => Some(left),
                        _ => {
                            return Err(FlextError::timeout(format!(
                                "{} {name} arrived after its caller's deadline; it did not run",
                                kind.title()
                            ))
                            .with_data(json!({"message_type": &*name, "kind": kind.as_str()})));
                        }
                    },
                };
                let message: M = serde_json::from_slice(&call.payload).map_err(|e| {
                    FlextError::serialization(format!(
                        "{} {name} does not decode: {e}",
                        kind.title()
                    ))
                    .with_source(e)
                })?;
                let run = send(message, call.metadata);
                let output = match remaining {
                    None => run.await?,
                    Some(left) => {
                        let subject = DeadlineSubject::Message {
                            kind: kind.as_str(),
                            message_type: &name,
                            handler: &name,
                        };
                        Deadline::new(left).run(subject, run).await?
                    }
                };
                serde_json::to_vec(&output).map_err(|e| {
                    FlextError::serialization(format!(
                        "The output of {kind} {name} does not serialize to JSON: {e}"
                    ))
                    .with_source(e)
                })
            }) as RouteFuture
        });
        self.routes.insert(key, route);
        Ok(self)
    }
}

impl fmt::Debug for RemoteHandlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteHandlers")
            .field("routes", &self.routes())
            .finish()
    }
}

#[async_trait]
impl RemoteDispatch for RemoteHandlers {
    fn routes(&self) -> Vec<(RemoteKind, String)> {
        let mut routes: Vec<_> = self.routes.keys().cloned().collect();
        routes.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        routes
    }

    async fn dispatch(&self, call: RemoteCall) -> FlextResult<Vec<u8>> {
        let Some(route) = self.routes.get(&(call.kind, call.name.clone())) else {
            return Err(FlextError::wiring(format!(
                "No remote handler for {} {}",
                call.kind, call.name
            )));
        };
        route(call).await
    }
}

impl CommandBus {
    /// Registers command `C` as handled in another process: a `send` runs this bus's
    /// validation and middleware, then hands the command (as JSON), the current message's
    /// metadata and the deadline in force to `transport`, and returns the remote handler's
    /// output or its error as the worker returned it (code, message, data). The worker
    /// serves `C` with [`RemoteHandlers::command`]. `DUPLICATE` when `C` has a handler.
    pub fn register_remote<C>(&mut self, transport: Arc<dyn RemoteTransport>) -> FlextResult<()>
    where
        C: Command + Serialize + Sync,
        C::Output: DeserializeOwned,
    {
        self.register(flext_impl::handler_fn(
            C::command_name(),
            move |command: C| {
                let transport = Arc::clone(&transport);
                async move {
                    call_remote(
                        &*transport,
                        RemoteKind::Command,
                        C::command_name(),
                        &command,
                    )
                    .await
                }
            },
        ))
    }
}

impl QueryBus {
    /// Registers query `Q` as handled in another process, as
    /// [`CommandBus::register_remote`] does for commands; the worker serves `Q` with
    /// [`RemoteHandlers::query`].
    pub fn register_remote<Q>(&mut self, transport: Arc<dyn RemoteTransport>) -> FlextResult<()>
    where
        Q: Query + Serialize + Sync,
        Q::Output: DeserializeOwned,
    {
        self.register(flext_impl::handler_fn(Q::query_name(), move |query: Q| {
            let transport = Arc::clone(&transport);
            async move { call_remote(&*transport, RemoteKind::Query, Q::query_name(), &query).await }
        }))
    }
}
