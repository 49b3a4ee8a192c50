//! A bank in two processes on PostgreSQL and NATS JetStream: a **writer** that owns the
//! accounts and a **projector** that sends them commands and keeps a read model of their
//! events.
//!
//! - The writer ([`run_writer`]) keeps the accounts as event-sourced [`Account`]s in a
//!   [`PostgresEventStore`] (a schema of its own), handles [`Deposit`] and [`Withdraw`] on
//!   its [`CommandBus`] through a [`Repository`], serves that bus to other processes
//!   ([`RemoteHandlers`] behind a [`NatsWorker`]), and relays the store's log to a JetStream
//!   stream ([`NatsRelay`]). The repository runs each command under the caller's message
//!   id, so a command sent again with the same metadata (a retry after a lost reply) comes
//!   back with the original result and stores nothing more.
//! - The projector ([`run_projector`]) registers both commands as remote on a local
//!   [`CommandBus`] ([`CommandBus::register_remote`] over a [`NatsTransport`]), sends a
//!   few, and shows what comes back: typed results, a validation error raised on the
//!   caller (the command is never sent), a business error raised on the writer (it
//!   arrives with its code and data), and a retried command that is one effect. Then it
//!   consumes the stream with a [`NatsConsumer`] into [`BalancesView`], an in-memory read
//!   model, until the balances are the ones the writer answered.
//!
//! Every name on the NATS server comes from a run id ([`BankNames`]), so runs with
//! different ids (tests running at once) share nothing there.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flext_handlers::CQRS::{RemoteHandlers, current_metadata};
use flext_handlers::nats::async_nats::{self, jetstream};
use flext_handlers::nats::{
    ConsumerConfig, EventSink, EventStreams, NatsConsumer, NatsRelay, NatsTransport, NatsWorker,
};
use flext_handlers::prelude::*;
use flext_handlers::protocols::{CheckpointStore, RemoteCall, RemoteTransport};
use flext_handlers::stores::{PostgresEventStore, PostgresStoreOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

/// The accounts' category: their streams are `Account-{id}`.
pub const CATEGORY: &str = "Account";
/// The writer's schema unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "example_nats_bank";
/// The run id unless told otherwise.
pub const DEFAULT_RUN: &str = "demo";
/// The name the writer's service goes by on the NATS server.
pub const SERVICE: &str = "nats-bank";

/// The names on the NATS server of one run, all derived from its id.
///
/// ```
/// use flext_examples::nats_bank::BankNames;
///
/// let names = BankNames::new("t1")?;
/// assert_eq!(names.stream(), "NATS_BANK_t1");
/// assert_eq!(names.events_prefix(), "nats_bank.t1.events");
/// assert_eq!(names.commands_prefix(), "nats_bank.t1.rpc");
/// assert!(BankNames::new("a.b").is_err());
/// # Ok::<(), flext_handlers::types::FlextError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankNames {
    run: String,
}

impl BankNames {
    /// The names of run `run` (1 to 32 ASCII letters, digits, `_` or `-`).
    pub fn new(run: impl Into<String>) -> FlextResult<Self> {
        let run = run.into();
        if run.is_empty()
            || run.len() > 32
            || !run
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(FlextError::invalid_argument(format!(
                "run id {run:?}: 1 to 32 ASCII letters, digits, '_' or '-'"
            )));
        }
        Ok(Self { run })
    }

    /// The run id.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The JetStream stream of the accounts' events (its dead letters are in
    /// `{stream}_DLQ`).
    pub fn stream(&self) -> String {
        format!("NATS_BANK_{}", self.run)
    }

    /// The events' subjects begin with this.
    pub fn events_prefix(&self) -> String {
        format!("nats_bank.{}.events", self.run)
    }

    /// The commands' subjects begin with this (`{prefix}.command.Deposit`).
    pub fn commands_prefix(&self) -> String {
        format!("nats_bank.{}.rpc", self.run)
    }

    /// The layout of the stream and its dead letters.
    pub fn streams(&self) -> FlextResult<EventStreams> {
        EventStreams::new(self.stream(), self.events_prefix())
    }

    /// The relay's name, its checkpoint's key in the writer's store: one per stream, so
    /// a new stream gets the whole log.
    pub fn relay(&self) -> String {
        format!("nats_bank_relay_{}", self.stream())
    }
}

