# Thin wrappers over cargo; `just ci` runs what CI runs.

# Lists the recipes.
default:
    @just --list

# Runs every test, the tidy tests of xtask included.
test:
    cargo test --workspace

# Runs clippy on every target, warnings as errors, as CI does.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Builds the API docs, warnings as errors, as CI does.
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# Runs the benchmarks.
bench:
    cargo bench --workspace

# Checks bans, licenses and sources (the advisories database cannot be reached here).
deny:
    cargo deny check bans licenses sources

# Formats every crate.
fmt:
    cargo fmt --all

# Runs CI's script: services, format, clippy, tests, docs.
ci:
    bash .ci/run

# Runs every benchmark and writes docs/PERFORMANCE.md (targets, ratios, the machine).
bench-report:
    cargo run -p xtask -- bench-report

# Runs the soak: mixed load for ten minutes on SQLite, invariants checked as it goes, and
# writes its figures into docs/PERFORMANCE.md.
soak store="sqlite" minutes="10":
    cargo run --release -p xtask -- soak --minutes {{minutes}} --store {{store}} --write
