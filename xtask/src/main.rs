//! The workspace's tools, run with `cargo run -p xtask -- COMMAND`:
//!
//! - `bench-report [--no-run]`: runs every criterion benchmark of the workspace (unless
//!   `--no-run`), checks each performance target against the results and writes
//!   `docs/PERFORMANCE.md`, keeping its soak section.
//! - `soak [--minutes N | --seconds N] [--store memory|sqlite|postgres] [--workers N]
//!   [--write]`: runs the framework under mixed concurrent load, checking its invariants
//!   as it goes, prints throughput, latencies and verdicts, and exits non-zero on any
//!   violation; `--write` puts its figures in the soak section of `docs/PERFORMANCE.md`.
//!   PostgreSQL comes from `FLEXT_TEST_POSTGRES_URL`. Build it with `--release`.

use std::process::ExitCode;

use xtask::perf::{
    GROWTH, LATENCY_FILE, Machine, TARGETS, evaluate, render, render_growth, render_latency,
    render_memory,
};
use xtask::soak::{SoakArgs, soak_section, with_soak_section};

const USAGE: &str = "usage: cargo run -p xtask -- bench-report [--no-run]\n       \
cargo run --release -p xtask -- soak [--minutes N | --seconds N] \
[--store memory|sqlite|postgres] [--workers N] [--write]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, flags) = match args.split_first() {
        Some((command, flags)) => (command.as_str(), flags),
        None => ("", &[][..]),
    };
    match command {
        "bench-report" if flags.iter().all(|flag| flag == "--no-run") => {
            bench_report(flags.is_empty())
        }
        "soak" => match xtask::soak::parse_args(flags) {
            Ok(args) => soak(&args),
            Err(error) => {
                eprintln!("{error}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn soak(args: &SoakArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = &args.config;
    eprintln!(
        "soak: {} s on {} with {} workers",
        config.duration.as_secs(),
        config.store.name(),
        config.workers
    );
    let report = match runtime.block_on(xtask::soak::run(config, |line| eprintln!("{line}"))) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("the soak could not run: {error}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.render_text());
    if args.write {
        let root = xtask::workspace_root();
        let path = root.join("docs").join("PERFORMANCE.md");
        let now = time::OffsetDateTime::now_utc();
        let date = format!(
            "{}-{:02}-{:02} {:02}:{:02} UTC",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute()
        );
        let section = report.render_markdown(&Machine::current(&root), &date);
        let document = std::fs::read_to_string(&path).unwrap_or_default();
        if let Err(error) = std::fs::write(&path, with_soak_section(&document, Some(&section))) {
            eprintln!("cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote the soak section of {}", path.display());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn bench_report(run: bool) -> ExitCode {
    let root = xtask::workspace_root();
    let mut started = None;
    if run {
        if std::env::var_os("FLEXT_TEST_POSTGRES_URL").is_none() {
            eprintln!(
                "note: FLEXT_TEST_POSTGRES_URL is not set; the PostgreSQL targets will be \
                 reported as not measured"
            );
        }
        if std::env::var_os("FLEXT_TEST_NATS_URL").is_none() {
            eprintln!(
                "note: FLEXT_TEST_NATS_URL is not set; the NATS targets will be reported as \
                 not measured"
            );
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        started = Some(std::time::Instant::now());
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
    let latency = match render_latency(&criterion.join(LATENCY_FILE)) {
        Ok(latency) => latency,
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
        latency.as_deref(),
        memory.as_deref(),
        &Machine::current(&root),
        started.map(|started: std::time::Instant| started.elapsed()),
    );
    let path = root.join("docs").join("PERFORMANCE.md");
    // The soak section is written by `soak --write`: carried over as it is.
    let previous = std::fs::read_to_string(&path).unwrap_or_default();
    let report = with_soak_section(&report, soak_section(&previous));
    if let Err(error) = std::fs::write(&path, &report) {
        eprintln!("cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    print!("{report}");
    eprintln!("wrote {}", path.display());
    ExitCode::SUCCESS
}