/// Checks an amount, in cents, before a command is sent.
fn check_amount(what: &str, account: &str, amount: i64) -> FlextResult<()> {
    if account.trim().is_empty() {
        return Err(FlextError::validation(format!(
            "{what}: the account is empty"
        )));
    }
    if amount <= 0 {
        return Err(FlextError::validation(format!(
            "{what}: the amount must be positive, got {amount}"
        ))
        .with_data(json!({"account": account, "amount": amount})));
    }
    Ok(())
}

/// Puts `amount` cents into `account`; validated where it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    /// The account.
    pub account: String,
    /// The amount, in cents (positive).
    pub amount: i64,
}

impl Command for Deposit {
    type Output = Balance;

    fn validate(&self) -> FlextResult<()> {
        check_amount("Deposit", &self.account, self.amount)
    }
}

/// Takes `amount` cents out of `account`; the account decides whether it may.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdraw {
    /// The account.
    pub account: String,
    /// The amount, in cents (positive).
    pub amount: i64,
}

impl Command for Withdraw {
    type Output = Balance;

    fn validate(&self) -> FlextResult<()> {
        check_amount("Withdraw", &self.account, self.amount)
    }
}

/// What a command answers: the account's balance after it, and its stream's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The account.
    pub account: String,
    /// The balance, in cents.
    pub balance: i64,
    /// The account's stream version after the command.
    pub version: u64,
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// Money came in.
    Deposited {
        /// In cents.
        amount: i64,
    },
    /// Money went out.
    Withdrawn {
        /// In cents.
        amount: i64,
    },
}

impl Event for AccountEvent {
    fn event_name(&self) -> &str {
        match self {
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }
}

/// What an [`Account`] decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Deposit this many cents.
    Deposit(i64),
    /// Withdraw this many cents.
    Withdraw(i64),
}

/// An event-sourced account: its balance, never below zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The balance, in cents.
    pub balance: i64,
}

impl Aggregate for Account {
    const TYPE: &'static str = CATEGORY;
    type Command = AccountCommand;
    type Event = AccountEvent;

