//! Rule 8: the layer table of `docs/ARCHITECTURE.md` lists exactly the workspace members,
//! with the layers their manifests declare.
//!
//! The table is the first markdown table whose header row has a `crate` and a `layer`
//! column (matched without regard to case; other columns are allowed). A crate cell may
//! be written plainly, in backticks, in bold, or as a link whose text is the name.

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
}

/// Parses the layer table of `markdown`.
///
/// Fails with a message when no table has both columns, or when a row's layer is not an
/// integer.
pub fn parse_layer_table(markdown: &str) -> Result<Vec<LayerRow>, String> {
    let lines: Vec<&str> = markdown.lines().map(str::trim).collect();
    let mut index = 0;
    while index + 1 < lines.len() {
        let header = lines[index];
        if is_table_line(header) && is_separator(lines[index + 1]) {
            let names: Vec<String> = split_row(header)
                .iter()
                .map(|cell| plain_text(cell).to_lowercase())
                .collect();
            let crate_column = names.iter().position(|name| name == "crate");
            let layer_column = names.iter().position(|name| name == "layer");
            let body = lines[index + 2..]
                .iter()
                .take_while(|line| is_table_line(line));
            if let (Some(crate_column), Some(layer_column)) = (crate_column, layer_column) {
                return body
                    .map(|line| parse_row(line, crate_column, layer_column))
                    .collect();
            }
            index += 2 + body.count();
        } else {
            index += 1;
        }
    }
    Err(format!(
        "{ARCHITECTURE_DOC} has no markdown table with a `crate` and a `layer` column"
    ))
}

/// Compares the layer table of `markdown` with the members of `metadata`.
///
/// Reports a member missing from the table, a row naming no member, a crate listed twice,
/// and a layer that differs from the manifest's, each naming the crate and its numbers.
pub fn check_architecture_table(metadata: &Metadata, markdown: &str) -> Vec<String> {
    let rows = match parse_layer_table(markdown) {
        Ok(rows) => rows,
        Err(message) => return vec![message],
    };
    let mut violations = Vec::new();
    let mut documented: BTreeMap<&str, i64> = BTreeMap::new();
    for row in &rows {
        if let Some(previous) = documented.insert(&row.krate, row.layer) {
            violations.push(format!(
                "{ARCHITECTURE_DOC} lists {} twice (layers {previous} and {})",
                row.krate, row.layer
            ));
        }
    }
    for package in metadata.members() {
        let manifest_layer = package.layer();
        let manifest_text = match &manifest_layer {
            Ok(layer) => format!("layer {layer}"),
            Err(_) => "no valid layer".to_owned(),
        };
        match (documented.get(package.name.as_str()), manifest_layer) {
            (None, _) => violations.push(format!(
                "{} ({manifest_text} in its manifest) is missing from the layer table of \
                 {ARCHITECTURE_DOC}",
                package.name
            )),
            (Some(&table_layer), Ok(layer)) if table_layer != layer => {
                violations.push(format!(
                    "{}: {ARCHITECTURE_DOC} gives layer {table_layer}, its manifest gives \
                     layer {layer}",
                    package.name
                ));
            }
            _ => {}
        }
    }
    for (krate, layer) in &documented {
        if metadata.member(krate).is_none() {
            violations.push(format!(
                "{ARCHITECTURE_DOC} lists {krate} (layer {layer}), which is not a workspace \
                 member"
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

fn parse_row(line: &str, crate_column: usize, layer_column: usize) -> Result<LayerRow, String> {
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
    Ok(LayerRow { krate, layer })
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
fn split_row(line: &str) -> Vec<&str> {
    let inner = line.strip_prefix('|').unwrap_or(line);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(str::trim).collect()
}

/// Returns the text of a cell without a link, emphasis or backticks around it.
fn plain_text(cell: &str) -> &str {
    let mut text = cell.trim();
    if let Some(rest) = text.strip_prefix('[')
        && let Some(end) = rest.find("](")
    {
        text = &rest[..end];
    }
    text.trim_matches(|c| c == '`' || c == '*').trim()
}
