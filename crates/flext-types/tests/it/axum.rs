//! The `axum` feature: `FlextError` as a response, and extractor rejections in its shape,
//! through a real axum router called with `oneshot` (no sockets).

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use flext_constants::WireEnum;
use flext_handlers::tower::tower::ServiceExt;
use flext_types::axum::{Flext, FlextRejection};
use flext_types::{ErrorCode, FlextError, http_status};
use serde_json::{Value, json};

/// The status, content type and JSON body of `response`.
async fn read(response: Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, content_type, body)
}

#[tokio::test]
async fn every_code_answers_its_status_with_the_errors_json() {
    for &code in ErrorCode::ALL {
        let error = FlextError::new(code, format!("a {} error", code.name()));
        let expected = serde_json::to_value(&error).unwrap();
        let (status, content_type, body) = read(error.into_response()).await;
        assert_eq!(status.as_u16(), http_status(code), "{}", code.name());
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert_eq!(body, expected);
    }
}

#[tokio::test]
async fn the_body_is_the_json_a_flext_error_serializes_to() {
    let error = FlextError::new(
        ErrorCode::ConcurrencyConflict,
        "Expected version 3, found 4",
    )
    .with_data(json!({"expected": 3, "actual": 4}))
    .with_source(std::io::Error::other("raced"));
    let (status, _, body) = read(error.into_response()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!({
            "code": "FLEXT_1006",
            "name": "CONCURRENCY_CONFLICT",
            "message": "Expected version 3, found 4",
            "data": {"expected": 3, "actual": 4},
            "source": "raced",
        })
    );
    let back: FlextError = serde_json::from_value(body).unwrap();
    assert_eq!(
        back.code(),
        ErrorCode::ConcurrencyConflict,
        "a client reads it back"
    );
}

#[derive(serde::Deserialize)]
struct Withdraw {
    account: String,
    amount: u64,
}

async fn withdraw(Flext(Json(withdraw)): Flext<Json<Withdraw>>) -> Result<Json<Value>, FlextError> {
    match (withdraw.account.as_str(), withdraw.amount) {
        ("acc-1", 0) => Err(FlextError::validation("The amount must be positive")),
        ("acc-1", amount) if amount > 100 => Err(FlextError::business_rule(format!(
            "Insufficient funds: balance 100, withdrawal {amount}"
        ))),
        ("acc-1", amount) => Ok(Json(json!({"balance": 100 - amount}))),
        ("wiring", _) => Err(FlextError::wiring(
            "No handler registered for command: Withdraw",
        )),
        (account, _) => Err(FlextError::not_found(format!("No account {account}"))),
    }
}

async fn balance(Flext(Path(id)): Flext<Path<u32>>) -> Result<String, FlextError> {
    Ok(format!("account {id}"))
}

async fn needs_extension(Flext(Extension(name)): Flext<Extension<String>>) -> String {
    name
}

fn app() -> Router {
    Router::new()
        .route("/withdrawals", post(withdraw))
        .route("/accounts/{id}", get(balance))
        .route("/wired", get(needs_extension))
}

async fn call(request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    read(app().oneshot(request).await.unwrap()).await
}

