//! A small service meant to run as several replicas on one PostgreSQL schema: each replica
//! is one process with its own [`Replica`], and every replica runs the same four things.
//!
//! - Commands: deposits to a few accounts, one `Deposited` event each, carrying its
//!   command's id; a command sent again after an unclear failure sends the same event (the
//!   same event id), which the store's idempotent retry stores once.
//! - The [`BALANCES`] projection, exactly once: a `balances` table (one row per account)
//!   updated in the transaction in which the runner also saves its checkpoint
//!   ([`PostgresProjectionRunner`]), fenced by the lease of the same name.
//! - The [`LEDGER`] projection, at least once: every event of the log as a row of the
//!   `ledger` table (a repeat changes nothing: the row is keyed by the event id), fed by a
//!   plain [`ProjectionRunner`] whose checkpoints go through the lease's
//!   [`fenced_checkpoints`](PostgresEventStore::fenced_checkpoints).
//! - The [`PAYOUT`] saga: every few deposits start a payout (hold, transfer, notify; a
//!   failed notification reverses the transfer and releases the hold). Its effects go to
//!   the `payout_effects` table, which applies each idempotency key once and counts how
//!   often each was tried; runs left unfinished by a replica that died are resumed by one
//!   replica at a time ([`Saga::resume_owned`]).
//!
//! Each projection belongs to one replica at a time: a replica waits for the projection's
//! lease, runs the fenced runner while it holds it, and waits again once it is lost. Every
//! checkpoint write is recorded in `checkpoint_audit`, in the transaction that writes it,
//! by a trigger on the store's checkpoint table: the writing replica (each connects with the
//! setting `replicas.writer` set to its label), the fencing token it wrote with when it says
//! so, and the lease as it stood then. So anyone can check afterwards that no checkpoint
//! was written by a replica that did not hold the lease.
//!
//! A replica reports what it does on standard output, one line per fact, in a form tests
//! and the `replicas` example parse: `lease balances taken by replica-2 token 3`,
//! `lease ledger lost by replica-1 token 1`, `lease balances refused replica-1 token 1:
//! <error>`, `command replica-3/17 acct-2 58 at 123456`, `payout replica-1-10 completed by
//! replica-1`, `quiesced replica-2 after 40 commands`, `stopped replica-2`.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use flext_handlers::Patterns::{Saga, SagaStatus, StepContext};
use flext_handlers::cqrs::ProjectionConfig;
use flext_handlers::prelude::*;
use flext_handlers::stores::sqlx::{self, Postgres, Transaction};
use flext_handlers::stores::{
    Fence, LeaseConfig, PostgresEventStore, PostgresProjection, PostgresProjectionRunner,
    PostgresStoreOptions,
};
use flext_handlers::types::{JsonPayload, NewEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The exactly-once projection's name: its checkpoint's and its lease's.
pub const BALANCES: &str = "balances";
/// The at-least-once projection's name: its checkpoint's and its lease's.
pub const LEDGER: &str = "ledger";
/// The saga's name: its runs are the streams `Saga-payout-{id}`.
pub const PAYOUT: &str = "payout";
/// The type of a deposit's event.
pub const DEPOSITED: &str = "Deposited";

/// How a replica holding a lease learns that it lost it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseWatch {
    /// Through the lease's heartbeat: the runner stops once [`Lease::lost`] resolves (the
    /// way to run a replica).
    ///
    /// [`Lease::lost`]: flext_handlers::stores::Lease::lost
    Heartbeat,
    /// Only through the fence: the runner goes on until a write is refused because the
    /// lease is no longer its own. This is a replica that cannot tell it was paused (the
    /// case fencing tokens are for); tests use it to show the fence stopping one.
    FenceOnly,
}

