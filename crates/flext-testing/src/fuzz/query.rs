//! Named-query arguments: JSON decoded into each handler's request type.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use flext_constants::ErrorCode;
use flext_cqrs::QueryBus;
use flext_impl::handler_fn;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::has_float;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetUser {
    id: u64,
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    since: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
enum FindOrders {
    Customer { id: String },
    Range { from: u32, to: u32 },
    Recent,
}

/// One bus with a handler per request shape, and how many times each ran.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    bus: QueryBus,
    calls: Arc<AtomicU64>,
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

/// Fuzzes the arguments of named queries.
///
/// The input is read as JSON (and, when it is not JSON, as a string argument) and executed
/// by name on a `QueryBus` with one echoing handler per request shape: any JSON, a struct
/// with unknown fields denied, an internally tagged enum, `u64`, `String`, a tuple.
///
/// Checks: an argument that decodes into a handler's request type reaches the handler and
/// comes back as that value's JSON; one that does not is a `SERIALIZATION_ERROR` naming the
/// query, and the handler is not called.
pub fn named_query(data: &[u8]) {
    let argument = match serde_json::from_slice::<Value>(data) {
        Ok(value) => value,
        Err(_) => Value::String(String::from_utf8_lossy(data).into_owned()),
    };
    FIXTURE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let fixture = cell.get_or_insert_with(fixture);
        fixture.check::<Value>("any", &argument);
        fixture.check::<GetUser>("user", &argument);
        fixture.check::<FindOrders>("orders", &argument);
        fixture.check::<u64>("id", &argument);
        fixture.check::<String>("text", &argument);
        fixture.check::<(i32, bool, Option<String>)>("tuple", &argument);
    });
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime starts");
    let calls = Arc::new(AtomicU64::new(0));
    let mut bus = QueryBus::new();
    register::<Value>(&mut bus, "any", &calls);
    register::<GetUser>(&mut bus, "user", &calls);
    register::<FindOrders>(&mut bus, "orders", &calls);
    register::<u64>(&mut bus, "id", &calls);
    register::<String>(&mut bus, "text", &calls);
    register::<(i32, bool, Option<String>)>(&mut bus, "tuple", &calls);
    Fixture {
        runtime,
        bus,
        calls,
    }
}

fn register<R>(bus: &mut QueryBus, name: &str, calls: &Arc<AtomicU64>)
where
    R: DeserializeOwned + Serialize + Send + Sync + 'static,
{
    let calls = Arc::clone(calls);
    bus.register_named(
        name,
        handler_fn(name.to_owned(), move |request: R| {
            calls.fetch_add(1, Relaxed);
            async move { Ok(request) }
        }),
    )
    .expect("each name is registered once");
}

impl Fixture {
    fn check<R>(&self, name: &str, argument: &Value)
    where
        R: DeserializeOwned + Serialize,
    {
        let calls = self.calls.load(Relaxed);
        let result = self
            .runtime
            .block_on(self.bus.execute_named(name, argument));
        match (serde_json::from_value::<R>(argument.clone()), result) {
            (Ok(request), Ok(result)) => {
                assert_eq!(self.calls.load(Relaxed), calls + 1, "the handler ran once");
                let expected = serde_json::to_value(&request).expect("a request encodes");
                if !has_float(&expected) {
                    assert_eq!(result, expected, "the handler's request came back");
                }
            }
            (Err(_), Err(error)) => {
                assert_eq!(self.calls.load(Relaxed), calls, "the handler did not run");
                assert_eq!(error.code(), ErrorCode::SerializationError, "{error}");
                assert!(
                    error
                        .message()
                        .starts_with(&format!("Invalid request for '{name}'")),
                    "{error}"
                );
            }
            (decoded, result) => panic!(
                "query {name}: the argument decodes: {}, but the bus answered {result:?}",
                decoded.is_ok()
            ),
        }
    }
}
