//! `cargo run -p xtask -- bench-report [--no-run]`: runs every criterion benchmark of the
//! workspace (unless `--no-run`), checks each performance target against the results and
//! writes `docs/PERFORMANCE.md`.

use std::process::ExitCode;

use xtask::perf::{GROWTH, Machine, TARGETS, evaluate, render, render_growth, render_memory};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, flags) = match args.split_first() {
        Some((command, flags)) => (command.as_str(), flags),
        None => ("", &[][..]),
    };
    if command != "bench-report" || flags.iter().any(|flag| flag != "--no-run") {
        eprintln!("usage: cargo run -p xtask -- bench-report [--no-run]");
        return ExitCode::from(2);
    }
    let root = xtask::workspace_root();
    if flags.is_empty() {
        if std::env::var_os("FLEXT_TEST_POSTGRES_URL").is_none() {
            eprintln!(
                "note: FLEXT_TEST_POSTGRES_URL is not set; the PostgreSQL targets will be \
                 reported as not measured"
            );
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = std::process::Command::new(cargo)
            .args(["bench", "--workspace"])
            .current_dir(&root)
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("cargo bench failed ({status})");
                return ExitCode::FAILURE;
            }
            Err(error) => {
                eprintln!("cannot run cargo bench: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let criterion = root.join("target").join("criterion");
    let outcomes = match TARGETS
        .iter()
        .map(|target| evaluate(&criterion, *target))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(outcomes) => outcomes,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let growth = match GROWTH
        .iter()
        .map(|table| render_growth(&criterion, table))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(growth) => growth,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let memory = match render_memory(&root.join("target").join("flext-memory.json")) {
        Ok(memory) => memory,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let report = render(
        &outcomes,
        &growth,
        memory.as_deref(),
        &Machine::current(&root),
        flags.is_empty(),
    );
    let path = root.join("docs").join("PERFORMANCE.md");
    if let Err(error) = std::fs::write(&path, &report) {
        eprintln!("cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    print!("{report}");
    eprintln!("wrote {}", path.display());
    ExitCode::SUCCESS
}
