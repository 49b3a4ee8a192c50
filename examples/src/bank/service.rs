//! The service: the account repository behind a command bus, the balances read model
//! kept exactly once in the store's own database, and a notifier fed by a relay.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flext_handlers::CQRS::{EventRelay, ProjectionHandle};
use flext_handlers::Implementation::handler_with;
use flext_handlers::Patterns::{CircuitBreakerConfig, SlidingWindow};
use flext_handlers::Protocols::CheckpointStore;
use flext_handlers::Types::{Page, PageRequest};
use flext_handlers::prelude::*;
use flext_handlers::stores::sqlx::{self, Postgres, Sqlite, Transaction};
use flext_handlers::stores::{
    PostgresEventStore, PostgresProjection, PostgresProjectionHandle, PostgresProjectionRunner,
    PostgresStoreOptions, SqliteEventStore, SqliteProjection, SqliteProjectionHandle,
    SqliteProjectionRunner,
};
use serde::{Deserialize, Serialize};

use super::domain::{
    Account, AccountCommand, AccountEvent, BankServices, FraudCheck, LARGE_WITHDRAWAL, MAX_AMOUNT,
};

/// The namespace of the message ids derived from clients' idempotency keys.
const IDEMPOTENCY_KEYS: uuid::Uuid =
    uuid::Uuid::from_u128(0x6b61_6e6b_5f69_6465_6d70_6f74_656e_6379);

/// How long a command waits for the balances to show its change before it answers, so a
/// client reads its own writes.
pub const READ_YOUR_WRITES: Duration = Duration::from_secs(5);

/// Opens an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenAccount {
    /// The account's id.
    pub id: String,
    /// Who holds it.
    pub owner: String,
}

/// Deposits cents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deposit {
    /// The account's id.
    pub id: String,
    /// In cents, more than 0.
    pub amount: u64,
}

/// Withdraws cents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Withdraw {
    /// The account's id.
    pub id: String,
    /// In cents, more than 0.
    pub amount: u64,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The account.
    pub id: String,
    /// Its balance after the command.
    pub balance: u64,
    /// Its version (events so far).
    pub version: u64,
    /// Whether the balances showed the change before this answer (false when they lag,
    /// or stopped: the command is done all the same; reads may not show it yet).
    #[serde(default)]
    pub shown: bool,
}

fn positive(field: &str, amount: u64) -> FlextResult<()> {
    if amount == 0 || amount > MAX_AMOUNT {
        return Err(
            FlextError::validation(format!("{field} must be between 1 and {MAX_AMOUNT}"))
                .with_data(serde_json::json!({"field": field})),
        );
    }
    Ok(())
}

fn id_given(id: &str) -> FlextResult<()> {
    if id.trim().is_empty() || id.len() > 64 {
        return Err(FlextError::validation("id must be 1 to 64 characters")
            .with_data(serde_json::json!({"field": "id"})));
    }
    Ok(())
}

impl Command for OpenAccount {
    type Output = (Receipt, Option<u64>);
    fn validate(&self) -> FlextResult<()> {
        id_given(&self.id)?;
        if self.owner.trim().is_empty() {
            return Err(FlextError::validation("owner must not be empty")
                .with_data(serde_json::json!({"field": "owner"})));
        }
        Ok(())
    }
}

impl Command for Deposit {
    type Output = (Receipt, Option<u64>);
    fn validate(&self) -> FlextResult<()> {
        id_given(&self.id)?;
        positive("amount", self.amount)
    }
}

impl Command for Withdraw {
    type Output = (Receipt, Option<u64>);
    fn validate(&self) -> FlextResult<()> {
        id_given(&self.id)?;
        positive("amount", self.amount)
    }
}

/// An account as the balances read model shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// The account's id.
    pub id: String,
    /// Who holds it.
    pub owner: String,
    /// Its balance, in cents.
    pub balance: i64,
}

impl From<(String, String, i64)> for AccountView {
    fn from((id, owner, balance): (String, String, i64)) -> Self {
        Self { id, owner, balance }
    }
}

/// A large withdrawal the owner was told about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The withdrawal's event id: one notification per event, however often the relay
    /// delivers it.
    pub event_id: String,
    /// The account.
    pub account_id: String,
    /// The amount, in cents.
    pub amount: i64,
}

