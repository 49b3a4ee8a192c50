//! The route table shared by the command and query buses: one handler per key, bus
//! totals, per-route metrics.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use flext_constants::ErrorCode;
use flext_impl::{MetricsRecorder, Timer, catch_panic_sync};
use flext_protocols::BoxHandler;
use flext_types::{FlextError, FlextResult, MessageMetadata};
use rustc_hash::FxHashMap;

use crate::dispatch::{BusMiddleware, Instrumentation, MessageKind, Route};
use crate::metrics::MessageTypeMetrics;

/// Successes and failures of every dispatch of a bus, including those that found no
/// handler or failed validation.
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

    /// Removes the handler of `key`, or says there was none.
    pub(crate) fn remove<Q>(&mut self, key: &Q, message_type: &str) -> FlextResult<()>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| self.not_found(message_type))
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

    fn not_found(&self, message_type: &str) -> FlextError {
        FlextError::not_found(format!(
            "No handler registered for {}: {message_type}",
            self.kind
        ))
    }

    /// Dispatches `message` to the handler of `key`: validation first (a rejection never
    /// reaches the handler), then the handler through the middleware; records the outcome
    /// in the route's metrics and in `totals` when metrics are on.
    #[allow(
        clippy::too_many_arguments,
        reason = "an internal call with one caller per bus"
    )]
    pub(crate) async fn dispatch<Q, M, R>(
        &self,
        key: &Q,
        totals: &Totals,
        middleware: &[BusMiddleware],
        message: M,
        metadata: Option<&MessageMetadata>,
        message_type: impl FnOnce() -> String,
        validate: impl FnOnce(&M) -> FlextResult<()>,
    ) -> FlextResult<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        M: Send + 'static,
        R: Send + 'static,
    {
        let Instrumentation { metrics, tracing } = self.instrumentation;
        let Some(entry) = self.map.get(key) else {
            if metrics {
                totals.record(false);
            }
            return Err(self.not_found(&message_type()));
        };
        if let Err(error) = catch_panic_sync(|| validate(&message)) {
            if metrics {
                entry.recorder.record_outcome(false);
                totals.record(false);
            }
            return Err(if error.is(ErrorCode::OperationError) {
                error
            } else {
                error.with_code(ErrorCode::ValidationError)
            });
        }
        let timer = metrics.then(Timer::start);
        let result = entry
            .route
            .call(middleware, message, metadata, tracing)
            .await;
        if let Some(timer) = timer {
            let success = result.is_ok();
            entry.recorder.record(timer.elapsed(), success);
            totals.record(success);
        }
        result
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
