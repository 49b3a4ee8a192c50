//! Run with `FLEXT_EXAMPLE_POSTGRES_URL=postgres://postgres@127.0.0.1/test cargo run
//! --example replicas` (or `-- --url postgres://…`; `FLEXT_TEST_POSTGRES_URL` is read too).
//! Without a PostgreSQL server it says what it needs and does nothing.
//!
//! Three replicas of one small service share one PostgreSQL schema: each deposits to a few
//! accounts, starts a payout saga now and then, and runs two projections (balances, exactly
//! once; a ledger of every event, at least once) whenever it holds the projection's lease.
//! The program starts the three (itself, run again with `--replica N`), shows who owns each
//! lease, stops the owner of the balances on the spot (SIGKILL), and shows the lease moving
//! to another replica within the lease's TTL (1.5 s here). Then it lets the others catch
//! up, stops them and drops its schema. The service is `examples/src/replicas.rs`.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use flext_examples::replicas::{
    BALANCES, LEDGER, ReplicaOptions, drop_schema, payout_saga, prepare, read_balances,
    serve_from_stdin,
};
use flext_handlers::prelude::*;
use flext_handlers::stores::{PostgresEventStore, PostgresStoreOptions, redact};

/// How many replicas the program starts.
const REPLICAS: usize = 3;

/// The program's arguments: `--url URL`, and, in a replica, `--replica N --schema S`.
#[derive(Debug, Default)]
struct Args {
    url: Option<String>,
    replica: Option<usize>,
    schema: Option<String>,
}

impl Args {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--url" => parsed.url = Some(value()?),
                "--schema" => parsed.schema = Some(value()?),
                "--replica" => {
                    let n = value()?;
                    parsed.replica = Some(
                        n.parse()
                            .map_err(|_| format!("--replica {n:?}: not a number"))?,
                    );
                }
                _ => {
                    return Err(format!(
                        "unknown argument {arg:?}; the flags are --url URL (and, for a replica, --replica N --schema S)"
                    ));
                }
            }
        }
        Ok(parsed)
    }
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
    let url = args.url.clone().or_else(|| {
        ["FLEXT_EXAMPLE_POSTGRES_URL", "FLEXT_TEST_POSTGRES_URL"]
            .iter()
            .find_map(|name| std::env::var(name).ok())
    });
    let Some(url) = url else {
        println!(
            "This example runs three replicas on one PostgreSQL database: set \
             FLEXT_EXAMPLE_POSTGRES_URL (or pass --url postgres://…) to run it. Nothing was run."
        );
        return;
    };
    if let Some(n) = args.replica {
        let Some(schema) = args.schema else {
            eprintln!("--replica needs --schema");
            std::process::exit(2);
        };
        let options = ReplicaOptions::new(url, schema, format!("replica-{n}"));
        if let Err(error) = serve_from_stdin(options).await {
            eprintln!("replica-{n}: {error}");
            std::process::exit(1);
        }
        return;
    }
    let schema = format!("replicas_demo_{}", std::process::id());
    let result = demo(&url, &schema).await;
    // The schema goes whatever happened; the replicas were stopped by then.
    match drop_schema(&url, &schema).await {
        Ok(()) => println!("\nSchema {schema} dropped."),
        Err(error) => eprintln!("could not drop schema {schema}: {error}"),
    }
    if let Err(error) = result {
        eprintln!("the demonstration failed: {error}");
        std::process::exit(1);
    }
}

/// The replicas this program started; each is killed and reaped when dropped, if it still
/// runs.
struct Replicas(Vec<Replica>);

/// One started replica.
struct Replica {
    label: String,
    process: Child,
    /// Its controls: a `quiesce` line stops its commands; closing it stops the replica.
    controls: Option<ChildStdin>,
}

impl Replicas {
    fn start(url: &str, schema: &str) -> FlextResult<Self> {
        let exe = std::env::current_exe()
            .map_err(|e| FlextError::operation(format!("cannot find this program: {e}")))?;
        let mut replicas = Self(Vec::new());
        for n in 1..=REPLICAS {
            let mut process = Command::new(&exe)
                .args(["--replica", &n.to_string(), "--schema", schema])
                // In the environment, not the arguments, which any user can list with `ps`.
                .env("FLEXT_EXAMPLE_POSTGRES_URL", url)
                .stdin(Stdio::piped())
                .spawn()
                .map_err(|e| FlextError::operation(format!("cannot start replica-{n}: {e}")))?;
            let controls = process.stdin.take();
            replicas.0.push(Replica {
                label: format!("replica-{n}"),
                process,
                controls,
            });
        }
        Ok(replicas)
    }

    fn by_label(&mut self, label: &str) -> Option<&mut Replica> {
        self.0.iter_mut().find(|r| r.label == label)
    }

