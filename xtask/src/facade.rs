//! Rules 10 and 11: the facade holds re-exports only, and it reaches every public item of
//! the layered crates below it.
//!
//! Rule 10 reads the facade's `src/lib.rs`: every item, at any depth, is a `pub use` by
//! name (no glob) or an inline module of such items; an item under `#[cfg(doctest)]`
//! (the README's doctest holder) is never compiled into the library and is allowed.
//!
//! Rule 11 reads each layered crate's `src/lib.rs` for its root public items: the items it
//! declares there and the ones it re-exports from its own modules. A re-export of another
//! crate's item is that crate's to reach, a public module is reached through the crate's
//! module, and an item under `#[doc(hidden)]` is not public API. Then, for every member
//! of a lower layer than the facade, except the test kit:
//!
//! - an adapter (`role = "adapter"`) has each root item re-exported, by name, in its
//!   module of the facade ([`adapter_module`]: [`STORES_MODULE`] for the stores, `nats`
//!   for the NATS buses, `tower` for the tower adapter);
//! - any other crate is re-exported whole as a module (`pub use flext_cqrs as cqrs;`), and
//!   when it has a guide namespace ([`GUIDE_NAMESPACES`]) each root item is re-exported
//!   there, by its name, unless [`PARITY_EXCLUSIONS`] lists it with a reason.
//!
//! Items are matched by name, so a namespace may take an item from whichever crate now
//! holds it, and a rename (`HookMiddleware as Middleware`) counts for the original name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use syn::{Attribute, Item, UseTree, Visibility};

use crate::metadata::{Metadata, Package, Role};

/// The guide namespace of each crate that has one: (package, module of the facade).
pub const GUIDE_NAMESPACES: [(&str, &str); 7] = [
    ("flext-constants", "Constants"),
    ("flext-types", "Types"),
    ("flext-protocols", "Protocols"),
    ("flext-impl", "Implementation"),
    ("flext-cqrs", "CQRS"),
    ("flext-patterns", "Patterns"),
    ("flext-management", "Management"),
];

/// The facade's module that re-exports the adapters' items, each behind its feature.
pub const STORES_MODULE: &str = "stores";

/// The facade's module of each adapter that is not a store: (package, module).
pub const ADAPTER_MODULES: [(&str, &str); 3] = [
    ("flext-bus-nats", "nats"),
    ("flext-admin", "admin"),
    ("flext-tower", "tower"),
];

/// The facade's module that re-exports the items of the adapter `package`: its entry in
/// [`ADAPTER_MODULES`], else [`STORES_MODULE`].
pub fn adapter_module(package: &str) -> &'static str {
    ADAPTER_MODULES
        .iter()
        .find(|(name, _)| *name == package)
        .map_or(STORES_MODULE, |(_, module)| module)
}

/// An item that its crate's guide namespace leaves out on purpose: (package, item, reason).
/// It is still reached through the crate's module (`flext_handlers::types::…`).
pub type Exclusion = (&'static str, &'static str, &'static str);

/// The workspace's exclusions from rule 11. Empty: every root item of a crate with a guide
/// namespace is in that namespace (the store rules that once sat in `flext-types` and
/// `flext-impl` live in `flext-store`, which is reached as `flext_handlers::store`).
pub const PARITY_EXCLUSIONS: [Exclusion; 0] = [];

/// One public item at the root of a crate, as [`root_items`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootItem {
    /// The name it is reached by at the root.
    pub name: String,
    /// What it is: `struct`, `fn`, `use`, `module`, `macro`, …
    pub kind: &'static str,
}

/// What the facade re-exports, as [`parse_facade`] reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facade {
    /// The crates re-exported whole at the root: crate name (`flext_cqrs`) to the module
    /// name it is re-exported as (`cqrs`).
    pub whole: BTreeMap<String, String>,
    /// For each module at the root (`CQRS`, `stores`, …), the names of the items it
    /// re-exports, its inner modules' included, each by its original name.
    pub modules: BTreeMap<String, BTreeSet<String>>,
}

/// Rule 10: returns one message per item of the facade source `source` that is not a
/// re-export by name.
pub fn check_facade_reexports_only(source: &str) -> Vec<String> {
    match syn::parse_file(source) {
        Ok(file) => {
            let mut violations = Vec::new();
            reexports_only(&file.items, "the facade", &mut violations);
            violations
        }
        Err(error) => vec![format!("the facade's lib.rs does not parse: {error}")],
    }
}

