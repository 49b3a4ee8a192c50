//! The public view of a dispatch: what bus middleware sees (a [`Dispatch`] of one message
//! to one handler, its [`DispatchContext`]), which bus it travels on ([`MessageKind`]) and
//! what a bus records of it ([`Instrumentation`]).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use flext_protocols::SharedMiddleware;
use flext_types::MessageMetadata;

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
/// - `metrics`: per-type counts and latency histograms and the bus totals: one relaxed
///   atomic add per dispatch, and for the dispatches whose latency is sampled (the first of
///   each type, then one in
///   [`LATENCY_SAMPLE_EVERY`](crate::MessageTypeMetrics::LATENCY_SAMPLE_EVERY)) two clock
///   reads and a histogram update. Counts are exact. Off, the bus's metrics stay at zero.
/// - `tracing`: a `flext.dispatch` span around each dispatch (nearly free when no
///   subscriber listens). Off, no span is created even when one does.
///
/// ```
/// use flext_cqrs::{CommandBus, Instrumentation};
///
/// let bus = CommandBus::new().with_instrumentation(Instrumentation::NONE);
/// assert_eq!(bus.instrumentation(), Instrumentation::NONE);
///
/// // Tracing only: the settings are non-exhaustive, so they are built from a preset.
/// let traced = Instrumentation::FULL.with_metrics(false);
/// assert!(traced.tracing && !traced.metrics);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
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

    /// The same settings with metrics on or off.
    #[must_use]
    pub const fn with_metrics(self, metrics: bool) -> Self {
        Self { metrics, ..self }
    }

    /// The same settings with tracing on or off.
    #[must_use]
    pub const fn with_tracing(self, tracing: bool) -> Self {
        Self { tracing, ..self }
    }
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
    pub(crate) fn new(
        kind: MessageKind,
        message_type: Arc<str>,
        handler_name: Arc<str>,
        metadata: MessageMetadata,
    ) -> Self {
        Self {
            kind,
            message_type,
            handler_name,
            metadata,
        }
    }

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
    pub(crate) fn new(context: DispatchContext, message: Box<dyn Any + Send>) -> Self {
        Self { context, message }
    }

    /// The metadata and the message, taken out of the dispatch.
    pub(crate) fn into_parts(self) -> (MessageMetadata, Box<dyn Any + Send>) {
        (self.context.metadata, self.message)
    }

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