    /// Tells every replica still running to stop sending commands.
    fn quiesce(&mut self) {
        for replica in &mut self.0 {
            if let Some(controls) = &mut replica.controls {
                let _ = writeln!(controls, "quiesce");
            }
        }
    }

    /// Stops every replica (each gives its leases up) and waits up to 10 s for each.
    async fn stop(&mut self) {
        for replica in &mut self.0 {
            replica.controls = None;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for replica in &mut self.0 {
            while matches!(replica.process.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for replica in &mut self.0 {
            let _ = replica.process.kill();
            let _ = replica.process.wait();
        }
    }
}

/// The label of a lease's owner (`replica-2 (pid …)` is `replica-2`).
fn label_of(owner: &str) -> &str {
    owner.split(" (").next().unwrap_or(owner)
}

/// The owners of both leases, once both have one (waiting up to `within`).
async fn owners(
    store: &PostgresEventStore,
    within: Duration,
) -> FlextResult<Option<(String, String)>> {
    let deadline = Instant::now() + within;
    loop {
        let balances = store.projection_status(BALANCES).await?.owner;
        let ledger = store.projection_status(LEDGER).await?.owner;
        if let (Some(b), Some(l)) = (&balances, &ledger) {
            return Ok(Some((label_of(b).to_owned(), label_of(l).to_owned())));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn print_status(store: &PostgresEventStore) -> FlextResult<()> {
    for name in [BALANCES, LEDGER] {
        let status = store.projection_status(name).await?;
        println!(
            "   {name:<8} owner {:<10} checkpoint {:>20}  head {:>20}  {} behind",
            status.owner.as_deref().map_or("none", label_of),
            status.position,
            status.head,
            status.behind
        );
    }
    Ok(())
}

async fn demo(url: &str, schema: &str) -> FlextResult<()> {
    println!("=== Three replicas of one service on one PostgreSQL schema ===");
    println!("   Database: {}, schema {schema}", redact(url));
    let store = PostgresEventStore::connect_with(
        PostgresStoreOptions::new(url)
            .with_schema(schema.to_owned())
            .with_max_connections(3),
    )
    .await?;
    prepare(&store).await?;
    let ttl = ReplicaOptions::new(url, schema, "demo").lease_ttl;

    println!("\n1. Starting {REPLICAS} replicas...");
    let mut replicas = Replicas::start(url, schema)?;
    let Some((balances_owner, ledger_owner)) = owners(&store, Duration::from_secs(20)).await?
    else {
        return Err(FlextError::timeout(
            "no replica took the leases within 20 s",
        ));
    };
    println!("   {BALANCES} is owned by {balances_owner}, {LEDGER} by {ledger_owner}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("\n2. Two seconds later:");
    print_status(&store).await?;

    println!("\n3. Stopping {balances_owner}, the owner of {BALANCES}, on the spot (SIGKILL)...");
    let stopped_at = Instant::now();
    if let Some(owner) = replicas.by_label(&balances_owner) {
        let _ = owner.process.kill();
        let _ = owner.process.wait();
        owner.controls = None;
    }
    let mut moved = Vec::new();
    for (name, before) in [(BALANCES, &balances_owner), (LEDGER, &ledger_owner)] {
        if *before != balances_owner {
            continue;
        }
        let deadline = stopped_at + Duration::from_secs(20);
        let now_owned = loop {
            let owner = store.projection_status(name).await?.owner;
            if let Some(owner) = owner.as_deref().map(label_of)
                && owner != balances_owner
            {
                break owner.to_owned();
            }
            if Instant::now() >= deadline {
                return Err(FlextError::timeout(format!(
                    "lease {name} did not move within 20 s of its owner's death"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        moved.push((name, now_owned, stopped_at.elapsed()));
    }
    for (name, owner, after) in &moved {
        println!(
            "   lease {name} moved from {balances_owner} to {owner} in {:.2} s (lease TTL {:.1} s)",
            after.as_secs_f64(),
            ttl.as_secs_f64()
        );
    }

    println!("\n4. Quiescing the others and letting them catch up...");
    tokio::time::sleep(Duration::from_secs(1)).await;
    replicas.quiesce();
    let saga = payout_saga(&store, Duration::ZERO)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let unfinished = saga.unfinished().await?;
        let behind = store.projection_status(BALANCES).await?.behind
            + store.projection_status(LEDGER).await?.behind;
        if unfinished.is_empty() && behind == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(FlextError::timeout(format!(
                "the replicas did not catch up within 30 s: {} payouts unfinished, {behind} events behind",
                unfinished.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    print_status(&store).await?;
    println!("   Balances:");
    for (account, (balance, deposits, _)) in read_balances(&store).await? {
        println!("     {account}: {deposits} deposits, {balance} cents");
    }

    println!("\n5. Stopping the replicas (each gives its leases up)...");
    replicas.stop().await;
    drop(replicas);
    Ok(())
}