/// What one replica is and does.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// The PostgreSQL server's URL.
    pub url: String,
    /// The schema every replica shares.
    pub schema: String,
    /// This replica's label (`replica-1`): the owner label of its leases, the first part of
    /// its command ids, and the writer its checkpoint writes are recorded under. Letters,
    /// digits, `-` and `_` only.
    pub label: String,
    /// How long one renewal keeps a lease: a dead replica's projections move within about
    /// this plus a third of it.
    pub lease_ttl: Duration,
    /// The pause between two commands.
    pub command_every: Duration,
    /// How many accounts the deposits go to.
    pub accounts: u64,
    /// Every this many deposits (the last of each group), a payout starts.
    pub payout_every: u64,
    /// How long each payout step works before its effect lands: a replica that dies may
    /// die inside one.
    pub step_pause: Duration,
    /// How often the replica looks for payouts left unfinished.
    pub resume_every: Duration,
    /// How the replica learns it lost a lease.
    pub watch: LeaseWatch,
    /// Whether each landed command is reported (`command …` lines).
    pub report_commands: bool,
}

impl ReplicaOptions {
    /// A replica `label` of the service in `schema` on the server at `url`: leases of 1.5
    /// s, a command every 25 ms to 5 accounts, a payout every 10th deposit.
    pub fn new(
        url: impl Into<String>,
        schema: impl Into<String>,
        label: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            schema: schema.into(),
            label: label.into(),
            lease_ttl: Duration::from_millis(1_500),
            command_every: Duration::from_millis(25),
            accounts: 5,
            payout_every: 10,
            step_pause: Duration::from_millis(30),
            resume_every: Duration::from_millis(400),
            watch: LeaseWatch::Heartbeat,
            report_commands: false,
        }
    }

    /// The options of the store a replica opens: the shared schema, a small pool, short
    /// lock waits, and an idle transaction ended well within a few leases (a replica paused
    /// inside one holds its lease's row, and every reader of the cluster, until the server
    /// ends it).
    fn store_options(&self) -> FlextResult<PostgresStoreOptions> {
        if self.label.is_empty()
            || !self
                .label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(FlextError::invalid_argument(format!(
                "replica label {:?}: letters, digits, '-' and '_' only, not empty",
                self.label
            )));
        }
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{separator}options[replicas.writer]={}",
            self.url, self.label
        );
        // Five connections: a replica does one command, two projections and a scan for
        // payouts at a time, and several replicas (with their stores' three connections
        // each for notifications and the head) share the server's connection limit.
        Ok(PostgresStoreOptions::new(url)
            .with_schema(self.schema.clone())
            .with_max_connections(5)
            .with_lock_timeout(Duration::from_secs(1))
            .with_idle_in_transaction_timeout(self.lease_ttl.max(Duration::from_secs(1))))
    }

    fn lease_config(&self) -> LeaseConfig {
        LeaseConfig::new(self.label.clone()).with_ttl(self.lease_ttl)
    }
}

/// A deposit as its event records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    /// The command's id: `{replica label}/{n}`.
    pub command: String,
    /// The account.
    pub account: String,
    /// The amount, in cents.
    pub amount: i64,
}

/// A payout's data: the deposit that started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    /// The account paid out from.
    pub account: String,
    /// The amount, in cents.
    pub amount: i64,
    /// Whether the notification fails (then the payout is compensated).
    pub notification_fails: bool,
}

/// The work a completed payout does, in order.
pub const COMPLETED_WORK: [&str; 3] = ["hold", "transfer", "notify"];
/// The work a payout whose notification failed does, in order.
pub const COMPENSATED_WORK: [&str; 4] = ["hold", "transfer", "reverse", "release"];