/// The bank service.
#[derive(Debug)]
pub struct Bank {
    db: Db,
    commands: CommandBus,
    balances: Balanced,
    notifier: ProjectionHandle,
    services: Arc<BankServices>,
    /// Large withdrawals delivered to the notifier, redeliveries included.
    deliveries: Arc<std::sync::atomic::AtomicU64>,
}

/// The store, whose database also holds the read model.
#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqliteEventStore),
    Postgres(PostgresEventStore),
}

/// The running balances projection.
#[derive(Debug)]
enum Balanced {
    Sqlite(SqliteProjectionHandle),
    Postgres(PostgresProjectionHandle),
}

/// Runs `$body` with `$pool` the database's pool and `$sql` choosing between the SQLite
/// and the PostgreSQL text of a statement: one body, compiled for each database.
macro_rules! on_db {
    ($db:expr, |$pool:ident, $sql:ident| $body:expr) => {
        match $db {
            Db::Sqlite(store) => {
                let $pool = store.pool();
                let $sql = |sqlite: &'static str, _postgres: &'static str| sqlite;
                $body
            }
            Db::Postgres(store) => {
                let $pool = store.pool();
                let $sql = |_sqlite: &'static str, postgres: &'static str| postgres;
                $body
            }
        }
    };
}

impl Db {
    fn events(&self) -> Arc<dyn EventStore> {
        match self {
            Self::Sqlite(store) => Arc::new(store.clone()),
            Self::Postgres(store) => Arc::new(store.clone()),
        }
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        match self {
            Self::Sqlite(store) => Arc::new(store.clone()),
            Self::Postgres(store) => Arc::new(store.clone()),
        }
    }
}

impl Balanced {
    async fn wait_for_within(&self, position: u64, limit: Duration) -> FlextResult<()> {
        match self {
            Self::Sqlite(handle) => handle.wait_for_within(position, limit).await,
            Self::Postgres(handle) => handle.wait_for_within(position, limit).await,
        }
    }

    async fn shutdown(self) -> FlextResult<()> {
        match self {
            Self::Sqlite(handle) => handle.shutdown().await.map(drop),
            Self::Postgres(handle) => handle.shutdown().await.map(drop),
        }
    }
}

type Shared = (Arc<Repository<Account>>, Arc<BankServices>);

/// Runs `command` on the account `id` with the services: the receipt and the position of
/// the last event it appended (none when it appended nothing).
async fn run(
    (repository, services): Shared,
    id: String,
    command: AccountCommand,
) -> FlextResult<(Receipt, Option<u64>)> {
    let done = repository.execute_serviced(&id, command, &services).await?;
    let receipt = Receipt {
        id,
        balance: done.state.balance,
        version: done.version,
        shown: false,
    };
    Ok((receipt, done.append.map(|a| a.last_position)))
}

impl Bank {
    /// Opens the bank on the SQLite database at `path` (created when missing), asking
    /// `fraud` about withdrawals through a breaker that opens after half of the last ten
    /// calls failed, and starts the balances and the notifier.
    pub async fn open(path: impl AsRef<Path>, fraud: Arc<dyn FraudCheck>) -> FlextResult<Self> {
        Self::start(Db::Sqlite(SqliteEventStore::open(path).await?), fraud).await
    }

    /// [`open`](Self::open) on PostgreSQL: the server at `url`, the store's and the read
    /// model's tables in `schema` (created when missing).
    pub async fn open_postgres(
        url: &str,
        schema: &str,
        fraud: Arc<dyn FraudCheck>,
    ) -> FlextResult<Self> {
        let options = PostgresStoreOptions::new(url).with_schema(schema);
        let store = PostgresEventStore::connect_with(options).await?;
        Self::start(Db::Postgres(store), fraud).await
    }

