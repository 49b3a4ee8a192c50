//! What bus middleware sees: a [`Dispatch`] of one message to one handler, and the route
//! machinery every bus shares.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flext_impl::catch_panic;
use flext_protocols::{BoxHandler, Handler, Next, SharedMiddleware};
use flext_types::{FlextError, FlextResult, MessageMetadata};
use tracing::Instrument;

/// Middleware on a bus: it sees every dispatch of the bus, whatever the message type.
pub type BusMiddleware = SharedMiddleware<Dispatch, DispatchOutput>;

/// What a handler returned, type-erased while it passes back through bus middleware.
pub type DispatchOutput = Box<dyn Any + Send>;

/// Which bus a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A command, on the command bus.
    Command,
    /// A query, on the query bus.
    Query,
    /// An event delivered to one subscriber, on the event bus.
    Event,
}

impl MessageKind {
    /// `"command"`, `"query"` or `"event"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Query => "query",
            Self::Event => "event",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a bus records of each dispatch. Both are on by default
/// ([`Instrumentation::FULL`]); a hot path that needs neither can turn them off.
///
/// - `metrics`: per-type counts and latency histograms and the bus totals (two clock
///   reads and a few relaxed atomic adds per dispatch). Off, the bus's metrics stay at
///   zero.
/// - `tracing`: a `flext.dispatch` span around each dispatch (nearly free when no
///   subscriber listens). Off, no span is created even when one does.
///
/// ```
/// use flext_cqrs::{CommandBus, Instrumentation};
///
/// let bus = CommandBus::new().with_instrumentation(Instrumentation::NONE);
/// assert_eq!(bus.instrumentation(), Instrumentation::NONE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instrumentation {
    /// Count outcomes and time each dispatch.
    pub metrics: bool,
    /// Open a `flext.dispatch` tracing span around each dispatch.
    pub tracing: bool,
}

impl Instrumentation {
    /// Metrics and tracing, the default.
    pub const FULL: Self = Self {
        metrics: true,
        tracing: true,
    };
    /// Neither metrics nor tracing.
    pub const NONE: Self = Self {
        metrics: false,
        tracing: false,
    };
}

impl Default for Instrumentation {
    fn default() -> Self {
        Self::FULL
    }
}

/// Who is dispatching what to whom: the part of a [`Dispatch`] that is shared, `Sync` data,
/// so async checks (authorization) can borrow it.
#[derive(Debug, Clone)]
pub struct DispatchContext {
    kind: MessageKind,
    message_type: Arc<str>,
    handler_name: Arc<str>,
    metadata: MessageMetadata,
}

impl DispatchContext {
    /// The bus the message travels on.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The message's name: the command or query type's name, the query's registered name,
    /// or the event's name.
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    /// The name of the handler (or subscriber) the message goes to.
    pub fn handler_name(&self) -> &str {
        &self.handler_name
    }

    /// The message's ids, timestamp and headers.
    pub fn metadata(&self) -> &MessageMetadata {
        &self.metadata
    }
}

/// One message on its way to one handler, as bus middleware sees it: the
/// [context](DispatchContext) and the type-erased message, which a middleware may read or
/// change by its concrete type.
///
/// On the event bus the message is the shared event, an `Arc<E>`.
pub struct Dispatch {
    context: DispatchContext,
    message: Box<dyn Any + Send>,
}

impl Dispatch {
    /// Who is dispatching what to whom.
    pub fn context(&self) -> &DispatchContext {
        &self.context
    }

    /// The bus the message travels on.
    pub fn kind(&self) -> MessageKind {
        self.context.kind
    }

    /// The message's name (see [`DispatchContext::message_type`]).
    pub fn message_type(&self) -> &str {
        &self.context.message_type
    }

    /// The name of the handler the message goes to.
    pub fn handler_name(&self) -> &str {
        &self.context.handler_name
    }

    /// The message's ids, timestamp and headers.
    pub fn metadata(&self) -> &MessageMetadata {
        &self.context.metadata
    }

    /// The message's metadata, to change (for example to add a header).
    pub fn metadata_mut(&mut self) -> &mut MessageMetadata {
        &mut self.context.metadata
    }

    /// The message, if it is a `T`.
    pub fn message<T: 'static>(&self) -> Option<&T> {
        self.message.downcast_ref()
    }

    /// The message, to change, if it is a `T`.
    pub fn message_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.message.downcast_mut()
    }
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatch")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// One registered handler of one message type: its names, the typed handler for the
/// direct path, and an erased form of it at the bottom of the middleware stack.
pub(crate) struct Route {
    kind: MessageKind,
    message_type: Arc<str>,
    handler_name: Arc<str>,
    /// A `BoxHandler<M, R>`.
    typed: Box<dyn Any + Send + Sync>,
    erased: BoxHandler<Dispatch, DispatchOutput>,
}

