//! The route machinery every bus shares: a [`Route`] (one handler of one message type,
//! called directly or through the middleware [`Stack`] down to [`Erased`], always with the
//! message's metadata as the task's [current](crate::current_metadata) one), and the route
//! table of the command and query buses ([`Routes`]: one handler per key, bus totals,
//! per-route metrics).

use std::any::Any;
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_impl::{MetricsRecorder, Timer, catch_panic, catch_panic_sync};
use flext_protocols::{BoxHandler, Handler, Next};
use flext_types::{FlextError, FlextResult, MessageMetadata};
use futures_util::future::BoxFuture;
use rustc_hash::FxHashMap;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::current::{self, Scoped, SubscriberKey};
use crate::dispatch::{
    BusMiddleware, Dispatch, DispatchContext, DispatchOutput, Instrumentation, MessageKind,
};
use crate::metrics::MessageTypeMetrics;

/// One registered handler of one message type: its names, the typed handler for the
/// direct path, and an erased form of it at the bottom of the middleware stack.
pub(crate) struct Route {
    kind: MessageKind,
    message_type: Arc<str>,
    handler_name: Arc<str>,
    /// The key of the subscriber an event route delivers to (of its handler's name), part
    /// of the ids its repository calls derive; `SubscriberKey::NONE` for a command or query
    /// route.
    subscriber: SubscriberKey,
    /// A `BoxHandler<M, R>`.
    typed: Box<dyn Any + Send + Sync>,
    erased: BoxHandler<Dispatch, DispatchOutput>,
}

