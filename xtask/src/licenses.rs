//! Rule 12: every package of the resolved graph has a license `deny.toml` allows and comes
//! from a registry `deny.toml` allows, or is a path package of the workspace.
//!
//! `deny.toml` stays the one list: this rule reads its `[licenses] allow` and
//! `[sources] allow-registry` arrays ([`parse_deny_policy`]), so the tidy test and
//! `cargo deny check licenses sources` cannot disagree about what is allowed. A license is
//! an SPDX expression (`MIT OR Apache-2.0`, `(MIT OR Apache-2.0) AND Unicode-3.0`,
//! `Apache-2.0 WITH LLVM-exception`, and the old `MIT/Apache-2.0` spelling of `OR`); it is
//! allowed when the licenses it is satisfied by can all be picked from the allow list.

use std::fs;
use std::path::Path;

use crate::metadata::{Metadata, Package};

/// The path of cargo-deny's configuration, from the workspace root.
pub const DENY_TOML: &str = "deny.toml";

/// What `deny.toml` allows: licenses and registries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyPolicy {
    /// `[licenses] allow`: SPDX license ids, an exception included (`Apache-2.0 WITH
    /// LLVM-exception`).
    pub licenses: Vec<String>,
    /// `[sources] allow-registry`: registry index URLs.
    pub registries: Vec<String>,
}

/// Reads the allowed licenses and registries from the text of `deny.toml`.
///
/// Fails with a message when the text is not TOML or an array is missing or holds
/// something other than strings.
pub fn parse_deny_policy(toml_text: &str) -> Result<DenyPolicy, String> {
    let table: toml::Table = toml_text
        .parse()
        .map_err(|error| format!("{DENY_TOML} is not valid TOML: {error}"))?;
    let strings = |section: &str, key: &str| -> Result<Vec<String>, String> {
        let values = table
            .get(section)
            .and_then(|section| section.get(key))
            .and_then(toml::Value::as_array)
            .ok_or_else(|| format!("{DENY_TOML} has no `[{section}] {key}` array"))?;
        values
            .iter()
            .map(|value| {
                value.as_str().map(str::to_owned).ok_or_else(|| {
                    format!("{DENY_TOML}: `[{section}] {key}` holds {value}, not a string")
                })
            })
            .collect()
    };
    Ok(DenyPolicy {
        licenses: strings("licenses", "allow")?,
        registries: strings("sources", "allow-registry")?,
    })
}

/// Returns whether the SPDX expression `expression` is satisfied by licenses in
/// `allowed`, or a message when it is not a valid expression.
///
/// `OR` needs one side allowed, `AND` both; `AND` binds tighter than `OR`; a `/` between
/// two ids is the old spelling of `OR`. A license with an exception (`A WITH B`) is allowed
/// only when `allowed` lists it whole.
pub fn license_allowed(expression: &str, allowed: &[String]) -> Result<bool, String> {
    let spaced = expression
        .replace('/', " OR ")
        .replace('(', " ( ")
        .replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut parser = Expression {
        tokens: &tokens,
        next: 0,
        allowed,
    };
    let verdict = parser.or()?;
    match parser.tokens.get(parser.next) {
        None => Ok(verdict),
        Some(token) => Err(format!("unexpected {token:?}")),
    }
}

