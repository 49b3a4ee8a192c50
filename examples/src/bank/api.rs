//! The bank's HTTP API on axum. Errors answer as `FlextError`s do with the facade's `axum`
//! feature: the status of their code (`VALIDATION_ERROR` 422, `NOT_FOUND` 404,
//! `CONCURRENCY_CONFLICT`/`DUPLICATE` 409, `BUSINESS_RULE_VIOLATION` 422,
//! `CIRCUIT_OPEN`/`UNAVAILABLE` 503, …) and the error as JSON; a body or query that does
//! not decode answers in the same shape (`Flext<…>`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use flext_handlers::Types::{FlextResult, Page, PageRequest};
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
pub fn router(bank: Arc<Bank>) -> Router {
    Router::new()
        .route("/accounts", post(open).get(list))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/deposits", post(deposit))
        .route("/accounts/{id}/withdrawals", post(withdraw))
        .route("/notifications", get(notifications))
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

async fn open(
    State(bank): State<Arc<Bank>>,
    Flext(Json(command)): Flext<Json<OpenAccount>>,
) -> FlextResult<(StatusCode, Json<Receipt>)> {
    let receipt = bank.send(command).await?;
    Ok((StatusCode::CREATED, Json(receipt)))
}

async fn deposit(
    State(bank): State<Arc<Bank>>,
    Path(id): Path<String>,
    Flext(Json(body)): Flext<Json<Amount>>,
) -> FlextResult<Json<Receipt>> {
    Ok(Json(
        bank.send(Deposit {
            id,
            amount: body.amount,
        })
        .await?,
    ))
}

async fn withdraw(
    State(bank): State<Arc<Bank>>,
    Path(id): Path<String>,
    Flext(Json(body)): Flext<Json<Amount>>,
) -> FlextResult<Json<Receipt>> {
    Ok(Json(
        bank.send(Withdraw {
            id,
            amount: body.amount,
        })
        .await?,
    ))
}

async fn account(
    State(bank): State<Arc<Bank>>,
    Path(id): Path<String>,
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