impl Route {
    /// The route of a command or query handler.
    pub(crate) fn new<M, R>(
        kind: MessageKind,
        message_type: &str,
        handler: BoxHandler<M, R>,
    ) -> Self
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        Self::build(kind, false, message_type, handler)
    }

    /// The route of an event subscriber, known by its handler's name.
    pub(crate) fn subscriber<M, R>(label: &str, handler: BoxHandler<M, R>) -> Self
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        Self::build(MessageKind::Event, true, label, handler)
    }

    fn build<M, R>(
        kind: MessageKind,
        subscriber: bool,
        message_type: &str,
        handler: BoxHandler<M, R>,
    ) -> Self
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        let message_type: Arc<str> = Arc::from(message_type);
        let subscriber = if subscriber {
            SubscriberKey::of(handler.handler_name())
        } else {
            SubscriberKey::NONE
        };
        Self {
            kind,
            subscriber,
            handler_name: Arc::from(handler.handler_name()),
            erased: Arc::new(Erased {
                message_type: message_type.clone(),
                subscriber,
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

    /// Starts a call of the handler with `message`, through `middleware` when there is any,
    /// inside a panic guard and, when `traced`, a `flext.dispatch` span. The handler runs with the
    /// message's metadata as the task's current one: `metadata`, or metadata inherited from
    /// the message the task is handling, or (on the direct path) metadata minted only if the
    /// handler reads it — or, when a subscriber wants the span, minted (or inherited) at
    /// once, so that the span's ids are the ones the handler sees.
    ///
    /// Returns the call's future (the handler's, or the middleware stack's), not yet
    /// polled; `Err` when the route holds a handler of other types.
    pub(crate) fn start<'a, M, R>(
        &'a self,
        middleware: &'a [BusMiddleware],
        message: M,
        metadata: Option<&MessageMetadata>,
        traced: bool,
    ) -> FlextResult<RouteFuture<'a, R>>
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        let handler = self.handler::<M, R>()?;
        Ok(if middleware.is_empty() {
            // The direct path: no erasure, no allocation beyond the handler's own future.
            self.direct(handler, message, metadata, traced)
        } else {
            RouteFuture::Through(Box::pin(self.call_through(
                middleware,
                message,
                metadata.cloned(),
                traced,
            )))
        })
    }

    /// The direct path's future: the handler's, in its message's scope, inside the span
    /// when a subscriber wants one (the panic guard is [`RouteFuture`]'s poll).
    fn direct<'a, M, R>(
        &self,
        handler: &'a BoxHandler<M, R>,
        message: M,
        metadata: Option<&MessageMetadata>,
        traced: bool,
    ) -> RouteFuture<'a, R>
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        if !wants_span(traced) {
            // No span at all, not even a disabled one: creating and dropping one took 40
            // instructions of a `send` (callgrind).
            let handled = Scoped::new(self.subscriber, metadata.cloned(), handler.handle(message));
            return RouteFuture::Direct(handled);
        }
        let span = self.span_if(traced);
        let metadata = resolved(metadata.cloned());
        record_ids(&span, &metadata);
        let handled = Scoped::new(self.subscriber, Some(metadata), handler.handle(message));
        RouteFuture::Traced(handled.instrument(span))
    }

    /// Calls the synchronous subscriber function `call` with `message` as the direct path
    /// calls its handler (in the message's scope and, when `traced`, its span, inside the
    /// panic guard), without a future: for a bus with no middleware. `traced` is already
    /// [`wants_span`]'s answer: a publish asks once for all its deliveries.
    pub(crate) fn call_sync<M: ?Sized>(
        &self,
        call: &dyn Fn(&M) -> FlextResult<()>,
        message: &M,
        metadata: Option<&MessageMetadata>,
        traced: bool,
    ) -> FlextResult<()> {
        let call = || catch_panic_sync(|| call(message));
        if !traced {
            return current::in_scope(self.subscriber, metadata.cloned(), call);
        }
        let span = self.span_if(traced);
        let metadata = resolved(metadata.cloned());
        record_ids(&span, &metadata);
        let _entered = span.enter();
        current::in_scope(self.subscriber, Some(metadata), call)
    }

    fn handler<M, R>(&self) -> FlextResult<&BoxHandler<M, R>>
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        self.typed
            .downcast_ref::<BoxHandler<M, R>>()
            .ok_or_else(|| {
                FlextError::wiring(format!(
                    "The handler '{}' of {} {} has another message or response type",
                    self.handler_name, self.kind, self.message_type
                ))
            })
    }

    /// The dispatch's span when `traced`, else a span that records nothing. Its ids are
    /// [`Empty`](tracing::field::Empty) until [`record_ids`] fills them in.
    ///
    /// A span no tracing subscriber wants is not created at all. Creating a disabled one
    /// is not free once `tracing`'s `log` feature is on (sqlx turns it on): with no
    /// subscriber set, every span then formats its fields for the `log` crate, which took
    /// a quarter of a `send` in the profile. The price: spans are not mirrored to `log`
    /// when no tracing subscriber is set.
    fn span_if(&self, traced: bool) -> tracing::Span {
        if !wants_span(traced) {
            return tracing::Span::none();
        }
        tracing::debug_span!(
            "flext.dispatch",
            kind = self.kind.as_str(),
            message_type = %self.message_type,
            handler = %self.handler_name,
            message_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            causation_id = tracing::field::Empty,
        )
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
        // Middleware sees a correlation id even when the sender gave no metadata: the
        // conversation of the handler dispatching it, or a new one.
        let metadata = resolved(metadata);
        let span = self.span_if(traced);
        if !span.is_disabled() {
            record_ids(&span, &metadata);
        }
        let dispatch = Dispatch::new(
            DispatchContext::new(
                self.kind,
                self.message_type.clone(),
                self.handler_name.clone(),
                metadata,
            ),
            Box::new(message),
        );
        let through_stack = async {
            let output = Next::new(&*self.erased, middleware).run(dispatch).await?;
            output.downcast::<R>().map(|r| *r).map_err(|_| {
                FlextError::wiring(format!(
                    "A middleware answered {} {} with a response of another type",
                    self.kind, self.message_type
                ))
            })
        };
        catch_panic(through_stack).instrument(span).await
    }
}

/// Whether a dispatch traced as `traced` says gets a `flext.dispatch` span: tracing is
/// on and a subscriber wants the span.
#[inline]
pub(crate) fn wants_span(traced: bool) -> bool {
    traced && tracing::span_enabled!(tracing::Level::DEBUG)
}

/// The metadata of a dispatch that needs it now: the sender's, or metadata caused by the
/// message the task is handling (its conversation goes on), or a new conversation's.
fn resolved(metadata: Option<MessageMetadata>) -> MessageMetadata {
    metadata.or_else(current::inherited).unwrap_or_default()
}

