//! Rule 12 on fixtures: licenses as SPDX expressions, and the license and source of every
//! package of a graph against a `deny.toml`.

use serde_json::{Value, json};
use xtask::{
    DenyPolicy, check_dependency_policy, check_licenses_and_sources, license_allowed,
    parse_deny_policy,
};

use crate::{CRATES_IO, Scratch, assert_clean, assert_one_naming, clean_document, parse};

/// A `deny.toml` with the parts the rule reads, shaped like the workspace's.
const DENY: &str = r#"
[licenses]
version = 2
allow = ["MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "Unicode-3.0"]

[sources]
unknown-registry = "deny"
allow-registry = ["https://github.com/rust-lang/crates.io-index"]
allow-git = []
"#;

fn policy() -> DenyPolicy {
    parse_deny_policy(DENY).expect("the fixture policy parses")
}

/// Adds a package of the resolved graph, not a workspace member.
fn add_package(document: &mut Value, name: &str, license: Option<&str>, source: &str) {
    document["packages"]
        .as_array_mut()
        .expect("the fixture has packages")
        .push(json!({
            "name": name, "version": "1.2.3", "id": format!("{source}#{name}@1.2.3"),
            "license": license, "source": source, "dependencies": [],
            "manifest_path": format!("/registry/{name}-1.2.3/Cargo.toml"), "metadata": null,
        }));
}

#[test]
fn the_policy_is_read_from_deny_toml() {
    let policy = policy();
    assert_eq!(policy.licenses.len(), 4);
    assert_eq!(
        policy.registries,
        ["https://github.com/rust-lang/crates.io-index"]
    );
    let error = parse_deny_policy("[licenses]\nallow = [\"MIT\"]\n").expect_err("no sources");
    assert!(error.contains("[sources] allow-registry"), "{error}");
    let error = parse_deny_policy("[licenses]\nallow = [1]\n[sources]\nallow-registry = []\n")
        .expect_err("not a string");
    assert!(error.contains("[licenses] allow"), "{error}");
}

#[test]
fn expressions_are_judged_as_spdx_reads_them() {
    let allowed = policy().licenses;
    for (expression, verdict) in [
        ("MIT", true),
        ("MIT OR Apache-2.0", true),
        ("MIT/Apache-2.0", true),
        ("Apache-2.0 / MIT", true),
        ("(MIT OR Apache-2.0) AND Unicode-3.0", true),
        ("Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT", true),
        ("Unlicense OR MIT", true),
        ("GPL-3.0-only", false),
        ("MIT AND GPL-3.0-only", false),
        ("GPL-3.0-only OR MIT AND Unicode-3.0", true),
        ("(GPL-3.0-only OR MIT) AND BSL-1.0", false),
        ("GPL-2.0-only WITH Classpath-exception-2.0", false),
        ("MIT WITH Classpath-exception-2.0", false),
    ] {
        assert_eq!(
            license_allowed(expression, &allowed),
            Ok(verdict),
            "{expression}"
        );
    }
}

#[test]
fn malformed_expressions_are_errors() {
    let allowed = policy().licenses;
    for expression in [
        "",
        "MIT OR",
        "(MIT",
        "AND MIT",
        "MIT)",
        "MIT WITH",
        "MIT Apache-2.0",
    ] {
        assert!(
            license_allowed(expression, &allowed).is_err(),
            "{expression:?} must not parse"
        );
    }
}

#[test]
fn clean_graph_passes() {
    let mut document = clean_document();
    add_package(&mut document, "serde", Some("MIT OR Apache-2.0"), CRATES_IO);
    add_package(
        &mut document,
        "unicode-ident",
        Some("(MIT OR Apache-2.0) AND Unicode-3.0"),
        CRATES_IO,
    );
    assert_clean(&check_licenses_and_sources(&parse(&document), &policy()));
}

#[test]
fn a_license_outside_the_allow_list_names_the_package_and_the_license() {
    let mut document = clean_document();
    add_package(&mut document, "copyleft", Some("GPL-3.0-only"), CRATES_IO);
    let violations = check_licenses_and_sources(&parse(&document), &policy());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(
        &violations,
        &["copyleft 1.2.3", "\"GPL-3.0-only\"", "not allowed"],
    );
}

#[test]
fn a_package_without_a_license_expression_is_named() {
    let mut document = clean_document();
    add_package(&mut document, "license-file-only", None, CRATES_IO);
    let violations = check_licenses_and_sources(&parse(&document), &policy());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["license-file-only 1.2.3", "no `license`"]);
}

#[test]
fn an_invalid_expression_is_named() {
    let mut document = clean_document();
    add_package(&mut document, "typo", Some("MIT OR"), CRATES_IO);
    let violations = check_licenses_and_sources(&parse(&document), &policy());
    assert_one_naming(&violations, &["typo 1.2.3", "not a valid SPDX expression"]);
}

#[test]
fn git_and_unknown_registry_sources_are_named() {
    let mut document = clean_document();
    add_package(
        &mut document,
        "forked",
        Some("MIT"),
        "git+https://example.invalid/forked?rev=1#0123456",
    );
    add_package(
        &mut document,
        "private",
        Some("MIT"),
        "registry+https://example.invalid/index",
    );
    add_package(
        &mut document,
        "sparse",
        Some("MIT"),
        "sparse+https://github.com/rust-lang/crates.io-index",
    );
    let violations = check_licenses_and_sources(&parse(&document), &policy());
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert_one_naming(
        &violations,
        &["forked 1.2.3", "git+https://example.invalid"],
    );
    assert_one_naming(&violations, &["private 1.2.3", "example.invalid/index"]);
}

#[test]
fn workspace_packages_are_checked_too() {
    let mut document = clean_document();
    crate::package_mut(&mut document, "flext-types")["license"] = json!("Proprietary");
    let violations = check_licenses_and_sources(&parse(&document), &policy());
    assert_one_naming(&violations, &["flext-types", "\"Proprietary\""]);
}

#[test]
fn a_path_package_outside_the_workspace_is_named() {
    let mut document = clean_document();
    document["packages"]
        .as_array_mut()
        .expect("the fixture has packages")
        .push(json!({
            "name": "vendored", "version": "0.1.0", "id": "path+file:///vendor/x#vendored@0.1.0",
            "license": "MIT", "source": null, "dependencies": [],
            "manifest_path": "/vendor/x/Cargo.toml", "metadata": null,
        }));
    let violations = check_licenses_and_sources(&parse(&document), &policy());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(
        &violations,
        &["vendored 0.1.0", "path /vendor/x/Cargo.toml", "not allowed"],
    );
}

#[test]
fn the_policy_is_read_from_the_root_deny_toml() {
    let scratch = Scratch::new("deny-policy");
    let mut document = clean_document();
    add_package(&mut document, "copyleft", Some("GPL-3.0-only"), CRATES_IO);
    let graph = parse(&document);
    let missing = check_dependency_policy(scratch.path(), &graph);
    assert_one_naming(&missing, &["cannot read deny.toml"]);
    scratch.write("deny.toml", DENY);
    let violations = check_dependency_policy(scratch.path(), &graph);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["copyleft 1.2.3", "not allowed"]);
    scratch.write("deny.toml", "[licenses]\nallow = [\"MIT\"]\n");
    let broken = check_dependency_policy(scratch.path(), &graph);
    assert_one_naming(&broken, &["[sources] allow-registry"]);
}
