//! Rule 7: every `.rs` file under `crates/` opens with a `//!` inner doc comment.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};

/// Returns a message naming `path` unless the first line of `source` is a `//!` comment.
pub fn check_doc_header(path: &str, source: &str) -> Option<String> {
    let first_line = source.lines().next().unwrap_or("");
    (!first_line.starts_with("//!")).then(|| {
        format!("{path}: the first line must be a `//!` inner doc comment saying what the file is")
    })
}

/// Returns every `.rs` file under `dir`, sorted, skipping any directory named `target`.
///
/// Symbolic links are not followed.
pub fn rust_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            let path = entry.path();
            if file_type.is_dir() {
                if entry.file_name() != "target" {
                    pending.push(path);
                }
            } else if file_type.is_file() && path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Applies [`check_doc_header`] to every `.rs` file under `root/crates`.
///
/// Messages name each file by its path from `root`, with `/` separators.
pub fn check_doc_headers(root: &Path) -> Result<Vec<String>, Error> {
    let crates = root.join("crates");
    let files = rust_files(&crates).map_err(|error| io_error(&crates, &error))?;
    let mut violations = Vec::new();
    for file in files {
        let source = fs::read_to_string(&file).map_err(|error| io_error(&file, &error))?;
        if let Some(message) = check_doc_header(&relative_name(root, &file), &source) {
            violations.push(message);
        }
    }
    Ok(violations)
}

/// Returns `path` relative to `root` with `/` separators, or whole when it is not under it.
fn relative_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|component| component.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn io_error(path: &Path, error: &io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cannot read {}: {error}", path.display()),
    )
}
