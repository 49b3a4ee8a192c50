//! Rules 10 and 11 on fixtures: the facade holds re-exports only, and it reaches every
//! root item of the crates below it.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use xtask::{
    Exclusion, RootItem, check_facade_parity, check_facade_reexports_only, parse_facade, root_items,
};

use crate::{assert_clean, assert_one_naming, clean_document, parse};

/// A facade for the clean fixture's members, shaped like the real one.
const FACADE: &str = r#"
//! The facade.

pub use flext_constants as constants;
pub use flext_cqrs as cqrs;
pub use flext_impl as implementation;
pub use flext_protocols as protocols;
pub use flext_protocols::async_trait;
pub use flext_types as types;

/// Constants.
#[allow(non_snake_case)]
pub mod Constants {
    pub use flext_constants::ErrorCode;

    /// Limits.
    pub mod Handler {
        pub use flext_constants::HandlerState as States;
        pub use flext_constants::handler::MAX_RETRIES;
    }
}

/// Types.
pub mod Types {
    pub use flext_types::{FlextError, FlextResult};
}

/// Protocols.
pub mod Protocols {
    pub use flext_protocols::{Handler, Middleware};
}

/// Implementation.
pub mod Implementation {
    pub use flext_impl::{AbstractHandler, BasicHandler, handler_fn};
}

/// CQRS.
pub mod CQRS {
    pub use flext_cqrs::{CommandBus, InMemoryEventStore, Instrumentation};
}

/// Stores.
pub mod stores {
    pub use flext_cqrs::InMemoryEventStore;
    #[cfg(feature = "sqlite")]
    pub use flext_store_sqlite::SqliteEventStore;
    #[cfg(feature = "postgres")]
    pub use flext_store_postgres::{PostgresEventStore, redact};
    #[cfg(feature = "nats")]
    pub use flext_bus_nats::NatsEventBus;
}

/// Everyday items.
pub mod prelude {
    pub use flext_impl::BasicHandler;
}

/// The README, as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExample;
"#;

/// The `lib.rs` of each fixture member below the facade, the test kit included (it is
/// left out of the rule).
const LIBS: [(&str, &str); 9] = [
    (
        "flext-constants",
        "mod codes;\nmod enums;\npub mod handler;\npub use codes::ErrorCode;\n\
         pub use enums::HandlerState;\n",
    ),
    (
        "flext-types",
        "mod error;\nmod records;\npub use error::{FlextError, FlextResult};\n\
         pub use flext_constants::ErrorCode;\npub use records::RawEvent;\n",
    ),
    (
        "flext-protocols",
        "pub use async_trait::async_trait;\nmod handler;\npub use handler::Handler;\n\
         pub trait Middleware {}\n",
    ),
    (
        "flext-impl",
        "mod basic;\npub use basic::BasicHandler;\npub fn handler_fn() {}\n\
         pub use flext_protocols::Handler as AbstractHandler;\n\
         pub(crate) fn internal() {}\nfn private() {}\n",
    ),
    (
        "flext-store-sqlite",
        "mod store;\npub use store::SqliteEventStore;\n",
    ),
    (
        "flext-store-postgres",
        "mod store;\npub use store::{PostgresEventStore, redact};\n",
    ),
    ("flext-bus-nats", "pub struct NatsEventBus;\n"),
    (
        "flext-cqrs",
        "mod command;\nmod es;\npub use command::CommandBus;\n\
         pub use es::InMemoryEventStore;\npub struct Instrumentation;\n",
    ),
    (
        "flext-testing",
        "pub fn unique_name() {}\n#[macro_export]\nmacro_rules! suite { () => {}; }\n",
    ),
];

fn roots(libs: &[(&str, &str)]) -> BTreeMap<String, Vec<RootItem>> {
    libs.iter()
        .map(|(name, source)| {
            let items = root_items(source).unwrap_or_else(|error| panic!("{name}: {error}"));
            ((*name).to_owned(), items)
        })
        .collect()
}

fn names(items: &[RootItem]) -> Vec<&str> {
    items.iter().map(|item| item.name.as_str()).collect()
}

