//! Rule 9: every external (non-workspace) crate a member depends on, as a normal or build
//! dependency, is allowed at its layer by the table of `docs/ARCHITECTURE.md`.
//!
//! The document is the one list. The table is the first markdown table whose header has a
//! `layer` and an `external crates` column, and optionally a `for` column. A row allows its
//! crates to every member of its layer and of every higher layer; a row whose `for` cell
//! is `adapters` allows them to adapters (`role = "adapter"`) only, and one whose `for`
//! cell is `optional` allows them as optional dependencies only (behind a feature of the
//! member, so a build without the feature does without them). A crate cell is
//! `none`, or a comma-separated list of crate names in backticks, each optionally
//! followed by the only features it may turn on by name, in parentheses:
//! `` `tokio` (`sync`, `time`), `tracing` ``. The features a member may turn on are those
//! of every row that allows it the crate; one row naming the crate without features lifts
//! the limit. Rows key on layers, so a layer with no member yet (a crate still to come) is
//! harmless, and a member of a layer without a row of its own takes the rows below it.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::architecture::{ARCHITECTURE_DOC, find_table, plain_text, split_row};
use crate::metadata::{Dependency, DependencyKind, Metadata, Package, Role};

/// One row of the external-crates table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRow {
    /// The lowest layer the row allows its crates to.
    pub layer: i64,
    /// Whether only adapters may use the row's crates (`for` is `adapters`).
    pub adapters_only: bool,
    /// Whether the row allows its crates as optional dependencies only (`for` is
    /// `optional`).
    pub optional_only: bool,
    /// The crates the row allows.
    pub crates: Vec<ExternalCrate>,
}

/// One crate of an [`ExternalRow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalCrate {
    /// The package name, such as `tokio`.
    pub name: String,
    /// The only features a member may turn on by name, or `None` for any.
    pub features: Option<Vec<String>>,
}

/// Parses the external-crates table of `markdown`.
///
/// Fails with a message when no table has the columns, when a layer is not an integer, a
/// `for` cell is neither empty, `adapters` nor `optional`, or a crate cell does not follow
/// the format.
pub fn parse_external_table(markdown: &str) -> Result<Vec<ExternalRow>, String> {
    let missing = || {
        format!(
            "{ARCHITECTURE_DOC} has no markdown table with a `layer` and an `external crates` \
             column"
        )
    };
    let (names, body) = find_table(markdown, &["layer", "external crates"]).ok_or_else(missing)?;
    let column = |wanted: &str| names.iter().position(|name| name == wanted);
    let layer_column = column("layer").ok_or_else(missing)?;
    let crates_column = column("external crates").ok_or_else(missing)?;
    let for_column = column("for");
    body.iter()
        .map(|line| {
            let cells = split_row(line);
            let cell = |index: usize| cells.get(index).copied().unwrap_or("");
            let layer_text = plain_text(cell(layer_column));
            let layer = layer_text.parse().map_err(|_| {
                format!(
                    "{ARCHITECTURE_DOC}: a layer of the external-crates table is \
                     {layer_text:?}, not an integer"
                )
            })?;
            let (adapters_only, optional_only) =
                match for_column.map(|index| plain_text(cell(index))) {
                    None | Some("") => (false, false),
                    Some("adapters") => (true, false),
                    Some("optional") => (false, true),
                    Some(other) => {
                        return Err(format!(
                            "{ARCHITECTURE_DOC}: the `for` cell of layer {layer} in the \
                             external-crates table is {other:?}; it must be empty, \
                             `adapters` or `optional`"
                        ));
                    }
                };
            let crates = parse_crates(cell(crates_column)).map_err(|error| {
                format!(
                    "{ARCHITECTURE_DOC}: the external crates of layer {layer}: {error}; write \
                     `none` or `` `crate` (`feature`, …), `crate` ``"
                )
            })?;
            Ok(ExternalRow {
                layer,
                adapters_only,
                optional_only,
                crates,
            })
        })
        .collect()
}

/// Checks every normal and build dependency of every member on an external crate against
/// `rows`.
///
/// Reports, naming the member, its layer and the crate: a crate no row allows, a crate
/// allowed only from a higher layer, a crate allowed only to adapters, a crate allowed
/// only as an optional dependency and depended on unconditionally, a feature outside
/// the allowed ones (turned on in the dependency's entry or through one of the member's own
/// `[features]`), and the default features left on for a crate whose features are limited. A member without a valid layer is rule 1's to report.
pub fn check_external_crates(metadata: &Metadata, rows: &[ExternalRow]) -> Vec<String> {
    let mut violations = BTreeSet::new();
    for package in metadata.members() {
        let Ok(layer) = package.layer() else {
            continue;
        };
        for dependency in &package.dependencies {
            if dependency.kind == DependencyKind::Dev
                || metadata.member_dependency(dependency).is_some()
            {
                continue;
            }
            let name = &dependency.name;
            let allowing: Vec<&ExternalCrate> = rows
                .iter()
                .filter(|row| row.layer <= layer && applies_to(row, package, dependency))
                .filter_map(|row| row.crates.iter().find(|krate| krate.name == *name))
                .collect();
            if allowing.is_empty() {
                violations.insert(not_allowed(package, layer, name, rows));
                continue;
            }
            if allowing.iter().any(|krate| krate.features.is_none()) {
                continue;
            }
            let allowed_features: BTreeSet<&str> = allowing
                .iter()
                .filter_map(|krate| krate.features.as_deref())
                .flatten()
                .map(String::as_str)
                .collect();
            let allowed_list = allowed_features
                .iter()
                .map(|feature| format!("`{feature}`"))
                .collect::<Vec<_>>()
                .join(", ");
            if dependency.uses_default_features {
                violations.insert(format!(
                    "{} (layer {layer}) leaves the default features of {name} on: at this \
                     layer {ARCHITECTURE_DOC} allows only {allowed_list}; set \
                     `default-features = false`",
                    package.name,
                ));
            }
            let key = dependency.rename.as_deref().unwrap_or(name);
            let through_features = package.features.iter().flat_map(|(own, enables)| {
                enables
                    .iter()
                    .filter_map(move |enabled| Some((Some(own), enabled_feature(enabled, key)?)))
            });
            let direct = dependency.features.iter().map(|f| (None, f.as_str()));
            for (own, feature) in direct.chain(through_features) {
                if !allowed_features.contains(feature) {
                    let through =
                        own.map_or_else(String::new, |own| format!(" through its feature `{own}`"));
                    violations.insert(format!(
                        "{} (layer {layer}) turns on the feature `{feature}` of {name}{through}: \
                         at this layer {ARCHITECTURE_DOC} allows only {allowed_list}",
                        package.name,
                    ));
                }
            }
        }
    }
    violations.into_iter().collect()
}