/// One replica of the service: its store and its saga.
pub struct Replica {
    store: PostgresEventStore,
    options: ReplicaOptions,
    saga: Saga<Payout>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("label", &self.options.label)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The error of a statement of the service's own tables.
fn sql_failed(what: &str, error: sqlx::Error) -> FlextError {
    FlextError::storage(format!("replicas: {what}: {error}"))
}

/// A position as the tables keep it.
fn signed(position: u64) -> FlextResult<i64> {
    i64::try_from(position).map_err(|_| {
        FlextError::invalid_argument(format!("position {position} does not fit a bigint"))
    })
}

/// The service's tables and the checkpoint trigger, each created once.
const PREPARE: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS balances (account text PRIMARY KEY, balance bigint NOT NULL, \
     deposits bigint NOT NULL, last_position bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ledger (event_id text PRIMARY KEY, position bigint NOT NULL, \
     stream_id text NOT NULL, event_type text NOT NULL, applied_by text)",
    "CREATE TABLE IF NOT EXISTS payout_effects (key text PRIMARY KEY, run text NOT NULL, \
     work text NOT NULL, replica text NOT NULL, attempts integer NOT NULL DEFAULT 1)",
    "CREATE TABLE IF NOT EXISTS checkpoint_audit (id bigserial PRIMARY KEY, \
     name text NOT NULL, position bigint NOT NULL, writer text, writer_token bigint, \
     lease_owner text, lease_token bigint, lease_live boolean NOT NULL, \
     at timestamptz NOT NULL DEFAULT clock_timestamp())",
    // Runs inside the transaction that writes the checkpoint, so it sees the lease as the
    // writer's fence check left it (locked against takeover until the commit).
    "CREATE OR REPLACE FUNCTION audit_checkpoint() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN \
       INSERT INTO checkpoint_audit (name, position, writer, writer_token, lease_owner, \
         lease_token, lease_live) \
       SELECT NEW.name, NEW.position, current_setting('replicas.writer', true), \
         NULLIF(current_setting('replicas.fence_token', true), '')::bigint, \
         l.owner, l.token, COALESCE(l.expires_at > now(), false) \
       FROM (SELECT 1) AS one LEFT JOIN flext_leases AS l ON l.name = NEW.name; \
       RETURN NEW; \
     END $$",
    "CREATE TRIGGER audit_checkpoints AFTER INSERT OR UPDATE ON flext_checkpoints \
     FOR EACH ROW EXECUTE FUNCTION audit_checkpoint()",
];

/// Creates the service's tables and the checkpoint audit in `store`'s schema, unless they
/// are there: replicas starting together create them once (they take turns on an
/// advisory lock of the schema).
pub async fn prepare(store: &PostgresEventStore) -> FlextResult<()> {
    let mut tx = store
        .pool()
        .begin()
        .await
        .map_err(|e| sql_failed("cannot begin the preparation", e))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("flext-examples replicas {}", store.schema()))
        .execute(&mut *tx)
        .await
        .map_err(|e| sql_failed("cannot lock the schema for the preparation", e))?;
    let ready: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
         WHERE t.tgname = 'audit_checkpoints' AND c.relnamespace = current_schema()::regnamespace)",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| sql_failed("cannot look for the service's tables", e))?;
    if !ready {
        for statement in PREPARE {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| sql_failed("cannot create the service's tables", e))?;
        }
    }
    tx.commit()
        .await
        .map_err(|e| sql_failed("cannot commit the preparation", e))
}

/// Drops `schema` and everything in it, through a store connected to it.
pub async fn drop_schema(url: &str, schema: &str) -> FlextResult<()> {
    let store = PostgresEventStore::connect_with(
        PostgresStoreOptions::new(url)
            .with_schema(schema.to_owned())
            .with_max_connections(1),
    )
    .await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(store.pool())
        .await
        .map(drop)
        .map_err(|e| sql_failed(&format!("cannot drop schema {schema}"), e))
}

/// Prints one line of the replica's report at once (a replica may be killed any moment).
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

impl Replica {
    /// Connects replica `options.label` to the shared schema and prepares the service's
    /// tables there if no replica has yet.
    pub async fn open(options: ReplicaOptions) -> FlextResult<Self> {
        let store = PostgresEventStore::connect_with(options.store_options()?).await?;
        prepare(&store).await?;
        let saga = payout_saga(&store, options.step_pause)?;
        Ok(Self {
            store,
            options,
            saga,
        })
    }

    /// The replica's store.
    pub fn store(&self) -> &PostgresEventStore {
        &self.store
    }

