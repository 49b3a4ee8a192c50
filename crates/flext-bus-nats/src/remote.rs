//! Remote commands and queries on NATS request/reply: [`NatsTransport`] on the caller,
//! [`NatsWorker`] (a NATS service, its endpoints in a queue group) on each worker.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::client::RequestErrorKind;
use async_nats::connection::State;
use async_nats::service::{self, ServiceExt};
use async_nats::{Client, HeaderMap};
use async_trait::async_trait;
use bytes::Bytes;
use flext_protocols::{RemoteCall, RemoteDispatch, RemoteKind, RemoteTransport};
use flext_types::{FlextError, FlextResult, MessageMetadata};
use futures_util::StreamExt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::codec::{escape, subject_token, unescape};
use crate::error::nats_error;
use crate::streams::check_prefix;

/// The headers of a remote call and its answer.
pub mod header {
    /// The message's id.
    pub const MESSAGE_ID: &str = "Flext-Message-Id";
    /// The conversation's id.
    pub const CORRELATION_ID: &str = "Flext-Correlation-Id";
    /// The id of the message that caused it.
    pub const CAUSATION_ID: &str = "Flext-Causation-Id";
    /// When the message was created, RFC 3339.
    pub const TIMESTAMP: &str = "Flext-Timestamp";
    /// The caller's deadline, milliseconds since the Unix epoch (a call without one
    /// carries the time its caller stops waiting).
    pub const DEADLINE: &str = "Flext-Deadline";
    /// The message's name as the caller wrote it (the subject's last token is made safe
    /// and may be shared by two names; the worker checks this one).
    pub const MESSAGE_NAME: &str = "Flext-Message-Name";
    /// The message's free-form headers, a JSON object (escaped).
    pub const HEADERS: &str = "Flext-Headers";
    /// On an answer that is an error: the `FlextError` as JSON (escaped).
    pub const ERROR: &str = "Flext-Error";
    /// On an answer that is an error: its code (`FLEXT_1004`).
    pub const ERROR_CODE: &str = "Flext-Error-Code";
}

/// The subject of a message: `{prefix}.{command|query}.{name}`.
fn subject(prefix: &str, kind: RemoteKind, name: &str) -> String {
    format!("{prefix}.{}.{}", kind.as_str(), subject_token(name))
}

/// Sends remote commands and queries as NATS requests on `{prefix}.{command|query}.{name}`
/// (a [`RemoteTransport`]: register it on a bus with `CommandBus::register_remote`).
///
/// The message is the body; its metadata and the caller's deadline travel in headers. The
/// answer is the output, or the worker's `FlextError` (code, message and data in
/// headers). The transport's own errors are typed and never hang:
///
/// - no process serves the message: `UNAVAILABLE` at once (the server's no-responders
///   status: no worker of that message is up, perhaps starting or restarting, so a
///   `Retry` of flext-patterns tries it again by default);
/// - no answer by the deadline (the one in force around the call, else
///   [`with_default_timeout`](NatsTransport::with_default_timeout), 30 s by default):
///   `TIMEOUT`; a deadline already passed is a `TIMEOUT` before anything is sent;
/// - the client is not connected (a broker outage): `UNAVAILABLE` at once.
#[derive(Clone)]
pub struct NatsTransport {
    client: Client,
    prefix: String,
    default_timeout: Duration,
}

impl NatsTransport {
    /// Requests through `client` under subjects beginning with `prefix` (dot-separated
    /// tokens of ASCII letters, digits, `_` and `-`).
    pub fn new(client: Client, prefix: impl Into<String>) -> FlextResult<Self> {
        let prefix = prefix.into();
        check_prefix(&prefix)?;
        Ok(Self {
            client,
            prefix,
            default_timeout: Duration::from_secs(30),
        })
    }

