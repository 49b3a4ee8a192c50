//! Rule 6: every member's `Cargo.toml` takes the workspace lint table.

use std::fs;

use crate::metadata::Metadata;

/// Returns a message naming `package` unless `manifest`, the text of its `Cargo.toml`,
/// sets `[lints] workspace = true`.
pub fn check_lints_table(package: &str, manifest: &str) -> Option<String> {
    let table = match manifest.parse::<toml::Table>() {
        Ok(table) => table,
        Err(error) => {
            return Some(format!(
                "{package}: its Cargo.toml is not valid TOML: {error}"
            ));
        }
    };
    let inherits = table
        .get("lints")
        .and_then(|lints| lints.get("workspace"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    (!inherits).then(|| {
        format!(
            "{package}: its Cargo.toml lacks `[lints] workspace = true`; every crate takes the \
             workspace lint table"
        )
    })
}

/// Reads every member's manifest (`manifest_path`) and applies [`check_lints_table`] to it.
///
/// A manifest that cannot be read is a violation too, naming the crate.
pub fn check_manifests(metadata: &Metadata) -> Vec<String> {
    metadata
        .members()
        .filter_map(|package| match fs::read_to_string(&package.manifest_path) {
            Ok(manifest) => check_lints_table(&package.name, &manifest),
            Err(error) => Some(format!(
                "{}: cannot read {}: {error}",
                package.name,
                package.manifest_path.display()
            )),
        })
        .collect()
}
