//! Rule 9 on fixtures: the external-crates table of ARCHITECTURE.md, parsed, and the
//! members' external dependencies checked against it.

use serde_json::{Value, json};
use xtask::{ExternalCrate, check_external_crates, check_external_doc, parse_external_table};

use crate::{
    Scratch, add_dependency, assert_clean, assert_one_naming, clean_document, package_mut, parse,
};

/// A document shaped like ARCHITECTURE.md whose table the clean fixture keeps.
const TABLE: &str = "\
# Architecture

| crate | layer |
|---|---|
| `flext-types` | 20 |

| layer | for | external crates | why |
|---|---|---|---|
| 10 | | none | nothing |
| 20 | | `serde`, `serde_json` | plain data |
| 30 | | `async-trait`, `futures-core` | contracts |
| 35 | | `tokio` (`sync`, `time`), `futures-util` | the tail |
| 40 | | `tokio` (`rt`) | spawning |
| 45 | adapters | `sqlx`, `async-nats` | I/O |
| 80 | | `tokio` (`rt-multi-thread`) | the test kit's runtime |
| 100 | | `toml` | tooling |
| 20 | optional | `http` | a feature's HTTP mapping |
";

fn check(document: &Value) -> Vec<String> {
    let rows = parse_external_table(TABLE).expect("the table parses");
    check_external_crates(&parse(document), &rows)
}

/// Adds a workspace member `name` at `layer`, with no dependencies.
fn add_member(document: &mut Value, name: &str, layer: i64) {
    let id = format!("path+file:///ws/crates/{name}#0.1.0");
    document["packages"]
        .as_array_mut()
        .expect("the fixture has packages")
        .push(json!({
            "name": name, "version": "0.1.0", "id": id, "license": "MIT OR Apache-2.0",
            "source": null, "dependencies": [],
            "manifest_path": format!("/ws/crates/{name}/Cargo.toml"),
            "metadata": {"flext": {"layer": layer}},
        }));
    document["workspace_members"]
        .as_array_mut()
        .expect("the fixture has members")
        .push(json!(id));
}

/// Adds a normal dependency of `from` on the external crate `to` with `features`.
fn add_external(document: &mut Value, from: &str, to: &str, features: &[&str]) {
    add_dependency(document, from, to, None);
    let package = package_mut(document, from);
    let dependency = package["dependencies"]
        .as_array_mut()
        .and_then(|dependencies| dependencies.last_mut())
        .expect("the dependency just added");
    dependency["features"] = json!(features);
    dependency["uses_default_features"] = json!(false);
}

#[test]
fn parser_reads_layers_roles_and_features() {
    let rows = parse_external_table(TABLE).expect("the table parses");
    assert_eq!(rows.len(), 9);
    assert!(rows[0].crates.is_empty());
    assert_eq!(rows[3].layer, 35);
    assert_eq!(
        rows[3].crates[0],
        ExternalCrate {
            name: "tokio".to_owned(),
            features: Some(vec!["sync".to_owned(), "time".to_owned()]),
        }
    );
    assert_eq!(rows[3].crates[1].features, None);
    assert!(rows[5].adapters_only && !rows[4].adapters_only);
    assert!(rows[8].optional_only && !rows[8].adapters_only && !rows[1].optional_only);
}

#[test]
fn parser_rejects_malformed_rows_naming_them() {
    for (from, to, needle) in [
        ("| 20 | | `serde`", "| twenty | | `serde`", "\"twenty\""),
        ("| 45 | adapters |", "| 45 | adaptors |", "\"adaptors\""),
        ("| 20 | optional |", "| 20 | feature |", "\"feature\""),
        ("`tokio` (`rt`)", "tokio (rt)", "layer 40"),
        ("`tokio` (`rt`)", "`tokio` (`rt`", "not closed"),
        ("`tokio` (`rt`)", "`tokio` (rt)", "a feature of tokio"),
        ("`toml` |", "`toml` and more |", "\"and more\""),
    ] {
        let error = parse_external_table(&TABLE.replace(from, to))
            .expect_err("a malformed row fails the parse");
        assert!(error.contains(needle), "{needle}: {error}");
    }
    let error = parse_external_table("| layer | crates |\n|---|---|\n| 10 | none |\n")
        .expect_err("no external crates column");
    assert!(error.contains("`external crates` column"), "{error}");
}

#[test]
fn clean_fixture_passes() {
    assert_clean(&check(&clean_document()));
}

#[test]
fn tokio_below_its_layer_names_the_crate_and_the_lowest_layer() {
    let mut document = clean_document();
    add_external(&mut document, "flext-types", "tokio", &["sync"]);
    add_external(&mut document, "flext-protocols", "futures-util", &[]);
    let violations = check(&document);
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert_one_naming(
        &violations,
        &[
            "flext-types (layer 20)",
            "external crate tokio",
            "from layer 35",
        ],
    );
    assert_one_naming(
        &violations,
        &[
            "flext-protocols (layer 30)",
            "futures-util",
            "from layer 35",
        ],
    );
}

#[test]
fn an_io_crate_outside_adapters_is_named() {
    let mut document = clean_document();
    add_external(&mut document, "flext-cqrs", "sqlx", &[]);
    let violations = check(&document);
    assert_eq!(
        violations,
        [
            "flext-cqrs (layer 50) depends on the external crate sqlx: docs/ARCHITECTURE.md \
             allows it to adapters (role = \"adapter\") only"
        ]
    );
}