    /// How long a call without a deadline waits for its answer (at least 1 ms).
    pub fn with_default_timeout(mut self, timeout: Duration) -> FlextResult<Self> {
        if timeout < Duration::from_millis(1) {
            return Err(FlextError::invalid_argument(format!(
                "default_timeout must be at least 1 ms, got {timeout:?}"
            )));
        }
        self.default_timeout = timeout;
        Ok(self)
    }
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field("prefix", &self.prefix)
            .field("default_timeout", &self.default_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl RemoteTransport for NatsTransport {
    async fn call(&self, call: RemoteCall) -> FlextResult<Vec<u8>> {
        let what = format!("{} {}", call.kind.title(), call.name);
        let timeout = match call.deadline {
            None => self.default_timeout,
            Some(at) => match at.duration_since(SystemTime::now()) {
                Ok(left) if !left.is_zero() => left,
                _ => {
                    return Err(FlextError::timeout(format!(
                        "{what} was not sent: its deadline had passed"
                    )));
                }
            },
        };
        if self.client.connection_state() != State::Connected {
            return Err(FlextError::unavailable(format!(
                "{what} was not sent: the NATS client is not connected"
            )));
        }
        let subject = subject(&self.prefix, call.kind, &call.name);
        // A call without a deadline carries the time this caller stops waiting, so a
        // worker does not start it after that.
        let deadline = call.deadline.unwrap_or_else(|| SystemTime::now() + timeout);
        let headers = encode_call(&call, deadline)?;
        let request = async_nats::Request::new()
            .payload(Bytes::from(call.payload))
            .headers(headers)
            .timeout(Some(timeout));
        let timed_out = || {
            FlextError::timeout(format!(
                "{what} got no answer within {} ms",
                timeout.as_millis()
            ))
        };
        // The client's own timeout starts once the request is queued, which waits while
        // the client reconnects: this one bounds the whole call.
        let answer =
            tokio::time::timeout(timeout, self.client.send_request(subject.clone(), request))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| match e.kind() {
                    RequestErrorKind::NoResponders => FlextError::unavailable(format!(
                        "No process serves {what} (subject {subject})"
                    )),
                    RequestErrorKind::TimedOut => timed_out().with_source(e),
                    _ => nats_error(format!("{what} was not sent"), e),
                })?;
        if let Some(error) = answer.headers.as_ref().and_then(|h| h.get(header::ERROR)) {
            let error: FlextError = unescape(error.as_str())
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_else(|| {
                    FlextError::serialization(format!("The error answering {what} does not decode"))
                });
            return Err(error);
        }
        if let Some(status) = answer
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR))
        {
            // An error answer of a service that is not a flext worker.
            return Err(FlextError::operation(format!(
                "{what} failed in the service that answered: {}",
                status.as_str()
            )));
        }
        Ok(answer.payload.to_vec())
    }
}

/// The headers that carry `call`'s name, metadata and `deadline`.
fn encode_call(call: &RemoteCall, deadline: SystemTime) -> FlextResult<HeaderMap> {
    let m = &call.metadata;
    let mut headers = HeaderMap::new();
    headers.insert(header::MESSAGE_NAME, escape(&call.name));
    headers.insert(header::MESSAGE_ID, m.message_id.to_string());
    headers.insert(header::CORRELATION_ID, m.correlation_id.to_string());
    if let Some(id) = m.causation_id {
        headers.insert(header::CAUSATION_ID, id.to_string());
    }
    let timestamp = m.timestamp.format(&Rfc3339).map_err(|e| {
        FlextError::serialization(format!("The message's time cannot be shown: {e}"))
    })?;
    headers.insert(header::TIMESTAMP, timestamp);
    let millis = deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    headers.insert(header::DEADLINE, millis.to_string());
    if !m.headers.is_empty() {
        let json = serde_json::to_string(&m.headers)?;
        headers.insert(header::HEADERS, escape(&json));
    }
    Ok(headers)
}

/// The call a request carries; a `SERIALIZATION_ERROR` naming a malformed header.
fn decode_call(
    kind: RemoteKind,
    name: &str,
    message: &async_nats::Message,
) -> FlextResult<RemoteCall> {
    let empty = HeaderMap::new();
    let headers = message.headers.as_ref().unwrap_or(&empty);
    let bad = |header: &str| {
        FlextError::serialization(format!(
            "{} {name}: the request's {header} header is malformed",
            kind.title()
        ))
    };
    let uuid = |header: &str| -> FlextResult<Option<Uuid>> {
        headers
            .get(header)
            .map(|v| Uuid::parse_str(v.as_str()).map_err(|_| bad(header)))
            .transpose()
    };
    match headers
        .get(header::MESSAGE_NAME)
        .map(|v| unescape(v.as_str()))
    {
        Some(Some(sent)) if sent == name => {}
        Some(Some(sent)) => {
            return Err(FlextError::wiring(format!(
                "This worker serves {} {name} on this subject, not {sent}",
                kind.as_str()
            )));
        }
        _ => return Err(bad(header::MESSAGE_NAME)),
    }
    let mut metadata = MessageMetadata::new();
    if let Some(id) = uuid(header::MESSAGE_ID)? {
        metadata.message_id = id;
    }
    metadata.correlation_id = uuid(header::CORRELATION_ID)?.unwrap_or(metadata.message_id);
    metadata.causation_id = uuid(header::CAUSATION_ID)?;
    if let Some(time) = headers.get(header::TIMESTAMP) {
        metadata.timestamp =
            OffsetDateTime::parse(time.as_str(), &Rfc3339).map_err(|_| bad(header::TIMESTAMP))?;
    }
    if let Some(json) = headers.get(header::HEADERS) {
        let map: BTreeMap<String, String> = unescape(json.as_str())
            .and_then(|json| serde_json::from_str(&json).ok())
            .ok_or_else(|| bad(header::HEADERS))?;
        metadata.headers = map;
    }
    let deadline = headers
        .get(header::DEADLINE)
        .map(|v| {
            v.as_str()
                .parse::<u64>()
                .map(|millis| UNIX_EPOCH + Duration::from_millis(millis))
                .map_err(|_| bad(header::DEADLINE))
        })
        .transpose()?;
    Ok(RemoteCall {
        kind,
        name: name.to_owned(),
        payload: message.payload.to_vec(),
        metadata,
        deadline,
    })
}

