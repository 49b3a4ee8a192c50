//! The admin dashboard of a service under synthetic traffic: orders through a command bus,
//! card charges through a circuit breaker in front of a gateway that goes down for the
//! last third of every 30 s (`--outage-cycle`), and a revenue projection with a dead letter now and then.
//!
//! ```text
//! cargo run --example admin                      # serves http://127.0.0.1:9180/ until Ctrl-C
//! cargo run --example admin -- --port 0 --seconds 20 --token s3cret
//! ```
//!
//! With a token, open the printed address: it carries the token in its fragment
//! (`/#token=…`), which the page sends with its requests and the browser never sends to
//! the server.

use std::process::ExitCode;
use std::time::Duration;

use flext_examples::admin_demo::Shop;
use flext_handlers::CQRS::RunHandle;
use flext_handlers::admin::ServeConfig;
use flext_handlers::prelude::*;

struct Options {
    port: u16,
    seconds: Option<u64>,
    token: Option<String>,
    rate: u32,
    cycle: u64,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        port: flext_handlers::admin::DEFAULT_PORT,
        seconds: None,
        token: None,
        rate: 50,
        cycle: 30,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => {
                options.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--seconds" => {
                options.seconds = Some(
                    value("--seconds")?
                        .parse()
                        .map_err(|e| format!("--seconds: {e}"))?,
                )
            }
            "--token" => options.token = Some(value("--token")?),
            "--rate" => {
                options.rate = value("--rate")?
                    .parse()
                    .map_err(|e| format!("--rate: {e}"))?
            }
            "--outage-cycle" => {
                options.cycle = value("--outage-cycle")?
                    .parse()
                    .map_err(|e| format!("--outage-cycle: {e}"))?
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
                "{problem}\nusage: admin [--port P] [--seconds S] [--token T] [--rate ORDERS_PER_SECOND] [--outage-cycle SECONDS]"
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

/// `text` with every byte but letters, digits and `-._~` as `%XX`, for a URL's fragment.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn run(options: Options) -> FlextResult<()> {
    let shop = std::sync::Arc::new(Shop::new(Duration::from_secs(options.cycle))?);
    let mut admin = shop.admin();
    if let Some(token) = &options.token {
        admin = admin.with_token(token.clone())?;
    }
    let server = admin.serve(ServeConfig::local(options.port)).await?;
    let fragment = options
        .token
        .as_ref()
        .map_or(String::new(), |t| format!("#token={}", percent_encoded(t)));
    println!("Admin dashboard: {}{fragment}", server.url());

    let projection = RunHandle::spawn(shop.runner.clone())?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let traffic = {
        let shop = shop.clone();
        let rate = options.rate;
        tokio::spawn(async move { shop.traffic(rate, stopped).await })
    };
    match options.seconds {
        Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    let _ = stop.send(true);
    let (placed, failed) = traffic
        .await
        .map_err(|e| FlextError::operation(format!("the traffic task ended: {e}")))?;
    projection.shutdown().await?;
    let status = shop.runner.status().await?;
    println!("Orders placed: {placed}; card charges failed: {failed}");
    println!("Breaker 'payments': {}", shop.breaker.state());
    println!(
        "Projection 'revenue': position {}, lag {}, dead letters {}; revenue {:.2}",
        status.position,
        status.lag,
        status.dead_letters,
        shop.revenue.cents() as f64 / 100.0
    );
    server.shutdown().await
}
