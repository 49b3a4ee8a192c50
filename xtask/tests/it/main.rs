//! The tidy tests: the rules checked on the real workspace, and on fixtures with planted
//! violations that prove each rule catches what it should.

mod architecture;
mod external;
mod facade;
mod files;
mod layering;
mod licenses;
mod perf;
mod soak;
mod workspace;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use xtask::{Metadata, parse_metadata};

/// The registry source `cargo metadata` gives a crates.io dependency.
const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

/// Returns the clean fixture: a `cargo metadata --no-deps` document of the planned
/// workspace, adapters and test kit included, that breaks no rule.
fn clean_document() -> Value {
    serde_json::from_str(include_str!("fixtures/metadata.json")).expect("the fixture is valid JSON")
}

/// Parses a fixture document the way the checks receive the real one.
fn parse(document: &Value) -> Metadata {
    parse_metadata(&document.to_string()).expect("the fixture is a valid metadata document")
}

/// Returns the package object named `name` in a fixture document.
fn package_mut<'a>(document: &'a mut Value, name: &str) -> &'a mut Value {
    document["packages"]
        .as_array_mut()
        .expect("the fixture has packages")
        .iter_mut()
        .find(|package| package["name"] == name)
        .unwrap_or_else(|| panic!("the fixture has no package {name}"))
}

/// Adds a dependency of `kind` (`None` for normal) from `from` to `to`: a path
/// dependency when `to` is a package of the document, a crates.io one otherwise.
fn add_dependency(document: &mut Value, from: &str, to: &str, kind: Option<&str>) {
    let is_member = document["packages"]
        .as_array()
        .expect("the fixture has packages")
        .iter()
        .any(|package| package["name"] == to);
    let dependency = if is_member {
        json!({
            "name": to, "source": null, "req": "^0.1.0", "kind": kind, "rename": null,
            "optional": false, "uses_default_features": true, "features": [],
            "target": null, "registry": null, "path": format!("/ws/crates/{to}"),
        })
    } else {
        json!({
            "name": to, "source": CRATES_IO, "req": "^1", "kind": kind, "rename": null,
            "optional": false, "uses_default_features": true, "features": [],
            "target": null, "registry": null,
        })
    };
    package_mut(document, from)["dependencies"]
        .as_array_mut()
        .expect("a package has a dependency list")
        .push(dependency);
}

/// Sets `[package.metadata.flext] key` of the package `name` to `value`, or removes the
/// key when `value` is `None`.
fn set_flext(document: &mut Value, name: &str, key: &str, value: Option<Value>) {
    let flext = package_mut(document, name)["metadata"]["flext"]
        .as_object_mut()
        .expect("every fixture package has a flext table");
    match value {
        Some(value) => flext.insert(key.to_owned(), value),
        None => flext.remove(key),
    };
}

/// Fails listing every message unless `violations` is empty.
#[track_caller]
fn assert_clean(violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// Fails unless exactly one message of `violations` contains every one of `needles`.
#[track_caller]
fn assert_one_naming(violations: &[String], needles: &[&str]) {
    let matching = violations
        .iter()
        .filter(|message| needles.iter().all(|needle| message.contains(needle)))
        .count();
    assert_eq!(
        matching,
        1,
        "expected one message naming {needles:?}, got:\n{}",
        violations.join("\n")
    );
}

/// A directory of its own under the system's temporary directory, removed when dropped, for
/// the checks that read files.
struct Scratch(PathBuf);

impl Scratch {
    /// An empty directory named after `name` and this process.
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("the scratch directory is created");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `relative` inside the directory, creating its parents.
    fn write(&self, relative: &str, text: &str) {
        let path = self.0.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the parent is created");
        }
        std::fs::write(path, text).expect("the file is written");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
