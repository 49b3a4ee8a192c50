//! Handler kinds as registries and health reports show them: chains, pipelines, command and
//! query handlers keep their own kind instead of `custom`.

use flext_constants::HandlerKind;
use flext_impl::{BasicHandler, handler_fn};
use flext_management::{HandlerManager, HandlerRegistry, HandlerSpec};
use flext_patterns::{HandlerChain, Pipeline};
use flext_protocols::{Handler, async_trait};
use flext_types::FlextResult;
use serde_json::{Value, json};

fn chain() -> HandlerChain<Value> {
    let mut chain = HandlerChain::new("steps");
    chain
        .add_fn("tag", |mut v: Value| async move {
            v["tagged"] = json!(true);
            Ok(v)
        })
        .unwrap();
    chain
}

fn pipeline() -> Pipeline<Value> {
    Pipeline::new("stages")
        .add_stage(|v: Value| Ok(json!({"wrapped": v})))
        .unwrap()
}

/// A user's command handler says what it is.
struct CreateUser;

#[async_trait]
impl Handler for CreateUser {
    type Request = Value;
    type Response = Value;

    fn handler_name(&self) -> &str {
        "create_user"
    }

    fn handler_kind(&self) -> HandlerKind {
        HandlerKind::Command
    }

    async fn handle(&self, request: Value) -> FlextResult<Value> {
        Ok(json!({"created": request["name"]}))
    }
}

#[test]
fn the_guide_kinds_have_their_wire_strings() {
    let kinds = [
        (HandlerKind::Command, "command"),
        (HandlerKind::Query, "query"),
        (HandlerKind::Pipeline, "pipeline"),
        (HandlerKind::Chain, "chain"),
    ];
    for (kind, wire) in kinds {
        assert_eq!(kind.as_str(), wire);
        assert_eq!(wire.parse::<HandlerKind>(), Ok(kind));
    }
}

#[tokio::test]
async fn a_registry_lists_chains_pipelines_and_command_handlers_by_their_kind() {
    let registry = HandlerRegistry::new();
    registry.register_handler("steps", chain()).unwrap();
    registry.register_handler("stages", pipeline()).unwrap();
    registry
        .register_handler("create_user", CreateUser)
        .unwrap();
    registry
        .register_handler(
            "plain",
            handler_fn("plain", |v: Value| async move { Ok(v) }),
        )
        .unwrap();
    registry
        .register(
            "get_user",
            BasicHandler::with_kind(
                "get_user",
                HandlerKind::Query,
                handler_fn("get_user", |v: Value| async move { Ok(v) }),
            ),
        )
        .unwrap();

    let kinds: Vec<_> = registry
        .list_handlers()
        .into_iter()
        .map(|info| (info.name, info.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("create_user".to_owned(), "command"),
            ("get_user".to_owned(), "query"),
            ("plain".to_owned(), "custom"),
            ("stages".to_owned(), "pipeline"),
            ("steps".to_owned(), "chain"),
        ]
    );
    // Wrapping keeps the kind and the behaviour.
    assert_eq!(
        registry.execute("steps", json!({})).await.unwrap(),
        json!({"tagged": true})
    );
    let wrapped = BasicHandler::wrap(chain());
    assert_eq!(wrapped.handler_kind(), HandlerKind::Chain);
}

#[tokio::test]
async fn a_health_report_names_the_kinds_of_an_ecosystem() {
    let manager = HandlerManager::new();
    let registered = manager
        .register_ecosystem(vec![
            HandlerSpec::custom("steps", chain()),
            HandlerSpec::custom("stages", pipeline()),
            HandlerSpec::custom("create_user", CreateUser),
            HandlerSpec::command(
                "rename_user",
                handler_fn("rename_user", |v: Value| async move { Ok(v) }),
            ),
            HandlerSpec::query(
                "get_user",
                handler_fn("get_user", |v: Value| async move { Ok(v) }),
            ),
        ])
        .unwrap();
    assert_eq!(registered["steps"], "chain");
    assert_eq!(registered["stages"], "pipeline");
    assert_eq!(registered["create_user"], "command");
    assert_eq!(registered["rename_user"], "command");
    assert_eq!(registered["get_user"], "query");

    manager
        .execute("stages", json!(1))
        .await
        .expect("the pipeline runs");
    let report = serde_json::to_value(manager.health_report()).unwrap();
    assert_eq!(report["handlers"]["stages"]["kind"], "pipeline");
    assert_eq!(report["handlers"]["steps"]["kind"], "chain");
    assert_eq!(report["handlers"]["get_user"]["kind"], "query");
    assert_eq!(report["handlers"]["rename_user"]["kind"], "command");
}
