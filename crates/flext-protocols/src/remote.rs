//! The contracts of commands and queries handled in another process: a [`RemoteCall`] is
//! the serialized message with its metadata and deadline, a [`RemoteTransport`] carries it
//! to a worker (an adapter such as NATS implements it), and a [`RemoteDispatch`] is what a
//! worker hands each call to (the buses implement it).
//!
//! The buses never name a transport and a transport never names a bus: the caller's bus
//! registers a remote route over `Arc<dyn RemoteTransport>` and runs its validation and
//! middleware before the call leaves; the worker's adapter passes each call to
//! `Arc<dyn RemoteDispatch>`, which sends it through the worker's bus with the caller's
//! metadata, so its middleware, validation and authorization run there as for a local
//! message.

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use flext_types::{FlextResult, MessageMetadata};

/// Whether a remote call is a command or a query.
///
/// ```
/// use flext_protocols::RemoteKind;
///
/// assert_eq!(RemoteKind::Command.as_str(), "command");
/// assert_eq!(RemoteKind::Query.title(), "Query");
/// assert_eq!(RemoteKind::Query.to_string(), "query");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteKind {
    /// A command: one handler, changes state.
    Command,
    /// A query: one handler, reads state.
    Query,
}

impl RemoteKind {
    /// The kind's wire string: `command` or `query`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Query => "query",
        }
    }

    /// The kind as a message about one begins: `Command` or `Query`.
    pub const fn title(self) -> &'static str {
        match self {
            Self::Command => "Command",
            Self::Query => "Query",
        }
    }
}

impl fmt::Display for RemoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command or query on its way to (or arrived at) the process that handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCall {
    /// Command or query.
    pub kind: RemoteKind,
    /// The message's name (`Command::command_name`, `Query::query_name`), which routes it.
    pub name: String,
    /// The message as JSON.
    pub payload: Vec<u8>,
    /// Its metadata: the message id (a retried command keeps it, so its effects happen
    /// once), correlation and causation ids, headers.
    pub metadata: MessageMetadata,
    /// When the caller stops waiting, if it set a deadline: a worker does not start a call
    /// whose deadline has passed, and stops one that runs past it. A wall-clock time, so
    /// the processes' clocks must agree (as NTP keeps them) to within the margin that
    /// matters to the caller.
    pub deadline: Option<SystemTime>,
}

/// Carries remote calls to the processes that handle them and brings back their results.
///
/// The result is the handler's output as JSON, or the handler's `FlextError` (its code,
/// message and data as the worker returned it), or the transport's own typed error: no
/// process serves the message, or the broker cannot be reached (`UNAVAILABLE`: a worker may
/// be starting or down), the deadline passed (`TIMEOUT`). A transport never waits past the call's deadline.
#[async_trait]
pub trait RemoteTransport: Send + Sync + fmt::Debug {
    /// Sends `call` and waits for its result.
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn call(&self, call: RemoteCall) -> FlextResult<Vec<u8>>
    /// ```
    async fn call(&self, call: RemoteCall) -> FlextResult<Vec<u8>>;
}

/// What a worker hands each remote call to: it decodes the message, runs it through the
/// worker's bus with the caller's metadata under the caller's deadline, and encodes the
/// output.
#[async_trait]
pub trait RemoteDispatch: Send + Sync + fmt::Debug {
    /// The messages it serves, as (kind, name).
    fn routes(&self) -> Vec<(RemoteKind, String)>;

    /// Handles `call`: its output as JSON, or the error the handling ended with (a call
    /// for a message it does not serve is a `WIRING_ERROR`; a payload that does not decode is a
    /// `SERIALIZATION_ERROR` naming the message; a deadline already passed is a `TIMEOUT`
    /// and nothing runs).
    ///
    /// As an implementation writes it (with `#[async_trait]`; the signature above is
    /// what the macro makes of it):
    ///
    /// ```text
    /// async fn dispatch(&self, call: RemoteCall) -> FlextResult<Vec<u8>>
    /// ```
    async fn dispatch(&self, call: RemoteCall) -> FlextResult<Vec<u8>>;
}