fn post_json(body: &str) -> Request<Body> {
    Request::post("/withdrawals")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn a_handler_returning_a_flext_error_answers_its_status_and_json() {
    let (status, _, body) = call(post_json(r#"{"account":"acc-1","amount":30}"#)).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"balance": 70})));

    let cases = [
        (
            r#"{"account":"acc-9","amount":1}"#,
            404,
            "NOT_FOUND",
            "No account acc-9",
        ),
        (
            r#"{"account":"wiring","amount":1}"#,
            500,
            "WIRING_ERROR",
            "No handler registered for command: Withdraw",
        ),
        (
            r#"{"account":"acc-1","amount":0}"#,
            422,
            "VALIDATION_ERROR",
            "The amount must be positive",
        ),
        (
            r#"{"account":"acc-1","amount":500}"#,
            422,
            "BUSINESS_RULE_VIOLATION",
            "Insufficient funds: balance 100, withdrawal 500",
        ),
    ];
    for (request, expected_status, name, message) in cases {
        let (status, content_type, body) = call(post_json(request)).await;
        assert_eq!(status.as_u16(), expected_status, "{request}");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert_eq!(body["name"], name, "{body}");
        assert_eq!(body["message"], message, "{body}");
        let code: ErrorCode = body["code"].as_str().unwrap().parse().unwrap();
        assert_eq!(code.name(), name);
    }
}

#[tokio::test]
async fn rejected_json_bodies_answer_in_the_same_shape_with_axums_status() {
    // Not JSON at all: axum's 400, an INVALID_ARGUMENT.
    let (status, content_type, body) = call(post_json("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(body["code"], "FLEXT_1003");
    assert_eq!(body["name"], "INVALID_ARGUMENT");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("Failed to parse the request body as JSON"),
        "{message}"
    );

    // JSON of the wrong shape: axum's 422, a VALIDATION_ERROR naming the field.
    let (status, _, body) = call(post_json(r#"{"account":"acc-1"}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["name"], "VALIDATION_ERROR");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("missing field `amount`"),
        "{body}"
    );

    // No JSON content type: axum's 415, an INVALID_ARGUMENT.
    let request = Request::post("/withdrawals")
        .body(Body::from(r#"{"account":"acc-1","amount":1}"#))
        .unwrap();
    let (status, _, body) = call(request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["name"], "INVALID_ARGUMENT");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type: application/json"),
        "{body}"
    );

    // Every field a client reads is there, and it reads back as a FlextError.
    let error: FlextError = serde_json::from_value(body).unwrap();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn rejections_of_request_parts_and_of_the_wiring_answer_in_the_same_shape() {
    let request = Request::get("/accounts/seven").body(Body::empty()).unwrap();
    let (status, _, body) = call(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["name"], "INVALID_ARGUMENT");
    assert!(
        body["message"].as_str().unwrap().contains("seven"),
        "names the bad value: {body}"
    );

    // A route whose extension was never added: axum's 500, the program's wiring.
    let request = Request::get("/wired").body(Body::empty()).unwrap();
    let (status, _, body) = call(request).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["name"], "WIRING_ERROR");
    assert!(
        body["message"].as_str().unwrap().contains("Extension"),
        "{body}"
    );

    let wired = app().layer(Extension("teller".to_owned()));
    let request = Request::get("/wired").body(Body::empty()).unwrap();
    let response = wired.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// An extractor of the application's own whose rejection is already a `FlextError`.
struct Teller;

impl<S: Send + Sync> FromRequestParts<S> for Teller {
    type Rejection = FlextError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("x-teller") {
            Some(_) => Ok(Self),
            None => Err(FlextError::authorization_denied("No teller signed in")
                .with_data(json!({"header": "x-teller"}))),
        }
    }
}

#[tokio::test]
async fn a_rejection_that_is_a_flext_error_stays_that_error() {
    async fn teller_only(Flext(Teller): Flext<Teller>) -> &'static str {
        "ok"
    }
    let app = Router::new().route("/", get(teller_only));
    let response = app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, _, body) = read(response).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({
            "code": "FLEXT_4001",
            "name": "AUTHORIZATION_DENIED",
            "message": "No teller signed in",
            "data": {"header": "x-teller"},
        })
    );
    let request = Request::get("/")
        .header("x-teller", "t-1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(request).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_handler_may_take_the_rejection_and_pass_it_on_with_question_mark() {
    async fn strict(
        withdraw: Result<Flext<Json<Withdraw>>, FlextRejection>,
    ) -> Result<String, FlextError> {
        if let Err(rejection) = &withdraw {
            assert_eq!(rejection.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert_eq!(rejection.error().code(), ErrorCode::InvalidArgument);
            assert_eq!(rejection.to_string(), rejection.error().message());
        }
        let Flext(Json(w)) = withdraw?;
        Ok(format!("{} {}", w.account, w.amount))
    }
    let app = Router::new().route("/withdrawals", post(strict));
    let request = Request::post("/withdrawals")
        .body(Body::from(r#"{"account":"acc-1","amount":1}"#))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let (status, _, body) = read(response).await;
    // Passed on as a FlextError, it answers with the status of its code.
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["name"], "INVALID_ARGUMENT");
}
