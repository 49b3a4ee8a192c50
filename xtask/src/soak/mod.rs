//! The soak run: `cargo run --release -p xtask -- soak --minutes 10 --store sqlite`. Mixed
//! commands, queries, published events, a projection, a relay and sagas under concurrent
//! load, with the invariants checked every few seconds and at the end; throughput and
//! p50/p99 latencies per operation kind. Not part of CI.
//!
//! - `domain`: the event-sourced account, its command, query and events, the balances read
//!   model and the transfer saga's data.
//! - `driver`: the system wired through the framework's real APIs (`CommandBus` →
//!   `Repository`, `QueryBus`, `EventBus`, `Saga`) and the workers' loop.
//! - `check`: the invariants as a pure [`Checker`], fed at each quiet point.
//! - `stats`: the fixed-size latency [`Histogram`] and resident memory.
//! - `store`: the store to run on ([`StoreKind`]), created fresh and removed at the end.
//! - `report`: the [`SoakReport`], as text and as the section of `docs/PERFORMANCE.md`.
//!
//! A check pauses the workers (they hold a gate shared for each operation; the check
//! takes it alone), reads the log up to its head, waits for the projection and the relay
//! to reach the head, and then compares: the log against the acknowledged commands, the
//! read model against the checker's replay, the relay subscriber's deliveries against
//! the log, the buses' metrics against the driver's counts. Paused, every count is exact
//! and every saga run finished, so nothing is judged half-done.

mod check;
mod domain;
mod driver;
mod quiet;
mod report;
mod stats;
mod store;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flext_handlers::CQRS::{EventRelay, ProjectionRunner};
use flext_handlers::prelude::*;

pub use check::{Ack, Checker};
pub use domain::{
    Account, AccountAction, AccountCommand, AccountEvent, AccountRow, Balances, EVENT_NAMES,
    GetBalance, HEARTBEAT, Heartbeat, ReadModel, Transfer,
};
pub use report::{
    INVARIANTS, KindFigures, SOAK_BEGIN, SOAK_END, SoakReport, soak_section, with_soak_section,
};
pub use stats::{Histogram, OpKind, load_average, resident_bytes, rss_allowance};
pub use store::{POSTGRES_URL_VAR, StoreKind};

use driver::{System, transfer_saga, worker};
use quiet::Quiet;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoakConfig {
    /// How long the load runs.
    pub duration: Duration,
    /// The store.
    pub store: StoreKind,
    /// Concurrent workers.
    pub workers: usize,
}

impl SoakConfig {
    /// The accounts the workers share: two per worker, so that they conflict.
    pub fn accounts(&self) -> usize {
        (self.workers * 2).max(2)
    }

    /// How often the invariants are checked: a quarter of the run, between 250 ms and 5 s.
    pub fn check_every(&self) -> Duration {
        (self.duration / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
    }

    /// The warm-up before the first memory reading: a fifth of the run, at most a minute.
    pub fn warm_up(&self) -> Duration {
        (self.duration / 5).min(Duration::from_secs(60))
    }
}

/// Runs the soak `config` describes and reports it; `progress` gets a line after each
/// check. An error is a failure to run at all (the store cannot be opened, say); what the
/// run finds wrong is in [`SoakReport::violations`].
///
/// The store is removed at the end whether the run succeeds or not; what cannot be
/// removed is a note of the report (or, when the run failed, printed through `progress`).
pub async fn run(config: &SoakConfig, progress: impl Fn(&str)) -> FlextResult<SoakReport> {
    if config.workers == 0 {
        return Err(FlextError::invalid_argument("--workers must be at least 1"));
    }
    let opened = store::open(config.store).await?;
    let result = drive(config, &opened, &progress).await;
    let note = opened.remove();
    match result {
        Ok(mut report) => {
            report.notes.extend(note);
            Ok(report)
        }
        Err(error) => {
            if let Some(note) = note {
                progress(&note);
            }
            Err(error)
        }
    }
}

/// Stops the workers and the runners when dropped: at the end of a run, or when it fails
/// half-way.
struct Stopper {
    system: Arc<System>,
    runners: tokio::sync::watch::Sender<bool>,
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.system.stop.store(true, Ordering::Relaxed);
        let _ = self.runners.send(true);
    }
}

