//! A paged, filtered listing through the query bus, typed and by name: the page request
//! and the page cross as JSON, bad limits and cursors come back as `INVALID_ARGUMENT`
//! naming the field.

use std::sync::Arc;

use flext_constants::ErrorCode;
use flext_cqrs::QueryBus;
use flext_protocols::Query;
use flext_types::{Cursor, FlextResult, Page, PageRequest};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Account {
    id: String,
    balance: u64,
}

/// Accounts holding at least `min_balance`, by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListAccounts {
    #[serde(default)]
    min_balance: u64,
    #[serde(default)]
    page: PageRequest,
}

impl Query for ListAccounts {
    type Output = Page<Account>;
}

fn bus() -> QueryBus {
    let accounts: Arc<Vec<Account>> = Arc::new(
        (1..=25)
            .map(|n| Account {
                id: format!("acc-{n:02}"),
                balance: n * 10,
            })
            .collect(),
    );
    let list = |accounts: Arc<Vec<Account>>, query: ListAccounts| async move {
        let matching = accounts
            .iter()
            .filter(|a| a.balance >= query.min_balance)
            .cloned();
        Page::of_sorted(matching, &query.page, |a| a.id.clone())
    };
    let mut bus = QueryBus::new();
    // The state goes in once; each call gets its own reference.
    bus.register_with(accounts.clone(), list).expect("typed");
    bus.register_named(
        "ListAccounts",
        flext_impl::handler_with("list_accounts", accounts, list),
    )
    .expect("named");
    bus
}

#[tokio::test]
async fn a_typed_listing_pages_through_its_filter() -> FlextResult<()> {
    let bus = bus();
    let mut page = PageRequest::first(4);
    let mut ids = Vec::new();
    loop {
        let listed = bus
            .execute(ListAccounts {
                min_balance: 100,
                page: page.clone(),
            })
            .await?;
        assert_eq!(listed.total, Some(16));
        ids.extend(listed.items.into_iter().map(|a| a.id));
        match listed.next_cursor {
            Some(next) => page = PageRequest::after(next, 4),
            None => break,
        }
    }
    let expected: Vec<String> = (10..=25).map(|n| format!("acc-{n:02}")).collect();
    assert_eq!(ids, expected);
    Ok(())
}

#[tokio::test]
async fn a_named_listing_takes_and_gives_json() -> FlextResult<()> {
    let bus = bus();
    let first = bus
        .execute_named(
            "ListAccounts",
            json!({"min_balance": 200, "page": {"limit": 3}}),
        )
        .await?;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(first["items"][0]["id"], "acc-20");
    assert_eq!(first["total"], 6);
    let cursor = first["next_cursor"].as_str().expect("more").to_owned();
    let second: Page<Account> = bus
        .execute_named_as(
            "ListAccounts",
            json!({"min_balance": 200, "page": {"limit": 3, "cursor": cursor}}),
        )
        .await?;
    assert_eq!(second.items[0].id, "acc-23");
    assert_eq!(second.next_cursor, None);
    // No page given: the first 50.
    let all = bus.execute_named("ListAccounts", json!({})).await?;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(25));
    Ok(())
}

#[tokio::test]
async fn bad_limits_and_cursors_name_the_field() {
    let bus = bus();
    for (page, field) in [
        (json!({"limit": 0}), "limit"),
        (json!({"limit": 5000}), "limit"),
        (json!({"limit": -1}), "limit"),
        (json!({"cursor": "not-a-cursor"}), "cursor"),
        (
            json!({"cursor": Cursor::encode(&42).expect("a cursor").as_str()}),
            "cursor",
        ),
    ] {
        let error = bus
            .execute_named("ListAccounts", json!({"page": page}))
            .await
            .expect_err("refused");
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{page}");
        assert_eq!(
            error.data().map(|d| d["field"].clone()),
            Some(json!(field)),
            "{page}"
        );
    }
    let typed = bus
        .execute(ListAccounts {
            min_balance: 0,
            page: PageRequest::first(0),
        })
        .await
        .expect_err("refused");
    assert_eq!(
        typed.message(),
        "Invalid limit: 0. It must be between 1 and 1000"
    );
}
