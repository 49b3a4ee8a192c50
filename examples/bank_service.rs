//! The flagship service: bank accounts over HTTP, the way the README recommends building a
//! service with flext-handlers (see `examples/src/bank/`).
//!
//! ```text
//! cargo run --example bank_service                          # bank.db, http://127.0.0.1:8080
//! cargo run --example bank_service -- --store sqlite:/tmp/b.db --port 0
//! cargo run --example bank_service -- --store 'postgres://postgres@127.0.0.1/test#bank'
//! curl -X POST localhost:8080/accounts -H 'content-type: application/json' \
//!      -d '{"id": "acc-1", "owner": "Ada"}'
//! curl -X POST localhost:8080/accounts/acc-1/deposits -H 'content-type: application/json' \
//!      -d '{"amount": 50000}'
//! curl localhost:8080/accounts/acc-1
//! ```
//!
//! Withdrawals ask a (simulated) fraud service, which holds those over 1 000.00 for
//! review; withdrawals of 100.00 or more notify the owner (`GET /notifications`).

use std::process::ExitCode;
use std::sync::Arc;

use flext_examples::bank::api::router;
use flext_examples::bank::domain::SimulatedFraud;
use flext_examples::bank::service::Bank;
use flext_examples::store_choice::StoreChoice;
use flext_handlers::prelude::*;

struct Options {
    store: StoreChoice,
    port: u16,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        store: StoreChoice::Sqlite("bank.db".to_owned()),
        port: 8080,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--store" => {
                options.store =
                    StoreChoice::parse(&value("--store")?).map_err(|e| e.to_string())?;
            }
            "--port" => {
                options.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(problem) => {
            eprintln!(
                "{problem}\nusage: bank_service [--store sqlite:PATH|postgres:URL[#SCHEMA]] [--port PORT]"
            );
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error} ({})", error.code());
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> FlextResult<()> {
    let fraud = Arc::new(SimulatedFraud::new(100_000));
    let bank = Arc::new(match &options.store {
        StoreChoice::Sqlite(path) => Bank::open(path, fraud).await?,
        StoreChoice::Postgres { url, schema } => Bank::open_postgres(url, schema, fraud).await?,
        StoreChoice::Memory => {
            return Err(FlextError::validation(
                "the bank keeps its balances in the store's database: use --store sqlite:PATH \
                 or --store postgres:URL[#SCHEMA]",
            ));
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
        .await
        .map_err(|e| {
            FlextError::unavailable(format!("cannot listen on port {}: {e}", options.port))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| FlextError::unavailable(format!("no local address: {e}")))?;
    println!(
        "Bank API: http://{addr}/accounts (store {:?})",
        options.store
    );
    axum::serve(listener, router(bank.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| FlextError::operation(format!("the server failed: {e}")))?;
    match Arc::try_unwrap(bank) {
        Ok(bank) => bank.shutdown().await,
        Err(_) => {
            eprintln!("a request still holds the bank: its runners stop without a checkpoint");
            Ok(())
        }
    }
}