/// Fills in a `flext.dispatch` span's message, correlation and causation ids (causation
/// stays empty for a message that starts its conversation).
fn record_ids(span: &tracing::Span, metadata: &MessageMetadata) {
    use tracing::field::display;
    span.record("message_id", display(metadata.message_id));
    span.record("correlation_id", display(metadata.correlation_id));
    if let Some(causation) = metadata.causation_id {
        span.record("causation_id", display(causation));
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

/// A started call ([`Route::start`]): one future whatever the path, polled inside the panic guard
/// (a panicking handler is an `OPERATION_ERROR`). `Unpin`, so a dispatch's future holds it
/// without pinning it.
pub(crate) enum RouteFuture<'a, R> {
    /// The handler's future in its scope; polled inside `catch_unwind`, which costs
    /// nothing until something panics.
    Direct(Scoped<BoxFuture<'a, FlextResult<R>>>),
    /// The same inside its `flext.dispatch` span, when a subscriber wants it. Without one
    /// the span is left out rather than entered disabled on every poll and on the drop.
    Traced(Instrumented<Scoped<BoxFuture<'a, FlextResult<R>>>>),
    /// Through the middleware stack, which guards itself.
    Through(BoxFuture<'a, FlextResult<R>>),
}

impl<R> Future for RouteFuture<'_, R> {
    type Output = FlextResult<R>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FlextResult<R>> {
        match self.get_mut() {
            RouteFuture::Direct(future) => catch_panic_sync(|| Ok(Pin::new(future).poll(cx)))
                .unwrap_or_else(|panic| Poll::Ready(Err(panic))),
            RouteFuture::Traced(future) => catch_panic_sync(|| Ok(Pin::new(future).poll(cx)))
                .unwrap_or_else(|panic| Poll::Ready(Err(panic))),
            RouteFuture::Through(future) => future.as_mut().poll(cx),
        }
    }
}

/// A typed handler at the bottom of a middleware stack: takes the message out of the
/// dispatch, calls the handler with the dispatch's metadata (as the middleware left it) as
/// the task's current one, erases the response.
struct Erased<M, R> {
    message_type: Arc<str>,
    subscriber: SubscriberKey,
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

    fn handler_kind(&self) -> flext_constants::HandlerKind {
        self.inner.handler_kind()
    }

    async fn handle(&self, dispatch: Dispatch) -> FlextResult<DispatchOutput> {
        let (metadata, message) = dispatch.into_parts();
        let message = message.downcast::<M>().map_err(|_| {
            FlextError::wiring(format!(
                "A middleware replaced the {} message with a value of another type",
                self.message_type
            ))
        })?;
        let handled = self.inner.handle(*message);
        let response = Scoped::new(self.subscriber, Some(metadata), handled).await?;
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

/// The outcomes of a bus's dispatches that no registered route counts: those that found
/// no handler (or failed before looking for one), and those of routes since removed. The
/// bus's totals are these plus [`Routes::outcomes`]: a dispatch that reaches a route adds
/// to its route's counters only, one atomic add rather than two.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    successes: AtomicU64,
    failures: AtomicU64,
}

impl Totals {
    pub(crate) fn record(&self, success: bool) {
        if success {
            self.successes.fetch_add(1, Relaxed);
        } else {
            self.failures.fetch_add(1, Relaxed);
        }
    }

    /// Adds the outcomes of a removed route.
    pub(crate) fn absorb(&self, successes: u64, failures: u64) {
        self.successes.fetch_add(successes, Relaxed);
        self.failures.fetch_add(failures, Relaxed);
    }

    /// `(successes, failures)`.
    pub(crate) fn read(&self) -> (u64, u64) {
        (self.successes.load(Relaxed), self.failures.load(Relaxed))
    }
}

#[derive(Debug)]
struct Entry {
    route: Route,
    recorder: MetricsRecorder,
}

/// Handlers by key (a message `TypeId`, or a registered name), at most one per key.
///
/// The table is changed only through `&mut self`, so a dispatch borrows its route for the
/// whole call without a lock or a reference count.
#[derive(Debug)]
pub(crate) struct Routes<K> {
    kind: MessageKind,
    map: FxHashMap<K, Entry>,
    pub(crate) instrumentation: Instrumentation,
}

impl<K: Hash + Eq> Routes<K> {
    pub(crate) fn new(kind: MessageKind) -> Self {
        Self {
            kind,
            map: FxHashMap::default(),
            instrumentation: Instrumentation::FULL,
        }
    }

    /// Adds the handler of `key`; a second handler for the same key is a `DUPLICATE` error.
    pub(crate) fn insert<M, R>(
        &mut self,
        key: K,
        message_type: &str,
        handler: BoxHandler<M, R>,
    ) -> FlextResult<()>
    where
        M: Send + 'static,
        R: Send + 'static,
    {
        match self.map.entry(key) {
            std::collections::hash_map::Entry::Occupied(existing) => {
                Err(FlextError::duplicate(format!(
                    "A handler is already registered for {}: {message_type} (handler '{}')",
                    self.kind,
                    existing.get().route.handler_name()
                )))
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(Entry {
                    route: Route::new(self.kind, message_type, handler),
                    recorder: MetricsRecorder::new(),
                });
                Ok(())
            }
        }
    }

    /// Removes the handler of `key`, or says there was none. The route's counts stay in
    /// the bus's `totals`.
    pub(crate) fn remove<Q>(
        &mut self,
        key: &Q,
        message_type: &str,
        totals: &Totals,
    ) -> FlextResult<()>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self
            .map
            .remove(key)
            .ok_or_else(|| FlextError::not_found(self.no_handler(message_type)))?;
        totals.absorb(entry.recorder.successes(), entry.recorder.failures());
        Ok(())
    }

    pub(crate) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// "No handler registered for {kind}: {message_type}": a `WIRING_ERROR` when a
    /// message meets it (the program did not wire its handler), a `NOT_FOUND` when a
    /// removal does (a lookup of a registration).
    fn no_handler(&self, message_type: &str) -> String {
        format!("No handler registered for {}: {message_type}", self.kind)
    }

    /// Dispatches `message` to the handler of `key`: validation first (a rejection never
    /// reaches the handler), then the handler through the middleware; records the outcome
    /// in the route's metrics (or, when no handler is registered, in `totals`) when metrics
    /// are on.
    ///
    /// The route is looked up now (a read of the table); everything else happens when the
    /// returned future is polled, in one state machine: validation, the timer, the
    /// handler's future and the metrics.
    #[allow(
        clippy::too_many_arguments,
        reason = "an internal call with one caller per bus"
    )]
    pub(crate) fn dispatch<'a, Q, M, R, V>(
        &'a self,
        key: &Q,
        totals: &'a Totals,
        middleware: &'a [BusMiddleware],
        message: M,
        metadata: Option<&'a MessageMetadata>,
        message_type: impl FnOnce() -> String,
        validate: V,
    ) -> Dispatched<'a, M, R, V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        M: Send + 'static,
        R: Send + 'static,
        V: FnOnce(&M) -> FlextResult<()>,
    {
        let Instrumentation { metrics, tracing } = self.instrumentation;
        let stage = match self.map.get(key) {
            Some(entry) => Stage::Unstarted {
                entry,
                middleware,
                message,
                metadata,
                validate,
                traced: tracing,
            },
            None => Stage::Missing {
                totals,
                error: FlextError::wiring(self.no_handler(&message_type())),
            },
        };
        Dispatched { stage, metrics }
    }

    /// Successes and failures summed over the routes registered now.
    pub(crate) fn outcomes(&self) -> (u64, u64) {
        self.map
            .values()
            .fold((0, 0), |(successes, failures), entry| {
                (
                    successes + entry.recorder.successes(),
                    failures + entry.recorder.failures(),
                )
            })
    }

    /// Metrics of every route, by message type.
    pub(crate) fn metrics(&self) -> BTreeMap<String, MessageTypeMetrics> {
        self.map
            .values()
            .map(|entry| {
                let successful = entry.recorder.successes();
                let failed = entry.recorder.failures();
                (
                    entry.route.message_type().to_owned(),
                    MessageTypeMetrics {
                        handler: entry.route.handler_name().to_owned(),
                        processed: successful + failed,
                        successful,
                        failed,
                        latency: entry.recorder.latency(),
                    },
                )
            })
            .collect()
    }
}

