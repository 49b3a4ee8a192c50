//! The model the checks read: the parts of `cargo metadata` that they need.
//!
//! Only the keys below are read; every other key of the document is ignored.
//!
//! - top level: `packages`, `workspace_members`, `workspace_root`;
//! - per package: `name`, `version`, `id`, `license`, `source`, `manifest_path`,
//!   `dependencies`, `metadata`, and in it `metadata.flext.layer` (an integer) and
//!   `metadata.flext.role` (a string);
//! - per dependency: `name` (the package name, never the rename), `source`, `kind`,
//!   `rename`, `path`, `features`, `uses_default_features`, `optional`.
//!
//! The layering rules read the members only ([`cargo_metadata`], `--no-deps`); the
//! license and source rule reads every package of the resolved graph
//! ([`cargo_metadata_graph`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::error::{Error, ErrorKind};

/// The output of `cargo metadata --format-version 1`, reduced to what the checks read.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// The packages: with `--no-deps`, only the workspace members; without it, every
    /// package of the resolved graph.
    pub packages: Vec<Package>,
    /// The package ids of the workspace members.
    pub workspace_members: Vec<String>,
    /// The directory of the root manifest.
    pub workspace_root: PathBuf,
}

/// One package of [`Metadata`].
#[derive(Debug, Clone, Deserialize)]
pub struct Package {
    /// The package name, such as `flext-types`.
    pub name: String,
    /// The package version.
    #[serde(default)]
    pub version: String,
    /// The opaque package id, as listed in [`Metadata::workspace_members`].
    pub id: String,
    /// The SPDX license expression of the manifest, `None` when it has none.
    #[serde(default)]
    pub license: Option<String>,
    /// Where the package comes from (`registry+…`, `git+…`), `None` for a path package.
    #[serde(default)]
    pub source: Option<String>,
    /// The path of the package's `Cargo.toml`.
    pub manifest_path: PathBuf,
    /// The dependencies the manifest declares, of every kind and target.
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    /// The `[package.metadata]` table as JSON, `null` when the manifest has none.
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// The package's own `[features]` table: each feature and what it turns on
    /// (`"dep/feature"`, `"dep?/feature"`, `"dep:dep"`, another feature).
    #[serde(default)]
    pub features: std::collections::BTreeMap<String, Vec<String>>,
}

/// One dependency a [`Package`] declares.
#[derive(Debug, Clone, Deserialize)]
pub struct Dependency {
    /// The name of the package depended on, whatever it is renamed to.
    pub name: String,
    /// Where the package comes from: `None` for a path dependency.
    #[serde(default)]
    pub source: Option<String>,
    /// Whether this is a normal, dev- or build-dependency.
    #[serde(default)]
    pub kind: DependencyKind,
    /// The name the dependency is used under, when the manifest renames it.
    #[serde(default)]
    pub rename: Option<String>,
    /// The directory of a path dependency.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The features the manifest turns on, the workspace's included.
    #[serde(default)]
    pub features: Vec<String>,
    /// Whether the dependency's default features are on.
    #[serde(default = "default_true")]
    pub uses_default_features: bool,
    /// Whether the dependency is optional (turned on by one of the member's features).
    #[serde(default)]
    pub optional: bool,
}

/// The kind of a [`Dependency`]: which manifest table declares it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Option<String>")]
pub enum DependencyKind {
    /// `[dependencies]`: `cargo metadata` writes `null`.
    #[default]
    Normal,
    /// `[dev-dependencies]`: `"dev"`.
    Dev,
    /// `[build-dependencies]`: `"build"`.
    Build,
}

/// The part a crate plays, from `role` in `[package.metadata.flext]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `role = "facade"`: the crate that re-exports the framework, and the only one that
    /// may depend on an adapter.
    Facade,
    /// `role = "adapter"`: a store or bus on a concrete technology (layer 45).
    Adapter,
    /// `role = "testing"`: the test kit, which any crate may take as a dev-dependency.
    Testing,
}

/// Returns the root of this workspace: the parent of the `xtask` directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// Runs `cargo metadata --format-version 1 --no-deps` in `root` and parses its output:
/// the workspace members.
///
/// Cargo is the one named by the `CARGO` environment variable, which Cargo sets for the
/// tests it runs, or else `cargo` from the `PATH`.
pub fn cargo_metadata(root: &Path) -> Result<Metadata, Error> {
    run_cargo_metadata(root, &["--no-deps"])
}

