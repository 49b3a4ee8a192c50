//! Rule 8: the layer table of `docs/ARCHITECTURE.md` lists exactly the workspace members,
//! with the layers and roles their manifests declare.
//!
//! The table is the first markdown table whose header row has a `crate` and a `layer`
//! column (matched without regard to case; other columns are allowed). Its `role` column
//! gives the `[package.metadata.flext] role` of each crate, empty for none; a table without
//! that column gives no crate a role. A cell may be written plainly, in backticks, in bold,
//! or (a crate) as a link whose text is the name.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::metadata::Metadata;

/// The path of the architecture document, from the workspace root.
pub const ARCHITECTURE_DOC: &str = "docs/ARCHITECTURE.md";

/// One row of the layer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    /// The crate name, with any backticks, emphasis or link removed.
    pub krate: String,
    /// The layer the row gives.
    pub layer: i64,
    /// The role the row gives, `None` when its cell is empty or the table has no `role`
    /// column.
    pub role: Option<String>,
}

/// Parses the layer table of `markdown`.
///
/// Fails with a message when no table has both columns, or when a row's layer is not an
/// integer.
pub fn parse_layer_table(markdown: &str) -> Result<Vec<LayerRow>, String> {
    let missing =
        || format!("{ARCHITECTURE_DOC} has no markdown table with a `crate` and a `layer` column");
    let (names, body) = find_table(markdown, &["crate", "layer"]).ok_or_else(missing)?;
    let column = |wanted: &str| names.iter().position(|name| name == wanted);
    let crate_column = column("crate").ok_or_else(missing)?;
    let layer_column = column("layer").ok_or_else(missing)?;
    body.iter()
        .map(|line| parse_row(line, crate_column, layer_column, column("role")))
        .collect()
}

/// Compares the layer table of `markdown` with the members of `metadata`.
///
/// Reports a member missing from the table, a row naming no member, a crate listed twice,
/// a layer that differs from the manifest's, and a role that differs from the manifest's
/// (in either direction: a role the manifest lacks, or one the table lacks), each naming
/// the crate and both values.
pub fn check_architecture_table(metadata: &Metadata, markdown: &str) -> Vec<String> {
    let rows = match parse_layer_table(markdown) {
        Ok(rows) => rows,
        Err(message) => return vec![message],
    };
    let mut violations = Vec::new();
    let mut documented: BTreeMap<&str, &LayerRow> = BTreeMap::new();
    for row in &rows {
        if let Some(previous) = documented.insert(&row.krate, row) {
            violations.push(format!(
                "{ARCHITECTURE_DOC} lists {} twice (layers {} and {})",
                row.krate, previous.layer, row.layer
            ));
        }
    }
    for package in metadata.members() {
        let manifest_layer = package.layer();
        let manifest_text = match &manifest_layer {
            Ok(layer) => format!("layer {layer}"),
            Err(_) => "no valid layer".to_owned(),
        };
        let Some(row) = documented.get(package.name.as_str()) else {
            violations.push(format!(
                "{} ({manifest_text} in its manifest) is missing from the layer table of \
                 {ARCHITECTURE_DOC}",
                package.name
            ));
            continue;
        };
        if let Ok(layer) = manifest_layer
            && row.layer != layer
        {
            violations.push(format!(
                "{}: {ARCHITECTURE_DOC} gives layer {}, its manifest gives layer {layer}",
                package.name, row.layer
            ));
        }
        // Rule 1 reports an invalid role; it is compared as its raw text here.
        let manifest_role = package
            .metadata
            .get("flext")
            .and_then(|flext| flext.get("role"))
            .map(|role| {
                role.as_str()
                    .map_or_else(|| role.to_string(), str::to_owned)
            });
        if row.role != manifest_role {
            violations.push(format!(
                "{}: {ARCHITECTURE_DOC} gives role {}, its manifest gives role {}",
                package.name,
                role_text(row.role.as_deref()),
                role_text(manifest_role.as_deref()),
            ));
        }
    }
    for (krate, row) in &documented {
        if metadata.member(krate).is_none() {
            violations.push(format!(
                "{ARCHITECTURE_DOC} lists {krate} (layer {}), which is not a workspace member",
                row.layer
            ));
        }
    }
    violations
}

