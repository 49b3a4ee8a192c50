//! The message the current task is handling: [`current_metadata`] reads its
//! [`MessageMetadata`], [`with_current_metadata`] sets it around a future. Every bus sets it
//! around each handler call, so handlers, and the [`Repository`](crate::Repository) calls
//! they make, see it without the caller threading it by hand.
//!
//! The scope lives in the handler's future between polls and in a thread-local while the
//! future is polled, as a tokio task-local does. It is ours rather than `tokio::task_local!`
//! for the cost on every dispatch: a 16-byte scope swapped in and out, the parent of a
//! nested dispatch found in the same swap. With `task_local!` (its whole value swapped on
//! each poll, a lookup of its own for the parent) a `send/command_bus` iteration took about
//! 1 240 instructions; with this, 961, against 825 with no scope at all (callgrind): about
//! 13 ns, from best-of-five runs on the loaded development machine.
//!
//! Like tokio's `TaskLocalFuture`, a handler's future is also dropped inside its scope when
//! it is dropped unfinished (a timeout, a cancelled call); a finished one is dropped as any
//! value is, after a flag check, so this cost a `send` 6 instructions more (callgrind). An
//! event delivery also carries its subscriber's key, a [`SubscriberKey`] worked out once
//! when it subscribed: a copy, no reference count. Every access to the thread-local goes
//! through `try_with`: while the thread is ending (its thread-locals torn down) a future
//! runs, or is dropped, without its scope, and nothing panics.

use std::cell::Cell;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};

use flext_types::MessageMetadata;
use uuid::Uuid;

thread_local! {
    /// The scope of the dispatch whose future this thread is polling, if any.
    static CURRENT: Cell<Option<Scope>> = const { Cell::new(None) };
}

/// The metadata of the message the current task is handling: the command, query or event
/// a bus handler (or subscriber) was called with, or `None` outside any.
///
/// - A message sent with metadata ([`send_with`](crate::CommandBus::send_with),
///   [`execute_with`](crate::QueryBus::execute_with),
///   [`publish_with`](crate::EventBus::publish_with)) is seen as the bus middleware left it
///   (a header a middleware added is there).
/// - A message sent without, from inside a handler, continues that handler's conversation:
///   its metadata is [caused by](MessageMetadata::caused_by) the handler's message (same
///   correlation id and headers, the handler's message as causation).
/// - A message sent without, from outside any handler, starts a conversation: its metadata
///   is minted when first read (so it costs nothing until someone reads it), and every read
///   in that dispatch sees the same ids. On the event bus each delivery is a dispatch of its
///   own: subscribers of one `publish` without metadata see different message ids.
///
/// The value belongs to the handler's future, like a tokio task-local or `tracing`'s
/// current span: a task started with `tokio::spawn` does not inherit it; wrap the spawned
/// future in [`with_current_metadata`] to carry it over.
///
/// ```
/// use flext_cqrs::{CommandBus, current_metadata};
/// use flext_protocols::Command;
/// use flext_types::MessageMetadata;
///
/// struct Ship;
/// impl Command for Ship { type Output = Option<String>; }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let mut bus = CommandBus::new();
/// bus.register_fn(|_: Ship| async {
///     Ok(current_metadata().and_then(|m| m.headers.get("tenant").cloned()))
/// })?;
/// let metadata = MessageMetadata::new().with_header("tenant", "acme");
/// assert_eq!(bus.send_with(Ship, metadata).await?.as_deref(), Some("acme"));
/// assert_eq!(current_metadata(), None);
/// # Ok(())
/// # }
/// ```
pub fn current_metadata() -> Option<MessageMetadata> {
    with_scope(|scope| scope.metadata().clone())
}