    /// The payout saga as this replica runs it.
    pub fn saga(&self) -> &Saga<Payout> {
        &self.saga
    }

    /// Runs the replica: commands until `quiesce` resolves, the projections and the
    /// payouts' resumption until `shutdown` does (the leases then given up).
    pub async fn run(
        &self,
        quiesce: impl Future<Output = ()>,
        shutdown: watch::Receiver<bool>,
    ) -> FlextResult<()> {
        let commands = async {
            let sent = self.commands(quiesce).await;
            report(&format!(
                "quiesced {} after {sent} commands",
                self.options.label
            ));
        };
        tokio::join!(
            commands,
            self.owned(BALANCES, shutdown.clone()),
            self.owned(LEDGER, shutdown.clone()),
            self.resume_payouts(shutdown.clone()),
        );
        report(&format!("stopped {}", self.options.label));
        Ok(())
    }

    /// Sends deposits until `quiesce` resolves; returns how many landed.
    async fn commands(&self, quiesce: impl Future<Output = ()>) -> u64 {
        let mut quiesce = std::pin::pin!(quiesce);
        let mut landed = 0;
        // A command under way is finished, not dropped: a payout it started runs to its end.
        for n in 1_u64.. {
            match self.deposit(n).await {
                Ok(()) => landed += 1,
                Err(error) => report(&format!(
                    "command {}/{n} failed {}: {error}",
                    self.options.label,
                    error.code().name()
                )),
            }
            tokio::select! {
                biased;
                () = &mut quiesce => return landed,
                () = tokio::time::sleep(self.options.command_every) => {}
            }
        }
        landed
    }

    /// Deposit number `n` of this replica, and the payout it starts, if any.
    async fn deposit(&self, n: u64) -> FlextResult<()> {
        let options = &self.options;
        let deposit = Deposit {
            command: format!("{}/{n}", options.label),
            account: format!("acct-{}", n % options.accounts.max(1)),
            amount: i64::try_from(n % 97 + 1).unwrap_or(1),
        };
        // The same event, its id included, is sent again after an unclear failure: if the
        // first try was stored after all, the store's idempotent retry finds it there.
        let event = NewEvent::new(DEPOSITED, JsonPayload::encode(&deposit)?);
        let mut tries = 0;
        let appended = loop {
            let stream = format!("Account-{}", deposit.account);
            match self
                .store
                .append(&stream, ExpectedVersion::Any, vec![event.clone()])
                .await
            {
                Ok(appended) => break appended,
                Err(error) if tries < 3 && error.code() != ErrorCode::ValidationError => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => return Err(error),
            }
        };
        if options.report_commands {
            report(&format!(
                "command {} {} {} at {}",
                deposit.command, deposit.account, deposit.amount, appended.last_position
            ));
        }
        if n.is_multiple_of(options.payout_every.max(1)) {
            let payout = Payout {
                account: deposit.account,
                amount: deposit.amount,
                notification_fails: n.is_multiple_of(options.payout_every.max(1) * 3),
            };
            self.start_payout(&deposit.command.replace('/', "-"), payout)
                .await;
        }
        Ok(())
    }