/// Whether the next call of the route `recorder` counts is one to time: one in
/// [`MessageTypeMetrics::LATENCY_SAMPLE_EVERY`] by the calls counted so far, the first
/// always. Two plain loads, no atomic read-modify-write; calls racing on one route may both
/// be timed (or neither), which only changes how many are sampled.
fn sampled(recorder: &MetricsRecorder) -> bool {
    let calls = recorder.successes().wrapping_add(recorder.failures());
    calls.is_multiple_of(MessageTypeMetrics::LATENCY_SAMPLE_EVERY)
}

pin_project_lite::pin_project! {
    /// The future of one dispatch ([`Routes::dispatch`]): validation, the timer, the
    /// handler's future and the metrics in one state machine.
    pub(crate) struct Dispatched<'a, M, R, V> {
        stage: Stage<'a, M, R, V>,
        metrics: bool,
    }
}

/// Where a [`Dispatched`] is.
enum Stage<'a, M, R, V> {
    /// No handler: the error to answer with, counted in `totals` when polled.
    Missing {
        totals: &'a Totals,
        error: FlextError,
    },
    /// Not polled yet.
    Unstarted {
        entry: &'a Entry,
        middleware: &'a [BusMiddleware],
        message: M,
        metadata: Option<&'a MessageMetadata>,
        validate: V,
        traced: bool,
    },
    /// The handler's future is running.
    Running {
        entry: &'a Entry,
        timer: Option<Timer>,
        future: RouteFuture<'a, R>,
    },
    /// Finished: answered once.
    Done,
}