/// Runs `future` as the handling of the message `metadata` describes: inside it,
/// [`current_metadata`] returns `metadata`, and [`Repository`](crate::Repository) calls
/// derive their lineage and event ids from it, as inside a command handler (an event
/// subscriber's name, part of the ids its calls derive, is not carried over). For message
/// consumers outside the buses, and to carry the metadata into a spawned task.
///
/// ```
/// use flext_cqrs::{current_metadata, with_current_metadata};
/// use flext_types::MessageMetadata;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let metadata = MessageMetadata::new();
/// let seen = tokio::spawn(with_current_metadata(metadata.clone(), async { current_metadata() }));
/// assert_eq!(seen.await.unwrap(), Some(metadata));
/// # }
/// ```
pub async fn with_current_metadata<F: Future>(metadata: MessageMetadata, future: F) -> F::Output {
    // Boxed: the scope polls only `Unpin` futures, which needs no unsafe pinning.
    Scoped::new(SubscriberKey::NONE, Some(metadata), Box::pin(future)).await
}

/// The key of the handler a dispatch delivers to, part of the ids its repository calls
/// derive: for an event subscriber a UUID v5 of its name (so the key follows the name, not
/// the order of subscription), worked out once when it subscribes; nil for a command or
/// query handler. `Copy`: a delivery carries it without a reference count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct SubscriberKey(Uuid);

impl SubscriberKey {
    /// The key of a command or query handler (and of [`with_current_metadata`]).
    pub(crate) const NONE: Self = Self(Uuid::nil());

    /// The key of the event subscriber named `name`.
    pub(crate) fn of(name: &str) -> Self {
        Self(Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()))
    }

    /// The key's 16 bytes.
    pub(crate) fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

/// What a dispatch knows of its message: the key of the handler it delivers to, and
/// nothing more yet (its metadata is minted or inherited when first needed) or its
/// metadata.
struct Scope {
    subscriber: SubscriberKey,
    metadata: Option<Box<MessageMetadata>>,
}

impl Scope {
    /// What a scope's place holds while the scope is current.
    const TAKEN: Self = Self {
        subscriber: SubscriberKey::NONE,
        metadata: None,
    };

    /// The scope's metadata, minted for an unread scope (a new conversation).
    fn metadata(&mut self) -> &mut MessageMetadata {
        self.metadata
            .get_or_insert_with(|| Box::new(MessageMetadata::new()))
    }
}

/// A handler's future running with its message's scope as the current one: `metadata`, or
/// (without) metadata caused by the message being handled where the future first runs, or
/// metadata minted when first read.
///
/// The future is polled, and dropped, inside the scope, as a tokio task-local's future is:
/// a handler dropped unfinished (a timeout, a cancelled call) drops what it holds (a guard,
/// a repository call in flight) with its message still the current one. While its thread
/// is being torn down (the thread-local is gone) it is dropped without the scope.
pub(crate) struct Scoped<F> {
    /// The scope, except while the future is polled (then it is in `CURRENT`). Dropped by
    /// `drop`, which keeps the drop glue of an empty scope off every dispatch.
    scope: ManuallyDrop<Scope>,
    /// The future; an `Option` only so that `drop` can take it out to drop it in the scope.
    future: Option<F>,
    /// Whether the future has finished: a finished future holds nothing that needs the
    /// scope, so it is dropped as any field is, without entering the scope again.
    finished: bool,
}

impl<F> Scoped<F> {
    /// `future` handling the message `metadata` describes, delivered to the handler whose
    /// key is `subscriber` ([`SubscriberKey::NONE`] for a command or query handler).
    #[inline]
    pub(crate) fn new(
        subscriber: SubscriberKey,
        metadata: Option<MessageMetadata>,
        future: F,
    ) -> Self {
        Self {
            scope: ManuallyDrop::new(Scope {
                subscriber,
                metadata: metadata.map(Box::new),
            }),
            future: Some(future),
            finished: false,
        }
    }
}

impl<F: Future + Unpin> Future for Scoped<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let Some(future) = this.future.as_mut() else {
            // Only `drop` takes the future out.
            return Poll::Pending;
        };
        let _entered = Entered::enter(&mut this.scope);
        let poll = Pin::new(future).poll(cx);
        this.finished = poll.is_ready();
        poll
    }
}