    /// Runs a new payout holding its run's lease, so no other replica resumes it while
    /// this one drives it (until this one stops renewing: dies or pauses).
    async fn start_payout(&self, id: &str, payout: Payout) {
        let label = &self.options.label;
        let lease = match self
            .store
            .try_lease(&self.saga.lease_name(id), self.options.lease_config())
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                report(&format!(
                    "payout {id} owned elsewhere, not started by {label}"
                ));
                return;
            }
            Err(error) => {
                report(&format!("payout {id} not started by {label}: {error}"));
                return;
            }
        };
        report(&format!("payout {id} started by {label}"));
        match self.saga.run(id, payout).await {
            Ok(outcome) => report(&format!(
                "payout {id} {} by {label}",
                status_name(outcome.status)
            )),
            Err(error) => report(&format!(
                "payout {id} error {} by {label}: {error}",
                error.code().name()
            )),
        }
        let _ = lease.release().await;
    }

    /// Resumes, every [`ReplicaOptions::resume_every`], the payouts no replica is driving.
    async fn resume_payouts(&self, mut shutdown: watch::Receiver<bool>) {
        let label = &self.options.label;
        let leases = self.store.leases(self.options.lease_config());
        loop {
            let resumed = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                resumed = self.saga.resume_owned(&leases) => resumed,
            };
            match resumed {
                Ok(runs) => {
                    for (id, result) in runs {
                        match result {
                            Ok(outcome) => report(&format!(
                                "payout {id} resumed {} by {label}",
                                status_name(outcome.status)
                            )),
                            Err(error) => report(&format!(
                                "payout {id} resume error {} by {label}: {error}",
                                error.code().name()
                            )),
                        }
                    }
                }
                Err(error) => report(&format!("payouts not scanned by {label}: {error}")),
            }
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(self.options.resume_every) => {}
            }
        }
    }

    /// Runs projection `name`'s fenced runner until `until` resolves or a write of it
    /// fails (refused by the fence once the lease is no longer `fence`'s).
    async fn run_fenced(
        &self,
        name: &str,
        fence: Fence,
        until: impl Future<Output = ()>,
    ) -> FlextResult<()> {
        if name == BALANCES {
            let projection = Arc::new(Balances {
                token: fence.token(),
            });
            return PostgresProjectionRunner::new(self.store.clone(), projection)
                .with_fence(fence)
                .run_until(until)
                .await
                .map(drop);
        }
        let checkpoints = Arc::new(self.store.fenced_checkpoints(fence));
        let ledger = Arc::new(Ledger {
            store: self.store.clone(),
            replica: self.options.label.clone(),
        });
        let config = ProjectionConfig::default()
            .with_checkpoint_every(50)
            .with_checkpoint_interval(Duration::from_millis(200));
        ProjectionRunner::new(Arc::new(self.store.clone()), checkpoints, ledger)
            .with_config(config)
            .run_until(until)
            .await
            .map(drop)
    }

    /// The lease loop of projection `name` ([`BALANCES`] or [`LEDGER`]): wait for its
    /// lease, run the fenced runner until the lease is lost (or, fence only, until a write
    /// is refused) or `shutdown`, and start over; on shutdown give the lease up. Errors are
    /// reported, not returned: a replica keeps trying.
    async fn owned(&self, name: &str, mut shutdown: watch::Receiver<bool>) {
        let label = &self.options.label;
        loop {
            let acquired = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                lease = self.store.acquire_lease(name, self.options.lease_config()) => lease,
            };
            let lease = match acquired {
                Ok(lease) => lease,
                Err(error) => {
                    report(&format!("lease {name} not taken by {label}: {error}"));
                    tokio::time::sleep(self.options.lease_ttl / 3).await;
                    continue;
                }
            };
            let token = lease.token();
            report(&format!("lease {name} taken by {label} token {token}"));
            // A failure other than a refusal, while the lease is still held (a dropped
            // connection, say), runs the projection again under the same lease: taking a
            // new one would wait out this one's TTL.
            loop {
                let mut stop = shutdown.clone();
                let watch = self.options.watch;
                let until = async {
                    match watch {
                        LeaseWatch::Heartbeat => tokio::select! {
                            () = lease.lost() => {}
                            _ = stop.wait_for(|stop| *stop) => {}
                        },
                        LeaseWatch::FenceOnly => {
                            let _ = stop.wait_for(|stop| *stop).await;
                        }
                    }
                };
                let result = self.run_fenced(name, lease.fence(), until).await;
                let shutting_down = *shutdown.borrow();
                match result {
                    Err(error) if error.code() == ErrorCode::ConcurrencyConflict => {
                        report(&format!(
                            "lease {name} refused {label} token {token}: {error}"
                        ));
                    }
                    Err(error) => {
                        report(&format!(
                            "lease {name} error {label} token {token}: {error}"
                        ));
                        if !shutting_down && lease.is_held() {
                            tokio::time::sleep(self.options.lease_ttl / 10).await;
                            continue;
                        }
                    }
                    Ok(()) if shutting_down => {}
                    Ok(()) => report(&format!("lease {name} lost by {label} token {token}")),
                }
                break;
            }
            let shutting_down = *shutdown.borrow();
            if shutting_down {
                if lease.is_held() && lease.release().await.is_ok() {
                    report(&format!("lease {name} released by {label} token {token}"));
                }
                return;
            }
        }
    }
}