/// The run itself, on the opened store.
async fn drive(
    config: &SoakConfig,
    opened: &store::Opened,
    progress: &impl Fn(&str),
) -> FlextResult<SoakReport> {
    let events = opened.events.clone();
    let system = System::new(events.clone(), config.accounts())?;
    let saga = Arc::new(transfer_saga(events.clone(), &system)?);
    for account in &system.accounts {
        let open = AccountCommand {
            account: account.clone(),
            action: AccountAction::Open,
        };
        system.send(open, None).await?;
    }
    let projection = Arc::new(ProjectionRunner::new(
        events.clone(),
        opened.checkpoints.clone(),
        system.read_model.clone(),
    ));
    let relay = Arc::new(
        EventRelay::<AccountEvent>::new(
            "soak-relay",
            system.events.clone(),
            opened.checkpoints.clone(),
        )
        .for_category(Account::TYPE),
    );
    let relay_runner = Arc::new(ProjectionRunner::new(
        events.clone(),
        opened.checkpoints.clone(),
        relay.clone(),
    ));
    let (stop_runners, stopped) = tokio::sync::watch::channel(false);
    let stopper = Stopper {
        system: system.clone(),
        runners: stop_runners,
    };
    let mut runners = Vec::new();
    for runner in [projection.clone(), relay_runner.clone()] {
        let mut stopped = stopped.clone();
        runners.push(tokio::spawn(async move {
            runner
                .run_until(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        }));
    }

    let load_at_start = load_average();
    let started = Instant::now();
    let workers: Vec<_> = (0..config.workers)
        .map(|n| tokio::spawn(worker(system.clone(), saga.clone(), 0x5eed_0000 + n as u64)))
        .collect();
    let mut checker = Checker::new();
    let mut checks = 0;
    let mut paused = Duration::ZERO;
    let mut rss_start = None;
    let mut rss_last = 0;
    let mut rss_max = 0;
    let quiet = Quiet {
        system: system.clone(),
        events: events.clone(),
        projection: projection.clone(),
        relay_runner: relay_runner.clone(),
        relay: relay.clone(),
    };
    while started.elapsed() < config.duration {
        let left = config.duration.saturating_sub(started.elapsed());
        tokio::time::sleep(config.check_every().min(left)).await;
        paused += quiet.check(&mut checker).await?;
        checks += 1;
        if let Some(rss) = resident_bytes() {
            if rss_start.is_none() && started.elapsed() >= config.warm_up() {
                rss_start = Some(rss);
            }
            rss_last = rss;
            rss_max = rss_max.max(rss);
        }
        progress(&format!(
            "{:>6.1} s: {} events, {} ops, RSS {:.1} MiB, {} violations",
            started.elapsed().as_secs_f64(),
            checker.events(),
            system.counts.sent.load(Ordering::Relaxed)
                + system.counts.queries.load(Ordering::Relaxed)
                + system.counts.published.load(Ordering::Relaxed),
            rss_last as f64 / (1024.0 * 1024.0),
            checker.violations().len()
        ));
    }
    stopper.system.stop.store(true, Ordering::Relaxed);
    for handle in workers {
        if let Err(error) = handle.await {
            checker.violation(format!("a worker panicked: {error}"));
        }
    }
    // The checks' pauses are not load: throughput is over the time the workers ran.
    let elapsed = started.elapsed().saturating_sub(paused);
    paused += quiet.check(&mut checker).await?;
    checks += 1;
    quiet.full_replay(&mut checker).await?;
    drop(stopper);
    for handle in runners {
        match handle.await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => checker.violation(format!("a runner stopped with {error}")),
            Err(error) => checker.violation(format!("a runner panicked: {error}")),
        }
    }

    let rss_not_judged = match (config.store, rss_start) {
        (StoreKind::Memory, _) => Some(
            "the in-memory store keeps every event in this process, so memory grows with the \
             log"
            .to_owned(),
        ),
        (_, None) => Some("the run ended before its warm-up did".to_owned()),
        (_, Some(start)) => {
            if rss_last > start + rss_allowance(start) {
                checker.violation(format!(
                    "resident memory grew from {start} bytes after warm-up to {rss_last} \
                     bytes, beyond the allowance of {} bytes",
                    rss_allowance(start)
                ));
            }
            None
        }
    };
    let latencies = system.latencies();
    let counts = &system.counts;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let report = SoakReport {
        store: config.store.name().to_owned(),
        store_description: opened.description.clone(),
        workers: config.workers,
        accounts: config.accounts(),
        duration: config.duration,
        elapsed,
        paused,
        kinds: OpKind::ALL
            .iter()
            .map(|kind| KindFigures {
                kind: *kind,
                latencies: latencies[kind.index()].clone(),
            })
            .collect(),
        commands_sent: load(&counts.sent),
        conflicts: load(&counts.conflicts),
        refused: load(&counts.refused),
        transfers_completed: load(&counts.transfers_completed),
        transfers_compensated: load(&counts.transfers_compensated),
        resumes: load(&counts.resumes),
        events: checker.events(),
        relayed: load(&counts.relayed),
        checks,
        rss: rss_start.map(|start| (start, rss_last, rss_max)),
        load_average: load_at_start.zip(load_average()),
        rss_not_judged,
        violations: checker.violations().to_vec(),
        notes: Vec::new(),
    };
    Ok(report)
}

/// What `soak` was asked: the run, and whether to write its section of
/// `docs/PERFORMANCE.md` (`--write`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoakArgs {
    /// The run.
    pub config: SoakConfig,
    /// Whether to write the section.
    pub write: bool,
}

/// Reads the flags of `soak`: `--minutes N` or `--seconds N` (default one minute),
/// `--store memory|sqlite|postgres` (default `sqlite`), `--workers N` (default 8, at least
/// 1), `--write`. A bad or unknown flag is an error naming it.
pub fn parse_args(flags: &[String]) -> Result<SoakArgs, String> {
    let mut args = SoakArgs {
        config: SoakConfig {
            duration: Duration::from_secs(60),
            store: StoreKind::Sqlite,
            workers: 8,
        },
        write: false,
    };
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        if flag == "--write" {
            args.write = true;
            continue;
        }
        let value = flags
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} {value:?}: expected a whole number above 0"))
        };
        match flag.as_str() {
            "--minutes" => args.config.duration = Duration::from_secs(number()?.saturating_mul(60)),
            "--seconds" => args.config.duration = Duration::from_secs(number()?),
            "--workers" => {
                args.config.workers = usize::try_from(number()?)
                    .ok()
                    .filter(|n| *n <= 1_000)
                    .ok_or_else(|| format!("--workers {value}: at most 1000"))?;
            }
            "--store" => {
                args.config.store = StoreKind::parse(value).ok_or_else(|| {
                    format!("--store {value:?}: expected memory, sqlite or postgres")
                })?;
            }
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    Ok(args)
}