/// The feature of the dependency `key` that the `[features]` entry `enabled` turns on
/// (`"key/feature"` or `"key?/feature"`), if it names one.
fn enabled_feature<'a>(enabled: &'a str, key: &str) -> Option<&'a str> {
    let (dependency, feature) = enabled.split_once('/')?;
    (dependency.trim_end_matches('?') == key).then_some(feature)
}

/// Reads `root/docs/ARCHITECTURE.md` and applies [`check_external_crates`] to its
/// external-crates table.
///
/// A missing or unreadable document, or a table that does not parse, is a violation.
pub fn check_external_doc(root: &Path, metadata: &Metadata) -> Vec<String> {
    let markdown = match fs::read_to_string(root.join(ARCHITECTURE_DOC)) {
        Ok(markdown) => markdown,
        Err(error) => {
            return vec![format!(
                "cannot read {ARCHITECTURE_DOC} ({error}); it must hold the table of the \
                 external crates each layer may use"
            )];
        }
    };
    match parse_external_table(&markdown) {
        Ok(rows) => check_external_crates(metadata, &rows),
        Err(message) => vec![message],
    }
}

/// Returns whether `row` allows its crates to `package` by role, and to `dependency` by
/// being optional.
fn applies_to(row: &ExternalRow, package: &Package, dependency: &Dependency) -> bool {
    (!row.adapters_only || package.has_role(Role::Adapter))
        && (!row.optional_only || dependency.optional)
}

/// The message for a dependency on `name` that no row allows to `package`.
fn not_allowed(package: &Package, layer: i64, name: &str, rows: &[ExternalRow]) -> String {
    let listed: Vec<&ExternalRow> = rows
        .iter()
        .filter(|row| row.crates.iter().any(|krate| krate.name == name))
        .collect();
    let why = if listed.is_empty() {
        format!("{ARCHITECTURE_DOC} allows it at no layer")
    } else if listed.iter().all(|row| row.adapters_only) {
        format!("{ARCHITECTURE_DOC} allows it to adapters (role = \"adapter\") only")
    } else if listed
        .iter()
        .filter(|row| row.layer <= layer && !row.adapters_only)
        .all(|row| row.optional_only)
        && listed
            .iter()
            .any(|row| row.layer <= layer && row.optional_only)
    {
        format!(
            "{ARCHITECTURE_DOC} allows it at this layer as an optional dependency only; \
             make it `optional = true`, turned on by a feature"
        )
    } else {
        let lowest = listed
            .iter()
            .filter(|row| !row.adapters_only)
            .map(|row| row.layer)
            .min()
            .unwrap_or_default();
        format!("{ARCHITECTURE_DOC} allows it from layer {lowest}")
    };
    format!(
        "{} (layer {layer}) depends on the external crate {name}: {why}",
        package.name
    )
}

/// Parses a crate cell: `none`, or `` `a` (`f`, `g`), `b` ``.
fn parse_crates(cell: &str) -> Result<Vec<ExternalCrate>, String> {
    let cell = cell.trim();
    if cell.is_empty() || cell == "none" {
        return Ok(Vec::new());
    }
    let mut crates = Vec::new();
    let mut rest = cell;
    loop {
        let (name, after) =
            backticked(rest).ok_or_else(|| format!("expected a crate at {rest:?}"))?;
        rest = after.trim_start();
        let features = match rest.strip_prefix('(') {
            None => None,
            Some(inner) => {
                let (list, after) = inner
                    .split_once(')')
                    .ok_or_else(|| format!("the features of {name} are not closed by `)`"))?;
                rest = after.trim_start();
                let features = list
                    .split(',')
                    .map(|feature| {
                        backticked(feature.trim())
                            .filter(|(_, after)| after.is_empty())
                            .map(|(feature, _)| feature.to_owned())
                            .ok_or_else(|| {
                                format!("a feature of {name} is {feature:?}, not `feature`")
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Some(features)
            }
        };
        crates.push(ExternalCrate {
            name: name.to_owned(),
            features,
        });
        match rest.strip_prefix(',') {
            Some(after) => rest = after.trim_start(),
            None if rest.is_empty() => return Ok(crates),
            None => return Err(format!("unexpected {rest:?} after {name}")),
        }
    }
}

/// Splits `` `name` rest `` into a non-empty `name` and the rest.
fn backticked(text: &str) -> Option<(&str, &str)> {
    let (name, rest) = text.strip_prefix('`')?.split_once('`')?;
    (!name.is_empty()).then_some((name, rest))
}
