//! The guide's enterprise chain, asserted on typed results.

use std::sync::Arc;

use flext_examples::api_chain::{
    AuthenticationHandler, AuthorizationHandler, BusinessLogicHandler, ValidationHandler,
    guide_requests,
};
use flext_handlers::prelude::*;

#[tokio::test]
async fn the_six_requests_have_the_guides_outcomes_and_metrics() {
    let auth = Arc::new(AuthenticationHandler::default());
    let authz = Arc::new(AuthorizationHandler::default());
    let validation = Arc::new(ValidationHandler::default());
    let business = Arc::new(BusinessLogicHandler::default());
    let mut chain = HandlerChain::new("enterprise_api_pipeline");
    chain.add_handler(auth.clone()).unwrap();
    chain.add_handler(authz.clone()).unwrap();
    chain.add_handler(validation.clone()).unwrap();
    chain.add_handler(business.clone()).unwrap();

    let mut results = Vec::new();
    for request in guide_requests() {
        results.push(chain.handle(request).await);
    }

    let admin_delete = results[0].as_ref().unwrap();
    assert_eq!(admin_delete["status"], "deleted");
    assert_eq!(admin_delete["user_id"], "admin_001");
    assert_eq!(admin_delete["resource_id"], "user_123");
    assert_eq!(admin_delete["processed_by"], "business_logic");
    let manager_create = results[1].as_ref().unwrap();
    assert_eq!(
        (
            manager_create["status"].as_str(),
            manager_create["user_id"].as_str()
        ),
        (Some("created"), Some("mgr_002"))
    );
    assert!(
        manager_create["resource_id"]
            .as_str()
            .unwrap()
            .starts_with("res_")
    );
    let user_read = results[2].as_ref().unwrap();
    assert_eq!(user_read["status"], "success");
    assert_eq!(user_read["data"]["message"], "Data from /api/profile");

    let denied = results[3].as_ref().unwrap_err();
    assert_eq!(
        denied.code(),
        ErrorCode::AuthorizationDenied,
        "the handler's own code is kept"
    );
    assert_eq!(
        denied.to_string(),
        "Handler 'authorizer' failed: User user_003 lacks permission 'delete' for operation 'delete'"
    );
    assert_eq!(denied.data().unwrap()["handler"], "authorizer");
    assert_eq!(
        std::error::Error::source(denied).unwrap().to_string(),
        "User user_003 lacks permission 'delete' for operation 'delete'",
        "the handler's own error is the source"
    );
    let anonymous = results[4].as_ref().unwrap_err();
    assert_eq!(
        anonymous.to_string(),
        "Handler 'authenticator' failed: Authentication token required"
    );
    let invalid = results[5].as_ref().unwrap_err();
    assert_eq!(invalid.code(), ErrorCode::ValidationError);
    assert_eq!(
        invalid.to_string(),
        "Handler 'validator' failed: Invalid operation 'invalid_op'. Valid operations: read, create, update, delete, list"
    );

    let m = chain.metrics();
    assert_eq!(
        (m.total_requests, m.successful_requests, m.failed_requests),
        (6, 3, 3)
    );
    let per_link: Vec<_> = m
        .handlers
        .iter()
        .map(|l| (l.name.as_str(), l.executions, l.failures))
        .collect();
    assert_eq!(
        per_link,
        [
            ("authenticator", 6, 1),
            ("authorizer", 5, 1),
            ("validator", 4, 1),
            ("business_logic", 3, 0)
        ]
    );
    let counters = [
        &auth.counters,
        &authz.counters,
        &validation.counters,
        &business.counters,
    ];
    let own: Vec<_> = counters.iter().map(|c| (c.total(), c.failures())).collect();
    assert_eq!(
        own,
        [(6, 1), (5, 1), (4, 1), (3, 0)],
        "the handlers' own counters agree"
    );
}
