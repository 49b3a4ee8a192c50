//! The layering rules (1 to 5), as pure functions over [`Metadata`].
//!
//! Each function returns one message per violation, naming the crates involved; an empty
//! list means the rule holds.

use crate::metadata::{Dependency, DependencyKind, Metadata, Package, Role};

/// The external crates that only adapters (`role = "adapter"`) may depend on.
pub const BANNED_OUTSIDE_ADAPTERS: [&str; 3] = ["sqlx", "rusqlite", "async-nats"];

/// Runs rules 1 to 5 and returns every violation, in rule order.
pub fn check_metadata(metadata: &Metadata) -> Vec<String> {
    let mut violations = check_layer_declarations(metadata);
    violations.extend(check_layering(metadata));
    violations.extend(check_adapter_dependents(metadata));
    violations.extend(check_dev_dependencies(metadata));
    violations.extend(check_banned_dependencies(metadata));
    violations
}

/// Rule 1: every workspace member declares an integer `[package.metadata.flext] layer`,
/// and a `role`, when it has one, is `facade`, `adapter` or `testing`.
pub fn check_layer_declarations(metadata: &Metadata) -> Vec<String> {
    let mut violations = Violations::default();
    for package in metadata.members() {
        if let Err(message) = package.layer() {
            violations.push(message);
        }
        if let Err(message) = package.role() {
            violations.push(message);
        }
    }
    violations.into_vec()
}

/// Rule 2: every normal or build dependency on a workspace crate points to a strictly
/// lower layer.
pub fn check_layering(metadata: &Metadata) -> Vec<String> {
    let mut violations = Violations::default();
    for (package, dependency, target) in member_edges(metadata) {
        if dependency.kind == DependencyKind::Dev {
            continue;
        }
        let (Ok(layer), Ok(target_layer)) = (package.layer(), target.layer()) else {
            // Rule 1 reports the missing layer.
            continue;
        };
        if target_layer >= layer {
            violations.push(format!(
                "{} (layer {layer}) depends on {} (layer {target_layer}){}: a crate may depend \
                 only on crates of strictly lower layers",
                package.name,
                target.name,
                kind_suffix(dependency.kind),
            ));
        }
    }
    violations.into_vec()
}

/// Rule 3: nothing but the facade depends on an adapter, whatever the dependency kind.
pub fn check_adapter_dependents(metadata: &Metadata) -> Vec<String> {
    let mut violations = Violations::default();
    for (package, dependency, target) in member_edges(metadata) {
        if package.has_role(Role::Facade) || !target.has_role(Role::Adapter) {
            continue;
        }
        violations.push(format!(
            "{} depends on the adapter {}{}: nothing but the facade (role = \"facade\") may \
             depend on an adapter (role = \"adapter\")",
            package.name,
            target.name,
            kind_suffix(dependency.kind),
        ));
    }
    violations.into_vec()
}

/// Rule 4: every dev-dependency on a workspace crate points to a strictly lower layer,
/// to the test kit (`role = "testing"`) or to the facade (`role = "facade"`).
///
/// A dev-dependency on an adapter from anything but the facade is rule 3's to report.
pub fn check_dev_dependencies(metadata: &Metadata) -> Vec<String> {
    let mut violations = Violations::default();
    for (package, dependency, target) in member_edges(metadata) {
        if dependency.kind != DependencyKind::Dev
            || target.has_role(Role::Testing)
            || target.has_role(Role::Facade)
            || target.name == package.name
        {
            continue;
        }
        let (Ok(layer), Ok(target_layer)) = (package.layer(), target.layer()) else {
            // Rule 1 reports the missing layer.
            continue;
        };
        if target_layer >= layer {
            violations.push(format!(
                "{} (layer {layer}) has a dev-dependency on {} (layer {target_layer}): a \
                 dev-dependency may point only to a strictly lower layer, to the test kit \
                 (role = \"testing\") or to the facade (role = \"facade\")",
                package.name, target.name,
            ));
        }
    }
    violations.into_vec()
}

/// Rule 5: only adapters depend, in any kind, on the crates of [`BANNED_OUTSIDE_ADAPTERS`].
pub fn check_banned_dependencies(metadata: &Metadata) -> Vec<String> {
    let mut violations = Violations::default();
    for package in metadata.members() {
        if package.has_role(Role::Adapter) {
            continue;
        }
        for dependency in &package.dependencies {
            if BANNED_OUTSIDE_ADAPTERS.contains(&dependency.name.as_str()) {
                violations.push(format!(
                    "{} depends on {}{}: only adapters (role = \"adapter\") may depend on {}",
                    package.name,
                    dependency.name,
                    kind_suffix(dependency.kind),
                    BANNED_OUTSIDE_ADAPTERS.join(" or "),
                ));
            }
        }
    }
    violations.into_vec()
}

/// Returns every dependency of a member on a member, with both packages.
fn member_edges(metadata: &Metadata) -> impl Iterator<Item = (&Package, &Dependency, &Package)> {
    metadata.members().flat_map(move |package| {
        package.dependencies.iter().filter_map(move |dependency| {
            metadata
                .member_dependency(dependency)
                .map(|target| (package, dependency, target))
        })
    })
}

/// Returns the words a message adds after a dependency of `kind`.
fn kind_suffix(kind: DependencyKind) -> &'static str {
    match kind {
        DependencyKind::Normal => "",
        DependencyKind::Dev => " as a dev-dependency",
        DependencyKind::Build => " as a build-dependency",
    }
}

/// A list of messages without repeats: a dependency declared for two targets is one
/// violation.
#[derive(Debug, Default)]
struct Violations(Vec<String>);

impl Violations {
    fn push(&mut self, message: String) {
        if !self.0.contains(&message) {
            self.0.push(message);
        }
    }

    fn into_vec(self) -> Vec<String> {
        self.0
    }
}