/// The name a status is reported by.
pub fn status_name(status: SagaStatus) -> &'static str {
    match status {
        SagaStatus::Completed => "completed",
        SagaStatus::Compensated => "compensated",
        SagaStatus::CompensationFailed => "compensation-failed",
    }
}

/// The exactly-once read model: one row per account, its balance, its deposits and the
/// position of the last one.
struct Balances {
    /// The fencing token of the lease this runner writes under, recorded with each
    /// checkpoint write by the audit trigger.
    token: u64,
}

#[async_trait]
impl PostgresProjection for Balances {
    fn name(&self) -> &str {
        BALANCES
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &StoredEvent,
    ) -> FlextResult<()> {
        if &*event.event_type != DEPOSITED {
            return Ok(());
        }
        let deposit: Deposit = event.payload.decode()?;
        sqlx::query(
            "INSERT INTO balances (account, balance, deposits, last_position) \
             VALUES ($1, $2, 1, $3) ON CONFLICT (account) DO UPDATE SET \
             balance = balances.balance + excluded.balance, deposits = balances.deposits + 1, \
             last_position = excluded.last_position",
        )
        .bind(&deposit.account)
        .bind(deposit.amount)
        .bind(signed(event.position)?)
        .execute(&mut **tx)
        .await
        .map(drop)
        .map_err(|e| sql_failed("cannot update a balance", e))
    }

    async fn apply_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[StoredEvent],
    ) -> FlextResult<()> {
        sqlx::query("SELECT set_config('replicas.fence_token', $1, true)")
            .bind(self.token.to_string())
            .execute(&mut **tx)
            .await
            .map_err(|e| sql_failed("cannot note the fencing token", e))?;
        for event in events {
            self.apply(tx, event).await?;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut Transaction<'_, Postgres>) -> FlextResult<()> {
        sqlx::query("DELETE FROM balances")
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(|e| sql_failed("cannot empty the balances", e))
    }
}

/// The at-least-once read model: every event of the log, once each (a repeat finds its
/// row there), with the replica that wrote it.
struct Ledger {
    store: PostgresEventStore,
    replica: String,
}

#[async_trait]
impl Projection for Ledger {
    fn name(&self) -> &str {
        LEDGER
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        sqlx::query(
            "INSERT INTO ledger (event_id, position, stream_id, event_type, applied_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.event_id.to_string())
        .bind(signed(event.position)?)
        .bind(&*event.stream_id)
        .bind(&*event.event_type)
        .bind(&self.replica)
        .execute(self.store.pool())
        .await
        .map(drop)
        .map_err(|e| sql_failed("cannot write a ledger row", e))
    }

    async fn reset(&self) -> FlextResult<()> {
        sqlx::query("DELETE FROM ledger")
            .execute(self.store.pool())
            .await
            .map(drop)
            .map_err(|e| sql_failed("cannot empty the ledger", e))
    }
}

/// The payout saga: `hold` (undone by `release`), `transfer` (undone by `reverse`),
/// `notify` (fails when the payout says so, which compensates the run). Each piece of work
/// waits `pause`, then applies its effect through [`effect`].
pub fn payout_saga(store: &PostgresEventStore, pause: Duration) -> FlextResult<Saga<Payout>> {
    let work = |name: &'static str| {
        let store = store.clone();
        move |payout: Payout, ctx: StepContext| {
            let store = store.clone();
            async move {
                tokio::time::sleep(pause).await;
                effect(&store, &ctx.idempotency_key, &ctx.saga_id, name).await?;
                Ok(payout)
            }
        }
    };
    let undo = |name: &'static str| {
        let store = store.clone();
        move |_: Payout, ctx: StepContext| {
            let store = store.clone();
            async move {
                tokio::time::sleep(pause).await;
                effect(&store, &ctx.idempotency_key, &ctx.saga_id, name).await
            }
        }
    };
    let notify_store = store.clone();
    Saga::new(PAYOUT, Arc::new(store.clone()))?
        .step("hold", work("hold"), undo("release"))?
        .step("transfer", work("transfer"), undo("reverse"))?
        .step_without_compensation("notify", move |payout: Payout, ctx: StepContext| {
            let store = notify_store.clone();
            async move {
                tokio::time::sleep(pause).await;
                if payout.notification_fails {
                    return Err(FlextError::business_rule(format!(
                        "the account holder of {} cannot be reached",
                        payout.account
                    )));
                }
                effect(&store, &ctx.idempotency_key, &ctx.saga_id, "notify").await?;
                Ok(payout)
            }
        })
}

