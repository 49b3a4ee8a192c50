//! The `axum` feature: errors a web layer answers with, and rejections in the same shape.
//!
//! - [`FlextError`] implements axum's `IntoResponse`: the status of its code
//!   ([`http_status`], the documented table), the JSON `FlextError`
//!   serializes to as the body (`code`, `name`, `message`, and `data` and `source` when
//!   present), `content-type: application/json`. A handler returns
//!   `Result<Json<T>, FlextError>` and `?` does the rest.
//! - [`Flext`] wraps any extractor (`Flext<Json<T>>`, `Flext<Path<T>>`,
//!   `Flext<Query<T>>`, …) so its rejection answers in that same JSON shape, as a
//!   [`FlextRejection`]: the extractor's own status (axum says 400 for JSON that does not
//!   parse, 415 for a missing content type, 422 for JSON of the wrong shape), its text as
//!   the message, and a code read from the status.
//!
//! This needs `axum-core` and `http` only, not `axum`: axum's rejection types live in
//! `axum`, so instead of converting each of them, [`Flext`] turns any rejection into its
//! response and reads the status and the text back, which works for every extractor,
//! axum's and the application's alike.
//!
//! The message, data and source text reach the client as written. Errors meant for the
//! service's logs only (a database's own error text in `source`, say) are mapped before
//! they leave the handler.
//!
//! ```
//! use axum::{Json, Router, routing::post};
//! use flext_types::FlextError;
//! use flext_types::axum::Flext;
//!
//! #[derive(serde::Deserialize)]
//! struct Deposit { account: String, amount: u64 }
//!
//! async fn deposit(Flext(Json(deposit)): Flext<Json<Deposit>>) -> Result<Json<u64>, FlextError> {
//!     if deposit.account != "acc-1" {
//!         // 404, {"code": "FLEXT_1004", "name": "NOT_FOUND", "message": "No account acc-2"}
//!         return Err(FlextError::not_found(format!("No account {}", deposit.account)));
//!     }
//!     if deposit.amount == 0 {
//!         // 422, {"code": "FLEXT_3001", "name": "VALIDATION_ERROR", …}
//!         return Err(FlextError::validation("The amount must be positive"));
//!     }
//!     Ok(Json(deposit.amount))
//! }
//!
//! let app: Router = Router::new().route("/deposits", post(deposit));
//! ```

use std::fmt;
use std::ops::{Deref, DerefMut};

use axum_core::extract::{FromRequest, FromRequestParts, Request};
use axum_core::response::{IntoResponse, Response};
use flext_constants::ErrorCode;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::request::Parts;

use crate::{FlextError, http_status};

/// Any extractor whose rejection answers as a [`FlextRejection`]: the extractor's status,
/// with the JSON body a [`FlextError`] answers with.
///
/// Wrap the extractor and destructure both: `Flext(Json(body)): Flext<Json<Body>>`. It
/// works for extractors of the whole request (`Json`, `Form`, `String`, …) and of its parts
/// (`Path`, `Query`, headers, …); a rejection that is already a `FlextError` answer stays
/// that error. See the [module](self) for the shape and an example.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flext<E>(pub E);

impl<E> Flext<E> {
    /// The extracted value.
    pub fn into_inner(self) -> E {
        self.0
    }
}

impl<E> Deref for Flext<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.0
    }
}

impl<E> DerefMut for Flext<E> {
    fn deref_mut(&mut self) -> &mut E {
        &mut self.0
    }
}

impl<S, E> FromRequest<S> for Flext<E>
where
    S: Send + Sync,
    E: FromRequest<S>,
{
    type Rejection = FlextRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The rejection becomes its response before the await: it need not be `Send`.
        let response = match E::from_request(request, state).await {
            Ok(value) => return Ok(Self(value)),
            Err(rejection) => rejection.into_response(),
        };
        Err(FlextRejection::read(response).await)
    }
}

impl<S, E> FromRequestParts<S> for Flext<E>
where
    S: Send + Sync,
    E: FromRequestParts<S>,
{
    type Rejection = FlextRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The rejection becomes its response before the await: it need not be `Send`.
        let response = match E::from_request_parts(parts, state).await {
            Ok(value) => return Ok(Self(value)),
            Err(rejection) => rejection.into_response(),
        };
        Err(FlextRejection::read(response).await)
    }
}

/// An extractor's rejection as a [`FlextError`], answered with the extractor's own status.
///
/// The error's message is the rejection's text ("Failed to parse the request body as
/// JSON: …"), or the status's reason when it has none; its code follows the status: 422
/// `VALIDATION_ERROR`; 401 and 403 `AUTHORIZATION_DENIED`; 404 `NOT_FOUND`; 408 and 504
/// `TIMEOUT`; 429 `RATE_LIMITED`; 503 `UNAVAILABLE`; any other 4xx (400, 405, 413, 415, …)
/// `INVALID_ARGUMENT`; 500 `WIRING_ERROR` (axum answers 500 for a missing extension or
/// state, or path parameters asked of a route without any: the program's wiring); any
/// other status `OPERATION_ERROR`. A handler can `?` it into its own `FlextError`.
#[derive(Debug, Clone, PartialEq)]
pub struct FlextRejection {
    status: StatusCode,
    error: FlextError,
}

impl FlextRejection {
    /// The status the extractor answered with, kept in the response.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The rejection as an error.
    pub fn error(&self) -> &FlextError {
        &self.error
    }

    /// The rejection as an error, by value.
    pub fn into_error(self) -> FlextError {
        self.error
    }

    /// Reads a rejection's response: its status, and its body as the message (or, when
    /// the body is a `FlextError`'s JSON, that error).
    async fn read(response: Response) -> Self {
        let status = response.status();
        // The body of a rejection is a short text; axum-core reads a body to a string as
        // the `String` extractor of a request holding it.
        let text = String::from_request(Request::new(response.into_body()), &())
            .await
            .unwrap_or_default();
        let error = serde_json::from_str::<FlextError>(&text).unwrap_or_else(|_| {
            let message = if text.trim().is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("The request was rejected")
                    .to_owned()
            } else {
                text
            };
            FlextError::new(rejection_code(status), message)
        });
        Self { status, error }
    }
}

impl fmt::Display for FlextRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for FlextRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<FlextRejection> for FlextError {
    fn from(rejection: FlextRejection) -> Self {
        rejection.error
    }
}

impl IntoResponse for FlextRejection {
    fn into_response(self) -> Response {
        json_response(self.status, &self.error)
    }
}

impl IntoResponse for FlextError {
    /// The status of the error's code ([`http_status`]) and its JSON.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(http_status(self.code()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &self)
    }
}

/// The code of a rejection answered with `status` (see [`FlextRejection`]).
fn rejection_code(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        422 => ErrorCode::ValidationError,
        401 | 403 => ErrorCode::AuthorizationDenied,
        404 => ErrorCode::NotFound,
        408 | 504 => ErrorCode::Timeout,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        500 => ErrorCode::WiringError,
        400..=499 => ErrorCode::InvalidArgument,
        _ => ErrorCode::OperationError,
    }
}

/// `error`'s JSON with `status` and `content-type: application/json`.
fn json_response(status: StatusCode, error: &FlextError) -> Response {
    // Encoding strings and a JSON value cannot fail; should it, the code and name still go.
    let body = serde_json::to_vec(error).unwrap_or_else(|_| {
        format!(
            r#"{{"code":"{}","name":"{}","message":"The error could not be encoded"}}"#,
            error.code().as_str(),
            error.code().name()
        )
        .into_bytes()
    });
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