impl Route {
    pub(crate) fn new<M, R>(
        kind: MessageKind,
        message_type: &str,
        handler: BoxHandler<M, R>,
    ) -> Self
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        let message_type: Arc<str> = Arc::from(message_type);
        Self {
            kind,
            handler_name: Arc::from(handler.handler_name()),
            erased: Arc::new(Erased {
                message_type: message_type.clone(),
                inner: handler.clone(),
            }),
            typed: Box::new(handler),
            message_type,
        }
    }

    pub(crate) fn message_type(&self) -> &str {
        &self.message_type
    }

    pub(crate) fn handler_name(&self) -> &str {
        &self.handler_name
    }

    /// Calls the handler with `message`, through `middleware` when there is any, inside a
    /// panic guard and, when `traced`, a `flext.dispatch` span.
    pub(crate) async fn call<M, R>(
        &self,
        middleware: &[BusMiddleware],
        message: M,
        metadata: Option<&MessageMetadata>,
        traced: bool,
    ) -> FlextResult<R>
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        let handler = self.handler::<M, R>()?;
        if middleware.is_empty() {
            // The direct path: no erasure, no allocation beyond the handler's own future.
            // One await point either way: a disabled span costs a branch, a second
            // await point would enlarge every dispatch's future.
            catch_panic(handler.handle(message))
                .instrument(self.span_if(traced, metadata))
                .await
        } else {
            // Boxed, so the direct path's future stays small.
            Box::pin(self.call_through(middleware, message, metadata.cloned(), traced)).await
        }
    }

    fn handler<M, R>(&self) -> FlextResult<&BoxHandler<M, R>>
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        self.typed
            .downcast_ref::<BoxHandler<M, R>>()
            .ok_or_else(|| {
                FlextError::operation(format!(
                    "The handler '{}' of {} {} has another message or response type",
                    self.handler_name, self.kind, self.message_type
                ))
            })
    }

    /// The dispatch's span when `traced`, else a span that records nothing.
    ///
    /// A span no tracing subscriber wants is not created at all. Creating a disabled one
    /// is not free once `tracing`'s `log` feature is on (sqlx turns it on): with no
    /// subscriber set, every span then formats its fields for the `log` crate, which took
    /// a quarter of a `send` in the profile. The price: spans are not mirrored to `log`
    /// when no tracing subscriber is set.
    fn span_if(&self, traced: bool, metadata: Option<&MessageMetadata>) -> tracing::Span {
        if !traced || !tracing::span_enabled!(tracing::Level::DEBUG) {
            return tracing::Span::none();
        }
        let span = tracing::debug_span!(
            "flext.dispatch",
            kind = self.kind.as_str(),
            message_type = %self.message_type,
            handler = %self.handler_name,
            correlation_id = tracing::field::Empty,
        );
        if let Some(metadata) = metadata {
            span.record(
                "correlation_id",
                tracing::field::display(metadata.correlation_id),
            );
        }
        span
    }

    /// The middleware path: the message travels erased as a [`Dispatch`] through the stack
    /// to [`Erased`], and the response comes back erased.
    async fn call_through<M, R>(
        &self,
        middleware: &[BusMiddleware],
        message: M,
        metadata: Option<MessageMetadata>,
        traced: bool,
    ) -> FlextResult<R>
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        // Middleware sees a correlation id even when the sender gave no metadata.
        let metadata = metadata.unwrap_or_default();
        let span = self.span_if(traced, Some(&metadata));
        let dispatch = Dispatch {
            context: DispatchContext {
                kind: self.kind,
                message_type: self.message_type.clone(),
                handler_name: self.handler_name.clone(),
                metadata,
            },
            message: Box::new(message),
        };
        let through_stack = async {
            let output = Next::new(&*self.erased, middleware).run(dispatch).await?;
            output.downcast::<R>().map(|r| *r).map_err(|_| {
                FlextError::operation(format!(
                    "A middleware answered {} {} with a response of another type",
                    self.kind, self.message_type
                ))
            })
        };
        catch_panic(through_stack).instrument(span).await
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("kind", &self.kind)
            .field("message_type", &self.message_type)
            .field("handler", &self.handler_name)
            .finish()
    }
}

/// A typed handler at the bottom of a middleware stack: takes the message out of the
/// dispatch, calls the handler, erases the response.
struct Erased<M, R> {
    message_type: Arc<str>,
    inner: BoxHandler<M, R>,
}

#[async_trait]
impl<M, R> Handler for Erased<M, R>
where
    M: Send + 'static,
    R: Send + 'static,
{
    type Request = Dispatch;
    type Response = DispatchOutput;

    fn handler_name(&self) -> &str {
        self.inner.handler_name()
    }

    async fn handle(&self, dispatch: Dispatch) -> FlextResult<DispatchOutput> {
        let message = dispatch.message.downcast::<M>().map_err(|_| {
            FlextError::operation(format!(
                "A middleware replaced the {} message with a value of another type",
                self.message_type
            ))
        })?;
        let response = self.inner.handle(*message).await?;
        Ok(Box::new(response))
    }
}

/// A bus's middleware, outermost first.
#[derive(Default)]
pub(crate) struct Stack(Vec<BusMiddleware>);

impl Stack {
    pub(crate) fn push(&mut self, middleware: BusMiddleware) {
        self.0.push(middleware);
    }

    pub(crate) fn as_slice(&self) -> &[BusMiddleware] {
        &self.0
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|m| m.name()))
            .finish()
    }
}