#[test]
fn a_crate_no_row_lists_is_named() {
    let mut document = clean_document();
    add_external(&mut document, "flext-impl", "anyhow", &[]);
    let violations = check(&document);
    assert_one_naming(
        &violations,
        &["flext-impl (layer 40)", "anyhow", "at no layer"],
    );
    assert_eq!(violations.len(), 1, "{violations:?}");
}

#[test]
fn features_are_limited_per_layer_and_widen_with_the_layers() {
    let mut document = clean_document();
    add_member(&mut document, "flext-store", 35);
    add_external(&mut document, "flext-store", "tokio", &["sync", "time"]);
    add_external(
        &mut document,
        "flext-impl",
        "tokio",
        &["rt", "sync", "time"],
    );
    add_external(&mut document, "flext-cqrs", "tokio", &["rt"]);
    assert_clean(&check(&document));

    add_external(&mut document, "flext-store", "tokio", &["rt", "time"]);
    add_external(&mut document, "flext-cqrs", "tokio", &["rt-multi-thread"]);
    let violations = check(&document);
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert_one_naming(
        &violations,
        &[
            "flext-store (layer 35)",
            "feature `rt` of tokio",
            "only `sync`, `time`",
        ],
    );
    assert_one_naming(
        &violations,
        &["flext-cqrs (layer 50)", "`rt-multi-thread` of tokio"],
    );
}

#[test]
fn build_dependencies_are_checked_and_dev_dependencies_are_not() {
    let mut document = clean_document();
    add_dependency(&mut document, "flext-constants", "serde", Some("build"));
    add_dependency(&mut document, "flext-constants", "tokio", Some("dev"));
    let violations = check(&document);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(
        &violations,
        &["flext-constants (layer 10)", "serde", "from layer 20"],
    );
}

#[test]
fn a_feature_turned_on_through_the_members_own_features_is_named() {
    let mut document = clean_document();
    add_member(&mut document, "flext-store", 35);
    add_external(&mut document, "flext-store", "tokio", &["sync"]);
    package_mut(&mut document, "flext-store")["features"] =
        json!({"runtime": ["tokio/rt", "tokio?/time"], "default": []});
    let violations = check(&document);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(
        &violations,
        &[
            "flext-store (layer 35)",
            "feature `rt` of tokio through its feature `runtime`",
        ],
    );
}

#[test]
fn default_features_left_on_for_a_limited_crate_are_named() {
    let mut document = clean_document();
    add_member(&mut document, "flext-store", 35);
    add_external(&mut document, "flext-store", "tokio", &["sync"]);
    assert_clean(&check(&document));
    let package = package_mut(&mut document, "flext-store");
    package["dependencies"]
        .as_array_mut()
        .and_then(|dependencies| dependencies.last_mut())
        .expect("the tokio dependency")["uses_default_features"] = json!(true);
    let violations = check(&document);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(
        &violations,
        &[
            "flext-store (layer 35)",
            "default features of tokio",
            "default-features = false",
        ],
    );
}

#[test]
fn a_crate_allowed_as_optional_only_is_named_when_depended_on_unconditionally() {
    let mut document = clean_document();
    add_external(&mut document, "flext-types", "http", &[]);
    let violations = check(&document);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(
        &violations,
        &[
            "flext-types (layer 20)",
            "http",
            "as an optional dependency only",
        ],
    );
    let package = package_mut(&mut document, "flext-types");
    package["dependencies"]
        .as_array_mut()
        .and_then(|dependencies| dependencies.last_mut())
        .expect("the http dependency")["optional"] = json!(true);
    assert_clean(&check(&document));
    // Optional or not, it is allowed from its row's layer only.
    add_external(&mut document, "flext-constants", "http", &[]);
    let package = package_mut(&mut document, "flext-constants");
    package["dependencies"]
        .as_array_mut()
        .and_then(|dependencies| dependencies.last_mut())
        .expect("the http dependency")["optional"] = json!(true);
    let violations = check(&document);
    assert_one_naming(
        &violations,
        &["flext-constants (layer 10)", "from layer 20"],
    );
}

#[test]
fn the_table_is_read_from_the_architecture_document() {
    let scratch = Scratch::new("external-doc");
    let metadata = parse(&clean_document());
    let missing = check_external_doc(scratch.path(), &metadata);
    assert_one_naming(&missing, &["cannot read docs/ARCHITECTURE.md"]);

    let architecture = include_str!("../../../docs/ARCHITECTURE.md");
    scratch.write("docs/ARCHITECTURE.md", architecture);
    assert_clean(&check_external_doc(scratch.path(), &metadata));
    // The same document without serde at layer 20: the clean fixture's flext-types uses it.
    let row = architecture
        .lines()
        .find(|line| line.starts_with("| 20 |"))
        .expect("the table has a layer-20 row");
    let without_serde = architecture.replace(row, &row.replacen("`serde`, ", "", 1));
    scratch.write("docs/ARCHITECTURE.md", &without_serde);
    let violations = check_external_doc(scratch.path(), &metadata);
    assert_one_naming(&violations, &["flext-types (layer 20)", "serde"]);
}