/// Reads what the facade source `source` re-exports.
pub fn parse_facade(source: &str) -> Result<Facade, String> {
    let file = syn::parse_file(source)
        .map_err(|error| format!("the facade's lib.rs does not parse: {error}"))?;
    let mut facade = Facade::default();
    for item in &file.items {
        match item {
            Item::Use(item) if is_public(&item.vis) => match &item.tree {
                UseTree::Rename(rename) => {
                    facade
                        .whole
                        .insert(rename.ident.to_string(), rename.rename.to_string());
                }
                UseTree::Name(name) => {
                    facade
                        .whole
                        .insert(name.ident.to_string(), name.ident.to_string());
                }
                _ => {}
            },
            Item::Mod(module) if is_public(&module.vis) => {
                let names = facade.modules.entry(module.ident.to_string()).or_default();
                if let Some((_, items)) = &module.content {
                    reexported_names(items, names);
                }
            }
            _ => {}
        }
    }
    Ok(facade)
}

/// Reads the root public items of a crate from the source of its `lib.rs`.
///
/// Re-exports of other crates' items under their own names are left out (their home crate
/// is checked); one under a new name (`pub use flext_protocols::Handler as
/// AbstractHandler`) is an item of this crate. Items under `#[doc(hidden)]` are left out;
/// glob re-exports cannot be read and are left out.
pub fn root_items(source: &str) -> Result<Vec<RootItem>, String> {
    let file = syn::parse_file(source).map_err(|error| format!("does not parse: {error}"))?;
    let local_modules: BTreeSet<String> = file
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Mod(module) => Some(module.ident.to_string()),
            _ => None,
        })
        .collect();
    let mut items = Vec::new();
    for item in &file.items {
        if is_doc_hidden(attributes(item)) {
            continue;
        }
        if let Item::Macro(item) = item {
            let exported = item
                .attrs
                .iter()
                .any(|attribute| attribute.path().is_ident("macro_export"));
            if let (true, Some(ident)) = (exported, &item.ident) {
                items.push(RootItem {
                    name: ident.to_string(),
                    kind: "macro",
                });
            }
            continue;
        }
        if let Item::Use(item) = item {
            if is_public(&item.vis) {
                let mut leaves = Vec::new();
                use_leaves(&item.tree, None, &mut leaves);
                for (first, original, name) in leaves {
                    let local = ["crate", "self", "super"].contains(&first.as_str())
                        || local_modules.contains(&first);
                    // Another crate's item under a name of this crate's own
                    // (`Handler as AbstractHandler`) is this crate's to reach.
                    if local || name != original {
                        items.push(RootItem { name, kind: "use" });
                    }
                }
            }
            continue;
        }
        if let Some((vis, kind, name)) = declared(item)
            && is_public(vis)
        {
            items.push(RootItem { name, kind });
        }
    }
    Ok(items)
}

/// Rule 11: checks that `facade` reaches every root item in `roots` (package name to the
/// items of its `lib.rs`, from [`root_items`]) of every member below the facade, except the
/// `exclusions` (the workspace passes [`PARITY_EXCLUSIONS`]).
pub fn check_facade_parity(
    metadata: &Metadata,
    facade: &Facade,
    roots: &BTreeMap<String, Vec<RootItem>>,
    exclusions: &[Exclusion],
) -> Vec<String> {
    let Some(facade_package) = metadata.members().find(|p| p.has_role(Role::Facade)) else {
        return vec!["no workspace member has `role = \"facade\"`".to_owned()];
    };
    let Ok(facade_layer) = facade_package.layer() else {
        // Rule 1 reports the missing layer.
        return Vec::new();
    };
    let mut violations = Vec::new();
    for package in below_facade(metadata, facade_layer) {
        let krate = package.name.replace('-', "_");
        let Some(items) = roots.get(&package.name) else {
            violations.push(format!(
                "{}: its lib.rs was not read, so its items cannot be checked",
                package.name
            ));
            continue;
        };
        let items = items.iter().filter(|item| item.kind != "module");
        if package.has_role(Role::Adapter) {
            let module = adapter_module(&package.name);
            let names = facade.modules.get(module);
            for item in items {
                if !names.is_some_and(|names| names.contains(&item.name)) {
                    violations.push(format!(
                        "{krate}::{} (of an adapter) is not re-exported in the facade's \
                         `{module}`",
                        item.name
                    ));
                }
            }
            continue;
        }
        if !facade.whole.contains_key(&krate) {
            violations.push(format!(
                "{}: the facade does not re-export it whole; add `pub use {krate} as …;`",
                package.name
            ));
        }
        let Some(namespace) = GUIDE_NAMESPACES
            .iter()
            .find(|(name, _)| *name == package.name)
            .map(|(_, namespace)| *namespace)
        else {
            continue;
        };
        let Some(names) = facade.modules.get(namespace) else {
            violations.push(format!(
                "{}: the facade has no guide namespace `{namespace}`",
                package.name
            ));
            continue;
        };
        for item in items {
            let excluded = exclusions
                .iter()
                .any(|(name, excluded, _)| *name == package.name && *excluded == item.name);
            if !excluded && !names.contains(&item.name) {
                violations.push(format!(
                    "{krate}::{} is missing from the guide namespace `{namespace}` of the \
                     facade; re-export it there, or list it with a reason in \
                     PARITY_EXCLUSIONS",
                    item.name
                ));
            }
        }
    }
    violations
}

