//! A bank in two processes, each started with one command:
//!
//! ```text
//! FLEXT_EXAMPLE_POSTGRES_URL=postgres://postgres@127.0.0.1/test \
//! FLEXT_EXAMPLE_NATS_URL=nats://127.0.0.1:4222 cargo run --example nats_bank -- writer
//! FLEXT_EXAMPLE_NATS_URL=nats://127.0.0.1:4222 cargo run --example nats_bank -- projector
//! ```
//!
//! The **writer** keeps the accounts in a PostgreSQL event store (schema
//! `example_nats_bank`, or `--schema S`), serves `Deposit` and `Withdraw` to other
//! processes over NATS and relays its events to a JetStream stream. It runs until killed
//! (Ctrl-C), for `--for-secs N`, or, with `--until-stdin-closes`, until its standard input
//! ends. The **projector** sends it a few commands through a local command bus and prints
//! the typed results, a validation error raised on the caller, a business error raised on
//! the writer, and a command retried with the same message id that is one effect; then it
//! consumes the events from JetStream into a read model, prints the balances once they
//! match the writer's answers, and exits.
//!
//! `--run ID` (or `FLEXT_EXAMPLE_RUN_ID`; `demo` by default) names the stream and the
//! subjects, so runs with different ids share nothing on the server; give both processes
//! the same. `--url` and `--nats-url` override the URLs (`FLEXT_TEST_POSTGRES_URL` and
//! `FLEXT_TEST_NATS_URL` are read too). Without the URLs it needs, the program says so and
//! does nothing. The domain is `examples/src/nats_bank.rs`.

use std::time::Duration;

use flext_examples::nats_bank::{
    BankNames, DEFAULT_RUN, DEFAULT_SCHEMA, ProjectorOptions, WriterOptions, run_projector,
    run_writer,
};
use flext_handlers::stores::redact;
use tokio::sync::oneshot;

/// Which process this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Projector,
}

/// The program's arguments.
#[derive(Debug, Default)]
struct Args {
    role: Option<Role>,
    url: Option<String>,
    nats_url: Option<String>,
    schema: Option<String>,
    run: Option<String>,
    for_secs: Option<u64>,
    until_stdin_closes: bool,
}

const USAGE: &str = "usage: nats_bank writer|projector [--run ID] [--url POSTGRES_URL] \
                     [--nats-url NATS_URL] [--schema S] [--for-secs N] [--until-stdin-closes]";

impl Args {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "writer" | "projector" if parsed.role.is_some() => {
                    return Err(format!("{arg:?}: the role is given already\n{USAGE}"));
                }
                "writer" => parsed.role = Some(Role::Writer),
                "projector" => parsed.role = Some(Role::Projector),
                "--url" => parsed.url = Some(value()?),
                "--nats-url" => parsed.nats_url = Some(value()?),
                "--schema" => parsed.schema = Some(value()?),
                "--run" => parsed.run = Some(value()?),
                "--for-secs" => {
                    let n = value()?;
                    parsed.for_secs = Some(
                        n.parse()
                            .map_err(|_| format!("--for-secs {n:?}: not a number of seconds"))?,
                    );
                }
                "--until-stdin-closes" => parsed.until_stdin_closes = true,
                _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
            }
        }
        Ok(parsed)
    }
}

/// The first of `flag` and the environment variables set.
fn setting(flag: Option<String>, variables: &[&str]) -> Option<String> {
    flag.or_else(|| variables.iter().find_map(|name| std::env::var(name).ok()))
}

#[tokio::main]
async fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    };
    let postgres = setting(
        args.url.clone(),
        &["FLEXT_EXAMPLE_POSTGRES_URL", "FLEXT_TEST_POSTGRES_URL"],
    );
    let nats = setting(
        args.nats_url.clone(),
        &["FLEXT_EXAMPLE_NATS_URL", "FLEXT_TEST_NATS_URL"],
    );
    let needs_postgres = args.role != Some(Role::Projector);
    let mut missing = Vec::new();
    if needs_postgres && postgres.is_none() {
        missing.push("FLEXT_EXAMPLE_POSTGRES_URL (or --url postgres://…)");
    }
    if nats.is_none() {
        missing.push("FLEXT_EXAMPLE_NATS_URL (or --nats-url nats://…)");
    }
    if !missing.is_empty() {
        println!(
            "This example runs a bank as two processes: a writer on PostgreSQL and NATS \
             JetStream (`cargo run --example nats_bank -- writer`) and a projector on NATS \
             (`cargo run --example nats_bank -- projector`). Set {} to run it. Nothing was run.",
            missing.join(" and ")
        );
        return;
    }
    let Some(role) = args.role else {
        eprintln!("name the process to run: writer or projector\n{USAGE}");
        std::process::exit(2);
    };
    let run = setting(args.run.clone(), &["FLEXT_EXAMPLE_RUN_ID"])
        .unwrap_or_else(|| DEFAULT_RUN.to_owned());
    let names = match BankNames::new(run) {
        Ok(names) => names,
        Err(error) => {
            eprintln!("--run: {error}");
            std::process::exit(2);
        }
    };
    let nats_url = nats.unwrap_or_default();
    let result = match role {
        Role::Writer => {
            let postgres_url = postgres.unwrap_or_default();
            println!(
                "Writer of run {}: PostgreSQL {}, NATS {}",
                names.run(),
                redact(&postgres_url),
                redact(&nats_url)
            );
            let options = WriterOptions {
                postgres_url,
                schema: args.schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_owned()),
                nats_url,
                names,
            };
            run_writer(options, stop(args.for_secs, args.until_stdin_closes)).await
        }
        Role::Projector => {
            let options = ProjectorOptions {
                nats_url,
                names,
                patience: Duration::from_secs(30),
            };
            run_projector(options).await.map(drop)
        }
    };
    if let Err(error) = result {
        eprintln!("nats_bank: {} {error}", error.code().name());
        std::process::exit(1);
    }
}

/// Completes after `for_secs` seconds, or when standard input ends if
/// `until_stdin_closes`; never when neither is asked for.
async fn stop(for_secs: Option<u64>, until_stdin_closes: bool) {
    let timer = async {
        match for_secs {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    let input = async {
        if !until_stdin_closes {
            return std::future::pending().await;
        }
        let (closed_tx, closed_rx) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut line = String::new();
            while matches!(std::io::stdin().read_line(&mut line), Ok(n) if n > 0) {
                line.clear();
            }
            let _ = closed_tx.send(());
        });
        let _ = closed_rx.await;
    };
    tokio::select! {
        () = timer => {}
        () = input => {}
    }
}
