//! Rules 10 and 11 on fixtures: the facade holds re-exports only, and it reaches every
//! root item of the crates below it.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use xtask::{
    Exclusion, RootItem, check_facade, check_facade_parity, check_facade_reexports_only,
    parse_facade, root_items,
};

use crate::{Scratch, assert_clean, assert_one_naming, clean_document, package_mut, parse};

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
}

/// The NATS buses.
#[cfg(feature = "nats")]
pub mod nats {
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

/// The fixture's exclusions: `RawEvent` stays out of `Types` on purpose.
const EXCLUSIONS: [Exclusion; 1] = [("flext-types", "RawEvent", "a store rule, not the guide's")];

/// Rule 11 on `document`, with the facade source `facade` and the crate sources `libs`.
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
fn rule_11_the_nats_adapter_is_reached_through_its_own_module() {
    let facade = FACADE.replace(
        "pub mod nats {\n    pub use flext_bus_nats::NatsEventBus;\n}",
        "pub mod nats {}\npub mod other {\n    pub use flext_bus_nats::NatsEventBus;\n}",
    );
    assert_ne!(facade, FACADE);
    let violations = parity(&clean_document(), &facade, &LIBS);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["flext_bus_nats::NatsEventBus", "`nats`"]);
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

#[test]
fn root_items_read_every_kind_of_item_and_skip_hidden_ones_of_every_kind() {
    let source = "/// Documented.\npub const C: u8 = 0;\npub enum E {}\npub static S: u8 = 0;\n\
                  pub type T = u8;\npub union U { a: u8 }\npub trait A = Send;\n\
                  #[doc(hidden)] pub const HC: u8 = 0;\n#[doc(hidden)] pub enum HE {}\n\
                  #[doc(hidden)] pub fn hf() {}\n#[doc(hidden)] #[macro_export] macro_rules! hm { () => {} }\n\
                  #[doc(hidden)] pub mod hmod {}\n#[doc(hidden)] pub static HS: u8 = 0;\n\
                  #[doc(hidden)] pub struct HSt;\n#[doc(hidden)] pub trait HT {}\n\
                  #[doc(hidden)] pub trait HA = Send;\n#[doc(hidden)] pub type HTy = u8;\n\
                  #[doc(hidden)] pub union HU { a: u8 }\nmod inner {}\n\
                  #[doc(hidden)] pub use inner::Hidden;\n#[doc(inline)] pub use inner::Inline;\n";
    let items = root_items(source).expect("parses");
    assert_eq!(names(&items), ["C", "E", "S", "T", "U", "A", "Inline"]);
    let kinds: Vec<&str> = items.iter().map(|item| item.kind).collect();
    assert_eq!(
        kinds,
        [
            "const",
            "enum",
            "static",
            "type",
            "union",
            "trait alias",
            "use"
        ]
    );
}

#[test]
fn the_facade_model_counts_public_items_only_and_plain_crate_re_exports() {
    let facade = parse_facade(
        "pub use flext_types;\nuse flext_cqrs as cqrs;\n\
         pub mod CQRS {\n    pub use flext_cqrs::CommandBus;\n    use flext_cqrs::Instrumentation;\n}\n\
         mod Private {\n    pub use flext_cqrs::Hidden;\n}\n",
    )
    .expect("parses");
    assert_eq!(facade.whole.len(), 1, "{:?}", facade.whole);
    assert_eq!(facade.whole["flext_types"], "flext_types");
    let cqrs = &facade.modules["CQRS"];
    assert!(cqrs.contains("CommandBus"));
    assert!(
        !cqrs.contains("Instrumentation"),
        "a private use reaches nothing"
    );
    assert!(!facade.modules.contains_key("Private"));
}

#[test]
fn rule_10_doctest_items_of_every_kind_are_allowed_and_other_cfgs_are_not() {
    let doctest = "#[cfg(doctest)]";
    let source = format!(
        "{FACADE}\n{doctest} const A: u8 = 0;\n{doctest} enum B {{}}\n{doctest} extern crate alloc;\n\
         {doctest} fn c() {{}}\n{doctest} extern \"C\" {{}}\n{doctest} impl ReadmeExample {{}}\n\
         {doctest} macro_rules! d {{ () => {{}} }}\n{doctest} mod e {{}}\n{doctest} static F: u8 = 0;\n\
         {doctest} trait G {{}}\n{doctest} trait H = Send;\n{doctest} type I = u8;\n\
         {doctest} union J {{ a: u8 }}\n{doctest} use std::fmt;\n"
    );
    assert_clean(&check_facade_reexports_only(&source));
    let violations =
        check_facade_reexports_only(&format!("{FACADE}\n#[cfg(test)]\nstruct Probe;\n"));
    assert_one_naming(&violations, &["the struct `Probe`"]);
}

#[test]
fn rule_11_an_exclusion_covers_its_item_only() {
    // RawEvent is excluded; FlextResult, of the same crate, is not.
    let facade = FACADE.replace("{FlextError, FlextResult}", "{FlextError}");
    let violations = parity(&clean_document(), &facade, &LIBS);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["flext_types::FlextResult"]);
}

#[test]
fn rule_11_a_crate_at_the_facades_own_layer_need_not_be_re_exported() {
    let mut document = clean_document();
    crate::set_flext(&mut document, "flext-examples", "layer", Some(json!(90)));
    assert_clean(&parity(&document, FACADE, &LIBS));
}

#[test]
fn the_facade_and_the_crates_are_read_next_to_their_manifests() {
    let scratch = Scratch::new("facade-files");
    let mut document = clean_document();
    for (name, source) in LIBS {
        let dir = format!("crates/{name}");
        // The workspace's own exclusions are empty: the fixture's RawEvent goes.
        let source = source.replace("pub use records::RawEvent;\n", "");
        scratch.write(&format!("{dir}/src/lib.rs"), &source);
        package_mut(&mut document, name)["manifest_path"] =
            json!(scratch.path().join(&dir).join("Cargo.toml"));
    }
    let facade_dir = scratch.path().join("crates/flext-handlers");
    package_mut(&mut document, "flext-handlers")["manifest_path"] =
        json!(facade_dir.join("Cargo.toml"));
    scratch.write("crates/flext-handlers/src/lib.rs", FACADE);
    assert_clean(&check_facade(&parse(&document)));

    let without = FACADE.replace(
        "{CommandBus, InMemoryEventStore, Instrumentation}",
        "{CommandBus, InMemoryEventStore}",
    );
    scratch.write(
        "crates/flext-handlers/src/lib.rs",
        &format!("{without}\npub fn helper() {{}}\n"),
    );
    let violations = check_facade(&parse(&document));
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert_one_naming(&violations, &["flext_cqrs::Instrumentation"]);
    assert_one_naming(&violations, &["the fn `helper`"]);
}
