//! [`EventHandler`]: a [`BasicHandler`] of domain events that counts them by name.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use dashmap::DashMap;
use flext_constants::HandlerKind;
use flext_protocols::{Event, Handler};
use flext_types::{FlextResult, MetricValue};

use crate::delegate::delegate_to_base;
use crate::{BasicHandler, FnHandler, ManagedHandler, handler_fn};

/// A handler of events that counts every event it receives by event name, on top of the
/// base metrics.
///
/// ```
/// use flext_impl::EventHandler;
/// use flext_protocols::{Event, Handler};
///
/// struct UserCreated;
/// impl Event for UserCreated {
///     fn event_name(&self) -> &str { "UserCreated" }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let welcome = EventHandler::from_fn("welcome", |_event: UserCreated| async { Ok(()) });
/// welcome.handle(UserCreated).await.unwrap();
/// assert_eq!(welcome.events_processed(), 1);
/// assert_eq!(welcome.events_by_name()["UserCreated"], 1);
/// # }
/// ```
pub struct EventHandler<H: Handler> {
    base: BasicHandler<H>,
    by_name: DashMap<String, AtomicU64>,
}

impl<E, F, Fut> EventHandler<FnHandler<F, E, ()>>
where
    E: Event,
    F: Fn(E) -> Fut + Send + Sync,
    Fut: Future<Output = FlextResult<()>> + Send,
{
    /// An event handler whose processing step is the async closure or function `f`.
    pub fn from_fn(name: impl Into<String>, f: F) -> Self {
        let name = name.into();
        Self::with_base(BasicHandler::with_kind(
            name.clone(),
            HandlerKind::Event,
            handler_fn(name, f),
        ))
    }
}

impl<H> EventHandler<H>
where
    H: Handler,
    H::Request: Event,
{
    /// Counts the events the processing step `inner` handles, under `inner`'s name.
    pub fn wrap(inner: H) -> Self {
        let name = inner.handler_name().to_owned();
        Self::with_base(BasicHandler::with_kind(name, HandlerKind::Event, inner))
    }

    fn with_base(base: BasicHandler<H>) -> Self {
        Self {
            base,
            by_name: DashMap::new(),
        }
    }

    /// Events handled successfully.
    pub fn events_processed(&self) -> u64 {
        self.base.core().recorder().successes()
    }

    /// Events received, by event name (whether or not they were handled successfully).
    pub fn events_by_name(&self) -> BTreeMap<String, u64> {
        self.by_name
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().load(Relaxed)))
            .collect()
    }

    /// The processing step.
    pub fn inner(&self) -> &H {
        self.base.inner()
    }

    fn count(&self, name: &str) {
        if let Some(counter) = self.by_name.get(name) {
            counter.fetch_add(1, Relaxed);
            return;
        }
        self.by_name
            .entry(name.to_owned())
            .or_default()
            .fetch_add(1, Relaxed);
    }
}

delegate_to_base! {
    impl<H> EventHandler<H> where { H::Request: Event, }
    handle(&self, event) {
        self.count(event.event_name());
        self.base.handle(event).await
    }
    extend_metrics(&self, set) {
        for (name, count) in self.events_by_name() {
            set.push_labelled(
                "events_received",
                "Events received, by event name.",
                vec![("event".to_owned(), name)],
                MetricValue::Counter(count),
            );
        }
    }
}

impl<H: Handler + std::fmt::Debug> std::fmt::Debug for EventHandler<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHandler")
            .field("base", &self.base)
            .field("event_names", &self.by_name.len())
            .finish()
    }
}
