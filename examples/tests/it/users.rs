//! The guide's CQRS scenario, asserted on typed results.

use flext_examples::users::{CreateUserCommand, GetUserQuery, UserCqrs, UserCreatedEvent};
use flext_handlers::prelude::*;

fn alice() -> CreateUserCommand {
    CreateUserCommand {
        name: "Alice Johnson".into(),
        email: "alice@company.com".into(),
        department: "Engineering".into(),
    }
}

#[tokio::test]
async fn the_guides_cqrs_flow_has_the_guides_outcomes() {
    let app = UserCqrs::new().unwrap();

    let user_id = app.command_bus.send(alice()).await.unwrap();
    assert_eq!(user_id, "user_1");

    let report = app
        .event_bus
        .publish(UserCreatedEvent {
            user_id: user_id.clone(),
            user_name: "Alice Johnson".into(),
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await;
    assert!(report.is_success());
    assert_eq!(report.delivered, 1);
    assert_eq!(
        app.notifier.events_processed(),
        1,
        "the welcome handler ran once"
    );
    assert_eq!(app.notifier.welcomed(), ["Alice Johnson"]);

    let user = app
        .query_bus
        .execute(GetUserQuery {
            user_id: user_id.clone(),
            include_details: true,
        })
        .await
        .unwrap();
    assert_eq!(
        (user.name.as_str(), user.department.as_str()),
        ("Alice Johnson", "Engineering")
    );
    assert_eq!(user.email.as_deref(), Some("alice@company.com"));

    let summary = app
        .query_bus
        .execute(GetUserQuery {
            user_id,
            include_details: false,
        })
        .await
        .unwrap();
    assert_eq!(
        summary.email, None,
        "without include_details the email is removed"
    );
    assert_eq!(summary.name, "Alice Johnson");
}

#[tokio::test]
async fn invalid_commands_and_unknown_users_fail_with_their_messages() {
    let app = UserCqrs::new().unwrap();
    let short = CreateUserCommand {
        name: "A".into(),
        ..alice()
    };
    let err = app.command_bus.send(short).await.unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            ErrorCode::ValidationError,
            "Name must be at least 2 characters"
        )
    );
    let bad_email = CreateUserCommand {
        email: "alice.company.com".into(),
        ..alice()
    };
    let err = app.command_bus.send(bad_email).await.unwrap_err();
    assert_eq!(err.to_string(), "Invalid email format");

    let err = app
        .query_bus
        .execute(GetUserQuery {
            user_id: "user_1".into(),
            include_details: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (ErrorCode::NotFound, "User user_1 not found"),
        "nothing was stored"
    );
    let m = app.command_bus.metrics();
    assert_eq!((m.commands_processed, m.failed_commands), (2, 2));
}