    fn handle(&self, command: AccountCommand) -> FlextResult<Vec<AccountEvent>> {
        match command {
            AccountCommand::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
            AccountCommand::Withdraw(amount) if amount > self.balance => {
                Err(FlextError::business_rule(format!(
                    "Insufficient funds: the balance is {}, the withdrawal {amount}",
                    self.balance
                ))
                .with_data(json!({"balance": self.balance, "requested": amount})))
            }
            AccountCommand::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// Prints one line of the writer's report at once.
fn report(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The writer's command bus: [`Deposit`] and [`Withdraw`] run on the accounts of
/// `repository`, each under the message that carries it (so a repeat of a message is its
/// original result, not a second effect). Each command handled is reported on standard
/// output (`handled Deposit acct-1 +1000 message … -> balance 1000 version 1`).
pub fn writer_bus(repository: Arc<Repository<Account>>) -> FlextResult<CommandBus> {
    async fn run(
        repository: &Repository<Account>,
        name: &str,
        account: String,
        command: AccountCommand,
    ) -> FlextResult<Balance> {
        let shown = match command {
            AccountCommand::Deposit(amount) => format!("+{amount}"),
            AccountCommand::Withdraw(amount) => format!("-{amount}"),
        };
        let message =
            current_metadata().map_or_else(|| "none".to_owned(), |m| m.message_id.to_string());
        match repository.execute(&account, command).await {
            Ok(executed) => {
                let balance = Balance {
                    account,
                    balance: executed.state.balance,
                    version: executed.version,
                };
                report(&format!(
                    "handled {name} {} {shown} message {message} -> balance {} version {}",
                    balance.account, balance.balance, balance.version
                ));
                Ok(balance)
            }
            Err(error) => {
                report(&format!(
                    "handled {name} {account} {shown} message {message} -> {}",
                    error.code().name()
                ));
                Err(error)
            }
        }
    }
    let mut bus = CommandBus::new();
    let deposits = Arc::clone(&repository);
    bus.register_fn(move |deposit: Deposit| {
        let repository = Arc::clone(&deposits);
        async move {
            run(
                &repository,
                "Deposit",
                deposit.account,
                AccountCommand::Deposit(deposit.amount),
            )
            .await
        }
    })?;
    bus.register_fn(move |withdrawal: Withdraw| {
        let repository = Arc::clone(&repository);
        async move {
            run(
                &repository,
                "Withdraw",
                withdrawal.account,
                AccountCommand::Withdraw(withdrawal.amount),
            )
            .await
        }
    })?;
    Ok(bus)
}

/// A NATS client of `url`; an `UNAVAILABLE` when the server cannot be reached.
pub async fn connect_nats(url: &str) -> FlextResult<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| FlextError::unavailable(format!("cannot connect to NATS at {url}: {e}")))
}

/// What the writer runs on.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The PostgreSQL server's URL.
    pub postgres_url: String,
    /// The schema of the accounts' store.
    pub schema: String,
    /// The NATS server's URL.
    pub nats_url: String,
    /// The run's names on the NATS server.
    pub names: BankNames,
}

/// Runs the writer until `stop` completes: opens the store, creates the JetStream streams
/// when missing, serves [`Deposit`] and [`Withdraw`] to remote callers and relays the
/// store's log to the stream. It reports `writer ready …` once it serves and relays, and
/// `writer stopped …` at the end.
pub async fn run_writer(options: WriterOptions, stop: impl Future<Output = ()>) -> FlextResult<()> {
    let store = PostgresEventStore::connect_with(
        PostgresStoreOptions::new(options.postgres_url.clone())
            .with_schema(options.schema.clone())
            .with_max_connections(5),
    )
    .await?;
    let client = connect_nats(&options.nats_url).await?;
    let jetstream = jetstream::new(client.clone());
    let streams = options.names.streams()?;
    streams.ensure(&jetstream).await?;

    let events: Arc<dyn EventStore> = Arc::new(store.clone());
    let repository = Arc::new(Repository::<Account>::new(Arc::clone(&events)));
    let bus = Arc::new(writer_bus(repository)?);
    let served = RemoteHandlers::new()
        .command::<Deposit>(Arc::clone(&bus))?
        .command::<Withdraw>(bus)?;
    let prefix = options.names.commands_prefix();
    let worker =
        NatsWorker::start(client.clone(), prefix.clone(), SERVICE, Arc::new(served), 8).await?;
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(store.clone());
    let relay = NatsRelay::new(
        options.names.relay(),
        events,
        checkpoints,
        jetstream,
        streams.clone(),
    )
    .for_category(CATEGORY);
    report(&format!(
        "writer ready: schema {}, serving {} on {prefix}.command.*, relaying to JetStream stream {}",
        options.schema,
        worker.subjects().len(),
        streams.stream()
    ));
    let relayed = relay.run(stop).await;
    worker.stop().await;
    let checkpoint = relay.checkpoint().await?;
    relayed?;
    report(&format!(
        "writer stopped: relay checkpoint at position {checkpoint}"
    ));
    Ok(())
}

/// A [`RemoteTransport`] that counts the calls it sends, so a program can show which
/// commands left the process.
#[derive(Debug)]
pub struct CountingTransport<T> {
    inner: T,
    calls: AtomicU64,
}

impl<T> CountingTransport<T> {
    /// Counts the calls sent through `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
        }
    }

    /// The calls sent so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl<T: RemoteTransport> RemoteTransport for CountingTransport<T> {
    async fn call(&self, call: RemoteCall) -> FlextResult<Vec<u8>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.call(call).await
    }
}

/// One account as the read model has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountView {
    /// The balance, in cents.
    pub balance: i64,
    /// The events applied.
    pub events: u64,
    /// The version of the last event applied (or passed).
    pub version: u64,
}

/// The projector's read model: each account's balance, built from its events in version
/// order, each once (the consumer applies the version after the one recorded here).
#[derive(Debug, Default)]
pub struct BalancesView {
    accounts: Mutex<BTreeMap<String, AccountView>>,
}

impl BalancesView {
    /// The accounts as they stand.
    pub fn snapshot(&self) -> BTreeMap<String, AccountView> {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The account of stream `Account-{id}`.
    fn account(stream_id: &str) -> &str {
        stream_id
            .strip_prefix(CATEGORY)
            .and_then(|rest| rest.strip_prefix('-'))
            .unwrap_or(stream_id)
    }
}

#[async_trait]
impl EventSink for BalancesView {
    fn name(&self) -> &str {
        "balances"
    }

