//! The service: the account repository behind a command bus, the balances read model
//! kept exactly once in the store's own database, and a notifier fed by a relay.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flext_handlers::CQRS::{EventRelay, ProjectionHandle};
use flext_handlers::Implementation::handler_with;
use flext_handlers::Patterns::{CircuitBreakerConfig, SlidingWindow};
use flext_handlers::Types::{Page, PageRequest};
use flext_handlers::prelude::*;
use flext_handlers::stores::sqlx::{self, Sqlite, SqlitePool, Transaction};
use flext_handlers::stores::{
    SqliteEventStore, SqliteProjection, SqliteProjectionHandle, SqliteProjectionRunner,
};
use serde::{Deserialize, Serialize};

use super::domain::{
    Account, AccountCommand, AccountEvent, BankServices, FraudCheck, LARGE_WITHDRAWAL,
};

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
}

fn positive(field: &str, amount: u64) -> FlextResult<()> {
    if amount == 0 {
        return Err(
            FlextError::validation(format!("{field} must be more than 0"))
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
    store: SqliteEventStore,
    commands: CommandBus,
    balances: SqliteProjectionHandle,
    notifier: ProjectionHandle,
    services: Arc<BankServices>,
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
    };
    Ok((receipt, done.append.map(|a| a.last_position)))
}

impl Bank {
    /// Opens the bank on the SQLite database at `path` (created when missing), asking
    /// `fraud` about withdrawals through a breaker that opens after half of the last ten
    /// calls failed, and starts the balances and the notifier.
    pub async fn open(path: impl AsRef<Path>, fraud: Arc<dyn FraudCheck>) -> FlextResult<Self> {
        let store = SqliteEventStore::open(path).await?;
        prepare(store.pool()).await?;
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
        let services = Arc::new(BankServices { fraud, breaker });
        let repository = Arc::new(Repository::<Account>::new(Arc::new(store.clone())));
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

        let balances = SqliteProjectionRunner::new(store.clone(), Arc::new(Balances)).spawn()?;
        let events = Arc::new(EventBus::new());
        events.subscribe_envelope(
            "MoneyWithdrawn",
            handler_with(
                "large_withdrawals",
                store.pool().clone(),
                |pool: SqlitePool, withdrawn: Arc<Envelope<AccountEvent>>| async move {
                    notify(&pool, &withdrawn).await
                },
            ),
        );
        let relay = EventRelay::<AccountEvent>::new("bank", events, Arc::new(store.clone()))
            .for_category(Account::TYPE);
        let notifier = Arc::new(relay).spawn(Arc::new(store.clone()))?;
        Ok(Self {
            store,
            commands,
            balances,
            notifier,
            services,
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
        let (receipt, position) = self.commands.send(command).await?;
        if let Some(position) = position {
            self.balances
                .wait_for_within(position, READ_YOUR_WRITES)
                .await?;
        }
        Ok(receipt)
    }

    /// The account `id` as the balances show it; `NOT_FOUND` if there is none.
    pub async fn account(&self, id: &str) -> FlextResult<AccountView> {
        sqlx::query_as::<_, (String, String, i64)>(
            "SELECT id, owner, balance FROM bank_balances WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await
        .map_err(read_failed)?
        .map(AccountView::from)
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
        let mut rows: Vec<AccountView> = sqlx::query_as::<_, (String, String, i64)>(
            "SELECT id, owner, balance FROM bank_balances \
             WHERE balance >= ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(min_balance)
        .bind(&after)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.store.pool())
        .await
        .map_err(read_failed)?
        .into_iter()
        .map(AccountView::from)
        .collect();
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM bank_balances WHERE balance >= ?")
                .bind(min_balance)
                .fetch_one(self.store.pool())
                .await
                .map_err(read_failed)?;
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
        let rows = sqlx::query_as::<_, (String, String, i64)>(
            "SELECT event_id, account_id, amount FROM bank_notifications ORDER BY rowid",
        )
        .fetch_all(self.store.pool())
        .await
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

/// The read model's tables, in the store's database.
async fn prepare(pool: &SqlitePool) -> FlextResult<()> {
    for statement in [
        "CREATE TABLE IF NOT EXISTS bank_balances (id TEXT PRIMARY KEY, owner TEXT NOT NULL, \
         balance INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS bank_notifications (event_id TEXT PRIMARY KEY, \
         account_id TEXT NOT NULL, amount INTEGER NOT NULL)",
    ] {
        sqlx::query(statement)
            .execute(pool)
            .await
            .map_err(|e| FlextError::storage(format!("cannot create the bank's tables: {e}")))?;
    }
    Ok(())
}

fn read_failed(error: sqlx::Error) -> FlextError {
    FlextError::storage(format!("cannot read the bank's read model: {error}"))
}

/// Tells the owner of a large withdrawal, once per event: the event id is the key.
async fn notify(pool: &SqlitePool, withdrawn: &Envelope<AccountEvent>) -> FlextResult<()> {
    let AccountEvent::Withdrawn { amount } = withdrawn.payload else {
        return Ok(());
    };
    if amount < LARGE_WITHDRAWAL {
        return Ok(());
    }
    let account = withdrawn
        .stream_id
        .strip_prefix("Account-")
        .unwrap_or(&withdrawn.stream_id);
    sqlx::query(
        "INSERT INTO bank_notifications (event_id, account_id, amount) VALUES (?, ?, ?) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(withdrawn.event_id.to_string())
    .bind(account)
    .bind(i64::try_from(amount).unwrap_or(i64::MAX))
    .execute(pool)
    .await
    .map_err(|e| FlextError::storage(format!("cannot record a notification: {e}")))?;
    Ok(())
}

/// Balances per account, written in the transaction that moves the projection's
/// checkpoint: each event counts exactly once, whatever stops the service when.
#[derive(Debug)]
struct Balances;

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
        let Some(id) = event.stream_id.strip_prefix("Account-") else {
            return Ok(());
        };
        let (sql, owner, delta) = match event.payload.decode::<AccountEvent>()? {
            AccountEvent::Opened { owner } => (
                "INSERT INTO bank_balances (id, owner, balance) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO NOTHING",
                owner,
                0,
            ),
            AccountEvent::Deposited { amount } => (
                "UPDATE bank_balances SET balance = balance + ?3 WHERE id = ?1",
                String::new(),
                i64::try_from(amount).unwrap_or(i64::MAX),
            ),
            AccountEvent::Withdrawn { amount } => (
                "UPDATE bank_balances SET balance = balance - ?3 WHERE id = ?1",
                String::new(),
                i64::try_from(amount).unwrap_or(i64::MAX),
            ),
        };
        sqlx::query(sql)
            .bind(id)
            .bind(owner)
            .bind(delta)
            .execute(&mut **tx)
            .await
            .map_err(|e| FlextError::storage(format!("cannot update the balances: {e}")))?;
        Ok(())
    }

    async fn reset(&self, tx: &mut Transaction<'_, Sqlite>) -> FlextResult<()> {
        sqlx::query("DELETE FROM bank_balances")
            .execute(&mut **tx)
            .await
            .map_err(|e| FlextError::storage(format!("cannot empty the balances: {e}")))?;
        Ok(())
    }
}