/// Reads `root/docs/ARCHITECTURE.md` and applies [`check_architecture_table`] to it.
///
/// A missing or unreadable document is a violation.
pub fn check_architecture_doc(root: &Path, metadata: &Metadata) -> Vec<String> {
    match fs::read_to_string(root.join(ARCHITECTURE_DOC)) {
        Ok(markdown) => check_architecture_table(metadata, &markdown),
        Err(error) => vec![format!(
            "cannot read {ARCHITECTURE_DOC} ({error}); it must hold the table of every crate and \
             its layer"
        )],
    }
}

fn parse_row(
    line: &str,
    crate_column: usize,
    layer_column: usize,
    role_column: Option<usize>,
) -> Result<LayerRow, String> {
    let cells = split_row(line);
    let cell = |column: usize| cells.get(column).map_or("", |cell| plain_text(cell));
    let krate = cell(crate_column).to_owned();
    let layer_text = cell(layer_column);
    let layer = layer_text.parse().map_err(|_| {
        format!(
            "{ARCHITECTURE_DOC}: the layer of the row for {krate:?} is {layer_text:?}, not an \
             integer"
        )
    })?;
    let role = role_column
        .map(cell)
        .filter(|role| !role.is_empty())
        .map(str::to_owned);
    Ok(LayerRow { krate, layer, role })
}

/// Returns a role for a message: quoted, or `none`.
fn role_text(role: Option<&str>) -> String {
    role.map_or_else(|| "none".to_owned(), |role| format!("\"{role}\""))
}

/// Returns the first markdown table of `markdown` whose header has every column of
/// `columns` (lowercase), as its header names (plain text, lowercase) and its body lines.
pub(crate) fn find_table<'a>(
    markdown: &'a str,
    columns: &[&str],
) -> Option<(Vec<String>, Vec<&'a str>)> {
    let lines: Vec<&str> = markdown.lines().map(str::trim).collect();
    let mut index = 0;
    while index + 1 < lines.len() {
        let header = lines[index];
        if is_table_line(header) && is_separator(lines[index + 1]) {
            let names: Vec<String> = split_row(header)
                .iter()
                .map(|cell| plain_text(cell).to_lowercase())
                .collect();
            let body: Vec<&str> = lines[index + 2..]
                .iter()
                .copied()
                .take_while(|line| is_table_line(line))
                .collect();
            if columns
                .iter()
                .all(|column| names.iter().any(|name| name == column))
            {
                return Some((names, body));
            }
            index += 2 + body.len();
        } else {
            index += 1;
        }
    }
    None
}

fn is_table_line(line: &str) -> bool {
    line.starts_with('|')
}

/// Returns whether `line` is a header separator such as `| --- | :---: |`.
fn is_separator(line: &str) -> bool {
    let cells = split_row(line);
    is_table_line(line)
        && !cells.is_empty()
        && cells.iter().all(|cell| {
            let dashes = cell.trim_matches(':');
            !dashes.is_empty() && dashes.chars().all(|c| c == '-')
        })
}

/// Splits a table line into its trimmed cells, without the outer pipes.
pub(crate) fn split_row(line: &str) -> Vec<&str> {
    let inner = line.strip_prefix('|').unwrap_or(line);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(str::trim).collect()
}

/// Returns the text of a cell without a link, emphasis or backticks around it.
pub(crate) fn plain_text(cell: &str) -> &str {
    let mut text = cell.trim();
    if let Some(rest) = text.strip_prefix('[')
        && let Some(end) = rest.find("](")
    {
        text = &rest[..end];
    }
    text.trim_matches(|c| c == '`' || c == '*').trim()
}