    async fn applied_version(&self, stream_id: &str) -> FlextResult<u64> {
        let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(accounts
            .get(Self::account(stream_id))
            .map_or(0, |view| view.version))
    }

    async fn apply(&self, event: &StoredEvent) -> FlextResult<()> {
        let change = match event.payload.decode::<AccountEvent>()? {
            AccountEvent::Deposited { amount } => amount,
            AccountEvent::Withdrawn { amount } => -amount,
        };
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let view = accounts
            .entry(Self::account(&event.stream_id).to_owned())
            .or_default();
        view.balance += change;
        view.events += 1;
        view.version = event.version;
        Ok(())
    }

    async fn pass(&self, event: &StoredEvent) -> FlextResult<()> {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        accounts
            .entry(Self::account(&event.stream_id).to_owned())
            .or_default()
            .version = event.version;
        Ok(())
    }
}

/// What the projector runs on.
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// The NATS server's URL.
    pub nats_url: String,
    /// The run's names on the NATS server (the writer's).
    pub names: BankNames,
    /// How long it waits for the writer to serve, and then for the balances.
    pub patience: Duration,
}

/// The caller's side of the commands: a bus whose [`Deposit`] and [`Withdraw`] are
/// handled by the writer, and the transport's count of calls sent.
fn caller_bus(
    client: async_nats::Client,
    names: &BankNames,
) -> FlextResult<(CommandBus, Arc<CountingTransport<NatsTransport>>)> {
    let transport = Arc::new(CountingTransport::new(
        NatsTransport::new(client, names.commands_prefix())?
            .with_default_timeout(Duration::from_secs(10))?,
    ));
    let mut bus = CommandBus::new();
    bus.register_remote::<Deposit>(Arc::clone(&transport) as Arc<dyn RemoteTransport>)?;
    bus.register_remote::<Withdraw>(Arc::clone(&transport) as Arc<dyn RemoteTransport>)?;
    Ok((bus, transport))
}

/// `Deposit acct-1 +1000 -> balance 1000 (version 1)`, or the error's code and message.
fn shown(command: &str, result: &FlextResult<Balance>) -> String {
    match result {
        Ok(b) => format!("{command} -> balance {} (version {})", b.balance, b.version),
        Err(e) => format!("{command} -> {}: {e}", e.code().name()),
    }
}

