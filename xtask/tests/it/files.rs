//! Rules 6 and 7 on fixtures: the lint table of a manifest, and the `//!` header of a file.

use std::fs;
use std::path::{Path, PathBuf};

use xtask::{check_doc_header, check_doc_headers, check_lints_table, rust_files};

const MANIFEST: &str = r#"
[package]
name = "flext-types"
version.workspace = true

[package.metadata.flext]
layer = 20

[lints]
workspace = true
"#;

#[test]
fn rule_6_manifest_with_workspace_lints_passes() {
    assert_eq!(check_lints_table("flext-types", MANIFEST), None);
}

#[test]
fn rule_6_reads_the_top_level_lints_table() {
    let manifest = "[package]\nname = \"flext-types\"\nlints.workspace = true\n";
    // A dotted key under [package] is package.lints, not the lints table.
    assert!(check_lints_table("flext-types", manifest).is_some());
    let manifest = "lints.workspace = true\n[package]\nname = \"flext-types\"\n";
    assert_eq!(check_lints_table("flext-types", manifest), None);
}

#[test]
fn rule_6_missing_lints_table_names_the_crate() {
    let manifest = MANIFEST.replace("[lints]\nworkspace = true\n", "");
    let message = check_lints_table("flext-types", &manifest).expect("a violation");
    assert!(message.starts_with("flext-types: "), "{message}");
    assert!(message.contains("[lints] workspace = true"), "{message}");
}

#[test]
fn rule_6_workspace_false_or_own_lints_name_the_crate() {
    let manifest = MANIFEST.replace("workspace = true", "workspace = false");
    assert!(check_lints_table("flext-impl", &manifest).is_some_and(|m| m.contains("flext-impl")));
    let manifest = MANIFEST.replace(
        "[lints]\nworkspace = true",
        "[lints.rust]\nunsafe_code = \"allow\"",
    );
    assert!(check_lints_table("flext-impl", &manifest).is_some_and(|m| m.contains("flext-impl")));
}

#[test]
fn rule_6_invalid_toml_names_the_crate() {
    let message = check_lints_table("flext-cqrs", "[lints\n").expect("a violation");
    assert!(message.starts_with("flext-cqrs: "), "{message}");
}

#[test]
fn rule_7_inner_doc_first_line_passes() {
    assert_eq!(
        check_doc_header("crates/a/src/lib.rs", "//! A crate.\n\nfn f() {}\n"),
        None
    );
}

#[test]
fn rule_7_other_first_lines_name_the_file() {
    for source in [
        "",
        "\n//! Late.\n",
        "/// An outer doc comment.\nfn f() {}\n",
        "// A plain comment.\n",
        "#![forbid(unsafe_code)]\n//! After an attribute.\n",
        "  //! Indented.\n",
    ] {
        let message = check_doc_header("crates/a/src/lib.rs", source)
            .unwrap_or_else(|| panic!("{source:?} must not pass"));
        assert!(message.starts_with("crates/a/src/lib.rs: "), "{message}");
    }
}

#[test]
fn rule_7_walk_skips_target_and_names_files_from_the_root() {
    let root = Scratch::new("headers");
    root.write("crates/a/src/lib.rs", "//! A crate.\n");
    root.write("crates/a/src/nested/bad.rs", "fn main() {}\n");
    root.write("crates/a/tests/it/main.rs", "//! Tests.\n");
    root.write("crates/a/target/debug/build/out.rs", "fn generated() {}\n");
    root.write("crates/a/README.md", "no header\n");
    let files = rust_files(&root.path().join("crates")).expect("the scratch tree is readable");
    assert_eq!(files.len(), 3, "{files:?}");
    let violations = check_doc_headers(root.path()).expect("the scratch tree is readable");
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].starts_with("crates/a/src/nested/bad.rs: "),
        "{violations:?}"
    );
}

/// A directory under Cargo's scratch space for integration tests, removed on drop.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("xtask-{name}-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).expect("a stale scratch directory can be removed");
        }
        fs::create_dir_all(&path).expect("the scratch directory can be created");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, relative: &str, contents: &str) {
        let path = self.0.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("the directory can be created");
        }
        fs::write(path, contents).expect("the file can be written");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A leftover directory only costs space under target/, so a failure is ignored.
        let _ = fs::remove_dir_all(&self.0);
    }
}
