//! A check at a quiet point: the workers paused, the log read to its head, the projection
//! and the relay caught up, and everything compared.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flext_handlers::CQRS::{EventRelay, ProjectionRunner};
use flext_handlers::prelude::*;

use super::check::Checker;
use super::domain::{AccountEvent, Balances};
use super::driver::{System, wait_for};

/// How long a check waits for the projection and the relay to reach the head.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);
/// Events per read when the checker reads the log.
const READ_BATCH: usize = 1_000;
/// The relay's subscriber.
const AUDITOR: &str = "auditor";

/// What a check looks at.
pub(super) struct Quiet {
    pub(super) system: Arc<System>,
    pub(super) events: Arc<dyn EventStore>,
    pub(super) projection: Arc<ProjectionRunner>,
    pub(super) relay_runner: Arc<ProjectionRunner>,
    pub(super) relay: Arc<EventRelay<AccountEvent>>,
}

impl Quiet {
    /// Pauses the workers and checks every invariant but memory; violations go to
    /// `checker`. Returns how long the workers were paused. An error is a failure to read
    /// the store.
    pub(super) async fn check(&self, checker: &mut Checker) -> FlextResult<Duration> {
        let system = &self.system;
        let _paused = system.gate.write().await;
        let paused = std::time::Instant::now();
        // A store may show a commit to readers a moment after the append returned
        // (PostgreSQL's read barrier waits for every older transaction of the cluster):
        // the log is read once its head has reached every acknowledged append.
        let acked = system.acked_head();
        if !wait_for(acked, CATCH_UP_LIMIT, || self.events.head_position()).await? {
            checker.violation(format!(
                "the store's head stayed short of acknowledged position {acked} for {} s",
                CATCH_UP_LIMIT.as_secs()
            ));
        }
        let head = self.events.head_position().await?;
        while checker.position() < head {
            let batch = self
                .events
                .read_all(checker.position() + 1, READ_BATCH)
                .await?;
            if batch.is_empty() {
                checker.violation(format!(
                    "the store's head is {head}, but reading from {} finds nothing",
                    checker.position() + 1
                ));
                break;
            }
            checker.observe(&batch);
        }
        for (name, runner) in [
            ("the projection", &self.projection),
            ("the relay", &self.relay_runner),
        ] {
            if !wait_for(head, CATCH_UP_LIMIT, || runner.position()).await? {
                checker.violation(format!(
                    "{name} is at position {} {} s after the head reached {head}",
                    runner.position().await?,
                    CATCH_UP_LIMIT.as_secs()
                ));
            }
            let letters = runner.dead_letters().await?;
            if !letters.is_empty() {
                checker.violation(format!("{name} has {} dead letters", letters.len()));
            }
        }
        let letters = self.relay.dead_letters(AUDITOR).await?;
        if !letters.is_empty() {
            checker.violation(format!(
                "the relay's subscriber has {} dead letters",
                letters.len()
            ));
        }
        for error in system.read_model.take_errors() {
            checker.violation(format!("read model: {error}"));
        }
        let model = system.read_model.balances();
        if let Some(difference) = model.difference(checker.replay()) {
            checker.violation(format!(
                "at position {head} the read model differs from the replay: {difference}"
            ));
        }
        let (acks, delivered) = system.drain();
        checker.settle(&acks, &delivered);
        for error in system.take_errors() {
            checker.violation(error);
        }
        self.check_metrics(checker);
        let counts = &system.counts;
        let deposited = counts.deposited.load(Ordering::Relaxed);
        let withdrawn = counts.withdrawn.load(Ordering::Relaxed);
        let total = checker.replay().total();
        if deposited.checked_sub(withdrawn) != Some(total) {
            checker.violation(format!(
                "money is not conserved: the accounts hold {total}, the driver deposited \
                 {deposited} and withdrew {withdrawn}"
            ));
        }
        Ok(paused.elapsed())
    }

    /// Compares the buses' metric totals with the driver's counts.
    fn check_metrics(&self, checker: &mut Checker) {
        let system = &self.system;
        let counts = &system.counts;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let commands = system.commands.metrics();
        let queries = system.queries.metrics();
        let events = system.events.metrics();
        let pairs = [
            (
                "commands processed",
                commands.commands_processed,
                load(&counts.sent),
            ),
            (
                "successful commands",
                commands.successful_commands,
                load(&counts.succeeded),
            ),
            (
                "failed commands",
                commands.failed_commands,
                load(&counts.failed),
            ),
            (
                "queries processed",
                queries.queries_processed,
                load(&counts.queries),
            ),
            ("failed queries", queries.failed_queries, 0),
            (
                "events published",
                events.events_published,
                load(&counts.published),
            ),
            (
                "deliveries",
                events.deliveries,
                load(&counts.heartbeats_delivered) + load(&counts.relayed),
            ),
            ("failed deliveries", events.failed_deliveries, 0),
        ];
        for (name, metric, counted) in pairs {
            if metric != counted {
                checker.violation(format!(
                    "metrics: {name} is {metric}, the driver counted {counted}"
                ));
            }
        }
    }

    /// Replays the whole log from its first event into fresh balances and compares them
    /// with the read model and with the checker's running replay.
    pub(super) async fn full_replay(&self, checker: &mut Checker) -> FlextResult<()> {
        let mut fresh = Balances::default();
        let mut from = 1;
        loop {
            let batch = self.events.read_all(from, READ_BATCH).await?;
            for event in &batch {
                if let Err(error) = fresh.apply(event) {
                    checker.violation(format!("full replay: {error}"));
                }
            }
            match batch.last() {
                Some(last) if batch.len() == READ_BATCH => from = last.position + 1,
                _ => break,
            }
        }
        let model = self.system.read_model.balances();
        if let Some(difference) = model.difference(&fresh) {
            checker.violation(format!(
                "the read model differs from a full replay of the store: {difference}"
            ));
        }
        if let Some(difference) = checker.replay().difference(&fresh) {
            checker.violation(format!(
                "the checker's replay differs from a full replay of the store: {difference}"
            ));
        }
        Ok(())
    }
}