/// The outside system a payout changes: applies the work of idempotency key `key` once
/// (one row per key) and counts every try, so a repeat after a crash shows as attempts,
/// never as a second effect.
pub async fn effect(
    store: &PostgresEventStore,
    key: &str,
    run: &str,
    work: &str,
) -> FlextResult<()> {
    sqlx::query(
        "INSERT INTO payout_effects (key, run, work, replica) \
         VALUES ($1, $2, $3, current_setting('replicas.writer', true)) \
         ON CONFLICT (key) DO UPDATE SET attempts = payout_effects.attempts + 1",
    )
    .bind(key)
    .bind(run)
    .bind(work)
    .execute(store.pool())
    .await
    .map(drop)
    .map_err(|e| sql_failed(&format!("payout {run}: cannot {work}"), e))
}

/// The balances a single process computes by replaying `events` in order: per account, the
/// balance, the deposits and the position of the last one.
pub fn replay_balances(events: &[StoredEvent]) -> FlextResult<BTreeMap<String, (i64, i64, i64)>> {
    let mut balances = BTreeMap::new();
    for event in events.iter().filter(|e| &*e.event_type == DEPOSITED) {
        let deposit: Deposit = event.payload.decode()?;
        let row = balances.entry(deposit.account).or_insert((0, 0, 0));
        row.0 += deposit.amount;
        row.1 += 1;
        row.2 = signed(event.position)?;
    }
    Ok(balances)
}

/// The balances table as it stands: per account, the balance, the deposits and the
/// position of the last one.
pub async fn read_balances(
    store: &PostgresEventStore,
) -> FlextResult<BTreeMap<String, (i64, i64, i64)>> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT account, balance, deposits, last_position FROM balances ORDER BY account",
    )
    .fetch_all(store.pool())
    .await
    .map_err(|e| sql_failed("cannot read the balances", e))?;
    Ok(rows
        .into_iter()
        .map(|(account, balance, deposits, last)| (account, (balance, deposits, last)))
        .collect())
}

/// Serves as replica `options.label` with standard input as its controls: the line
/// `quiesce` stops the commands; the end of input (or `stop`) shuts the replica down,
/// giving its leases up.
pub async fn serve_from_stdin(options: ReplicaOptions) -> FlextResult<()> {
    let replica = Replica::open(options).await?;
    let (quiesce_tx, mut quiesce_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.clear();
            match std::io::stdin().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.trim() == "quiesce" => {
                    quiesce_tx.send_replace(true);
                }
                Ok(_) if line.trim() == "stop" => break,
                Ok(_) => {}
            }
        }
        quiesce_tx.send_replace(true);
        stop_tx.send_replace(true);
    });
    let quiesce = async move {
        let _ = quiesce_rx.wait_for(|quiet| *quiet).await;
    };
    replica.run(quiesce, stop_rx).await
}
