//! Rules 1 to 5 on fixtures: the clean one passes, and each planted violation is caught
//! with a message naming the crates involved.

use serde_json::json;
use xtask::{
    DependencyKind, ErrorKind, Role, check_adapter_dependents, check_banned_dependencies,
    check_dev_dependencies, check_layer_declarations, check_layering, check_metadata,
    parse_metadata,
};

use crate::{
    add_dependency, assert_clean, assert_one_naming, clean_document, package_mut, parse, set_flext,
};

#[test]
fn clean_fixture_passes() {
    assert_clean(&check_metadata(&parse(&clean_document())));
}

#[test]
fn fixture_model_reads_layers_roles_and_kinds() {
    let metadata = parse(&clean_document());
    assert_eq!(metadata.members().count(), 12);
    let impl_crate = metadata
        .member("flext-impl")
        .expect("flext-impl is a member");
    assert_eq!(impl_crate.layer(), Ok(40));
    assert_eq!(impl_crate.role(), Ok(None));
    let build = impl_crate
        .dependencies
        .iter()
        .find(|dependency| dependency.name == "flext-constants")
        .expect("flext-impl depends on flext-constants");
    assert_eq!(build.kind, DependencyKind::Build);
    let sqlite = metadata.member("flext-store-sqlite").expect("an adapter");
    assert!(sqlite.has_role(Role::Adapter));
    let handlers = metadata.member("flext-handlers").expect("the facade");
    assert!(handlers.has_role(Role::Facade));
}

#[test]
fn invalid_document_is_a_json_error() {
    let error = parse_metadata("{\"packages\": 1}").expect_err("not a metadata document");
    assert_eq!(error.kind(), ErrorKind::Json);
}

#[test]
fn rule_1_missing_layer_names_the_crate() {
    let mut document = clean_document();
    set_flext(&mut document, "flext-cqrs", "layer", None);
    let violations = check_layer_declarations(&parse(&document));
    assert_one_naming(&violations, &["flext-cqrs", "layer", "missing"]);
    assert_eq!(violations.len(), 1);
}

#[test]
fn rule_1_missing_flext_table_names_the_crate() {
    let mut document = clean_document();
    package_mut(&mut document, "xtask")["metadata"] = json!(null);
    let violations = check_metadata(&parse(&document));
    assert_one_naming(&violations, &["xtask", "missing"]);
}

#[test]
fn rule_1_non_integer_layer_names_the_crate() {
    let mut document = clean_document();
    set_flext(&mut document, "flext-types", "layer", Some(json!("20")));
    set_flext(&mut document, "flext-impl", "layer", Some(json!(40.5)));
    let violations = check_layer_declarations(&parse(&document));
    assert_one_naming(&violations, &["flext-types", "not an integer"]);
    assert_one_naming(&violations, &["flext-impl", "not an integer"]);
}

#[test]
fn rule_1_unknown_role_names_the_crate() {
    let mut document = clean_document();
    set_flext(
        &mut document,
        "flext-bus-nats",
        "role",
        Some(json!("adaptor")),
    );
    let violations = check_layer_declarations(&parse(&document));
    assert_one_naming(&violations, &["flext-bus-nats", "adaptor"]);
}

#[test]
fn rule_2_upward_dependency_names_both_crates_and_layers() {
    let mut document = clean_document();
    add_dependency(&mut document, "flext-types", "flext-impl", None);
    let violations = check_metadata(&parse(&document));
    assert_eq!(
        violations,
        [
            "flext-types (layer 20) depends on flext-impl (layer 40): a crate may depend only \
             on crates of strictly lower layers"
        ]
    );
}

#[test]
fn rule_2_applies_to_build_dependencies() {
    let mut document = clean_document();
    add_dependency(
        &mut document,
        "flext-constants",
        "flext-types",
        Some("build"),
    );
    let violations = check_layering(&parse(&document));
    assert_one_naming(
        &violations,
        &[
            "flext-constants (layer 10)",
            "flext-types (layer 20)",
            "build-dependency",
        ],
    );
}

#[test]
fn rule_2_forbids_a_dependency_within_a_layer() {
    let mut document = clean_document();
    add_dependency(
        &mut document,
        "flext-store-postgres",
        "flext-store-sqlite",
        None,
    );
    let violations = check_layering(&parse(&document));
    assert_one_naming(
        &violations,
        &[
            "flext-store-postgres (layer 45)",
            "flext-store-sqlite (layer 45)",
        ],
    );
}

#[test]
fn rule_2_ignores_a_registry_crate_named_like_a_member() {
    let mut document = clean_document();
    add_dependency(&mut document, "flext-types", "flext-impl", None);
    let package = package_mut(&mut document, "flext-types");
    let dependency = package["dependencies"]
        .as_array_mut()
        .and_then(|dependencies| dependencies.last_mut())
        .expect("the dependency just added");
    dependency["source"] = json!(crate::CRATES_IO);
    assert_clean(&check_layering(&parse(&document)));
}

