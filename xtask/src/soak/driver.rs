//! The system under load and the driver's side of it: the buses, repository, read model
//! and transfer saga wired as a user would, what the driver counts, and the workers'
//! loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flext_handlers::CQRS::{CommandBus, EventBus, QueryBus, RepositoryConfig};
use flext_handlers::Patterns::{Saga, SagaStatus};
use flext_handlers::prelude::*;
use tokio::sync::RwLock;
use uuid::Uuid;

use super::check::Ack;
use super::domain::{
    Account, AccountAction, AccountCommand, AccountEvent, EVENT_NAMES, GetBalance, HEARTBEAT,
    Heartbeat, ReadModel, Transfer,
};
use super::stats::{Histogram, OpKind};

/// How often a saga run is resumed at most when its refund keeps failing.
const MAX_RESUMES: u32 = 5;
/// How often the driver sends a command again after a `CONCURRENCY_CONFLICT`.
const MAX_CONFLICT_RETRIES: u32 = 20;

/// What the driver counted, to compare with the buses' metrics and the store.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Commands sent (every try, retries included).
    pub(super) sent: AtomicU64,
    /// Commands that succeeded.
    pub(super) succeeded: AtomicU64,
    /// Commands that failed (conflicts, refusals).
    pub(super) failed: AtomicU64,
    /// Conflicts the driver retried.
    pub(super) conflicts: AtomicU64,
    /// Withdrawals refused for insufficient funds.
    pub(super) refused: AtomicU64,
    /// Queries executed.
    pub(super) queries: AtomicU64,
    /// Heartbeats published.
    pub(super) published: AtomicU64,
    /// Heartbeats delivered to their subscriber.
    pub(super) heartbeats_delivered: AtomicU64,
    /// Relayed events delivered to the auditor.
    pub(super) relayed: AtomicU64,
    /// Transfers completed.
    pub(super) transfers_completed: AtomicU64,
    /// Transfers compensated (credit refused, or the debit itself refused).
    pub(super) transfers_compensated: AtomicU64,
    /// Saga resumes after a failed refund.
    pub(super) resumes: AtomicU64,
    /// Money put in by the driver's own deposits.
    pub(super) deposited: AtomicU64,
    /// Money taken out by the driver's own withdrawals.
    pub(super) withdrawn: AtomicU64,
}

