//! HandlerRegistry: errors, typed retrieval, JSON execution, concurrency, metrics.

use std::sync::Arc;

use flext_constants::{ErrorCode, HandlerKind};
use flext_impl::{BasicHandler, Identity, ValidatingHandler, handler_fn};
use flext_management::HandlerRegistry;
use serde_json::{Value, json};

fn doubler()
-> impl flext_protocols::Handler<Request = u32, Response = u32> + flext_impl::ManagedHandler + 'static
{
    BasicHandler::from_fn("doubler", |n: u32| std::future::ready(Ok(n * 2)))
}

#[tokio::test]
async fn names_must_be_present_and_unique() {
    let registry = HandlerRegistry::new();
    for blank in ["", "   "] {
        let err = registry.register(blank, doubler()).unwrap_err();
        assert_eq!(
            (err.code(), err.to_string().as_str()),
            (ErrorCode::InvalidArgument, "Handler name cannot be empty")
        );
    }
    registry.register("doubler", doubler()).unwrap();
    let err = registry.register("doubler", doubler()).unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            ErrorCode::Duplicate,
            "Handler with name 'doubler' already registered"
        )
    );
    let err = registry.handler("missing").err().unwrap();
    let guide = registry.get_handler("missing").err().unwrap();
    assert_eq!(guide.to_string(), err.to_string(), "the guide's spelling");
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            ErrorCode::NotFound,
            "Handler 'missing' not found in registry"
        )
    );
    registry.unregister("doubler").unwrap();
    assert_eq!(
        registry.unregister("doubler").unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn handlers_of_different_types_execute_by_name_with_json() {
    let registry = HandlerRegistry::new();
    registry.register("doubler", doubler()).unwrap();
    registry
        .register("echo", BasicHandler::<Identity<Value>>::new("echo"))
        .unwrap();
    registry
        .register_handler(
            "greeter",
            handler_fn("greeter", |name: String| async move {
                Ok(format!("hello {name}"))
            }),
        )
        .unwrap();
    assert_eq!(
        registry.execute("doubler", json!(21)).await.unwrap(),
        json!(42)
    );
    assert_eq!(
        registry.execute("echo", json!({"a": 1})).await.unwrap(),
        json!({"a": 1})
    );
    assert_eq!(
        registry.execute("greeter", json!("ada")).await.unwrap(),
        json!("hello ada")
    );
    let err = registry
        .execute("doubler", json!("twenty"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SerializationError);
    assert!(
        err.message()
            .starts_with("Invalid request for 'doubler' (expected u32)"),
        "{err}"
    );

    let kinds: Vec<_> = registry
        .list_handlers()
        .into_iter()
        .map(|h| (h.name, h.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("doubler".to_owned(), HandlerKind::Basic),
            ("echo".to_owned(), HandlerKind::Basic),
            ("greeter".to_owned(), HandlerKind::Custom)
        ]
    );
    let processed = registry
        .handler("doubler")
        .unwrap()
        .core()
        .metrics()
        .requests_processed;
    assert_eq!(
        processed, 1,
        "the request that did not decode never reached the handler"
    );
}

#[tokio::test]
async fn typed_retrieval_returns_the_concrete_handler() {
    let registry = HandlerRegistry::new();
    let validating = ValidatingHandler::new("emails", |v: &Value| v.get("email").is_some());
    registry.register("emails", validating).unwrap();
    let typed = registry
        .typed::<ValidatingHandler<Identity<Value>>>("emails")
        .unwrap();
    assert!(typed.validate(&json!({"email": "a@b.c"})).is_ok());
    let err = registry.typed::<BasicHandler>("emails").unwrap_err();
    assert_eq!(err.code(), ErrorCode::WiringError);
    assert_eq!(err.to_string(), "Handler 'emails' is not a BasicHandler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_register_lookup_and_unregister_keep_exact_metrics() {
    let registry = Arc::new(HandlerRegistry::new());
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let registry = registry.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let name = format!("h-{t}-{i}");
                    registry
                        .register(&name, BasicHandler::<Identity<Value>>::new(name.clone()))
                        .unwrap();
                    assert_eq!(registry.execute(&name, json!(i)).await.unwrap(), json!(i));
                    assert!(registry.handler(&format!("absent-{t}-{i}")).is_err());
                    if i % 2 == 0 {
                        registry.unregister(&name).unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let m = registry.metrics();
    assert_eq!(m.total_registrations, 400);
    assert_eq!(m.total_handlers, 200);
    assert_eq!((m.total_lookups, m.successful_lookups), (800, 400));
    assert_eq!(m.lookup_success_rate, 50.0);
}
