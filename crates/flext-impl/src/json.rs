//! [`JsonHandler`]: any serde handler as a handler of JSON values, for calls by name from
//! configuration, a CLI or the network.

use async_trait::async_trait;
use flext_protocols::Handler;
use flext_types::{FlextError, FlextResult, short_type_name};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Wraps a handler of typed requests so it accepts and returns JSON values.
///
/// A request that does not decode into the handler's request type is a
/// `SERIALIZATION_ERROR` naming the handler, the expected type and the decoding error; the
/// handler is not called. Handlers of different types can then share one map.
///
/// ```
/// use flext_impl::{JsonHandler, handler_fn};
/// use flext_protocols::Handler;
/// use flext_constants::ErrorCode;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let lookup = JsonHandler::new(handler_fn("GetUser", |id: u32| async move { Ok(format!("user_{id}")) }));
/// assert_eq!(lookup.handle(json!(7)).await.unwrap(), json!("user_7"));
/// let err = lookup.handle(json!("seven")).await.unwrap_err();
/// assert_eq!(err.code(), ErrorCode::SerializationError);
/// assert!(err.message().starts_with("Invalid request for 'GetUser' (expected u32)"));
/// # }
/// ```
#[derive(Debug)]
pub struct JsonHandler<H> {
    inner: H,
}

impl<H> JsonHandler<H>
where
    H: Handler,
    H::Request: DeserializeOwned,
    H::Response: Serialize,
{
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        Self { inner }
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

#[async_trait]
impl<H> Handler for JsonHandler<H>
where
    H: Handler,
    H::Request: DeserializeOwned,
    H::Response: Serialize,
{
    type Request = Value;
    type Response = Value;

    fn handler_name(&self) -> &str {
        self.inner.handler_name()
    }

    fn handler_kind(&self) -> flext_constants::HandlerKind {
        self.inner.handler_kind()
    }

    async fn handle(&self, request: Value) -> FlextResult<Value> {
        let request: H::Request = serde_json::from_value(request).map_err(|e| {
            FlextError::serialization(format!(
                "Invalid request for '{}' (expected {}): {e}",
                self.inner.handler_name(),
                short_type_name::<H::Request>()
            ))
            .with_source(e)
        })?;
        let response = self.inner.handle(request).await?;
        serde_json::to_value(response).map_err(|e| {
            FlextError::serialization(format!(
                "Response of '{}' does not serialize: {e}",
                self.inner.handler_name()
            ))
            .with_source(e)
        })
    }
}