#[test]
fn rule_2_reads_the_package_name_of_a_renamed_dependency() {
    let mut document = clean_document();
    add_dependency(&mut document, "flext-types", "flext-impl", None);
    let package = package_mut(&mut document, "flext-types");
    let dependency = package["dependencies"]
        .as_array_mut()
        .and_then(|dependencies| dependencies.last_mut())
        .expect("the dependency just added");
    dependency["rename"] = json!("implementation");
    let violations = check_layering(&parse(&document));
    assert_one_naming(
        &violations,
        &["flext-types (layer 20)", "flext-impl (layer 40)"],
    );
}

#[test]
fn rule_3_non_facade_depending_on_an_adapter_names_both() {
    let mut document = clean_document();
    add_dependency(&mut document, "flext-cqrs", "flext-store-sqlite", None);
    let violations = check_metadata(&parse(&document));
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["flext-cqrs", "adapter flext-store-sqlite"]);
}

#[test]
fn rule_3_holds_for_dev_dependencies_of_the_test_kit_and_the_examples() {
    let mut document = clean_document();
    add_dependency(
        &mut document,
        "flext-testing",
        "flext-store-postgres",
        Some("dev"),
    );
    add_dependency(&mut document, "flext-examples", "flext-bus-nats", None);
    let violations = check_adapter_dependents(&parse(&document));
    assert_one_naming(
        &violations,
        &["flext-testing", "flext-store-postgres", "dev-dependency"],
    );
    assert_one_naming(&violations, &["flext-examples", "flext-bus-nats"]);
    assert_eq!(violations.len(), 2);
}

#[test]
fn rule_3_lets_the_facade_depend_on_adapters_in_any_kind() {
    let mut document = clean_document();
    add_dependency(
        &mut document,
        "flext-handlers",
        "flext-bus-nats",
        Some("dev"),
    );
    assert_clean(&check_metadata(&parse(&document)));
}

#[test]
fn rule_3_needs_the_facade_role() {
    let mut document = clean_document();
    set_flext(&mut document, "flext-handlers", "role", None);
    let violations = check_adapter_dependents(&parse(&document));
    assert_one_naming(&violations, &["flext-handlers", "flext-store-sqlite"]);
    assert_one_naming(&violations, &["flext-handlers", "flext-store-postgres"]);
    assert_one_naming(&violations, &["flext-handlers", "flext-bus-nats"]);
}

#[test]
fn rule_4_upward_dev_dependency_names_both() {
    let mut document = clean_document();
    add_dependency(&mut document, "flext-protocols", "flext-cqrs", Some("dev"));
    let violations = check_metadata(&parse(&document));
    assert_eq!(
        violations,
        [
            "flext-protocols (layer 30) has a dev-dependency on flext-cqrs (layer 50): a \
             dev-dependency may point only to a strictly lower layer, to the test kit \
             (role = \"testing\") or to the facade (role = \"facade\")"
        ]
    );
}

#[test]
fn rule_4_allows_the_test_kit_and_the_facade() {
    let mut document = clean_document();
    add_dependency(&mut document, "flext-types", "flext-testing", Some("dev"));
    add_dependency(&mut document, "flext-impl", "flext-handlers", Some("dev"));
    assert_clean(&check_dev_dependencies(&parse(&document)));
}

#[test]
fn rule_4_exceptions_do_not_cover_normal_dependencies() {
    let mut document = clean_document();
    add_dependency(&mut document, "flext-types", "flext-testing", None);
    let violations = check_metadata(&parse(&document));
    assert_one_naming(
        &violations,
        &["flext-types (layer 20)", "flext-testing (layer 80)"],
    );
}

#[test]
fn rule_5_banned_crate_outside_adapters_names_the_crate_and_the_ban() {
    let mut document = clean_document();
    add_dependency(&mut document, "flext-cqrs", "sqlx", None);
    add_dependency(&mut document, "flext-handlers", "async-nats", Some("dev"));
    let violations = check_banned_dependencies(&parse(&document));
    assert_one_naming(&violations, &["flext-cqrs depends on sqlx"]);
    assert_one_naming(
        &violations,
        &["flext-handlers depends on async-nats", "dev-dependency"],
    );
    assert_eq!(violations.len(), 2);
}

#[test]
fn rule_5_lets_adapters_use_the_banned_crates() {
    let mut document = clean_document();
    add_dependency(
        &mut document,
        "flext-store-sqlite",
        "async-nats",
        Some("dev"),
    );
    assert_clean(&check_banned_dependencies(&parse(&document)));
}

#[test]
fn every_violation_is_reported_at_once() {
    let mut document = clean_document();
    set_flext(&mut document, "flext-constants", "layer", None);
    add_dependency(&mut document, "flext-types", "flext-impl", None);
    add_dependency(&mut document, "flext-cqrs", "flext-bus-nats", None);
    add_dependency(&mut document, "flext-protocols", "flext-cqrs", Some("dev"));
    add_dependency(&mut document, "flext-impl", "sqlx", None);
    let violations = check_metadata(&parse(&document));
    assert_eq!(violations.len(), 5, "{violations:#?}");
}