impl<F> Drop for Scoped<F> {
    #[inline]
    fn drop(&mut self) {
        if !self.finished {
            self.drop_future_in_scope();
        }
        if self.scope.metadata.is_some() {
            drop(std::mem::replace(&mut *self.scope, Scope::TAKEN));
        }
    }
}

impl<F> Scoped<F> {
    /// Drops the unfinished future with its scope current. (Should that drop panic, the
    /// scope's allocations are leaked, not freed.)
    #[cold]
    #[inline(never)]
    fn drop_future_in_scope(&mut self) {
        if let Some(future) = self.future.take() {
            let _entered = Entered::enter(&mut self.scope);
            drop(future);
        }
    }
}

/// Runs the synchronous `call` with the message's scope as the current one, as [`Scoped`]
/// polls a future: for a subscriber called without a future.
#[inline]
pub(crate) fn in_scope<T>(
    subscriber: SubscriberKey,
    metadata: Option<MessageMetadata>,
    call: impl FnOnce() -> T,
) -> T {
    let mut scope = Scope {
        subscriber,
        metadata: metadata.map(Box::new),
    };
    let _entered = Entered::enter(&mut scope);
    call()
}

/// A scope made current; the one it replaced comes back when this is dropped, also when
/// the poll panics. While the thread is ending (the thread-local is gone) it does nothing:
/// the future runs, or is dropped, without its scope.
struct Entered<'a> {
    slot: &'a mut Scope,
    /// The scope this one replaced, taken back out in `drop` (so the guard's drop glue has
    /// nothing left to drop).
    outer: ManuallyDrop<Option<Scope>>,
}

impl<'a> Entered<'a> {
    #[inline]
    fn enter(slot: &'a mut Scope) -> Self {
        let unread = slot.metadata.is_none();
        let swapped = CURRENT
            .try_with(|current| current.replace(Some(std::mem::replace(slot, Scope::TAKEN))));
        // The guard exists before anything else runs, so a panic from here on still puts
        // every scope back. When the thread-local is gone, the scope stayed in its place.
        let mut entered = Self {
            slot,
            outer: ManuallyDrop::new(swapped.ok().flatten()),
        };
        if unread && let Some(parent) = entered.outer.as_mut() {
            // A dispatch without metadata inside a handler continues its conversation.
            let metadata = Box::new(parent.metadata().caused_by());
            with_scope(|scope| scope.metadata = Some(metadata));
        }
        entered
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        let outer = Option::take(&mut self.outer);
        // Nothing to put back when the thread-local is gone: then the scope never left.
        if let Ok(Some(scope)) = CURRENT.try_with(|current| current.replace(outer)) {
            // The place holds `Scope::TAKEN`, which owns nothing: forgetting it keeps the
            // scope's drop glue off every poll.
            std::mem::forget(std::mem::replace(self.slot, scope));
        }
    }
}

/// `f` of the current scope, or `None` outside any scope (and while the thread is ending).
fn with_scope<R>(f: impl FnOnce(&mut Scope) -> R) -> Option<R> {
    let mut scope = CURRENT.try_with(Cell::take).ok().flatten()?;
    // `f` is this module's code: it neither polls nor reaches the scope again.
    let result = f(&mut scope);
    let _ = CURRENT.try_with(|current| current.set(Some(scope)));
    Some(result)
}

/// Metadata for a message dispatched by the task's current handler: caused by the message it
/// is handling. `None` outside any handler.
pub(crate) fn inherited() -> Option<MessageMetadata> {
    with_scope(|scope| scope.metadata().caused_by())
}

/// The message the task's current handler is handling, and the handler's key
/// ([`SubscriberKey::NONE`] for a command or query handler, and in
/// [`with_current_metadata`]). `None` outside any handler.
pub(crate) fn handling() -> Option<(MessageMetadata, SubscriberKey)> {
    with_scope(|scope| (scope.metadata().clone(), scope.subscriber))
}

/// The key of the task's current handler; [`SubscriberKey::NONE`] outside any handler.
pub(crate) fn subscriber() -> SubscriberKey {
    with_scope(|scope| scope.subscriber).unwrap_or_default()
}