/// Serves a [`RemoteDispatch`]'s commands and queries to remote callers: a NATS service
/// (discoverable with `nats micro`, with its request and error counts) with one endpoint
/// per message on `{prefix}.{command|query}.{name}`, in the queue group `q`, so N
/// processes running the same worker share the calls, each call answered by one of them.
///
/// Each request is dispatched in a task of its own, at most
/// [`concurrency`](NatsWorker::start) at once; the answer carries the output, or the
/// error (`Flext-Error`: the `FlextError` as JSON; `Flext-Error-Code`; and the service
/// API's `Nats-Service-Error` and `Nats-Service-Error-Code`, the flext code's number).
pub struct NatsWorker {
    service: Option<service::Service>,
    tasks: JoinSet<()>,
    subjects: Vec<String>,
}

impl NatsWorker {
    /// Starts serving `dispatch`'s routes as the service `service_name` (letters, digits,
    /// `_`, `-`), at most `concurrency` calls at once (at least 1).
    pub async fn start(
        client: Client,
        prefix: impl Into<String>,
        service_name: &str,
        dispatch: Arc<dyn RemoteDispatch>,
        concurrency: usize,
    ) -> FlextResult<Self> {
        let prefix = prefix.into();
        check_prefix(&prefix)?;
        if concurrency == 0 {
            return Err(FlextError::invalid_argument(
                "concurrency must be at least 1, got 0",
            ));
        }
        let mut routes: Vec<(RemoteKind, String, String)> = Vec::new();
        for (kind, name) in dispatch.routes() {
            let subject = subject(&prefix, kind, &name);
            if routes.iter().any(|(_, _, taken)| *taken == subject) {
                return Err(FlextError::invalid_argument(format!(
                    "{} {name} would share subject {subject} with another message served; \
                     rename one (subjects keep ASCII letters, digits, '_' and '-')",
                    kind.title()
                )));
            }
            routes.push((kind, name, subject));
        }
        let service = client
            .service_builder()
            .description("flext-handlers remote commands and queries")
            .start(service_name, "0.1.0")
            .await
            .map_err(|e| {
                FlextError::unavailable(format!("Service {service_name} cannot start: {e}"))
            })?;
        let limit = Arc::new(Semaphore::new(concurrency));
        let mut tasks = JoinSet::new();
        let mut subjects = Vec::with_capacity(routes.len());
        for (kind, name, subject) in routes {
            let mut endpoint = match service.endpoint(subject.clone()).await {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    // Nothing half-served: the endpoints made so far go with the service.
                    let _stopped = service.stop().await;
                    return Err(FlextError::unavailable(format!(
                        "Service {service_name} cannot serve {subject}: {e}"
                    )));
                }
            };
            subjects.push(subject);
            let dispatch = Arc::clone(&dispatch);
            let limit = Arc::clone(&limit);
            tasks.spawn(async move {
                let mut running = JoinSet::new();
                while let Some(request) = endpoint.next().await {
                    let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                        break;
                    };
                    let dispatch = Arc::clone(&dispatch);
                    let name = name.clone();
                    running.spawn(async move {
                        let _permit = permit;
                        answer(kind, &name, &*dispatch, request).await;
                    });
                    // Reap the finished ones so the set stays small.
                    while running.try_join_next().is_some() {}
                }
                while running.join_next().await.is_some() {}
            });
        }
        // Once `start` returns the server knows the subscriptions: a call made then is
        // served, not answered "no responders".
        client.flush().await.map_err(|e| {
            FlextError::unavailable(format!(
                "Service {service_name} cannot reach the server: {e}"
            ))
        })?;
        Ok(Self {
            service: Some(service),
            tasks,
            subjects,
        })
    }

    /// The subjects served.
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// Stops taking calls, lets the calls under way answer, and returns.
    pub async fn stop(mut self) {
        if let Some(service) = self.service.take() {
            let _stopped = service.stop().await;
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

impl fmt::Debug for NatsWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsWorker")
            .field("subjects", &self.subjects)
            .finish_non_exhaustive()
    }
}

/// Dispatches one request and answers it.
async fn answer(
    kind: RemoteKind,
    name: &str,
    dispatch: &dyn RemoteDispatch,
    request: service::Request,
) {
    let result = match decode_call(kind, name, &request.message) {
        Ok(call) => dispatch.dispatch(call).await,
        Err(error) => Err(error),
    };
    let sent = match result {
        Ok(output) => request.respond(Ok(Bytes::from(output))).await,
        Err(error) => {
            let mut headers = HeaderMap::new();
            let json = serde_json::to_string(&error).unwrap_or_else(|_| "{}".to_owned());
            headers.insert(header::ERROR, escape(&json));
            headers.insert(header::ERROR_CODE, error.code().as_str());
            let code = error
                .code()
                .as_str()
                .trim_start_matches("FLEXT_")
                .parse()
                .unwrap_or(500);
            let status = escape(&error.to_string());
            request
                .respond_with_headers(Err(service::error::Error { status, code }), headers)
                .await
        }
    };
    if let Err(error) = sent {
        tracing::warn!(%error, message = name, "answer not sent");
    }
}