/// Applies rules 10 and 11 to the workspace of `metadata`, reading the facade's and each
/// layered crate's `src/lib.rs` next to their manifests.
///
/// A source that cannot be read or parsed is a violation naming it.
pub fn check_facade(metadata: &Metadata) -> Vec<String> {
    let Some(facade_package) = metadata.members().find(|p| p.has_role(Role::Facade)) else {
        return vec!["no workspace member has `role = \"facade\"`".to_owned()];
    };
    let mut violations = Vec::new();
    let facade_source = match read_lib(facade_package) {
        Ok(source) => source,
        Err(message) => return vec![message],
    };
    violations.extend(check_facade_reexports_only(&facade_source));
    let facade = match parse_facade(&facade_source) {
        Ok(facade) => facade,
        Err(message) => {
            violations.push(message);
            return violations;
        }
    };
    let mut roots = BTreeMap::new();
    let facade_layer = facade_package.layer().unwrap_or(i64::MIN);
    for package in below_facade(metadata, facade_layer) {
        match read_lib(package).and_then(|source| {
            root_items(&source).map_err(|error| format!("{}: lib.rs {error}", package.name))
        }) {
            Ok(items) => {
                roots.insert(package.name.clone(), items);
            }
            Err(message) => violations.push(message),
        }
    }
    violations.extend(check_facade_parity(
        metadata,
        &facade,
        &roots,
        &PARITY_EXCLUSIONS,
    ));
    violations
}

/// The members of layers below `facade_layer`, the test kit left out.
fn below_facade(metadata: &Metadata, facade_layer: i64) -> impl Iterator<Item = &Package> {
    metadata.members().filter(move |package| {
        !package.has_role(Role::Testing)
            && !package.has_role(Role::Facade)
            && package.layer().is_ok_and(|layer| layer < facade_layer)
    })
}

fn read_lib(package: &Package) -> Result<String, String> {
    let path = package
        .manifest_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("src")
        .join("lib.rs");
    fs::read_to_string(&path)
        .map_err(|error| format!("{}: cannot read {}: {error}", package.name, path.display()))
}

/// Collects a message for every item of `items` (in `place`) that is not a re-export by
/// name or an inline module of them.
fn reexports_only(items: &[Item], place: &str, violations: &mut Vec<String>) {
    for item in items {
        if is_cfg_doctest(attributes(item)) {
            continue;
        }
        match item {
            Item::Use(item) => {
                if !is_public(&item.vis) {
                    violations.push(format!(
                        "{place} has a private `use`: the facade holds re-exports (`pub use`) \
                         only"
                    ));
                }
                if contains_glob(&item.tree) {
                    violations.push(format!(
                        "{place} has a glob re-export: the facade re-exports by name"
                    ));
                }
            }
            Item::Mod(module) => match &module.content {
                Some((_, inner)) => {
                    reexports_only(
                        inner,
                        &format!("`{}` of the facade", module.ident),
                        violations,
                    );
                }
                None => violations.push(format!(
                    "{place} declares `mod {};` in a file of its own: the facade is one file of \
                     re-exports",
                    module.ident
                )),
            },
            other => {
                let what = declared(other).map_or_else(
                    || "an item".to_owned(),
                    |(_, kind, name)| format!("the {kind} `{name}`"),
                );
                violations.push(format!(
                    "{place} has {what} of its own: the facade holds re-exports only (an item \
                     under `#[cfg(doctest)]` excepted)"
                ));
            }
        }
    }
}