impl<M, R, V> Future for Dispatched<'_, M, R, V>
where
    M: Send + 'static,
    R: Send + 'static,
    V: FnOnce(&M) -> FlextResult<()>,
{
    type Output = FlextResult<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FlextResult<R>> {
        let this = self.project();
        let metrics = *this.metrics;
        loop {
            if let Stage::Running {
                entry,
                timer,
                future,
            } = this.stage
            {
                let result = std::task::ready!(Pin::new(future).poll(cx));
                if metrics {
                    let success = result.is_ok();
                    match timer {
                        Some(timer) => entry.recorder.record(timer.elapsed(), success),
                        None => entry.recorder.record_outcome(success),
                    }
                }
                *this.stage = Stage::Done;
                return Poll::Ready(result);
            }
            match std::mem::replace(this.stage, Stage::Done) {
                Stage::Missing { totals, error } => {
                    if metrics {
                        totals.record(false);
                    }
                    return Poll::Ready(Err(error));
                }
                Stage::Unstarted {
                    entry,
                    middleware,
                    message,
                    metadata,
                    validate,
                    traced,
                } => {
                    if let Err(error) = catch_panic_sync(|| validate(&message)) {
                        if metrics {
                            entry.recorder.record_outcome(false);
                        }
                        return Poll::Ready(Err(if error.is(ErrorCode::OperationError) {
                            error
                        } else {
                            error.with_code(ErrorCode::ValidationError)
                        }));
                    }
                    let timer = (metrics && sampled(&entry.recorder)).then(Timer::start);
                    // Guarded too: a hand-written handler may panic before it returns its
                    // future.
                    let started = catch_panic_sync(|| {
                        entry.route.start(middleware, message, metadata, traced)
                    });
                    match started {
                        // Polled at once, in the loop's next turn: the handler's first
                        // poll is most often its last.
                        Ok(future) => {
                            *this.stage = Stage::Running {
                                entry,
                                timer,
                                future,
                            }
                        }
                        Err(error) => {
                            if metrics {
                                entry.recorder.record_outcome(false);
                            }
                            return Poll::Ready(Err(error));
                        }
                    }
                }
                // Polled again after it answered: it has nothing more to give.
                Stage::Running { .. } | Stage::Done => return Poll::Pending,
            }
        }
    }
}
