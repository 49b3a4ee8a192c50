//! The bank's HTTP API on axum. Errors answer as `FlextError`s do with the facade's `axum`
//! feature: the status of their code (`VALIDATION_ERROR` 422, `NOT_FOUND` 404,
//! `CONCURRENCY_CONFLICT`/`DUPLICATE` 409, `BUSINESS_RULE_VIOLATION` 422,
//! `CIRCUIT_OPEN`/`UNAVAILABLE` 503, …) and the error as JSON; a body or query that does
//! not decode answers in the same shape (`Flext<…>`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use flext_handlers::Types::{FlextError, FlextResult, Page, PageRequest};
use flext_handlers::axum::Flext;
use serde::Deserialize;

use super::service::{AccountView, Bank, Deposit, Notification, OpenAccount, Receipt, Withdraw};

/// The routes:
///
/// | route | does |
/// |---|---|
/// | `POST /accounts` `{"id", "owner"}` | opens an account (201) |
/// | `POST /accounts/{id}/deposits` `{"amount"}` | deposits cents |
/// | `POST /accounts/{id}/withdrawals` `{"amount"}` | withdraws cents, after the fraud check |
/// | `GET /accounts/{id}` | the account's balance |
/// | `GET /accounts?min_balance=&limit=&cursor=` | a page of accounts by id |
/// | `GET /notifications` | the large withdrawals owners were told about |
///
/// Commands take an optional `Idempotency-Key` header: sent again under the same key, a
/// command is one change and answers as the first time.
pub fn router(bank: Arc<Bank>) -> Router {
    Router::new()
        .route("/accounts", post(open).get(list))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/deposits", post(deposit))
        .route("/accounts/{id}/withdrawals", post(withdraw))
        .route("/notifications", get(notifications))
        .fallback(|| async { FlextError::not_found("No such route") })
        .with_state(bank)
}

/// The body of a deposit or a withdrawal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    /// In cents.
    pub amount: u64,
}

/// The query of the account listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    /// Accounts holding at least this many cents (default 0).
    #[serde(default)]
    pub min_balance: i64,
    /// At most this many (1 to 100, default 50).
    pub limit: Option<u32>,
    /// Where the page starts: a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The `Idempotency-Key` header: a retry of a command under the same key is one change.
fn idempotency_key(headers: &HeaderMap) -> FlextResult<Option<&str>> {
    headers
        .get("idempotency-key")
        .map(|value| {
            value
                .to_str()
                .ok()
                .filter(|key| !key.is_empty() && key.len() <= 200)
                .ok_or_else(|| {
                    FlextError::invalid_argument(
                        "Idempotency-Key must be 1 to 200 visible characters",
                    )
                    .with_data(serde_json::json!({"field": "Idempotency-Key"}))
                })
        })
        .transpose()
}

async fn open(
    State(bank): State<Arc<Bank>>,
    headers: HeaderMap,
    Flext(Json(command)): Flext<Json<OpenAccount>>,
) -> FlextResult<(StatusCode, Json<Receipt>)> {
    let receipt = bank.send_keyed(command, idempotency_key(&headers)?).await?;
    Ok((StatusCode::CREATED, Json(receipt)))
}

async fn deposit(
    State(bank): State<Arc<Bank>>,
    Flext(Path(id)): Flext<Path<String>>,
    headers: HeaderMap,
    Flext(Json(body)): Flext<Json<Amount>>,
) -> FlextResult<Json<Receipt>> {
    let command = Deposit {
        id,
        amount: body.amount,
    };
    Ok(Json(
        bank.send_keyed(command, idempotency_key(&headers)?).await?,
    ))
}

async fn withdraw(
    State(bank): State<Arc<Bank>>,
    Flext(Path(id)): Flext<Path<String>>,
    headers: HeaderMap,
    Flext(Json(body)): Flext<Json<Amount>>,
) -> FlextResult<Json<Receipt>> {
    let command = Withdraw {
        id,
        amount: body.amount,
    };
    Ok(Json(
        bank.send_keyed(command, idempotency_key(&headers)?).await?,
    ))
}

async fn account(
    State(bank): State<Arc<Bank>>,
    Flext(Path(id)): Flext<Path<String>>,
) -> FlextResult<Json<AccountView>> {
    Ok(Json(bank.account(&id).await?))
}

async fn list(
    State(bank): State<Arc<Bank>>,
    Flext(Query(listing)): Flext<Query<Listing>>,
) -> FlextResult<Json<Page<AccountView>>> {
    let limit = listing
        .limit
        .unwrap_or(flext_handlers::Types::DEFAULT_PAGE_LIMIT);
    let page = match listing.cursor {
        Some(cursor) => PageRequest::after(cursor.into(), limit),
        None => PageRequest::first(limit),
    };
    Ok(Json(bank.accounts(listing.min_balance, &page).await?))
}

async fn notifications(State(bank): State<Arc<Bank>>) -> FlextResult<Json<Vec<Notification>>> {
    Ok(Json(bank.notifications().await?))
}