/// Rule 11 on `document`, with the facade source `facade` and the crate sources `libs`.
/// The fixture's exclusions: `RawEvent` stays out of `Types` on purpose.
const EXCLUSIONS: [Exclusion; 1] = [("flext-types", "RawEvent", "a store rule, not the guide's")];

fn parity(document: &Value, facade: &str, libs: &[(&str, &str)]) -> Vec<String> {
    let facade = parse_facade(facade).expect("the facade parses");
    check_facade_parity(&parse(document), &facade, &roots(libs), &EXCLUSIONS)
}

/// The fixture's libs with the one of `name` replaced by `source`.
fn libs_with(name: &str, source: &'static str) -> Vec<(&'static str, &'static str)> {
    LIBS.iter()
        .map(|&(lib, original)| (lib, if lib == name { source } else { original }))
        .collect()
}

#[test]
fn root_items_are_declared_items_and_local_re_exports() {
    let roots = roots(&LIBS);
    assert_eq!(
        names(&roots["flext-constants"]),
        ["handler", "ErrorCode", "HandlerState"]
    );
    assert_eq!(roots["flext-constants"][0].kind, "module");
    // Another crate's item under its own name is its home crate's to reach.
    assert_eq!(
        names(&roots["flext-types"]),
        ["FlextError", "FlextResult", "RawEvent"]
    );
    assert_eq!(names(&roots["flext-protocols"]), ["Handler", "Middleware"]);
    // Another crate's item under a name of this crate's own is this crate's.
    assert_eq!(
        names(&roots["flext-impl"]),
        ["BasicHandler", "handler_fn", "AbstractHandler"]
    );
    assert_eq!(names(&roots["flext-testing"]), ["unique_name", "suite"]);
    let hidden =
        root_items("#[doc(hidden)]\npub fn hidden() {}\npub fn shown() {}\n").expect("parses");
    assert_eq!(names(&hidden), ["shown"]);
    assert!(root_items("pub fn broken(").is_err());
}

#[test]
fn the_facade_model_reads_whole_crates_and_modules() {
    let facade = parse_facade(FACADE).expect("the facade parses");
    assert_eq!(facade.whole.len(), 5);
    assert_eq!(facade.whole["flext_impl"], "implementation");
    assert!(!facade.whole.contains_key("flext_protocols::async_trait"));
    let constants = &facade.modules["Constants"];
    // Inner modules count, and a rename counts for the original name.
    for name in ["ErrorCode", "HandlerState", "MAX_RETRIES"] {
        assert!(constants.contains(name), "{name}: {constants:?}");
    }
    assert!(!constants.contains("States"));
    assert!(facade.modules["stores"].contains("redact"));
}

#[test]
fn rule_10_clean_facade_passes() {
    assert_clean(&check_facade_reexports_only(FACADE));
}

#[test]
fn rule_10_items_of_its_own_are_named() {
    let source = format!(
        "{FACADE}\npub fn helper() {{}}\nstruct Hidden;\nimpl Hidden {{}}\n\
         pub mod CQRS2 {{ pub trait Extra {{}} }}\nconst LIMIT: u8 = 1;\n"
    );
    let violations = check_facade_reexports_only(&source);
    assert_eq!(violations.len(), 5, "{violations:#?}");
    assert_one_naming(&violations, &["the fn `helper`", "re-exports only"]);
    assert_one_naming(&violations, &["the struct `Hidden`"]);
    assert_one_naming(&violations, &["has an item of its own"]);
    assert_one_naming(&violations, &["`CQRS2` of the facade", "the trait `Extra`"]);
    assert_one_naming(&violations, &["the const `LIMIT`"]);
}

#[test]
fn rule_10_globs_private_uses_and_file_modules_are_named() {
    let source =
        format!("{FACADE}\npub use flext_cqrs::*;\nuse flext_types::FlextError;\nmod more;\n");
    let violations = check_facade_reexports_only(&source);
    assert_eq!(violations.len(), 3, "{violations:#?}");
    assert_one_naming(&violations, &["glob"]);
    assert_one_naming(&violations, &["private `use`"]);
    assert_one_naming(&violations, &["`mod more;`"]);
}

#[test]
fn rule_10_a_facade_that_does_not_parse_is_one_violation() {
    let violations = check_facade_reexports_only("pub use flext_cqrs as;");
    assert_eq!(violations.len(), 1, "{violations:?}");
}