/// Adds the original name of every item the `use` items of `items` re-export, the inner
/// modules' included.
fn reexported_names(items: &[Item], names: &mut BTreeSet<String>) {
    for item in items {
        match item {
            Item::Use(item) if is_public(&item.vis) => {
                let mut leaves = Vec::new();
                use_leaves(&item.tree, None, &mut leaves);
                names.extend(leaves.into_iter().map(|(_, original, _)| original));
            }
            Item::Mod(module) => {
                if let Some((_, inner)) = &module.content {
                    reexported_names(inner, names);
                }
            }
            _ => {}
        }
    }
}

/// Collects each leaf of a use tree as (first path segment, original name, name it is
/// reached by); globs are skipped.
fn use_leaves(tree: &UseTree, first: Option<&str>, leaves: &mut Vec<(String, String, String)>) {
    match tree {
        UseTree::Path(path) => {
            let head = path.ident.to_string();
            use_leaves(&path.tree, Some(first.unwrap_or(&head)), leaves);
        }
        UseTree::Name(name) => {
            let name = name.ident.to_string();
            leaves.push((first.unwrap_or(&name).to_owned(), name.clone(), name));
        }
        UseTree::Rename(rename) => {
            let original = rename.ident.to_string();
            leaves.push((
                first.unwrap_or(&original).to_owned(),
                original,
                rename.rename.to_string(),
            ));
        }
        UseTree::Group(group) => {
            for tree in &group.items {
                use_leaves(tree, first, leaves);
            }
        }
        UseTree::Glob(_) => {}
    }
}

fn contains_glob(tree: &UseTree) -> bool {
    match tree {
        UseTree::Path(path) => contains_glob(&path.tree),
        UseTree::Group(group) => group.items.iter().any(contains_glob),
        UseTree::Glob(_) => true,
        UseTree::Name(_) | UseTree::Rename(_) => false,
    }
}

/// The visibility, kind and name of an item that declares something of its own.
fn declared(item: &Item) -> Option<(&Visibility, &'static str, String)> {
    Some(match item {
        Item::Const(item) => (&item.vis, "const", item.ident.to_string()),
        Item::Enum(item) => (&item.vis, "enum", item.ident.to_string()),
        Item::Fn(item) => (&item.vis, "fn", item.sig.ident.to_string()),
        Item::Mod(item) => (&item.vis, "module", item.ident.to_string()),
        Item::Static(item) => (&item.vis, "static", item.ident.to_string()),
        Item::Struct(item) => (&item.vis, "struct", item.ident.to_string()),
        Item::Trait(item) => (&item.vis, "trait", item.ident.to_string()),
        Item::TraitAlias(item) => (&item.vis, "trait alias", item.ident.to_string()),
        Item::Type(item) => (&item.vis, "type", item.ident.to_string()),
        Item::Union(item) => (&item.vis, "union", item.ident.to_string()),
        _ => return None,
    })
}

fn attributes(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(item) => &item.attrs,
        Item::Enum(item) => &item.attrs,
        Item::ExternCrate(item) => &item.attrs,
        Item::Fn(item) => &item.attrs,
        Item::ForeignMod(item) => &item.attrs,
        Item::Impl(item) => &item.attrs,
        Item::Macro(item) => &item.attrs,
        Item::Mod(item) => &item.attrs,
        Item::Static(item) => &item.attrs,
        Item::Struct(item) => &item.attrs,
        Item::Trait(item) => &item.attrs,
        Item::TraitAlias(item) => &item.attrs,
        Item::Type(item) => &item.attrs,
        Item::Union(item) => &item.attrs,
        Item::Use(item) => &item.attrs,
        _ => &[],
    }
}

fn is_public(vis: &Visibility) -> bool {
    matches!(vis, Visibility::Public(_))
}

/// Whether `attributes` hold `#[cfg(doctest)]`.
fn is_cfg_doctest(attributes: &[Attribute]) -> bool {
    attributes.iter().any(|attribute| {
        attribute.path().is_ident("cfg")
            && attribute
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "doctest")
    })
}

/// Whether `attributes` hold `#[doc(hidden)]`.
fn is_doc_hidden(attributes: &[Attribute]) -> bool {
    attributes.iter().any(|attribute| {
        attribute.path().is_ident("doc")
            && attribute
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "hidden")
    })
}