    async fn start(db: Db, fraud: Arc<dyn FraudCheck>) -> FlextResult<Self> {
        prepare(&db).await?;
        let mut config = CircuitBreakerConfig::default();
        config.sliding_window = SlidingWindow::CountBased(10);
        config.minimum_number_of_calls = 4;
        config.failure_rate_threshold = 50.0;
        config.wait_duration_in_open = Duration::from_secs(30);
        // A withdrawal held for review is the service answering, not failing.
        let breaker = Arc::new(
            CircuitBreaker::new("fraud_service", config)?
                .record_errors_if(|error| error.code() != ErrorCode::AuthorizationDenied),
        );
        let services = Arc::new(BankServices {
            fraud,
            breaker,
            fraud_timeout: Duration::from_secs(2),
        });
        let repository = Arc::new(Repository::<Account>::new(db.events()));
        let shared: Shared = (repository, services.clone());

        let mut commands = CommandBus::new();
        commands.register_with(shared.clone(), |shared, c: OpenAccount| {
            run(shared, c.id, AccountCommand::Open(c.owner))
        })?;
        commands.register_with(shared.clone(), |shared, c: Deposit| {
            run(shared, c.id, AccountCommand::Deposit(c.amount))
        })?;
        commands.register_with(shared, |shared, c: Withdraw| {
            run(shared, c.id, AccountCommand::Withdraw(c.amount))
        })?;

        let balances = match &db {
            Db::Sqlite(store) => Balanced::Sqlite(
                SqliteProjectionRunner::new(store.clone(), Arc::new(Balances)).spawn()?,
            ),
            Db::Postgres(store) => Balanced::Postgres(
                PostgresProjectionRunner::new(store.clone(), Arc::new(Balances)).spawn()?,
            ),
        };
        let events = Arc::new(EventBus::new());
        let deliveries = Arc::new(std::sync::atomic::AtomicU64::new(0));
        events.subscribe_envelope(
            "MoneyWithdrawn",
            handler_with(
                "large_withdrawals",
                (db.clone(), deliveries.clone()),
                |(db, deliveries): (Db, Arc<std::sync::atomic::AtomicU64>),
                 withdrawn: Arc<Envelope<AccountEvent>>| async move {
                    notify(&db, &withdrawn, &deliveries).await
                },
            ),
        );
        let relay = EventRelay::<AccountEvent>::new("bank", events, db.checkpoints())
            .for_category(Account::TYPE);
        let notifier = Arc::new(relay).spawn(db.events())?;
        Ok(Self {
            db,
            commands,
            balances,
            notifier,
            services,
            deliveries,
        })
    }

    /// The services withdrawals ask.
    pub fn services(&self) -> &BankServices {
        &self.services
    }

    /// Sends `command` and answers once the balances show its change.
    pub async fn send<C>(&self, command: C) -> FlextResult<Receipt>
    where
        C: Command<Output = (Receipt, Option<u64>)>,
    {
        self.send_keyed(command, None).await
    }