#[test]
fn rule_11_clean_fixture_passes() {
    // RawEvent is missing from Types, and listed in the fixture's exclusions.
    assert_clean(&parity(&clean_document(), FACADE, &LIBS));
}

#[test]
fn rule_11_an_item_missing_from_its_namespace_is_named() {
    let facade = FACADE.replace(
        "{CommandBus, InMemoryEventStore, Instrumentation}",
        "{CommandBus, InMemoryEventStore}",
    );
    let violations = parity(&clean_document(), &facade, &LIBS);
    assert_eq!(
        violations,
        [
            "flext_cqrs::Instrumentation is missing from the guide namespace `CQRS` of the \
             facade; re-export it there, or list it with a reason in PARITY_EXCLUSIONS"
        ]
    );
}

#[test]
fn rule_11_a_renamed_re_export_missing_from_its_namespace_is_named() {
    let facade = FACADE.replace(
        "{AbstractHandler, BasicHandler, handler_fn}",
        "{BasicHandler, handler_fn}",
    );
    let violations = parity(&clean_document(), &facade, &LIBS);
    assert_eq!(
        violations,
        [
            "flext_impl::AbstractHandler is missing from the guide namespace `Implementation` of \
             the facade; re-export it there, or list it with a reason in PARITY_EXCLUSIONS"
        ]
    );
}

#[test]
fn rule_11_a_new_root_item_must_reach_its_namespace() {
    let libs = libs_with(
        "flext-impl",
        "mod basic;\npub use basic::BasicHandler;\npub fn handler_fn() {}\n\
         pub struct Deadline;\n",
    );
    let violations = parity(&clean_document(), FACADE, &libs);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["flext_impl::Deadline", "`Implementation`"]);
}

#[test]
fn rule_11_a_crate_not_re_exported_whole_is_named() {
    let facade = FACADE.replace("pub use flext_cqrs as cqrs;\n", "");
    let violations = parity(&clean_document(), &facade, &LIBS);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["flext-cqrs", "does not re-export it whole"]);
}

#[test]
fn rule_11_a_missing_namespace_is_named() {
    let start = FACADE.find("/// Types.").expect("the fixture has Types");
    let end = FACADE
        .find("/// Protocols.")
        .expect("the fixture has Protocols");
    let facade = format!("{}{}", &FACADE[..start], &FACADE[end..]);
    let violations = parity(&clean_document(), &facade, &LIBS);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["flext-types", "no guide namespace `Types`"]);
}

#[test]
fn rule_11_an_adapter_item_missing_from_stores_is_named() {
    let facade = FACADE.replace("{PostgresEventStore, redact}", "PostgresEventStore");
    let violations = parity(&clean_document(), &facade, &LIBS);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["flext_store_postgres::redact", "`stores`"]);
}

#[test]
fn rule_11_a_new_crate_below_the_facade_must_be_re_exported() {
    let mut document = clean_document();
    let id = "path+file:///ws/crates/flext-store#0.1.0";
    document["packages"]
        .as_array_mut()
        .expect("packages")
        .push(json!({
            "name": "flext-store", "id": id, "manifest_path": "/ws/crates/flext-store/Cargo.toml",
            "dependencies": [], "metadata": {"flext": {"layer": 35}},
        }));
    document["workspace_members"]
        .as_array_mut()
        .expect("members")
        .push(json!(id));
    let mut libs = LIBS.to_vec();
    libs.push(("flext-store", "pub fn tail_events() {}\n"));
    let violations = parity(&document, FACADE, &libs);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["flext-store", "does not re-export it whole"]);

    // Re-exported whole, it passes: it has no guide namespace.
    let facade = FACADE.replace(
        "pub use flext_types as types;",
        "pub use flext_store as store;\npub use flext_types as types;",
    );
    assert_clean(&parity(&document, &facade, &libs));
}

#[test]
fn rule_11_a_crate_whose_lib_was_not_read_is_named() {
    let libs: Vec<_> = LIBS
        .iter()
        .copied()
        .filter(|(name, _)| *name != "flext-protocols")
        .collect();
    let violations = parity(&clean_document(), FACADE, &libs);
    assert_one_naming(&violations, &["flext-protocols", "not read"]);
}
