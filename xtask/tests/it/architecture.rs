//! Rule 8 on fixtures: the layer table of ARCHITECTURE.md (layers and roles) against the
//! clean metadata.

use xtask::{LayerRow, check_architecture_table, parse_layer_table};

use crate::{assert_clean, assert_one_naming, clean_document, parse};

/// A document shaped like ARCHITECTURE.md whose table matches the clean fixture.
const CLEAN: &str = "\
# Architecture

| Command | What it does |
| --- | --- |
| `just ci` | runs CI |

## Crates

| Crate | Layer | Role | Owns |
|:------|------:|------|------|
| `flext-constants` | 10 | | limits, enums |
| `flext-types` | 20 | | errors |
| [`flext-protocols`](../crates/flext-protocols) | 30 | | traits |
| **flext-impl** | 40 | | handlers |
| `flext-store-sqlite` | 45 | adapter | SQLite |
| `flext-store-postgres` | 45 | adapter | PostgreSQL |
| `flext-bus-nats` | 45 | adapter | NATS |
| `flext-cqrs` | 50 | | buses |
| `flext-testing` | 80 | testing | test kit |
| `flext-handlers` | 90 | facade | re-exports |
| `flext-examples` | 100 | | examples |
| xtask | 100 | | tidy tests |

Text after the table.
";

fn rows(markdown: &str) -> Vec<LayerRow> {
    parse_layer_table(markdown).expect("the table parses")
}

#[test]
fn parser_finds_the_table_with_crate_and_layer_columns() {
    let rows = rows(CLEAN);
    assert_eq!(rows.len(), 12);
    assert_eq!(
        rows[0],
        LayerRow {
            krate: "flext-constants".to_owned(),
            layer: 10,
            role: None,
        }
    );
    assert_eq!(rows[2].krate, "flext-protocols");
    assert_eq!(rows[3].krate, "flext-impl");
    assert_eq!(rows[4].role.as_deref(), Some("adapter"));
    assert_eq!(rows[9].role.as_deref(), Some("facade"));
    assert_eq!(rows[11].krate, "xtask");
}

#[test]
fn parser_accepts_columns_in_any_order_and_case() {
    let markdown = "|LAYER|crate|\n|-|-|\n|20|`flext-types`|\n";
    assert_eq!(
        rows(markdown),
        [LayerRow {
            krate: "flext-types".to_owned(),
            layer: 20,
            role: None,
        }]
    );
}

#[test]
fn parser_rejects_a_document_without_the_table() {
    let error = parse_layer_table("# Architecture\n\n| crate | owns |\n|---|---|\n| a | b |\n")
        .expect_err("no layer column");
    assert!(error.contains("`crate` and a `layer` column"), "{error}");
}

#[test]
fn parser_rejects_a_non_integer_layer() {
    let error = parse_layer_table("| crate | layer |\n|---|---|\n| `flext-types` | twenty |\n")
        .expect_err("not an integer");
    assert!(
        error.contains("flext-types") && error.contains("twenty"),
        "{error}"
    );
}

#[test]
fn clean_table_passes() {
    assert_clean(&check_architecture_table(&parse(&clean_document()), CLEAN));
}

#[test]
fn missing_crate_is_named_with_its_layer() {
    let markdown = CLEAN.replace("| `flext-cqrs` | 50 | | buses |\n", "");
    let violations = check_architecture_table(&parse(&clean_document()), &markdown);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(&violations, &["flext-cqrs", "layer 50", "missing"]);
}

#[test]
fn extra_row_is_named() {
    let markdown = CLEAN.replace(
        "| `flext-cqrs` | 50 | | buses |\n",
        "| `flext-cqrs` | 50 | | buses |\n| `flext-patterns` | 60 | | patterns |\n",
    );
    let violations = check_architecture_table(&parse(&clean_document()), &markdown);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_one_naming(
        &violations,
        &["flext-patterns", "60", "not a workspace member"],
    );
}

#[test]
fn layer_mismatch_names_the_crate_and_both_layers() {
    let markdown = CLEAN.replace("| `flext-types` | 20 |", "| `flext-types` | 25 |");
    let violations = check_architecture_table(&parse(&clean_document()), &markdown);
    assert_eq!(
        violations,
        ["flext-types: docs/ARCHITECTURE.md gives layer 25, its manifest gives layer 20"]
    );
}

#[test]
fn duplicate_row_is_named() {
    let markdown = CLEAN.replace(
        "| xtask | 100 | | tidy tests |\n",
        "| xtask | 100 | | tidy tests |\n| `xtask` | 100 | | again |\n",
    );
    let violations = check_architecture_table(&parse(&clean_document()), &markdown);
    assert_one_naming(&violations, &["xtask", "twice"]);
}

#[test]
fn document_without_a_table_is_one_violation() {
    let violations = check_architecture_table(&parse(&clean_document()), "# Architecture\n");
    assert_eq!(violations.len(), 1, "{violations:?}");
}

#[test]
fn role_missing_from_the_table_names_the_crate_and_both_roles() {
    let markdown = CLEAN.replace(
        "| `flext-store-sqlite` | 45 | adapter |",
        "| `flext-store-sqlite` | 45 | |",
    );
    let violations = check_architecture_table(&parse(&clean_document()), &markdown);
    assert_eq!(
        violations,
        [
            "flext-store-sqlite: docs/ARCHITECTURE.md gives role none, its manifest gives role \
             \"adapter\""
        ]
    );
}

#[test]
fn role_missing_from_the_manifest_names_the_crate_and_both_roles() {
    let markdown = CLEAN.replace("| `flext-cqrs` | 50 | |", "| `flext-cqrs` | 50 | testing |");
    let violations = check_architecture_table(&parse(&clean_document()), &markdown);
    assert_eq!(
        violations,
        [
            "flext-cqrs: docs/ARCHITECTURE.md gives role \"testing\", its manifest gives role \
             none"
        ]
    );
}

#[test]
fn differing_role_is_named() {
    let markdown = CLEAN.replace(
        "| `flext-handlers` | 90 | facade |",
        "| `flext-handlers` | 90 | `adapter` |",
    );
    let violations = check_architecture_table(&parse(&clean_document()), &markdown);
    assert_one_naming(
        &violations,
        &["flext-handlers", "\"adapter\"", "\"facade\""],
    );
    assert_eq!(violations.len(), 1, "{violations:?}");
}

#[test]
fn table_without_a_role_column_names_every_crate_with_a_role() {
    // The clean table with its third column, the role, removed.
    let markdown: String = CLEAN
        .lines()
        .map(|line| {
            let mut cells: Vec<&str> = line.split('|').collect();
            if cells.len() == 6 {
                cells.remove(3);
            }
            cells.join("|") + "\n"
        })
        .collect();
    let violations = check_architecture_table(&parse(&clean_document()), &markdown);
    assert_eq!(violations.len(), 5, "{violations:?}");
    assert_one_naming(&violations, &["flext-handlers", "role none", "\"facade\""]);
    assert_one_naming(&violations, &["flext-testing", "role none", "\"testing\""]);
}