/// Checks the license and the source of every package of `metadata` against `policy`.
///
/// A package without a license expression, with one that is invalid or not allowed, or
/// that is neither a workspace member nor from an allowed registry (a path package outside
/// the workspace is not allowed) is a violation naming the package, its version and what
/// was found.
pub fn check_licenses_and_sources(metadata: &Metadata, policy: &DenyPolicy) -> Vec<String> {
    let mut violations = Vec::new();
    for package in &metadata.packages {
        let name = format!("{} {}", package.name, package.version);
        match package.license.as_deref() {
            None => violations.push(format!(
                "{name}: no `license` expression; every package needs one of the licenses \
                 {DENY_TOML} allows"
            )),
            Some(license) => match license_allowed(license, &policy.licenses) {
                Ok(true) => {}
                Ok(false) => violations.push(format!(
                    "{name}: license {license:?} is not allowed by {DENY_TOML} (allowed: {})",
                    policy.licenses.join(", ")
                )),
                Err(error) => violations.push(format!(
                    "{name}: license {license:?} is not a valid SPDX expression ({error})"
                )),
            },
        }
        let member = metadata.workspace_members.contains(&package.id);
        if !source_allowed(package, member, &policy.registries) {
            violations.push(format!(
                "{name}: source {} is not allowed; packages come from the workspace or from \
                 a registry {DENY_TOML} allows ({})",
                package.source.as_deref().map_or_else(
                    || format!("path {}", package.manifest_path.display()),
                    |source| format!("{source:?}")
                ),
                policy.registries.join(", ")
            ));
        }
    }
    violations
}

/// Reads `root/deny.toml` and applies [`check_licenses_and_sources`] to `graph`, which
/// [`cargo_metadata_graph`](crate::cargo_metadata_graph) returns.
///
/// A missing or unreadable `deny.toml` is a violation.
pub fn check_dependency_policy(root: &Path, graph: &Metadata) -> Vec<String> {
    let text = match fs::read_to_string(root.join(DENY_TOML)) {
        Ok(text) => text,
        Err(error) => return vec![format!("cannot read {DENY_TOML}: {error}")],
    };
    match parse_deny_policy(&text) {
        Ok(policy) => check_licenses_and_sources(graph, &policy),
        Err(message) => vec![message],
    }
}

/// Returns whether `package` is a workspace member (a path package of the workspace) or
/// comes from one of `registries`. A path package outside the workspace is not allowed.
fn source_allowed(package: &Package, member: bool, registries: &[String]) -> bool {
    let Some(source) = package.source.as_deref() else {
        return member;
    };
    ["registry+", "sparse+"].iter().any(|protocol| {
        source
            .strip_prefix(protocol)
            .is_some_and(|url| registries.iter().any(|registry| registry == url))
    })
}

/// A recursive-descent evaluator of an SPDX expression.
struct Expression<'a> {
    tokens: &'a [&'a str],
    next: usize,
    allowed: &'a [String],
}

impl<'a> Expression<'a> {
    /// `or := and ("OR" and)*`
    fn or(&mut self) -> Result<bool, String> {
        let mut verdict = self.and()?;
        while self.eat("OR") {
            // Both sides are parsed, so a malformed right side is reported.
            let right = self.and()?;
            verdict = verdict || right;
        }
        Ok(verdict)
    }

    /// `and := term ("AND" term)*`
    fn and(&mut self) -> Result<bool, String> {
        let mut verdict = self.term()?;
        while self.eat("AND") {
            let right = self.term()?;
            verdict = verdict && right;
        }
        Ok(verdict)
    }

    /// `term := "(" or ")" | id ("WITH" id)?`
    fn term(&mut self) -> Result<bool, String> {
        let token = self.take().ok_or("the expression ends too early")?;
        if token == "(" {
            let verdict = self.or()?;
            return if self.eat(")") {
                Ok(verdict)
            } else {
                Err("a `(` is not closed".to_owned())
            };
        }
        if matches!(token, ")" | "AND" | "OR" | "WITH") {
            return Err(format!("unexpected {token:?}"));
        }
        let license = if self.eat("WITH") {
            let exception = self.take().ok_or("`WITH` names no exception")?;
            format!("{token} WITH {exception}")
        } else {
            token.to_owned()
        };
        Ok(self.allowed.contains(&license))
    }

    fn take(&mut self) -> Option<&'a str> {
        let token = *self.tokens.get(self.next)?;
        self.next += 1;
        Some(token)
    }

    fn eat(&mut self, expected: &str) -> bool {
        let found = self.tokens.get(self.next) == Some(&expected);
        if found {
            self.next += 1;
        }
        found
    }
}