    /// [`send`](Self::send) under a client's idempotency key: the key names the message,
    /// so the command sent again under it (a retry after a lost answer) is one change, and
    /// answers as the first did. Once the command is done, the answer is the receipt even
    /// when the balances do not show it in time (`shown` false).
    pub async fn send_keyed<C>(&self, command: C, key: Option<&str>) -> FlextResult<Receipt>
    where
        C: Command<Output = (Receipt, Option<u64>)>,
    {
        let (mut receipt, position) = match key {
            Some(key) => {
                let mut metadata = MessageMetadata::new();
                metadata.message_id = uuid::Uuid::new_v5(&IDEMPOTENCY_KEYS, key.as_bytes());
                self.commands.send_with(command, metadata).await?
            }
            None => self.commands.send(command).await?,
        };
        receipt.shown = match position {
            None => true,
            Some(position) => {
                match self
                    .balances
                    .wait_for_within(position, READ_YOUR_WRITES)
                    .await
                {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::warn!(%error, "the balances do not show a command yet");
                        false
                    }
                }
            }
        };
        Ok(receipt)
    }

    /// The account `id` as the balances show it; `NOT_FOUND` if there is none.
    pub async fn account(&self, id: &str) -> FlextResult<AccountView> {
        let row = on_db!(&self.db, |pool, sql| {
            sqlx::query_as::<_, (String, String, i64)>(sql(
                "SELECT id, owner, balance FROM bank_balances WHERE id = ?",
                "SELECT id, owner, balance FROM bank_balances WHERE id = $1",
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .map_err(read_failed)?;
        row.map(AccountView::from)
            .ok_or_else(|| FlextError::not_found(format!("No account {id}")))
    }

    /// A page of accounts by id, those holding at least `min_balance`.
    pub async fn accounts(
        &self,
        min_balance: i64,
        page: &PageRequest,
    ) -> FlextResult<Page<AccountView>> {
        let limit = page.limit_within(100)?;
        let after: String = page.position()?.unwrap_or_default();
        // Keyset pagination in SQL: one row more than the page says whether more follow.
        let (rows, total) = on_db!(&self.db, |pool, sql| {
            let rows = sqlx::query_as::<_, (String, String, i64)>(sql(
                "SELECT id, owner, balance FROM bank_balances \
                 WHERE balance >= ? AND id > ? ORDER BY id LIMIT ?",
                "SELECT id, owner, balance FROM bank_balances \
                 WHERE balance >= $1 AND id > $2 ORDER BY id LIMIT $3",
            ))
            .bind(min_balance)
            .bind(&after)
            .bind(i64::from(limit) + 1)
            .fetch_all(pool)
            .await
            .map_err(read_failed)?;
            let total: i64 = sqlx::query_scalar(sql(
                "SELECT COUNT(*) FROM bank_balances WHERE balance >= ?",
                "SELECT COUNT(*) FROM bank_balances WHERE balance >= $1",
            ))
            .bind(min_balance)
            .fetch_one(pool)
            .await
            .map_err(read_failed)?;
            (rows, total)
        });
        let mut rows: Vec<AccountView> = rows.into_iter().map(AccountView::from).collect();
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = match rows.last() {
            Some(last) if more => Some(flext_handlers::Types::Cursor::encode(&last.id)?),
            _ => None,
        };
        Ok(Page {
            items: rows,
            next_cursor,
            total: u64::try_from(total).ok(),
        })
    }

    /// The notifications sent so far, oldest first.
    pub async fn notifications(&self) -> FlextResult<Vec<Notification>> {
        let rows = on_db!(&self.db, |pool, _sql| {
            sqlx::query_as::<_, (String, String, i64)>(
                "SELECT event_id, account_id, amount FROM bank_notifications ORDER BY position",
            )
            .fetch_all(pool)
            .await
        })
        .map_err(read_failed)?;
        Ok(rows
            .into_iter()
            .map(|(event_id, account_id, amount)| Notification {
                event_id,
                account_id,
                amount,
            })
            .collect())
    }

    /// Large withdrawals delivered to the notifier since the bank opened, redeliveries
    /// included (each is recorded once whatever this says).
    pub fn large_withdrawals_delivered(&self) -> u64 {
        self.deliveries.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until the notifier has seen every event stored so far.
    pub async fn notified(&self) -> FlextResult<()> {
        self.notifier.caught_up().await.map(drop)
    }

    /// Stops the balances and the notifier, saving their checkpoints.
    pub async fn shutdown(self) -> FlextResult<()> {
        self.balances.shutdown().await?;
        self.notifier.shutdown().await?;
        Ok(())
    }
}

/// The read model's tables, in the store's database (its schema on PostgreSQL).
async fn prepare(db: &Db) -> FlextResult<()> {
    for statement in [
        "CREATE TABLE IF NOT EXISTS bank_balances (id TEXT PRIMARY KEY, owner TEXT NOT NULL, \
         balance BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS bank_notifications (event_id TEXT PRIMARY KEY, \
         account_id TEXT NOT NULL, amount BIGINT NOT NULL, position BIGINT NOT NULL)",
    ] {
        on_db!(db, |pool, _sql| sqlx::query(statement)
            .execute(pool)
            .await
            .map(drop))
        .map_err(|e| FlextError::storage(format!("cannot create the bank's tables: {e}")))?;
    }
    Ok(())
}

fn read_failed(error: sqlx::Error) -> FlextError {
    FlextError::storage(format!("cannot read the bank's read model: {error}"))
}

/// Tells the owner of a large withdrawal, once per event: the event id is the key.
async fn notify(
    db: &Db,
    withdrawn: &Envelope<AccountEvent>,
    deliveries: &std::sync::atomic::AtomicU64,
) -> FlextResult<()> {
    let AccountEvent::Withdrawn { amount } = withdrawn.payload else {
        return Ok(());
    };
    if amount < LARGE_WITHDRAWAL {
        return Ok(());
    }
    deliveries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let account = withdrawn
        .stream_id
        .strip_prefix("Account-")
        .unwrap_or(&withdrawn.stream_id);
    let amount = i64::try_from(amount).unwrap_or(i64::MAX);
    let position = i64::try_from(withdrawn.position).unwrap_or(i64::MAX);
    on_db!(db, |pool, sql| {
        sqlx::query(sql(
            "INSERT INTO bank_notifications (event_id, account_id, amount, position) \
             VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            "INSERT INTO bank_notifications (event_id, account_id, amount, position) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
        ))
        .bind(withdrawn.event_id.to_string())
        .bind(account)
        .bind(amount)
        .bind(position)
        .execute(pool)
        .await
        .map(drop)
    })
    .map_err(|e| FlextError::storage(format!("cannot record a notification: {e}")))?;
    Ok(())
}

/// Balances per account, written in the transaction that moves the projection's
/// checkpoint: each event counts exactly once, whatever stops the service when.
#[derive(Debug)]
struct Balances;

/// What one event does to the balances.
enum Change {
    Open { id: String, owner: String },
    Add { id: String, delta: i64 },
}

impl Balances {
    fn change(event: &StoredEvent) -> FlextResult<Option<Change>> {
        let Some(id) = event.stream_id.strip_prefix("Account-") else {
            return Ok(None);
        };
        let id = id.to_owned();
        let cents = |amount: u64| i64::try_from(amount).unwrap_or(i64::MAX);
        Ok(Some(match event.payload.decode::<AccountEvent>()? {
            AccountEvent::Opened { owner } => Change::Open { id, owner },
            AccountEvent::Deposited { amount } => Change::Add {
                id,
                delta: cents(amount),
            },
            AccountEvent::Withdrawn { amount } => Change::Add {
                id,
                delta: -cents(amount),
            },
        }))
    }
}

fn write_failed(error: sqlx::Error) -> FlextError {
    FlextError::storage(format!("cannot update the balances: {error}"))
}

#[async_trait]
impl SqliteProjection for Balances {
    fn name(&self) -> &str {
        "bank_balances"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        event: &StoredEvent,
    ) -> FlextResult<()> {
        let query = match Self::change(event)? {
            None => return Ok(()),
            Some(Change::Open { id, owner }) => sqlx::query(
                "INSERT INTO bank_balances (id, owner, balance) VALUES (?, ?, 0) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(owner),
            Some(Change::Add { id, delta }) => {
                sqlx::query("UPDATE bank_balances SET balance = balance + ? WHERE id = ?")
                    .bind(delta)
                    .bind(id)
            }
        };
        query.execute(&mut **tx).await.map_err(write_failed)?;
        Ok(())
    }

    async fn reset(&self, tx: &mut Transaction<'_, Sqlite>) -> FlextResult<()> {
        sqlx::query("DELETE FROM bank_balances")
            .execute(&mut **tx)
            .await
            .map_err(write_failed)?;
        Ok(())
    }
}

#[async_trait]
impl PostgresProjection for Balances {
    fn name(&self) -> &str {
        "bank_balances"
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &StoredEvent,
    ) -> FlextResult<()> {
        let query = match Self::change(event)? {
            None => return Ok(()),
            Some(Change::Open { id, owner }) => sqlx::query(
                "INSERT INTO bank_balances (id, owner, balance) VALUES ($1, $2, 0) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(owner),
            Some(Change::Add { id, delta }) => {
                sqlx::query("UPDATE bank_balances SET balance = balance + $1 WHERE id = $2")
                    .bind(delta)
                    .bind(id)
            }
        };
        query.execute(&mut **tx).await.map_err(write_failed)?;
        Ok(())
    }

    async fn reset(&self, tx: &mut Transaction<'_, Postgres>) -> FlextResult<()> {
        sqlx::query("DELETE FROM bank_balances")
            .execute(&mut **tx)
            .await
            .map_err(write_failed)?;
        Ok(())
    }
}
