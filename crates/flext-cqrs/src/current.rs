//! The message the current task is handling: [`current_metadata`] reads its
//! [`MessageMetadata`], [`with_current_metadata`] sets it around a future. Every bus sets it
//! around each handler call, so handlers, and the [`Repository`](crate::Repository) calls
//! they make, see it without the caller threading it by hand.

use std::cell::{OnceCell, RefCell};
use std::future::Future;

use flext_types::MessageMetadata;
use uuid::Uuid;

tokio::task_local! {
    /// The dispatch the task is inside; a nested dispatch shadows it while it runs.
    static CURRENT: Scope;
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
///   is minted when first read (so reading costs nothing until someone reads), and every read
///   in that dispatch sees the same ids. On the event bus each delivery is a dispatch of its
///   own: subscribers of one `publish` without metadata see different message ids.
///
/// The value is task-local (a tokio task local, like `tracing`'s current span): a task
/// started with `tokio::spawn` does not inherit it; wrap the spawned future in
/// [`with_current_metadata`] to carry it over.
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
    CURRENT.try_with(|scope| scope.metadata().clone()).ok()
}

/// Runs `future` as the handling of the message `metadata` describes: inside it,
/// [`current_metadata`] returns `metadata`, and [`Repository`](crate::Repository) calls
/// derive their lineage and event ids from it, as inside a bus handler. For message
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
    scoped(Scope::of_dispatch(Some(metadata)), future).await
}

/// What the task knows of the message it is handling: its metadata (set, or minted when
/// first read) and how many event batches each message has reserved per stream.
pub(crate) struct Scope {
    metadata: OnceCell<MessageMetadata>,
    batches: RefCell<Vec<BatchCount>>,
}

/// The batches a message has reserved on one stream within one scope.
struct BatchCount {
    message_id: Uuid,
    stream: Box<str>,
    reserved: u32,
}

impl Scope {
    /// The scope of one dispatch: the `given` metadata or, without, metadata caused by the
    /// message the task is handling (a nested dispatch), or none until first read.
    pub(crate) fn of_dispatch(given: Option<MessageMetadata>) -> Self {
        let metadata = given.or_else(inherited);
        Self {
            metadata: metadata.map_or_else(OnceCell::new, OnceCell::from),
            batches: RefCell::new(Vec::new()),
        }
    }

    fn metadata(&self) -> &MessageMetadata {
        self.metadata.get_or_init(MessageMetadata::new)
    }
}

/// `future` with `scope` as the current task's message while it runs.
pub(crate) fn scoped<F: Future>(scope: Scope, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(scope, future)
}

/// Metadata for a message dispatched by the task's current handler: caused by the message it
/// is handling. `None` outside any handler.
pub(crate) fn inherited() -> Option<MessageMetadata> {
    CURRENT
        .try_with(|parent| parent.metadata().caused_by())
        .ok()
}

/// Reserves the number of the next batch of events `message_id` causes on `stream` within
/// the current scope: 0, 1, … in the order the calls are made. Outside any scope every
/// batch is number 0.
///
/// A handler that runs again for the same message (a redelivery) reserves the same numbers
/// in the same order, so its batches get the same ids.
pub(crate) fn reserve_batch(message_id: Uuid, stream: &str) -> u32 {
    CURRENT
        .try_with(|scope| {
            let mut batches = scope.batches.borrow_mut();
            let found = batches
                .iter_mut()
                .find(|count| count.message_id == message_id && *count.stream == *stream);
            match found {
                Some(count) => {
                    count.reserved += 1;
                    count.reserved - 1
                }
                None => {
                    batches.push(BatchCount {
                        message_id,
                        stream: stream.into(),
                        reserved: 1,
                    });
                    0
                }
            }
        })
        .unwrap_or(0)
}

/// Gives back the reservation `number` when it is the latest, so that trying the same
/// batch again (after a failure that leaves its outcome unknown) reserves the same number.
pub(crate) fn release_batch(message_id: Uuid, stream: &str, number: u32) {
    // Outside any scope there is nothing to give back.
    let _ = CURRENT.try_with(|scope| {
        let mut batches = scope.batches.borrow_mut();
        let found = batches
            .iter_mut()
            .find(|count| count.message_id == message_id && *count.stream == *stream);
        if let Some(count) = found
            && count.reserved == number + 1
        {
            count.reserved = number;
        }
    });
}
