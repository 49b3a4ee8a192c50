//! Tidy checks for the flext-handlers workspace, run as tests by `cargo test --workspace`.
//!
//! This crate is tooling: it is not published and nothing may depend on it. Its
//! integration tests (`xtask/tests/it`) run every check against the real workspace and
//! fail, printing every violation at once, when a rule of `docs/ARCHITECTURE.md` is
//! broken. Each check is a pure function over a parsed model, so
//! the tests can also feed it small fixtures.
//!
//! | rule | what it checks | function |
//! | --- | --- | --- |
//! | 1 | every member declares an integer `[package.metadata.flext] layer`, and a valid `role` if any | [`check_layer_declarations`] |
//! | 2 | normal and build dependencies on members point to strictly lower layers | [`check_layering`] |
//! | 3 | nothing but the facade depends on an adapter | [`check_adapter_dependents`] |
//! | 4 | dev-dependencies point lower, to the test kit or to the facade | [`check_dev_dependencies`] |
//! | 5 | only adapters depend, in any kind, on `sqlx` or `async-nats` | [`check_banned_dependencies`] |
//! | 6 | every manifest has `[lints] workspace = true` | [`check_lints_table`], [`check_manifests`] |
//! | 7 | every `.rs` file under `crates/` opens with a `//!` line | [`check_doc_header`], [`check_doc_headers`] |
//! | 8 | the layer table of `docs/ARCHITECTURE.md` matches the manifests: layers and roles | [`check_architecture_table`], [`check_architecture_doc`] |
//! | 9 | every external crate a member uses (normal, build) is allowed at its layer by the external-crates table of `docs/ARCHITECTURE.md` | [`check_external_crates`], [`check_external_doc`] |
//! | 10 | the facade's `lib.rs` holds re-exports by name only (a `#[cfg(doctest)]` item excepted) | [`check_facade_reexports_only`] |
//! | 11 | the facade re-exports every layered crate below it whole, each root item of a crate with a guide namespace in that namespace, and each adapter's items in `stores` | [`check_facade_parity`], [`check_facade`] |
//! | 12 | every package of the resolved graph has a license and a source that `deny.toml` allows | [`check_licenses_and_sources`], [`check_dependency_policy`] |
//!
//! [`perf`] is the other tool here: `cargo run -p xtask -- bench-report` checks every
//! performance target against criterion's results and writes `docs/PERFORMANCE.md`.
//! [`soak`] runs the framework under mixed concurrent load for minutes, checking its
//! invariants as it goes (`cargo run --release -p xtask -- soak --minutes 10 --store
//! sqlite`); its figures are a section of the same document.
//!
//! Rules 1 to 5 together are [`check_metadata`]. The model is [`Metadata`], read from
//! `cargo metadata --format-version 1 --no-deps` by [`cargo_metadata`] (the members), from
//! the whole resolved graph by [`cargo_metadata_graph`] (rule 12), or from any JSON
//! document by [`parse_metadata`]. Rules 8 and 9 read the tables of `docs/ARCHITECTURE.md`,
//! rules 10 and 11 the crates' `lib.rs` files (with `syn`), rule 12 `deny.toml`.

mod architecture;
mod error;
mod external;
mod facade;
mod headers;
mod licenses;
mod manifest;
mod metadata;
pub mod perf;
mod rules;
pub mod soak;

pub use crate::architecture::{
    ARCHITECTURE_DOC, LayerRow, check_architecture_doc, check_architecture_table, parse_layer_table,
};
pub use crate::error::{Error, ErrorKind};
pub use crate::external::{
    ExternalCrate, ExternalRow, check_external_crates, check_external_doc, parse_external_table,
};
pub use crate::facade::{
    ADAPTER_MODULES, Exclusion, Facade, GUIDE_NAMESPACES, PARITY_EXCLUSIONS, RootItem,
    STORES_MODULE, adapter_module, check_facade, check_facade_parity, check_facade_reexports_only,
    parse_facade, root_items,
};
pub use crate::headers::{check_doc_header, check_doc_headers, rust_files};
pub use crate::licenses::{
    DENY_TOML, DenyPolicy, check_dependency_policy, check_licenses_and_sources, license_allowed,
    parse_deny_policy,
};
pub use crate::manifest::{check_lints_table, check_manifests};
pub use crate::metadata::{
    Dependency, DependencyKind, Metadata, Package, Role, cargo_metadata, cargo_metadata_graph,
    parse_metadata, workspace_root,
};
pub use crate::rules::{
    BANNED_OUTSIDE_ADAPTERS, check_adapter_dependents, check_banned_dependencies,
    check_dev_dependencies, check_layer_declarations, check_layering, check_metadata,
};