/// The system under load and what the driver keeps about it.
pub(super) struct System {
    /// Carries [`AccountCommand`]s to the repository.
    pub(super) commands: CommandBus,
    /// Answers [`GetBalance`] from the read model.
    pub(super) queries: QueryBus,
    /// Carries heartbeats, and the relay's deliveries to the auditor.
    pub(super) events: Arc<EventBus>,
    /// The read model.
    pub(super) read_model: Arc<ReadModel>,
    /// What the driver counted.
    pub(super) counts: Counts,
    /// The acknowledged commands since the last quiet point.
    pub(super) acks: Mutex<Vec<Ack>>,
    /// The event ids the auditor got since the last quiet point, with how often.
    pub(super) delivered: Mutex<HashMap<Uuid, u32>>,
    /// Violations a worker saw (an unexpected error).
    pub(super) errors: Mutex<Vec<String>>,
    /// Workers hold it shared for each operation; the checker takes it alone, so it sees
    /// the system quiet.
    pub(super) gate: RwLock<()>,
    /// Latencies per operation kind.
    pub(super) latencies: Mutex<Vec<Histogram>>,
    /// Refunds that already failed once (their saga ids).
    refunds_failed: Mutex<std::collections::HashSet<String>>,
    /// The accounts' ids.
    pub(super) accounts: Vec<String>,
    /// Set when the workers are to stop.
    pub(super) stop: AtomicBool,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("counts", &self.counts)
            .field("accounts", &self.accounts.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl System {
    /// Wires the system on `store` with `accounts` accounts.
    pub(super) fn new(store: Arc<dyn EventStore>, accounts: usize) -> FlextResult<Arc<Self>> {
        // No conflict retry inside the repository, so that conflicts reach the
        // driver, which sends the command again as a client would.
        let repository = Arc::new(
            Repository::<Account>::new(store)
                .with_config(RepositoryConfig::default().with_max_conflict_retries(0)),
        );
        let mut commands = CommandBus::new();
        commands.register_fn(move |command: AccountCommand| {
            let repository = repository.clone();
            async move {
                let executed = repository.execute(&command.account, command.action).await?;
                Ok(executed.append)
            }
        })?;
        let read_model = Arc::new(ReadModel::default());
        let mut queries = QueryBus::new();
        let read = read_model.clone();
        queries.register_fn(move |query: GetBalance| {
            let balance = read.balance(&query.account);
            async move { Ok(balance) }
        })?;
        let system = Arc::new(Self {
            commands,
            queries,
            events: Arc::new(EventBus::new()),
            read_model,
            counts: Counts::default(),
            acks: Mutex::default(),
            delivered: Mutex::default(),
            errors: Mutex::default(),
            gate: RwLock::new(()),
            latencies: Mutex::new(vec![Histogram::new(); OpKind::ALL.len()]),
            refunds_failed: Mutex::default(),
            accounts: (0..accounts.max(2)).map(|n| format!("acc{n}")).collect(),
            stop: AtomicBool::new(false),
        });
        for name in EVENT_NAMES {
            let weak = Arc::downgrade(&system);
            system.events.subscribe(
                name,
                handler_fn("auditor", move |_: Arc<Envelope<AccountEvent>>| {
                    let system = weak.upgrade();
                    async move {
                        let (Some(system), Some(message)) =
                            (system, flext_handlers::CQRS::current_metadata())
                        else {
                            return Err(FlextError::operation("the auditor has no message"));
                        };
                        *lock(&system.delivered)
                            .entry(message.message_id)
                            .or_insert(0) += 1;
                        system.counts.relayed.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                }),
            );
        }
        let weak = Arc::downgrade(&system);
        system.events.subscribe(
            HEARTBEAT,
            handler_fn("heartbeat-counter", move |_: Arc<Heartbeat>| {
                if let Some(system) = weak.upgrade() {
                    system
                        .counts
                        .heartbeats_delivered
                        .fetch_add(1, Ordering::Relaxed);
                }
                async { Ok(()) }
            }),
        );
        Ok(system)
    }

    /// Sends `command` (with `metadata`, or fresh metadata), retrying on conflicts; counts
    /// every try and records an acknowledged append.
    pub(super) async fn send(
        &self,
        command: AccountCommand,
        metadata: Option<MessageMetadata>,
    ) -> FlextResult<()> {
        let stream = Repository::<Account>::stream_id(&command.account);
        let mut conflicts = 0;
        loop {
            self.counts.sent.fetch_add(1, Ordering::Relaxed);
            let result = match &metadata {
                Some(metadata) => {
                    self.commands
                        .send_with(command.clone(), metadata.clone())
                        .await
                }
                None => self.commands.send(command.clone()).await,
            };
            match result {
                Ok(append) => {
                    self.counts.succeeded.fetch_add(1, Ordering::Relaxed);
                    if let Some(append) = append {
                        lock(&self.acks).push(Ack {
                            stream: stream.clone(),
                            append,
                        });
                    }
                    return Ok(());
                }
                Err(error) => {
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                    if error.is(ErrorCode::ConcurrencyConflict) && conflicts < MAX_CONFLICT_RETRIES
                    {
                        conflicts += 1;
                        self.counts.conflicts.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Takes the errors the workers met since the last call.
    pub(super) fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.errors))
    }

    /// Records an error no operation should meet.
    pub(super) fn unexpected(&self, what: String) {
        let mut errors = lock(&self.errors);
        // Keep the first few: a systematic failure would otherwise grow the list.
        if errors.len() < 100 {
            errors.push(what);
        }
    }

    /// The last position of the acknowledged commands not yet drained, 0 for none.
    pub(super) fn acked_head(&self) -> u64 {
        lock(&self.acks)
            .iter()
            .map(|ack| ack.append.last_position)
            .max()
            .unwrap_or(0)
    }

    /// Takes the acknowledged commands and the auditor's deliveries since the last call.
    /// Called at a quiet point, when every saga run has finished, so it also forgets which
    /// refunds failed.
    pub(super) fn drain(&self) -> (Vec<Ack>, HashMap<Uuid, u32>) {
        lock(&self.refunds_failed).clear();
        (
            std::mem::take(&mut *lock(&self.acks)),
            std::mem::take(&mut *lock(&self.delivered)),
        )
    }

    /// The merged latencies per kind.
    pub(super) fn latencies(&self) -> Vec<Histogram> {
        lock(&self.latencies).clone()
    }
}

/// The transfer saga: `debit` (a withdrawal from `from`, compensated by `refund`, a
/// deposit back, which fails on its first try when the transfer says so) and `credit` (a
/// deposit to `to`, refused when the transfer says so). Each command carries a message id
/// derived from the step's idempotency key, so a step run again changes nothing twice.
pub(super) fn transfer_saga(
    store: Arc<dyn EventStore>,
    system: &Arc<System>,
) -> FlextResult<Saga<Transfer>> {
    let (debit, refund, credit) = (
        Arc::downgrade(system),
        Arc::downgrade(system),
        Arc::downgrade(system),
    );
    let gone = || FlextError::operation("the soak's system is gone");
    Saga::new("transfer", store)?
        .step(
            "debit",
            move |transfer: Transfer, ctx| {
                let system = debit.upgrade();
                async move {
                    let system = system.ok_or_else(gone)?;
                    let command = AccountCommand {
                        account: transfer.from.clone(),
                        action: AccountAction::Withdraw(transfer.amount),
                    };
                    system
                        .send(command, Some(keyed(&ctx.idempotency_key)))
                        .await?;
                    Ok(transfer)
                }
            },
            move |transfer: Transfer, ctx| {
                let system = refund.upgrade();
                async move {
                    let system = system.ok_or_else(gone)?;
                    if transfer.refund_fails_once
                        && lock(&system.refunds_failed).insert(ctx.saga_id.clone())
                    {
                        return Err(FlextError::operation("the refund service is unavailable"));
                    }
                    let command = AccountCommand {
                        account: transfer.from.clone(),
                        action: AccountAction::Deposit(transfer.amount),
                    };
                    system
                        .send(command, Some(keyed(&ctx.idempotency_key)))
                        .await
                }
            },
        )?
        .step_without_compensation("credit", move |transfer: Transfer, ctx| {
            let system = credit.upgrade();
            async move {
                let system = system.ok_or_else(gone)?;
                if transfer.refuse_credit {
                    return Err(FlextError::business_rule("the credit is refused"));
                }
                let command = AccountCommand {
                    account: transfer.to.clone(),
                    action: AccountAction::Deposit(transfer.amount),
                };
                system
                    .send(command, Some(keyed(&ctx.idempotency_key)))
                    .await?;
                Ok(transfer)
            }
        })
}

/// Fresh metadata whose message id is a UUID v5 of `key`.
fn keyed(key: &str) -> MessageMetadata {
    let mut metadata = MessageMetadata::new();
    metadata.message_id = Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes());
    metadata
}

/// A small, fast pseudo-random sequence (SplitMix64): the workload's choices, seeded per
/// worker so a run can be repeated.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    /// A sequence from `seed`.
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (at least 1).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One worker: runs operations until the system's `stop` is set. The mix: 35% deposits,
/// 20% withdrawals, 30% queries, 10% heartbeats, 5% transfers.
pub(super) async fn worker(system: Arc<System>, saga: Arc<Saga<Transfer>>, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut local = vec![Histogram::new(); OpKind::ALL.len()];
    let mut since_flush = 0u32;
    let accounts = system.accounts.len() as u64;
    while !system.stop.load(Ordering::Relaxed) {
        let gate = system.gate.read().await;
        let roll = rng.below(100);
        let account = system.accounts[rng.below(accounts) as usize].clone();
        let amount = 1 + rng.below(100);
        let started = Instant::now();
        let kind = match roll {
            0..35 => {
                let command = AccountCommand {
                    account,
                    action: AccountAction::Deposit(amount),
                };
                match system.send(command, None).await {
                    Ok(()) => {
                        system.counts.deposited.fetch_add(amount, Ordering::Relaxed);
                    }
                    Err(error) => system.unexpected(format!("a deposit failed: {error}")),
                }
                OpKind::Deposit
            }
            35..55 => {
                let command = AccountCommand {
                    account,
                    action: AccountAction::Withdraw(amount),
                };
                match system.send(command, None).await {
                    Ok(()) => {
                        system.counts.withdrawn.fetch_add(amount, Ordering::Relaxed);
                    }
                    Err(error) if error.is(ErrorCode::BusinessRuleViolation) => {
                        system.counts.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => system.unexpected(format!("a withdrawal failed: {error}")),
                }
                OpKind::Withdraw
            }
            55..85 => {
                system.counts.queries.fetch_add(1, Ordering::Relaxed);
                if let Err(error) = system.queries.execute(GetBalance { account }).await {
                    system.unexpected(format!("a query failed: {error}"));
                }
                OpKind::Query
            }
            85..95 => {
                system.counts.published.fetch_add(1, Ordering::Relaxed);
                let report = system.events.publish(Heartbeat).await;
                if !report.is_success() {
                    system.unexpected(format!("a heartbeat failed: {report:?}"));
                }
                OpKind::Publish
            }
            _ => {
                let to = system.accounts[rng.below(accounts) as usize].clone();
                let transfer = Transfer {
                    from: account,
                    to,
                    amount,
                    refuse_credit: rng.below(5) == 0,
                    refund_fails_once: rng.below(2) == 0,
                };
                run_transfer(&system, &saga, transfer, &mut rng).await;
                OpKind::Transfer
            }
        };
        local[kind.index()].record(started.elapsed());
        drop(gate);
        since_flush += 1;
        if since_flush == 256 {
            flush(&system, &mut local);
            since_flush = 0;
        }
    }
    flush(&system, &mut local);
}

async fn run_transfer(system: &System, saga: &Saga<Transfer>, transfer: Transfer, rng: &mut Rng) {
    let id = format!("{:016x}{:016x}", rng.next(), rng.next());
    let mut outcome = saga.run(&id, transfer).await;
    let mut resumes = 0;
    while let Ok(run) = &outcome {
        if run.status != SagaStatus::CompensationFailed || resumes == MAX_RESUMES {
            break;
        }
        resumes += 1;
        system.counts.resumes.fetch_add(1, Ordering::Relaxed);
        outcome = saga.resume(&id).await;
    }
    match outcome {
        Ok(run) if run.status == SagaStatus::Completed => {
            system
                .counts
                .transfers_completed
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(run) if run.status == SagaStatus::Compensated => {
            system
                .counts
                .transfers_compensated
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(run) => system.unexpected(format!(
            "transfer {id} ended {:?} after {resumes} resumes: {:?}",
            run.status, run.compensation_failures
        )),
        Err(error) => system.unexpected(format!("transfer {id} failed: {error}")),
    }
}

fn flush(system: &System, local: &mut [Histogram]) {
    let mut shared = lock(&system.latencies);
    for (total, mine) in shared.iter_mut().zip(local.iter_mut()) {
        total.merge(mine);
        *mine = Histogram::new();
    }
}

/// Waits until `position` reports at least `head`, polling every few milliseconds, for up
/// to `limit`; returns whether it got there.
pub(super) async fn wait_for<F, Fut>(head: u64, limit: Duration, position: F) -> FlextResult<bool>
where
    F: Fn() -> Fut,
    Fut: Future<Output = FlextResult<u64>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if position().await? >= head {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