/// Runs `cargo metadata --format-version 1 --all-features --filter-platform host-tuple` in
/// `root` and parses its output: every package of the resolved graph, with every feature
/// on (as `deny.toml` checks it), that this machine's platform builds.
///
/// The platform filter keeps Cargo from fetching the manifests of packages only other
/// platforms build (such as `windows-sys`), which need the network when they are not in
/// the local registry cache.
pub fn cargo_metadata_graph(root: &Path) -> Result<Metadata, Error> {
    run_cargo_metadata(root, &["--all-features", "--filter-platform", "host-tuple"])
}

fn run_cargo_metadata(root: &Path, args: &[&str]) -> Result<Metadata, Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1"])
        .args(args)
        .current_dir(root)
        .output()
        .map_err(|error| {
            Error::new(
                ErrorKind::Cargo,
                format!("could not run {}: {error}", cargo.to_string_lossy()),
            )
        })?;
    if !output.status.success() {
        return Err(Error::new(
            ErrorKind::Cargo,
            format!(
                "`cargo metadata` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    let json = String::from_utf8(output.stdout).map_err(|error| {
        Error::new(
            ErrorKind::Cargo,
            format!("`cargo metadata` printed invalid UTF-8: {error}"),
        )
    })?;
    parse_metadata(&json)
}

/// Parses a document in the format of `cargo metadata --format-version 1`.
pub fn parse_metadata(json: &str) -> Result<Metadata, Error> {
    serde_json::from_str(json).map_err(|error| {
        Error::new(
            ErrorKind::Json,
            format!("invalid cargo metadata document: {error}"),
        )
    })
}

impl Metadata {
    /// Returns the packages that are workspace members, in document order.
    pub fn members(&self) -> impl Iterator<Item = &Package> {
        self.packages
            .iter()
            .filter(|package| self.workspace_members.contains(&package.id))
    }

    /// Returns the workspace member named `name`, if there is one.
    pub fn member(&self, name: &str) -> Option<&Package> {
        self.members().find(|package| package.name == name)
    }

    /// Returns the workspace member that `dependency` points to, if it points to one.
    ///
    /// A dependency points to a member when it names one and has no source, that is when
    /// it is a path dependency; a registry crate of the same name does not count.
    pub fn member_dependency(&self, dependency: &Dependency) -> Option<&Package> {
        if dependency.source.is_some() {
            return None;
        }
        self.member(&dependency.name)
    }
}

impl Package {
    /// Returns `[package.metadata.flext] layer`, or a message naming the crate when it is
    /// missing or not an integer.
    pub fn layer(&self) -> Result<i64, String> {
        match self.flext_key("layer") {
            None => Err(format!(
                "{}: `[package.metadata.flext] layer` is missing; every workspace member \
                 declares an integer layer",
                self.name
            )),
            Some(value) => value.as_i64().ok_or_else(|| {
                format!(
                    "{}: `[package.metadata.flext] layer` is {value}, not an integer",
                    self.name
                )
            }),
        }
    }

    /// Returns `[package.metadata.flext] role`: `Ok(None)` when the crate has none, or a
    /// message naming the crate when it is not one of `facade`, `adapter`, `testing`.
    pub fn role(&self) -> Result<Option<Role>, String> {
        match self.flext_key("role") {
            None => Ok(None),
            Some(value) => match value.as_str() {
                Some("facade") => Ok(Some(Role::Facade)),
                Some("adapter") => Ok(Some(Role::Adapter)),
                Some("testing") => Ok(Some(Role::Testing)),
                _ => Err(format!(
                    "{}: `[package.metadata.flext] role` is {value}; it must be \"facade\", \
                     \"adapter\" or \"testing\"",
                    self.name
                )),
            },
        }
    }

    /// Returns whether the crate's role is `role`; an invalid role is no role.
    pub fn has_role(&self, role: Role) -> bool {
        self.role() == Ok(Some(role))
    }

    fn flext_key(&self, key: &str) -> Option<&serde_json::Value> {
        self.metadata.get("flext")?.get(key)
    }
}

fn default_true() -> bool {
    true
}

impl TryFrom<Option<String>> for DependencyKind {
    type Error = String;

    fn try_from(kind: Option<String>) -> Result<Self, Self::Error> {
        match kind.as_deref() {
            None | Some("normal") => Ok(Self::Normal),
            Some("dev") => Ok(Self::Dev),
            Some("build") => Ok(Self::Build),
            Some(other) => Err(format!("unknown dependency kind {other:?}")),
        }
    }
}
