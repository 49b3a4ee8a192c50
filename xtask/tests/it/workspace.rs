//! The rules checked on the real workspace: each test lists every violation it finds.

use std::sync::OnceLock;

use xtask::{
    Metadata, Role, cargo_metadata, cargo_metadata_graph, check_architecture_doc,
    check_dependency_policy, check_doc_headers, check_external_doc, check_facade, check_manifests,
    check_metadata, workspace_root,
};

use crate::assert_clean;

/// Returns the workspace's metadata, read once for all the tests of this module.
fn metadata() -> &'static Metadata {
    static METADATA: OnceLock<Metadata> = OnceLock::new();
    METADATA.get_or_init(|| {
        cargo_metadata(&workspace_root())
            .unwrap_or_else(|error| panic!("cannot read the workspace metadata: {error}"))
    })
}

#[test]
fn members_respect_the_layers() {
    assert_clean(&check_metadata(metadata()));
}

#[test]
fn exactly_one_member_is_the_facade() {
    let facades: Vec<&str> = metadata()
        .members()
        .filter(|package| package.has_role(Role::Facade))
        .map(|package| package.name.as_str())
        .collect();
    assert_eq!(
        facades.len(),
        1,
        "exactly one member sets `role = \"facade\"`, found {facades:?}"
    );
}

#[test]
fn manifests_take_the_workspace_lints() {
    assert_clean(&check_manifests(metadata()));
}

#[test]
fn rust_files_under_crates_open_with_an_inner_doc_comment() {
    let violations = check_doc_headers(&workspace_root())
        .unwrap_or_else(|error| panic!("cannot walk crates/: {error}"));
    assert_clean(&violations);
}

#[test]
fn architecture_layer_table_matches_the_manifests() {
    assert_clean(&check_architecture_doc(&workspace_root(), metadata()));
}

#[test]
fn every_package_of_the_graph_has_an_allowed_license_and_source() {
    let root = workspace_root();
    let graph = cargo_metadata_graph(&root)
        .unwrap_or_else(|error| panic!("cannot read the resolved graph: {error}"));
    assert!(
        graph.packages.len() > graph.workspace_members.len(),
        "the graph holds the dependencies, not only the members"
    );
    assert_clean(&check_dependency_policy(&root, &graph));
}

#[test]
fn external_crates_are_allowed_at_their_layers() {
    assert_clean(&check_external_doc(&workspace_root(), metadata()));
}

#[test]
fn the_facade_re_exports_only_and_reaches_every_item_below_it() {
    assert_clean(&check_facade(metadata()));
}