/// Runs the projector: sends the writer a few commands and prints what comes back, then
/// consumes the stream into a [`BalancesView`] until every account has the version (and
/// so the balance) the writer last answered, prints the balances and returns them. The
/// durable consumer it used is deleted at the end.
pub async fn run_projector(
    options: ProjectorOptions,
) -> FlextResult<BTreeMap<String, AccountView>> {
    let names = &options.names;
    let client = connect_nats(&options.nats_url).await?;
    let (bus, transport) = caller_bus(client.clone(), names)?;
    println!("=== A bank on two processes: commands over NATS, events through JetStream ===");
    println!(
        "   Run {}: commands on {}.command.*, events in JetStream stream {}",
        names.run(),
        names.commands_prefix(),
        names.stream()
    );
    let mut answered: BTreeMap<String, Balance> = BTreeMap::new();

    println!("\n1. Commands handled by the writer, their results typed:");
    let first = Deposit {
        account: "acct-1".into(),
        amount: 1_000,
    };
    // The writer may still be starting: no process serving the command is an UNAVAILABLE
    // at once, and nothing was done, so sending again is safe.
    let deadline = Instant::now() + options.patience;
    let result = loop {
        let result = bus.send(first.clone()).await;
        match &result {
            Err(e) if e.code() == ErrorCode::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => break result,
        }
    };
    let balance = result?;
    println!("   {}", shown("Deposit acct-1 +1000", &Ok(balance.clone())));
    answered.insert(balance.account.clone(), balance);
    let deposit = bus
        .send(Deposit {
            account: "acct-2".into(),
            amount: 250,
        })
        .await?;
    println!("   {}", shown("Deposit acct-2 +250", &Ok(deposit.clone())));
    answered.insert(deposit.account.clone(), deposit.clone());
    let withdrawal = bus
        .send(Withdraw {
            account: "acct-1".into(),
            amount: 300,
        })
        .await?;
    println!(
        "   {}",
        shown("Withdraw acct-1 -300", &Ok(withdrawal.clone()))
    );
    answered.insert(withdrawal.account.clone(), withdrawal);

    println!("\n2. A validation error, raised on the caller (the command is never sent):");
    let sent_before = transport.calls();
    let rejected = bus
        .send(Deposit {
            account: "acct-1".into(),
            amount: 0,
        })
        .await;
    println!("   {}", shown("Deposit acct-1 +0", &rejected));
    println!(
        "   calls sent to the writer: {sent_before} before, {} after",
        transport.calls()
    );
    if rejected.is_ok() {
        return Err(FlextError::operation("a deposit of 0 was accepted"));
    }

    println!("\n3. A business error, raised on the writer, arriving typed:");
    let overdraft = deposit.balance + 1;
    let refused = bus
        .send(Withdraw {
            account: "acct-2".into(),
            amount: overdraft,
        })
        .await;
    println!(
        "   {}",
        shown(&format!("Withdraw acct-2 -{overdraft}"), &refused)
    );
    match &refused {
        Err(error) => println!(
            "   code {:?}, data {}",
            error.code(),
            error
                .data()
                .map_or_else(|| "none".to_owned(), ToString::to_string)
        ),
        Ok(_) => return Err(FlextError::operation("an overdraft was accepted")),
    }

    println!("\n4. A command sent twice with one message id (a retry after a lost reply):");
    let retried = Deposit {
        account: "acct-3".into(),
        amount: 500,
    };
    let metadata = MessageMetadata::new();
    let once = bus.send_with(retried.clone(), metadata.clone()).await?;
    println!(
        "   {}",
        shown(
            &format!("Deposit acct-3 +500 message {}", metadata.message_id),
            &Ok(once.clone())
        )
    );
    let again = bus.send_with(retried, metadata.clone()).await?;
    println!(
        "   {}",
        shown(
            &format!("Deposit acct-3 +500 message {} again", metadata.message_id),
            &Ok(again.clone())
        )
    );
    if once == again {
        println!("   one effect: the retry got the original result and stored nothing");
    } else {
        println!("   two effects: the retry was applied again");
    }
    answered.insert(again.account.clone(), again);

    let durable = format!(
        "balances_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000_000)
    );
    println!("\n5. The read model, consumed from JetStream (durable consumer {durable}):");
    let view = Arc::new(BalancesView::default());
    let jetstream = jetstream::new(client.clone());
    let config = ConsumerConfig::new(durable.clone())?
        .for_category(CATEGORY)
        .with_heartbeat(Duration::from_secs(1))?;
    let consumer = NatsConsumer::new(
        jetstream.clone(),
        names.streams()?,
        config,
        Arc::clone(&view) as Arc<dyn EventSink>,
    );
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut consuming = pin!(consumer.run(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    let caught_up = async {
        let deadline = Instant::now() + options.patience;
        loop {
            let accounts = view.snapshot();
            let done = answered.values().all(|b| {
                accounts
                    .get(&b.account)
                    .is_some_and(|v| v.version >= b.version)
            });
            if done {
                return Ok(accounts);
            }
            if Instant::now() >= deadline {
                return Err(FlextError::timeout(format!(
                    "the read model did not catch up within {:?}: {accounts:?}",
                    options.patience
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let outcome = tokio::select! {
        consumed = &mut consuming => Err(consumed.err().unwrap_or_else(|| {
            FlextError::operation("the consumer stopped before the read model caught up")
        })),
        accounts = caught_up => accounts,
    };
    stop_tx.send_replace(true);
    if outcome.is_ok() {
        consuming.await?;
    }
    if let Ok(stream) = jetstream.get_stream(names.stream()).await {
        let _ = stream.delete_consumer(&durable).await;
    }
    let accounts = outcome?;
    for (account, v) in &accounts {
        let plural = if v.events == 1 { "" } else { "s" };
        println!(
            "   {account}: balance {} ({} event{plural}, version {})",
            v.balance, v.events, v.version
        );
    }
    let mismatched: Vec<&str> = answered
        .values()
        .filter(|b| accounts.get(&b.account).map(|v| v.balance) != Some(b.balance))
        .map(|b| b.account.as_str())
        .collect();
    if !mismatched.is_empty() {
        return Err(FlextError::operation(format!(
            "the read model differs from the writer's answers for {mismatched:?}"
        )));
    }
    println!("   The balances match the writer's answers.");
    Ok(accounts)
}
